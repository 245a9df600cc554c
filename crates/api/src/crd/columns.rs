//! `additionalPrinterColumns`: the Table columns `kubectl get` shows for a
//! custom resource, computed on the server as upstream's table convertor
//! does (Name first, then each column's simple JSONPath).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use super::Column;
use crate::table::ColumnDefinition;

/// Parses a column's JSONPath (`.spec.replicas`,
/// `.status.conditions[?(@.type=="Ready")].status`).
pub fn parse_path(path: &str) -> Result<JsonPath, String> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    if !p.starts_with('.') && !p.starts_with('[') {
        return Err(format!("{path}: must start with '.'"));
    }
    JsonPath::parse(&format!("${p}")).map_err(|e| e.to_string())
}

/// The columns upstream shows when a version lists none.
fn effective(columns: &[Column]) -> Vec<Column> {
    if !columns.is_empty() {
        return columns.to_vec();
    }
    vec![Column {
        name: "Age".into(),
        type_: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }]
}

/// The Table's column definitions.
pub fn definitions(columns: &[Column]) -> Vec<ColumnDefinition> {
    let mut out = vec![ColumnDefinition {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names".into(),
        priority: 0,
    }];
    out.extend(effective(columns).into_iter().map(|c| ColumnDefinition {
        name: c.name,
        type_: c.type_,
        format: c.format,
        description: c.description,
        priority: c.priority,
    }));
    out
}

/// One object's cells.
pub fn cells(columns: &[Column], obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut out = vec![obj["metadata"]["name"].clone()];
    for c in effective(columns) {
        let found = parse_path(&c.json_path)
            .ok()
            .and_then(|p| p.query(obj).all().first().map(|v| (*v).clone()));
        out.push(match found {
            None => Value::Null,
            Some(v) => cell(&c.type_, v, now),
        });
    }
    out
}

fn cell(ty: &str, v: Value, now: DateTime<Utc>) -> Value {
    match ty {
        "string" => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
        "integer" => v
            .as_i64()
            .map(|i| json!(i))
            .or_else(|| v.as_f64().map(|f| json!(f as i64)))
            .unwrap_or(Value::Null),
        "number" => {
            if v.is_number() {
                v
            } else {
                Value::Null
            }
        }
        "boolean" => {
            if v.is_boolean() {
                v
            } else {
                Value::Null
            }
        }
        "date" => match v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        {
            Some(t) => {
                let secs = (now - t.with_timezone(&Utc)).num_seconds();
                if secs < 0 {
                    json!("<invalid>")
                } else {
                    json!(crate::table::human_duration(secs))
                }
            }
            None => Value::Null,
        },
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_their_paths() {
        let cols = vec![
            Column {
                name: "Ready".into(),
                type_: "string".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".status.conditions[?(@.type == \"Ready\")].status".into(),
            },
            Column {
                name: "Replicas".into(),
                type_: "integer".into(),
                format: String::new(),
                description: String::new(),
                priority: 1,
                json_path: ".spec.replicas".into(),
            },
            Column {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            },
        ];
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 3},
            "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            cells(&cols, &obj, now),
            vec![json!("x"), json!("True"), json!(3), json!("5m")]
        );
        let defs = definitions(&[]);
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[1].name, "Age");
        assert!(parse_path("spec.x").is_err());
    }
}
