//! [`Shape`] over the OpenAPI definitions: list types, map keys and atomic
//! maps come from the `x-kubernetes-*` extensions the schema carries.

use serde_json::Value;

use crate::fieldset::{ListKind, Shape};

/// A position in a kind's schema (None: no schema known, e.g. free-form).
#[derive(Clone, Copy)]
pub struct SchemaShape(Option<&'static Value>);

fn resolve(v: &'static Value) -> &'static Value {
    // Follow $ref (possibly wrapped in allOf, as generated schemas do).
    let r = v["$ref"]
        .as_str()
        .or_else(|| v["allOf"][0]["$ref"].as_str());
    match r.and_then(|r| r.rsplit('/').next()) {
        Some(name) => api::schema::definitions().get(name).unwrap_or(v),
        None => v,
    }
}

impl SchemaShape {
    /// The shape of a top-level kind by its definition name.
    pub fn root(definition: &str) -> SchemaShape {
        SchemaShape(api::schema::definitions().get(definition))
    }

    fn node(&self) -> Option<&'static Value> {
        self.0.map(resolve)
    }
}

impl Shape for SchemaShape {
    fn field(&self, name: &str) -> SchemaShape {
        SchemaShape(self.node().and_then(|n| n["properties"].get(name)))
    }

    fn item(&self) -> SchemaShape {
        SchemaShape(self.node().and_then(|n| {
            n.get("items")
                .or_else(|| n.get("additionalProperties"))
                .filter(|v| v.is_object())
        }))
    }

    fn list_kind(&self) -> ListKind {
        let Some(raw) = self.0 else {
            return ListKind::Atomic;
        };
        // Extensions sit on the property itself (next to `items`).
        let n = raw;
        match n["x-kubernetes-list-type"].as_str() {
            Some("map") => {
                let keys: Vec<String> = n["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    ListKind::Atomic
                } else {
                    ListKind::Map(keys)
                }
            }
            Some("set") => ListKind::Set,
            Some(_) => ListKind::Atomic,
            None => match (
                n["x-kubernetes-patch-merge-key"].as_str(),
                n["x-kubernetes-patch-strategy"].as_str(),
            ) {
                (Some(k), _) => ListKind::Map(vec![k.to_string()]),
                (None, Some(s)) if s.split(',').any(|p| p == "merge") => ListKind::Set,
                _ => ListKind::Atomic,
            },
        }
    }

    fn atomic_map(&self) -> bool {
        self.0.is_some_and(|n| {
            n["x-kubernetes-map-type"] == "atomic"
                || resolve(n)["x-kubernetes-map-type"] == "atomic"
        })
    }
}
