//! A custom object against its structural schema (`openAPIV3Schema`):
//! pruning of unknown fields, defaulting, and validation with upstream's
//! messages (kube-openapi's validator as the apiextensions-apiserver
//! reports it). The schema is the CRD's JSON, walked as it is.

use serde_json::{Map, Value};

use crate::registry::FieldError;

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn preserves_unknown(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
}

/// Drops what the schema does not specify, as upstream prunes on every
/// write and read. `apiVersion`, `kind` and `metadata` at the root (and in
/// embedded resources) are kept. Returns the pruned paths, for
/// `fieldValidation`.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, obj, "", true, &mut pruned);
    pruned
}

fn prune_at(schema: &Value, obj: &mut Value, path: &str, root: bool, out: &mut Vec<String>) {
    let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
    match obj {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_unknown =
                preserves_unknown(schema) || matches!(additional, Some(Value::Bool(true)));
            let mut drop = Vec::new();
            for (k, v) in map.iter_mut() {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if embedded && k == "metadata" {
                    prune_metadata(v);
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(k)) {
                    prune_at(sub, v, &join(path, k), false, out);
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    prune_at(sub, v, &join(path, k), false, out);
                } else if !keep_unknown {
                    drop.push(k.clone());
                }
            }
            for k in drop {
                map.remove(&k);
                out.push(join(path, &k));
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune_at(sub, v, &index(path, i), false, out);
                }
            }
        }
        _ => {}
    }
}

/// Keeps only ObjectMeta's fields in an embedded resource's metadata.
fn prune_metadata(meta: &mut Value) {
    const FIELDS: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];
    if let Some(m) = meta.as_object_mut() {
        m.retain(|k, _| FIELDS.contains(&k.as_str()));
    }
}

/// Fills in the schema's `default`s where a field is absent (or null and
/// not nullable), depth first, as upstream's structural defaulting.
pub fn default(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    if let Some(d) = sub.get("default") {
                        let missing = match map.get(k) {
                            None => true,
                            Some(Value::Null) => !flag(sub, "nullable"),
                            _ => false,
                        };
                        if missing {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                }
                for (k, v) in map.iter_mut() {
                    if let Some(sub) = props.get(k) {
                        default(sub, v);
                    }
                }
            } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    default(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for v in items.iter_mut() {
                    default(sub, v);
                }
            }
        }
        _ => {}
    }
}

/// Go's name for a JSON value's type, as the validator's messages print it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => is_integer(v),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn invalid(path: &str, value: &Value, detail: String) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: {}: {detail}", render(value)),
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}

/// The compiled `pattern`s, shared by every request (a schema's patterns
/// are few; compiling one per check would dominate validation).
fn pattern(p: &str) -> Option<std::sync::Arc<regex::Regex>> {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, RwLock};
    static CACHE: LazyLock<RwLock<HashMap<String, Option<Arc<regex::Regex>>>>> =
        LazyLock::new(|| RwLock::new(HashMap::new()));
    if let Some(re) = CACHE.read().unwrap_or_else(|e| e.into_inner()).get(p) {
        return re.clone();
    }
    let re = regex::Regex::new(p).ok().map(Arc::new);
    let mut cache = CACHE.write().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(p.to_string(), re.clone());
    re
}

/// A bound as Go prints it: `1`, not `1.0`, for whole numbers.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn body_path(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

/// Validates `obj` against `schema`; every violation is reported with its
/// field path, as one 422 lists them.
pub fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_at(schema, obj, "", true, &mut errs);
    errs
}

fn validate_at(schema: &Value, v: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let bp = body_path(path);
    if v.is_null() {
        if flag(schema, "nullable") || schema.get("type").is_none() {
            return;
        }
        let ty = schema["type"].as_str().unwrap_or("");
        errs.push(invalid(
            path,
            &Value::String("null".into()),
            format!("{bp} in body must be of type {ty}: \"null\""),
        ));
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(is_integer(v) || v.is_string()) {
            errs.push(invalid(
                path,
                &Value::String(type_name(v).into()),
                format!(
                    "{bp} in body must be of type integer,string: \"{}\"",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str)
        && !type_matches(ty, v)
    {
        errs.push(invalid(
            path,
            &Value::String(type_name(v).into()),
            format!("{bp} in body must be of type {ty}: \"{}\"", type_name(v)),
        ));
        return;
    }
    value_checks(schema, v, path, errs);
    match v {
        Value::Object(map) => object_checks(schema, map, path, root, errs),
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(sub, item, &index(path, i), false, errs);
                }
            }
            list_type_checks(schema, items, path, errs);
        }
        _ => {}
    }
}

fn object_checks(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    errs: &mut Vec<FieldError>,
) {
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    if embedded {
        for k in ["apiVersion", "kind"] {
            if map.get(k).and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.push(crate::registry::common::required(join(path, k)));
            }
        }
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errs.push(crate::registry::common::required(join(path, r)));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, v) in map {
        if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            validate_at(sub, v, &join(path, k), false, errs);
        } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            validate_at(sub, v, &join(path, k), false, errs);
        }
    }
    let bp = body_path(path);
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        errs.push(FieldError {
            reason: "FieldValueTooMany",
            field: path.to_string(),
            message: format!("Too many: {}: must have at most {max} items", map.len()),
        });
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (map.len() as u64) < min
    {
        errs.push(invalid(
            path,
            &Value::Number(map.len().into()),
            format!("{bp} in body should have at least {min} properties"),
        ));
    }
}

fn list_type_checks(schema: &Value, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let bp = body_path(path);
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errs.push(FieldError {
            reason: "FieldValueTooMany",
            field: path.to_string(),
            message: format!("Too many: {}: must have at most {max} items", items.len()),
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        errs.push(invalid(
            path,
            &Value::Number(items.len().into()),
            format!("{bp} in body should have at least {min} items"),
        ));
    }
    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    if flag(schema, "uniqueItems") || list_type == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errs.push(FieldError {
                    reason: "FieldValueDuplicate",
                    field: index(path, i),
                    message: format!("Duplicate value: {}", scalar(item)),
                });
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let key_of = |item: &Value| -> Vec<Value> {
            keys.iter()
                .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                .collect()
        };
        for (i, item) in items.iter().enumerate() {
            let k = key_of(item);
            if items[..i].iter().any(|o| key_of(o) == k) {
                let shown: Map<String, Value> = keys
                    .iter()
                    .zip(k)
                    .map(|(n, v)| (n.to_string(), v))
                    .collect();
                errs.push(FieldError {
                    reason: "FieldValueDuplicate",
                    field: index(path, i),
                    message: format!("Duplicate value: {}", Value::Object(shown)),
                });
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// The checks that apply to a value whatever its type: enum, string and
/// number bounds, formats, and the logical junctors.
fn value_checks(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let bp = body_path(path);
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(scalar).collect();
        errs.push(FieldError {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                scalar(v),
                list.join(", ")
            ),
        });
    }
    if let Value::String(s) = v {
        let chars = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            errs.push(FieldError {
                reason: "FieldValueTooLong",
                field: path.to_string(),
                message: format!("Too long: may not be more than {max} bytes"),
            });
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            errs.push(invalid(
                path,
                v,
                format!("{bp} in body should be at least {min} chars long"),
            ));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            match pattern(p) {
                Some(re) if !re.is_match(s) => {
                    errs.push(invalid(path, v, format!("{bp} in body should match '{p}'")))
                }
                _ => {}
            }
        }
        if let Some(f) = schema.get("format").and_then(Value::as_str)
            && !format_ok(f, s)
        {
            errs.push(invalid(
                path,
                v,
                format!("{bp} in body must be of type {f}: \"{s}\""),
            ));
        }
    }
    if let Some(n) = v.as_f64() {
        let excl_min = flag(schema, "exclusiveMinimum");
        let excl_max = flag(schema, "exclusiveMaximum");
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (n < min || (excl_min && n == min))
        {
            let rel = if excl_min {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(invalid(
                path,
                v,
                format!("{bp} in body should be {rel} {}", num(&schema["minimum"])),
            ));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && (n > max || (excl_max && n == max))
        {
            let rel = if excl_max {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(invalid(
                path,
                v,
                format!("{bp} in body should be {rel} {}", num(&schema["maximum"])),
            ));
        }
        if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64)
            && m > 0.0
            && (n / m).fract() != 0.0
        {
            errs.push(invalid(
                path,
                v,
                format!(
                    "{bp} in body should be a multiple of {}",
                    num(&schema["multipleOf"])
                ),
            ));
        }
    }
    let passes = |s: &Value| {
        let mut e = Vec::new();
        value_checks(s, v, path, &mut e);
        if let Some(ty) = s.get("type").and_then(Value::as_str)
            && !type_matches(ty, v)
        {
            return false;
        }
        if let (Some(req), Some(map)) = (s.get("required").and_then(Value::as_array), v.as_object())
            && req
                .iter()
                .filter_map(Value::as_str)
                .any(|r| !map.contains_key(r))
        {
            return false;
        }
        if let (Some(props), Some(map)) = (
            s.get("properties").and_then(Value::as_object),
            v.as_object(),
        ) {
            for (k, sub) in props {
                if let Some(x) = map.get(k) {
                    let mut inner = Vec::new();
                    validate_at(sub, x, &join(path, k), false, &mut inner);
                    if !inner.is_empty() {
                        return false;
                    }
                }
            }
        }
        e.is_empty()
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            value_checks(s, v, path, errs);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(passes)
    {
        errs.push(invalid(
            path,
            v,
            format!("{bp} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|s| passes(s)).count();
        if n != 1 {
            errs.push(invalid(
                path,
                v,
                format!("{bp} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = schema.get("not")
        && passes(not)
    {
        errs.push(invalid(
            path,
            v,
            format!("{bp} in body must not validate the schema (not)"),
        ));
    }
}

/// The formats upstream's CRD validation checks (others pass).
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "int32" | "int64" | "float" | "double" | "byte" | "password" | "" => {
            format != "byte" || base64_ok(s)
        }
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok() && s.len() == 36,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => cidr_ok(s),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        "uri" => s.contains(':'),
        "duration" => duration_ok(s),
        _ => true,
    }
}

fn base64_ok(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

fn cidr_ok(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

/// Go's `time.ParseDuration` syntax (`1h30m`, `300ms`, `-1.5h`).
pub fn duration_ok(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return false;
        }
        rest = &rest[num_len..];
        let unit = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crontab() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string", "default": "busybox"},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                },
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
            }
        })
    }

    #[test]
    fn violations_carry_upstreams_messages() {
        let obj = json!({"apiVersion": "x/v1", "kind": "CronTab", "metadata": {"name": "a"},
            "spec": {"replicas": "three", "mode": "c", "tags": ["a", "b", "c"], "port": true, "env": {"A": 1}}});
        let errs = validate(&crontab(), &obj);
        let msgs: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert!(
            msgs.contains(&"spec.cronSpec: Required value".to_string()),
            "{msgs:?}"
        );
        assert!(msgs.contains(&"spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"".to_string()), "{msgs:?}");
        assert!(
            msgs.contains(
                &"spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(&"spec.tags: Too many: 3: must have at most 2 items".to_string()),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.port: Invalid value: \"boolean\"")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.env.A: Invalid value")),
            "{msgs:?}"
        );
        let bad = json!({"spec": {"cronSpec": "* * * *", "replicas": 0}});
        let msgs: Vec<String> = validate(&crontab(), &bad)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert!(msgs.iter().any(|m| m.starts_with("spec.cronSpec: Invalid value: \"* * * *\": spec.cronSpec in body should match '^(\\d+|\\*)")), "{msgs:?}");
        assert!(msgs.contains(&"spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1".to_string()), "{msgs:?}");
        let good = json!({"spec": {"cronSpec": "* * * * */5", "replicas": 3, "port": "http", "free": {"x": {"y": 1}}}});
        assert!(validate(&crontab(), &good).is_empty());
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_filled() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "CronTab", "metadata": {"name": "a"},
            "spec": {"cronSpec": "* * * * *", "extra": 1, "free": {"kept": true}, "env": {"A": "b"}}, "junk": true});
        let pruned = prune(&crontab(), &mut obj);
        assert_eq!(pruned, ["spec.extra", "junk"]);
        assert_eq!(obj["spec"]["free"]["kept"], true);
        assert_eq!(obj["spec"]["env"]["A"], "b");
        default(&crontab(), &mut obj);
        assert_eq!(obj["spec"]["image"], "busybox");
        assert!(obj.get("junk").is_none());
    }

    #[test]
    fn go_durations() {
        for ok in ["1h", "1h30m", "300ms", "-1.5h", "0", "2h45m0.5s"] {
            assert!(duration_ok(ok), "{ok}");
        }
        for bad in ["", "1", "h", "1x", "1h-"] {
            assert!(!duration_ok(bad), "{bad}");
        }
    }
}
