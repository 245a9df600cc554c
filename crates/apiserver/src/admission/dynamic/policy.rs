//! ValidatingAdmissionPolicy: CEL validations bound to requests by
//! ValidatingAdmissionPolicyBindings, with parameters (`paramKind`,
//! `paramRef`), match constraints and conditions, variables, and the
//! binding's `validationActions` (Deny, Warn, Audit).

use serde_json::{Map, Value};
use store::SharedStore;

use super::{Attributes, Extensions, namespace_object, rules};
use crate::error::ApiError;

/// Whether `constraints` (a MatchResources) cover the request; an absent
/// one covers everything (a binding without `matchResources`).
fn resources_match(
    constraints: &Value,
    attrs: &Attributes<'_>,
    namespace: Option<&Value>,
    object: &Value,
) -> bool {
    if constraints.is_null() {
        return true;
    }
    let named_ok = |rules_v: &Value| -> bool {
        rules_v.as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                let names: Vec<&str> = r["resourceNames"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                rules::rule_matches(r, attrs) && (names.is_empty() || names.contains(&attrs.name))
            })
        })
    };
    if constraints.get("resourceRules").is_some() && !named_ok(&constraints["resourceRules"]) {
        return false;
    }
    if rules::excluded(&constraints["excludeResourceRules"], attrs) {
        return false;
    }
    rules::selectors_match(constraints, namespace, object, attrs.old)
}

/// The parameter objects a binding names.
async fn params(
    store: &SharedStore,
    crds: &crate::crd::Registry,
    policy: &Value,
    binding: &Value,
    attrs: &Attributes<'_>,
) -> Result<Option<Vec<Value>>, String> {
    let kind = &policy["spec"]["paramKind"];
    if kind.is_null() {
        return Ok(Some(vec![Value::Null]));
    }
    let api_version = kind["apiVersion"].as_str().unwrap_or("");
    let kind_name = kind["kind"].as_str().unwrap_or("");
    let info = api::catalogue::find_kind(api_version, kind_name)
        .or_else(|| crds.find_kind(api_version, kind_name))
        .ok_or_else(|| {
            format!(
                "failed to find resource referenced by paramKind: '{api_version}, Kind={kind_name}'"
            )
        })?;
    let r = &binding["spec"]["paramRef"];
    let ns = match r["namespace"].as_str() {
        Some(n) if !n.is_empty() => Some(n.to_string()),
        _ if info.namespaced => attrs.namespace.map(String::from),
        _ => None,
    };
    let mut found = Vec::new();
    if let Some(name) = r["name"].as_str().filter(|n| !n.is_empty()) {
        match crate::objects::load(store, info, ns.as_deref(), name).await {
            Ok((v, _)) => found.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e.message),
        }
    } else {
        let sel = api::selector::LabelSelector::from_label_selector(&r["selector"])
            .map_err(|e| e.to_string())?;
        let prefix = crate::objects::collection_prefix(info, ns.as_deref());
        let res = store
            .range(&prefix, None, 0, 0)
            .await
            .map_err(|e| e.to_string())?;
        for kv in res.kvs {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value)
                && sel.matches_object(&v)
            {
                found.push(v);
            }
        }
    }
    if found.is_empty() {
        return match r["parameterNotFoundAction"].as_str() {
            Some("Allow") => Ok(None),
            _ => {
                Err("no params found for policy binding with `Deny` parameterNotFoundAction".into())
            }
        };
    }
    Ok(Some(found))
}

fn code_of(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

/// One failed validation: its message and reason.
struct Violation {
    message: String,
    reason: String,
}

fn evaluate(policy: &Value, vars: &mut Vec<(&str, Value)>) -> Result<Vec<Violation>, String> {
    let as_refs = |vars: &Vec<(&str, Value)>| -> Vec<(String, Value)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let spec = &policy["spec"];
    let run = |expr: &str, vars: &Vec<(&str, Value)>| -> Result<Value, String> {
        let owned = as_refs(vars);
        let refs: Vec<(&str, &Value)> = owned.iter().map(|(k, v)| (k.as_str(), v)).collect();
        api::crd::cel::evaluate(expr, &refs)
    };
    // matchConditions: all must hold for the policy to apply.
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        match run(c["expression"].as_str().unwrap_or("true"), vars)? {
            Value::Bool(true) => {}
            Value::Bool(false) => return Ok(Vec::new()),
            other => return Err(format!("match condition returned {other}, not a bool")),
        }
    }
    let mut variables = Map::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("");
        vars.retain(|(k, _)| *k != "variables");
        vars.push(("variables", Value::Object(variables.clone())));
        let value = run(v["expression"].as_str().unwrap_or("null"), vars)?;
        variables.insert(name.to_string(), value);
    }
    vars.retain(|(k, _)| *k != "variables");
    vars.push(("variables", Value::Object(variables)));
    let mut out = Vec::new();
    for val in spec["validations"].as_array().into_iter().flatten() {
        let expr = val["expression"].as_str().unwrap_or("true");
        match run(expr, vars)? {
            Value::Bool(true) => {}
            Value::Bool(false) => {
                let mut message = match val["message"].as_str() {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => format!("failed expression: {expr}"),
                };
                if let Some(me) = val["messageExpression"].as_str()
                    && let Ok(Value::String(s)) = run(me, vars)
                    && !s.trim().is_empty()
                {
                    message = s;
                }
                out.push(Violation {
                    message,
                    reason: val["reason"].as_str().unwrap_or("Invalid").to_string(),
                });
            }
            other => {
                return Err(format!(
                    "validation expression returned {other}, not a bool"
                ));
            }
        }
    }
    Ok(out)
}

/// Runs every bound policy over the request; returns warnings (the
/// `Warn` action), or the first `Deny`.
pub async fn validate(
    store: &SharedStore,
    ext: &Extensions,
    crds: &crate::crd::Registry,
    attrs: &Attributes<'_>,
    obj: &Value,
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if !attrs.applies() {
        return Ok(warnings);
    }
    let bindings = ext.bindings.items();
    if bindings.is_empty() {
        return Ok(warnings);
    }
    let policies = ext.policies.items();
    let object = if attrs.op == super::super::Operation::Delete {
        Value::Null
    } else {
        obj.clone()
    };
    let namespace = namespace_object(store, attrs, obj).await?;
    for binding in bindings.iter() {
        let pname = binding["spec"]["policyName"].as_str().unwrap_or("");
        let Some(policy) = policies.iter().find(|p| p["metadata"]["name"] == pname) else {
            continue;
        };
        let spec = &policy["spec"];
        if !resources_match(
            &spec["matchConstraints"],
            attrs,
            namespace.as_ref(),
            &object,
        ) || !resources_match(
            &binding["spec"]["matchResources"],
            attrs,
            namespace.as_ref(),
            &object,
        ) {
            continue;
        }
        let bname = binding["metadata"]["name"].as_str().unwrap_or("");
        let actions: Vec<&str> = binding["spec"]["validationActions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let fail_open = spec["failurePolicy"].as_str() == Some("Ignore");
        let prefix =
            format!("ValidatingAdmissionPolicy '{pname}' with binding '{bname}' denied request");
        let params = match params(store, crds, policy, binding, attrs).await {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) if fail_open => {
                tracing::warn!(policy = pname, error = %e, "policy parameters failed; ignored");
                continue;
            }
            Err(e) => {
                return Err(ApiError::remote(
                    403,
                    "Forbidden",
                    format!("policy '{pname}' with binding '{bname}' denied request: {e}"),
                ));
            }
        };
        let request = attrs.request("", obj);
        for param in params {
            let mut vars: Vec<(&str, Value)> = vec![
                ("object", object.clone()),
                ("oldObject", attrs.old.cloned().unwrap_or(Value::Null)),
                ("request", request.clone()),
                ("params", param),
                ("namespaceObject", namespace.clone().unwrap_or(Value::Null)),
            ];
            let violations = match evaluate(policy, &mut vars) {
                Ok(v) => v,
                Err(_) if fail_open => continue,
                Err(e) => vec![Violation {
                    message: format!("expression evaluation failed: {e}"),
                    reason: "Invalid".into(),
                }],
            };
            for v in violations {
                if actions.contains(&"Deny") {
                    return Err(ApiError::remote(
                        code_of(&v.reason),
                        &v.reason,
                        format!("{prefix}: {}", v.message),
                    ));
                }
                if actions.contains(&"Warn") {
                    warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {}",
                        v.message
                    ));
                }
            }
        }
    }
    Ok(warnings)
}
