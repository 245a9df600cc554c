//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! Kubernetes strategic merge patch, which merges lists by their merge key
//! and understands the `$patch`, `$retainKeys`, `$setElementOrder/…` and
//! `$deleteFromPrimitiveList/…` directives kubectl sends.

use serde_json::{Map, Value};

use crate::schema::{self, Merge};

/// A patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The JSON patch document is malformed.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// A JSON patch operation failed (missing path, failed test).
    #[error("{0}")]
    JsonPatchFailed(String),
    /// A strategic merge patch is malformed at a path.
    #[error("{path}: {message}")]
    Strategic {
        /// Where.
        path: String,
        /// What.
        message: String,
    },
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let p: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| PatchError::InvalidJsonPatch(e.to_string()))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &p).map_err(|e| PatchError::JsonPatchFailed(e.to_string()))?;
    Ok(doc)
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut doc = target.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// Applies a strategic merge patch to an object of OpenAPI definition
/// `definition` (e.g. `io.k8s.api.apps.v1.Deployment`).
pub fn strategic_merge_patch(target: &Value, patch: &Value, definition: &str) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Strategic {
            path: ".".into(),
            message: "a strategic merge patch must be a JSON object".into(),
        });
    };
    let empty = Map::new();
    let t = target.as_object().unwrap_or(&empty);
    Ok(merge_map(t, p, Some(definition), "")?.map(Value::Object).unwrap_or(Value::Object(Map::new())))
}

fn err(path: &str, message: impl Into<String>) -> PatchError {
    PatchError::Strategic {
        path: if path.is_empty() { ".".into() } else { path.to_string() },
        message: message.into(),
    }
}

/// The schema of property `k` of definition `def`.
fn prop(def: Option<&str>, k: &str) -> Option<&'static Value> {
    schema::definitions().get(def?)?["properties"].get(k)
}

/// The definition of the objects a property holds (directly, as list items
/// or as map values).
fn child_def(def: Option<&str>, k: &str) -> Option<&'static str> {
    let p = prop(def, k)?;
    schema::ref_name(p)
        .or_else(|| schema::ref_name(&p["items"]))
        .or_else(|| schema::ref_name(&p["additionalProperties"]))
}

/// Merges a patch map into a target map; None means "delete this map".
fn merge_map(target: &Map<String, Value>, patch: &Map<String, Value>, def: Option<&str>, path: &str) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            return Ok(Some(out));
        }
        Some("merge") | None => {}
        Some(other) => return Err(err(path, format!("unknown patch type: {other}"))),
    }
    let mut out = target.clone();
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), pv.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = out.get_mut(field) {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        let sub = format!("{path}.{k}");
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), pv) {
            (Some(Value::Object(tm)), Value::Object(pm)) => {
                if schema::merge_of(def.unwrap_or(""), k) == Some(Merge::AtomicMap) {
                    Some(Value::Object(strip_directives(pm)))
                } else {
                    merge_map(tm, pm, child_def(def, k), &sub)?.map(Value::Object)
                }
            }
            (Some(Value::Array(ta)), Value::Array(pa)) => Some(Value::Array(merge_list(ta, pa, def, k, &sub)?)),
            (None, Value::Array(pa)) => Some(Value::Array(merge_list(&[], pa, def, k, &sub)?)),
            (None, Value::Object(pm)) => merge_map(&Map::new(), pm, child_def(def, k), &sub)?.map(Value::Object),
            (_, other) => Some(other.clone()),
        };
        match merged {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (field, order) in orders {
        if let Some(Value::Array(items)) = out.get_mut(&field) {
            let keys = match schema::merge_of(def.unwrap_or(""), &field) {
                Some(Merge::MapList(keys)) => keys,
                _ => Vec::new(),
            };
            reorder(items, &order, &keys);
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(out))
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn key_of<'a>(item: &'a Value, keys: &[String]) -> Vec<Option<&'a Value>> {
    keys.iter().map(|k| item.get(k)).collect()
}

fn same_item(a: &Value, b: &Value, keys: &[String]) -> bool {
    // The first key is the patch merge key; the others (e.g. protocol)
    // only narrow the match when both sides carry them.
    let Some(first) = keys.first() else { return false };
    if a.get(first).is_none() || a.get(first) != b.get(first) {
        return false;
    }
    keys[1..].iter().all(|k| match (a.get(k), b.get(k)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    })
}

fn merge_list(target: &[Value], patch: &[Value], def: Option<&str>, field: &str, path: &str) -> Result<Vec<Value>, PatchError> {
    match schema::merge_of(def.unwrap_or(""), field) {
        Some(Merge::MapList(keys)) if !keys.is_empty() => {
            // A `{"$patch": "replace"}` element replaces the whole list.
            if patch.iter().any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace")) {
                return Ok(patch
                    .iter()
                    .filter(|p| p.get("$patch").is_none())
                    .cloned()
                    .collect());
            }
            let item_def = child_def(def, field);
            let mut out: Vec<Value> = target.to_vec();
            for (i, p) in patch.iter().enumerate() {
                let Value::Object(pm) = p else {
                    return Err(err(path, format!("list item {i} must be an object (merge key {})", keys[0])));
                };
                if pm.get(&keys[0]).is_none() {
                    return Err(err(path, format!("map item {i} is missing its merge key {}", keys[0])));
                }
                let pos = out.iter().position(|t| same_item(t, p, &keys));
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.retain(|t| !same_item(t, p, &keys));
                    continue;
                }
                match pos {
                    Some(j) => {
                        let tm = out[j].as_object().cloned().unwrap_or_default();
                        match merge_map(&tm, pm, item_def, &format!("{path}[{}]", render_key(p, &keys)))? {
                            Some(m) => out[j] = Value::Object(m),
                            None => {
                                out.remove(j);
                            }
                        }
                    }
                    None => {
                        let m = merge_map(&Map::new(), pm, item_def, path)?.unwrap_or_default();
                        out.push(Value::Object(m));
                    }
                }
            }
            Ok(out)
        }
        Some(Merge::SetList) => {
            let mut out: Vec<Value> = target.to_vec();
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            Ok(out)
        }
        _ => Ok(patch.to_vec()),
    }
}

fn render_key(item: &Value, keys: &[String]) -> String {
    key_of(item, keys)
        .into_iter()
        .zip(keys)
        .filter_map(|(v, k)| v.map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Orders `items` as `order` lists them (by merge key for maps, by value
/// for scalars); items the order does not mention keep their place after.
fn reorder(items: &mut Vec<Value>, order: &[Value], keys: &[String]) {
    let pos = |item: &Value| {
        order.iter().position(|o| {
            if keys.is_empty() {
                o == item
            } else {
                same_item(item, o, keys)
            }
        })
    };
    let mut indexed: Vec<(usize, usize, Value)> = items
        .drain(..)
        .enumerate()
        .map(|(i, v)| (pos(&v).unwrap_or(usize::MAX), i, v))
        .collect();
    indexed.sort_by_key(|(p, i, _)| (*p, *i));
    items.extend(indexed.into_iter().map(|(_, _, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

    fn deploy() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["a", "b"]},
                {"name": "side", "image": "busybox"}
            ], "tolerations": [{"key": "k"}]}}}})
    }

    #[test]
    fn changes_one_container_by_name() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
        let out = strategic_merge_patch(&deploy(), &p, DEPLOY).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[1]["name"], "side");
    }

    #[test]
    fn env_add_and_delete_and_atomic_args() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "web",
            "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "A"}], "args": ["z"]}]}}}});
        let out = strategic_merge_patch(&deploy(), &p, DEPLOY).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"], json!([{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]));
        assert_eq!(c["args"], json!(["z"]));
    }

    #[test]
    fn set_element_order_and_delete_container() {
        let p = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}],
            "containers": [{"$patch": "delete", "name": "web"}]}}}});
        let out = strategic_merge_patch(&deploy(), &p, DEPLOY).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "side", "image": "busybox"}]));
        let p = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}});
        let out = strategic_merge_patch(&deploy(), &p, DEPLOY).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["name"], "side");
    }

    #[test]
    fn null_removes_and_finalizers_merge() {
        let p = json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]}});
        let out = strategic_merge_patch(&deploy(), &p, DEPLOY).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn service_ports_by_port_and_replace_directive() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}], "selector": {"a": "b", "c": "d"}}});
        let p = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"a": "x"}}});
        let out = strategic_merge_patch(&svc, &p, "io.k8s.api.core.v1.Service").unwrap();
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "targetPort": 9090}, {"port": 443}]));
        // selector is an atomic map: replaced, not merged.
        assert_eq!(out["spec"]["selector"], json!({"a": "x"}));
        let p = json!({"spec": {"$patch": "replace", "ports": [{"port": 1}]}});
        let out = strategic_merge_patch(&svc, &p, "io.k8s.api.core.v1.Service").unwrap();
        assert_eq!(out["spec"], json!({"ports": [{"port": 1}]}));
    }

    #[test]
    fn retain_keys() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = strategic_merge_patch(&d, &p, DEPLOY).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn json_and_merge_patches() {
        let d = json!({"a": {"b": 1}});
        assert_eq!(merge_patch(&d, &json!({"a": {"c": 2}})), json!({"a": {"b": 1, "c": 2}}));
        assert_eq!(json_patch(&d, br#"[{"op":"replace","path":"/a/b","value":5}]"#).unwrap(), json!({"a": {"b": 5}}));
        assert!(json_patch(&d, br#"[{"op":"test","path":"/a/b","value":9}]"#).is_err());
        assert!(json_patch(&d, b"{").is_err());
    }
}
