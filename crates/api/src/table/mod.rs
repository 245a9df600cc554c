//! Server-side printing: the meta.k8s.io/v1 Table kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, with upstream's
//! columns and cell formatting for the built-in kinds. The server always
//! prints the wide form; priority-1 columns are the ones kubectl shows only
//! with `-o wide`.

mod cells;
mod certificates;
mod columns;
mod format;
mod pod;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

pub use format::human_duration;

/// One column of a Table (metav1.TableColumnDefinition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnDefinition {
    /// Column header, e.g. `Restarts`.
    pub name: String,
    /// OpenAPI type of the cells: `string`, `integer`, `boolean`, `date`.
    #[serde(rename = "type")]
    pub type_: String,
    /// OpenAPI format; `name` marks the object-name column.
    pub format: String,
    /// What the column shows.
    pub description: String,
    /// 0 for the default columns, 1 for the `-o wide` extras.
    pub priority: i64,
}

/// The column definitions upstream prints for a resource (the server's
/// default Name / Created At pair for kinds without a printer).
pub fn column_definitions(group: &str, plural: &str) -> Vec<ColumnDefinition> {
    columns::definitions(group, plural)
}

/// The cells of one object's row, with ages relative to `now`.
pub fn row_cells(group: &str, plural: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    if (group, plural) == ("", "pods") {
        return pod::cells(obj, now);
    }
    if let Some(c) = cells::cells(group, plural, obj, now) {
        return c;
    }
    // The default table: the name and the creation time in RFC 3339 (UTC).
    let created = format::parse_time(&obj["metadata"]["creationTimestamp"])
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default();
    vec![
        json!(format::str_of(&obj["metadata"]["name"])),
        json!(created),
    ]
}

/// Builds a Table with the given columns, each row's cells from `cells`
/// (custom resources' printer columns); `include_object` as in [`table`].
pub fn table_of(
    columns: Vec<ColumnDefinition>,
    rows: &[&Value],
    cells: impl Fn(&Value) -> Vec<Value>,
    include_object: &str,
) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(o)});
            attach_object(&mut row, o, include_object);
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn attach_object(row: &mut Value, o: &Value, include_object: &str) {
    match include_object {
        "None" => {}
        "Object" => row["object"] = o.clone(),
        _ => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            })
        }
    }
}

/// Builds a meta.k8s.io/v1 Table of `rows`; `include_object` is `None`
/// (no object), `Object` (the whole object) or anything else, upstream's
/// default `Metadata` (a PartialObjectMetadata).
pub fn table(
    group: &str,
    plural: &str,
    rows: &[&Value],
    now: DateTime<Utc>,
    include_object: &str,
) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|o| {
            let mut row = json!({"cells": row_cells(group, plural, o, now)});
            if (group, plural) == ("", "pods")
                && let Some(c) = pod::conditions(o)
            {
                row["conditions"] = c;
            }
            attach_object(&mut row, o, include_object);
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(group, plural),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::RESOURCES;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Every served kind prints as many cells as it has columns, even for
    /// an empty object.
    #[test]
    fn cells_match_columns_for_every_kind() {
        let empty = json!({"metadata": {"name": "x"}});
        for r in RESOURCES {
            let cols = column_definitions(r.group, r.plural);
            let cells = row_cells(r.group, r.plural, &empty, now());
            assert_eq!(cols.len(), cells.len(), "{}/{}", r.group, r.plural);
            // Upstream also marks VolumeAttachment's Attacher column as a name.
            assert!(cols.iter().any(|c| c.format == "name"), "{}", r.plural);
            assert!(
                cols.iter().all(|c| !c.description.is_empty()),
                "{}/{}",
                r.group,
                r.plural
            );
        }
    }

    #[test]
    fn default_table_is_name_and_created_at() {
        let cols = column_definitions("rbac.authorization.k8s.io", "clusterroles");
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["Name", "Created At"]
        );
        assert_eq!(cols[1].type_, "date");
        assert!(
            cols[0]
                .description
                .starts_with("Name must be unique within a namespace.")
        );
        let o = json!({"metadata": {"name": "admin", "creationTimestamp": "2025-12-31T10:00:00Z"}});
        assert_eq!(
            row_cells("rbac.authorization.k8s.io", "clusterroles", &o, now()),
            [json!("admin"), json!("2025-12-31T10:00:00Z")]
        );
    }

    #[test]
    fn table_object_modes() {
        let o = json!({"metadata": {"name": "c", "uid": "u"}, "data": {"a": "1"}});
        let t = table("", "configmaps", &[&o], now(), "Metadata");
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["uid"], "u");
        assert_eq!(t["rows"][0]["cells"], json!(["c", 1, "<unknown>"]));
        assert_eq!(t["columnDefinitions"][1]["type"], "string");
        assert_eq!(
            table("", "configmaps", &[&o], now(), "Object")["rows"][0]["object"],
            o
        );
        assert!(
            table("", "configmaps", &[&o], now(), "None")["rows"][0]
                .get("object")
                .is_none()
        );
    }
}
