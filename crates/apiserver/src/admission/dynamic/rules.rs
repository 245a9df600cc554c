//! Which requests a webhook or policy is for: its rules (operations,
//! groups, versions, resources with subresources, scope), its namespace
//! and object selectors, and its CEL match conditions.

use api::selector::LabelSelector;
use serde_json::Value;

use super::Attributes;

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn has(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Upstream's resource matching: `pods` is the main resource only,
/// `pods/status` one subresource, `pods/*` the resource and all its
/// subresources, `*` every main resource, `*/*` everything, `*/status`
/// every status subresource.
fn resource_matches(list: &[&str], plural: &str, sub: Option<&str>) -> bool {
    list.iter().any(|r| {
        let (res, rsub) = match r.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (*r, None),
        };
        let res_ok = res == "*" || res == plural;
        let sub_ok = match (rsub, sub) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some("*"), _) => true,
            (Some(x), Some(s)) => x == s,
            (Some(_), None) => false,
        };
        res_ok && sub_ok
    })
}

/// Whether one `RuleWithOperations` covers the request.
pub fn rule_matches(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let info = attrs.info;
    if !has(&strs(&rule["operations"]), attrs.operation()) {
        return false;
    }
    if !has(&strs(&rule["apiGroups"]), info.group)
        || !has(&strs(&rule["apiVersions"]), info.version)
    {
        return false;
    }
    if !resource_matches(&strs(&rule["resources"]), info.plural, attrs.sub) {
        return false;
    }
    match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => !info.namespaced,
        "Namespaced" => info.namespaced,
        _ => true,
    }
}

/// Whether any of `rules` covers the request (none listed: none does).
pub fn any_rule_matches(rules: &Value, attrs: &Attributes<'_>) -> bool {
    rules
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, attrs)))
}

/// Whether the resource is excluded (`excludeResourceRules`).
pub fn excluded(rules: &Value, attrs: &Attributes<'_>) -> bool {
    any_rule_matches_any_op(rules, attrs)
}

fn any_rule_matches_any_op(rules: &Value, attrs: &Attributes<'_>) -> bool {
    rules.as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            let mut r = r.clone();
            if r.get("operations").is_none() {
                r["operations"] = serde_json::json!(["*"]);
            }
            rule_matches(&r, attrs)
        })
    })
}

fn labels_of(obj: Option<&Value>) -> serde_json::Map<String, Value> {
    obj.and_then(|o| o["metadata"]["labels"].as_object())
        .cloned()
        .unwrap_or_default()
}

/// The namespace and object selectors: a selector error is the
/// configuration's fault and matches nothing.
pub fn selectors_match(
    hook: &Value,
    namespace: Option<&Value>,
    object: &Value,
    old: Option<&Value>,
) -> bool {
    if let (Some(sel), Some(ns)) = (
        hook.get("namespaceSelector").filter(|s| !s.is_null()),
        namespace,
    ) {
        match LabelSelector::from_label_selector(sel) {
            Ok(s) => {
                if !s.matches(&labels_of(Some(ns))) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    if let Some(sel) = hook.get("objectSelector").filter(|s| !s.is_null()) {
        match LabelSelector::from_label_selector(sel) {
            Ok(s) => {
                let new_ok = !object.is_null() && s.matches(&labels_of(Some(object)));
                let old_ok = old.is_some_and(|o| s.matches(&labels_of(Some(o))));
                if !(new_ok || old_ok) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// `matchConditions`: all must hold. An expression that fails to
/// evaluate is an error the caller's failure policy decides on.
pub fn conditions_match(conditions: &Value, vars: &[(&str, &Value)]) -> Result<bool, String> {
    for c in conditions.as_array().into_iter().flatten() {
        let expr = c["expression"].as_str().unwrap_or("true");
        match api::crd::cel::evaluate(expr, vars) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => return Ok(false),
            Ok(other) => {
                return Err(format!(
                    "matchCondition {:?} did not return a bool: {other}",
                    c["name"].as_str().unwrap_or("")
                ));
            }
            Err(e) => {
                return Err(format!(
                    "matchCondition {:?} failed: {e}",
                    c["name"].as_str().unwrap_or("")
                ));
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_match_as_upstream() {
        assert!(resource_matches(&["pods"], "pods", None));
        assert!(!resource_matches(&["pods"], "pods", Some("status")));
        assert!(resource_matches(&["pods/status"], "pods", Some("status")));
        assert!(resource_matches(&["pods/*"], "pods", None));
        assert!(resource_matches(&["pods/*"], "pods", Some("log")));
        assert!(resource_matches(&["*"], "deployments", None));
        assert!(!resource_matches(&["*"], "deployments", Some("scale")));
        assert!(resource_matches(&["*/*"], "deployments", Some("scale")));
        assert!(resource_matches(&["*/scale"], "deployments", Some("scale")));
        assert!(!resource_matches(&["services"], "pods", None));
    }
}
