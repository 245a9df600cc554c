//! Upstream's strategic merge patch application cases, ported: every case of
//! k8s.io/apimachinery v0.33.0 `pkg/util/strategicpatch/patch_test.go`
//! (`strategicMergePatchRawTestCases`, `customStrategicMergePatchRawTestCases`,
//! `createStrategicMergePatchTestCaseData`, `customStrategicMergePatchTestCaseData`)
//! converted from YAML to `testdata/upstream_cases.json`. Patch creation is
//! kubectl's job; these check that applying upstream's expected two-way and
//! three-way patches gives upstream's expected results, against upstream's
//! `MergeItem` fixture type.

use serde_json::{Map, Value};

use super::PatchError;
use super::strategic::{Lookup, Node, merge_objects};
use crate::schema::PatchMeta;

/// Upstream's `MergeItem` and `RetainKeysMergeItem` struct tags.
struct Fixture;

const ITEM: &str = "mergeItem";
const RETAIN: &str = "retainKeysMergeItem";

impl Lookup for Fixture {
    fn meta(&self, def: &str, field: &str) -> Option<PatchMeta> {
        let (strategy, merge_key) = match (def, field) {
            (ITEM | RETAIN, "mergingList") => ("merge", Some("name")),
            (ITEM | RETAIN, "mergingIntList") => ("merge", None),
            (ITEM, "mergeItemPtr") => ("merge", Some("name")),
            (ITEM, "replacingItem") => ("replace", None),
            (ITEM, "retainKeysMap") => ("retainKeys", None),
            (ITEM, "retainKeysMergingList") => ("merge,retainKeys", Some("name")),
            _ => return None,
        };
        Some(PatchMeta {
            strategy: Some(strategy),
            merge_key,
            ..PatchMeta::default()
        })
    }

    fn child(&self, def: &str, field: &str) -> Option<&'static str> {
        match (def, field) {
            (ITEM, "retainKeysMap") => Some(RETAIN),
            (ITEM | RETAIN, "mergingList" | "nonMergingList") => Some(ITEM),
            (ITEM, "mergeItemPtr" | "retainKeysMergingList") => Some(ITEM),
            _ => None,
        }
    }
}

fn apply(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let obj = |v: &Value| v.as_object().cloned().unwrap_or_default();
    merge_objects(obj(target), obj(patch), Node::root(&Fixture, ITEM)).map(Value::Object)
}

/// Upstream compares the YAML-sourced cases after sorting lists.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(sorted).collect();
            items.sort_by_key(|i| i.to_string());
            Value::Array(items)
        }
        other => other.clone(),
    }
}

fn check(
    case: &Value,
    kind: &str,
    target: &Value,
    patch: &Value,
    expected: Option<&Value>,
    failures: &mut Vec<String>,
) {
    let desc = case["description"].as_str().unwrap_or("?");
    let result = apply(target, patch);
    if let Some(e) = case["expectedError"].as_str() {
        if result.is_ok() {
            failures.push(format!("{desc} ({kind}): expected an error like {e:?}"));
        }
        return;
    }
    let Some(expected) = expected else { return };
    match result {
        Err(e) => failures.push(format!("{desc} ({kind}): {e}")),
        Ok(got) => {
            let (got, want) = if case["sorted"] == true {
                (sorted(&got), sorted(expected))
            } else {
                (got, expected.clone())
            };
            if got != want {
                failures.push(format!("{desc} ({kind}):\n  patch    {patch}\n  target   {target}\n  expected {want}\n  got      {got}"));
            }
        }
    }
}

#[test]
fn upstream_application_cases() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("testdata/upstream_cases.json")).unwrap();
    assert!(cases.len() > 100);
    let mut failures = Vec::new();
    for case in &cases {
        if let (Some(original), Some(two_way)) = (case.get("original"), case.get("twoWay")) {
            let expected = case.get("twoWayResult").or_else(|| case.get("modified"));
            check(case, "two-way", original, two_way, expected, &mut failures);
        }
        if let (Some(current), Some(three_way)) = (case.get("current"), case.get("threeWay")) {
            check(
                case,
                "three-way",
                current,
                three_way,
                case.get("result"),
                &mut failures,
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
