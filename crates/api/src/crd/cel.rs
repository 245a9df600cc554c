//! `x-kubernetes-validations`: CEL rules on a custom resource's schema,
//! evaluated with the maintained `cel` crate (the standard library plus its
//! strings, lists and math extensions), with `self` bound to the value at
//! the rule's node and `oldSelf` to the stored one for transition rules.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;

use crate::registry::FieldError;

static ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| {
    let mut env = cel::Env::stdlib();
    // The extensions are fresh names on a stdlib env; a clash would be a
    // bug in the crate, and the rules then just lack those functions.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::lists);
    let _ = env.add_extension(cel::extensions::math);
    Arc::new(env)
});

/// Compiled programs by source, so each rule is parsed once per process.
static PROGRAMS: LazyLock<Mutex<HashMap<String, Arc<cel::Program>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Compiles (or finds) the program for `source`.
pub fn compile(source: &str) -> Result<Arc<cel::Program>, String> {
    if let Some(p) = PROGRAMS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(source)
    {
        return Ok(p.clone());
    }
    let program = Arc::new(ENV.compile(source).map_err(|e| e.to_string())?);
    let mut cache = PROGRAMS.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(source.to_string(), program.clone());
    Ok(program)
}

/// Evaluates `source` with `vars` bound (JSON values), for the CEL that
/// admission uses (match conditions, ValidatingAdmissionPolicies); the
/// result comes back as JSON.
pub fn evaluate(source: &str, vars: &[(&str, &Value)]) -> Result<Value, String> {
    let program = compile(source)?;
    let mut ctx = cel::Context::with_env(ENV.clone());
    for (name, v) in vars {
        ctx.add_variable_from_value(*name, to_cel(v)?);
    }
    let out = program.execute(&ctx).map_err(|e| e.to_string())?;
    out.json().map_err(|e| e.to_string())
}

fn rules(schema: &Value) -> impl Iterator<Item = (usize, &Value)> {
    schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
}

/// Whether a rule reads `oldSelf` (a transition rule, skipped on create).
fn is_transition(rule: &str) -> bool {
    rule.contains("oldSelf")
}

/// Refuses rules that do not compile, as upstream does when the CRD is
/// written (`path` is the schema node's field path).
pub fn check_rules(schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (i, r) in rules(schema) {
        let rp = format!("{path}.x-kubernetes-validations[{i}]");
        let rule = r["rule"].as_str().unwrap_or("");
        if rule.is_empty() {
            errs.push(crate::registry::common::required(format!("{rp}.rule")));
        } else if let Err(e) = compile(rule) {
            errs.push(FieldError {
                reason: "FieldValueInvalid",
                field: format!("{rp}.rule"),
                message: format!(
                    "Invalid value: \"{}\": compilation failed: ERROR: <input>: {}",
                    rule.replace('"', "\\\""),
                    e.trim()
                ),
            });
        }
        if let Some(me) = r["messageExpression"].as_str()
            && let Err(e) = compile(me)
        {
            errs.push(FieldError {
                reason: "FieldValueInvalid",
                field: format!("{rp}.messageExpression"),
                message: format!(
                    "Invalid value: \"{}\": messageExpression compilation failed: ERROR: <input>: {}",
                    me.replace('"', "\\\""),
                    e.trim()
                ),
            });
        }
        if let Some(reason) = r["reason"].as_str()
            && !matches!(
                reason,
                "FieldValueInvalid"
                    | "FieldValueForbidden"
                    | "FieldValueRequired"
                    | "FieldValueDuplicate"
            )
        {
            errs.push(crate::registry::common::not_supported(
                format!("{rp}.reason"),
                &r["reason"],
                &[
                    "FieldValueDuplicate",
                    "FieldValueForbidden",
                    "FieldValueInvalid",
                    "FieldValueRequired",
                ],
            ));
        }
    }
    let walk = |sub: &Value, p: String, errs: &mut Vec<FieldError>| check_rules(sub, &p, errs);
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            walk(sub, format!("{path}.properties[{k}]"), errs);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        walk(items, format!("{path}.items"), errs);
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        walk(ap, format!("{path}.additionalProperties"), errs);
    }
}

/// Whether the schema has any rule (so objects without rules skip the
/// walk).
pub fn has_rules(schema: &Value) -> bool {
    schema.get("x-kubernetes-validations").is_some()
        || schema["properties"]
            .as_object()
            .is_some_and(|p| p.values().any(has_rules))
        || schema.get("items").is_some_and(has_rules)
        || schema
            .get("additionalProperties")
            .is_some_and(|a| a.is_object() && has_rules(a))
}

fn to_cel(v: &Value) -> Result<cel::Value, String> {
    cel::to_value(v).map_err(|e| e.to_string())
}

/// The variables of the rules at one schema node: `self` (and `oldSelf`),
/// converted once for all the node's rules.
fn context(this: &Value, old: Option<&Value>) -> Result<cel::Context<'static, 'static>, String> {
    let mut ctx = cel::Context::with_env(ENV.clone());
    ctx.add_variable_from_value("self", to_cel(this)?);
    if let Some(o) = old {
        ctx.add_variable_from_value("oldSelf", to_cel(o)?);
    }
    Ok(ctx)
}

fn run(program: &cel::Program, this: &Value, old: Option<&Value>) -> Result<cel::Value, String> {
    program
        .execute(&context(this, old)?)
        .map_err(|e| e.to_string())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Evaluates the rules on `obj`, reporting each failed rule at its field
/// path with its message. Without `old` (a create, or the update's plain
/// checks) the rules that do not read `oldSelf` run; with `old` only the
/// transition rules do, so an update runs each rule once.
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if has_rules(schema) {
        walk(schema, obj, old, old.is_some(), "", &mut errs);
    }
    errs
}

fn walk(
    schema: &Value,
    v: &Value,
    old: Option<&Value>,
    transitions: bool,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if v.is_null() || (transitions && old.is_none()) {
        return;
    }
    let mut ctx = None;
    for (_, r) in rules(schema) {
        let rule = r["rule"].as_str().unwrap_or("");
        if is_transition(rule) != transitions {
            continue;
        }
        let program = match compile(rule) {
            Ok(p) => p,
            Err(e) => {
                errs.push(invalid(path, schema, &format!("compilation failed: {e}")));
                continue;
            }
        };
        if ctx.is_none() {
            match context(v, old) {
                Ok(c) => ctx = Some(c),
                Err(e) => {
                    errs.push(invalid(path, schema, &e));
                    return;
                }
            }
        }
        let Some(c) = ctx.as_ref() else { return };
        match program.execute(c).map_err(|e| e.to_string()) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => errs.push(failure(schema, r, v, old, path)),
            Ok(other) => errs.push(invalid(
                path,
                schema,
                &format!("rule result is not a boolean: {other:?}"),
            )),
            Err(e) => errs.push(invalid(path, schema, &e)),
        }
    }
    if let (Some(props), Some(map)) = (schema["properties"].as_object(), v.as_object()) {
        for (k, sub) in props {
            if !has_rules(sub) {
                continue;
            }
            if let Some(x) = map.get(k) {
                let o = old.and_then(|o| o.get(k));
                walk(sub, x, o, transitions, &join(path, k), errs);
            }
        }
    } else if let (Some(ap), Some(map)) = (
        schema.get("additionalProperties").filter(|a| a.is_object()),
        v.as_object(),
    ) {
        for (k, x) in map {
            let o = old.and_then(|o| o.get(k));
            walk(ap, x, o, transitions, &join(path, k), errs);
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
        // Old elements pair by position only for map lists keyed the same;
        // transition rules inside plain lists see no old value, as upstream.
        let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (i, x) in list.iter().enumerate() {
            let o = if keys.is_empty() {
                None
            } else {
                old.and_then(Value::as_array).and_then(|ol| {
                    ol.iter()
                        .find(|e| keys.iter().all(|k| e.get(*k) == x.get(*k)))
                })
            };
            walk(items, x, o, transitions, &format!("{path}[{i}]"), errs);
        }
    }
}

fn type_of(schema: &Value) -> String {
    schema["type"].as_str().unwrap_or("object").to_string()
}

fn invalid(path: &str, schema: &Value, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: \"{}\": {detail}", type_of(schema)),
    }
}

fn failure(schema: &Value, rule: &Value, v: &Value, old: Option<&Value>, path: &str) -> FieldError {
    let mut msg = rule["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .map(String::from)
        .unwrap_or_else(|| format!("failed rule: {}", rule["rule"].as_str().unwrap_or("")));
    if let Some(me) = rule["messageExpression"].as_str()
        && let Ok(p) = compile(me)
        && let Ok(cel::Value::String(s)) = run(&p, v, old)
        && !s.is_empty()
    {
        msg = s.to_string();
    }
    let field = match rule["fieldPath"].as_str() {
        Some(fp) if !fp.is_empty() => format!("{path}{fp}"),
        _ => path.to_string(),
    };
    let field = field.trim_start_matches('.').to_string();
    match rule["reason"].as_str().unwrap_or("FieldValueInvalid") {
        "FieldValueForbidden" => FieldError {
            reason: "FieldValueForbidden",
            field,
            message: format!("Forbidden: {msg}"),
        },
        "FieldValueRequired" => FieldError {
            reason: "FieldValueRequired",
            field,
            message: format!("Required value: {msg}"),
        },
        "FieldValueDuplicate" => FieldError {
            reason: "FieldValueDuplicate",
            field,
            message: format!("Duplicate value: {msg}"),
        },
        _ => FieldError {
            reason: "FieldValueInvalid",
            field,
            message: format!("Invalid value: \"{}\": {msg}", type_of(schema)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {"spec": {
                "type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.minReplicas <= self.replicas", "message": "replicas should be greater than or equal to minReplicas."},
                    {"rule": "self.replicas <= 10"},
                    {"rule": "self.name.startsWith('web-')", "messageExpression": "'name ' + self.name + ' must start with web-'", "fieldPath": ".name", "reason": "FieldValueForbidden"},
                    {"rule": "self.replicas >= oldSelf.replicas", "message": "may not scale down"}
                ],
                "properties": {
                    "replicas": {"type": "integer"},
                    "minReplicas": {"type": "integer"},
                    "name": {"type": "string"},
                    "hosts": {"type": "array", "items": {"type": "string"},
                        "x-kubernetes-validations": [{"rule": "self.all(h, h.matches('^[a-z.]+$'))", "message": "bad host"}]}
                }
            }}
        })
    }

    fn msgs(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn rules_pass_and_fail_with_upstreams_messages() {
        let ok =
            json!({"spec": {"replicas": 3, "minReplicas": 1, "name": "web-a", "hosts": ["a.b"]}});
        assert_eq!(msgs(validate(&schema(), &ok, None)), Vec::<String>::new());
        let bad =
            json!({"spec": {"replicas": 11, "minReplicas": 12, "name": "db", "hosts": ["A!"]}});
        let m = msgs(validate(&schema(), &bad, None));
        assert!(m.contains(&"spec: Invalid value: \"object\": replicas should be greater than or equal to minReplicas.".to_string()), "{m:?}");
        assert!(
            m.contains(
                &"spec: Invalid value: \"object\": failed rule: self.replicas <= 10".to_string()
            ),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.name: Forbidden: name db must start with web-".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.hosts: Invalid value: \"array\": bad host".to_string()),
            "{m:?}"
        );
        assert_eq!(
            m.len(),
            4,
            "the transition rule is skipped on create: {m:?}"
        );
    }

    #[test]
    fn transition_rules_see_the_old_object() {
        let old = json!({"spec": {"replicas": 5, "minReplicas": 1, "name": "web-a"}});
        let new = json!({"spec": {"replicas": 4, "minReplicas": 1, "name": "web-a"}});
        let m = msgs(validate(&schema(), &new, Some(&old)));
        assert_eq!(m, ["spec: Invalid value: \"object\": may not scale down"]);
    }

    #[test]
    fn rules_that_do_not_compile_are_refused() {
        let s =
            json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.replicas <"}]});
        let mut errs = Vec::new();
        check_rules(&s, "spec.versions[0].schema.openAPIV3Schema", &mut errs);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].field,
            "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule"
        );
        assert!(
            errs[0].message.contains("compilation failed"),
            "{}",
            errs[0].message
        );
    }
}
