//! OpenAPI definitions for every served kind, generated once from the
//! k8s-openapi types' JSON schemas and shaped like upstream's (names,
//! `x-kubernetes-*` extensions), plus the per-field merge facts strategic
//! merge patch and server-side apply need.
//!
//! Definitions are stored swagger-2.0 style: a property that refers to
//! another type is `{"$ref": "#/definitions/<name>", "description": ...}`.
//! [`crate::openapi`] rewrites them for OpenAPI 3.

mod build;
mod facts;

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(build::definitions);

/// (definition, property) -> facts, for O(1) lookups on the patch path.
static FACTS: LazyLock<HashMap<(&'static str, &'static str), PatchMeta>> = LazyLock::new(|| {
    facts::FIELDS
        .iter()
        .map(|&(def, field, strategy, key, list, keys, map)| {
            let some = |s: &'static str| (!s.is_empty()).then_some(s);
            let meta = PatchMeta {
                strategy: some(strategy),
                merge_key: some(key),
                list_type: some(list),
                list_map_keys: keys,
                map_type: some(map),
            };
            ((def, field), meta)
        })
        .collect()
});

/// Every OpenAPI definition r8s serves, keyed by upstream's definition name.
pub fn definitions() -> &'static Map<String, Value> {
    &DEFINITIONS
}

/// One definition by name, e.g. `io.k8s.api.apps.v1.Deployment`.
pub fn definition(name: &str) -> Option<&'static Value> {
    DEFINITIONS.get(name)
}

/// The definition name a schema refers to, through `$ref` or a one-element
/// `allOf` (the OpenAPI 3 spelling of a described reference).
pub fn ref_name(schema: &Value) -> Option<&str> {
    let r = schema
        .get("$ref")
        .or_else(|| schema.get("allOf")?.get(0)?.get("$ref"))?
        .as_str()?;
    r.rsplit('/').next()
}

/// Follows a `$ref` to the definition it names; other schemas come back as is.
pub fn resolve(schema: &'static Value) -> &'static Value {
    ref_name(schema).and_then(definition).unwrap_or(schema)
}

/// A property's schema inside a definition, as written there (not resolved:
/// the `x-kubernetes-*` extensions sit on the property itself).
pub fn property(definition_name: &str, property: &str) -> Option<&'static Value> {
    definition(definition_name)?
        .get("properties")?
        .get(property)
}

/// The schema of a list's items or a map's values (unresolved, so it can be
/// classified with [`shape`]), if typed.
pub fn element(schema: &'static Value) -> Option<&'static Value> {
    let schema = resolve(schema);
    schema
        .get("items")
        .or_else(|| schema.get("additionalProperties"))
        .filter(|v| v.is_object())
}

/// What a schema node holds, as far as merging is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A struct with a named definition (properties known).
    Struct(&'static str),
    /// An object without a definition or properties (free-form or a map).
    Object,
    /// A list.
    List,
    /// A string, number or boolean (including Quantity, IntOrString, Time).
    Primitive,
}

/// Classifies an (unresolved) schema node.
pub fn shape(schema: &'static Value) -> Shape {
    if let Some(name) = ref_name(schema)
        && let Some(def) = definition(name)
    {
        return match def.get("type").and_then(Value::as_str) {
            Some("object") if def.get("properties").is_some() => Shape::Struct(name),
            Some("object") | None => Shape::Object,
            Some("array") => Shape::List,
            Some(_) => Shape::Primitive,
        };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => Shape::List,
        Some("object") | None => Shape::Object,
        Some(_) => Shape::Primitive,
    }
}

/// How one field merges: upstream's `patchStrategy`/`patchMergeKey` tags and
/// `listType`/`listMapKey`/`mapType` markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PatchMeta {
    /// `x-kubernetes-patch-strategy`: `merge`, `retainKeys`, `merge,retainKeys` or `replace`.
    pub strategy: Option<&'static str>,
    /// `x-kubernetes-patch-merge-key`: the key list items merge by.
    pub merge_key: Option<&'static str>,
    /// `x-kubernetes-list-type`: `atomic`, `set` or `map`.
    pub list_type: Option<&'static str>,
    /// `x-kubernetes-list-map-keys` (for `list_type == map`).
    pub list_map_keys: &'static [&'static str],
    /// `x-kubernetes-map-type`: `atomic` or `granular`.
    pub map_type: Option<&'static str>,
}

impl PatchMeta {
    fn has_strategy(&self, s: &str) -> bool {
        self.strategy
            .is_some_and(|all| all.split(',').any(|p| p == s))
    }

    /// Whether strategic merge patch merges this list (rather than replacing it).
    pub fn merges(&self) -> bool {
        self.has_strategy("merge")
    }

    /// Whether `$retainKeys` applies to this field's values.
    pub fn retains_keys(&self) -> bool {
        self.has_strategy("retainKeys")
    }

    /// Whether strategic merge patch replaces this field as a whole.
    pub fn replaces(&self) -> bool {
        self.has_strategy("replace")
    }
}

/// The merge facts for `property` of `definition`, if upstream tags it.
pub fn patch_meta(definition: &str, property: &str) -> Option<PatchMeta> {
    FACTS.get(&(definition, property)).copied()
}

/// Whether upstream marks a definition `+structType=atomic`.
pub fn is_atomic_struct(definition: &str) -> bool {
    facts::ATOMIC_STRUCTS.contains(&definition)
}

/// The `x-kubernetes-group-version-kind` entries of a definition, as
/// (group, version, kind).
pub fn group_version_kinds(
    definition_name: &str,
) -> Vec<(&'static str, &'static str, &'static str)> {
    let Some(gvks) = definition(definition_name)
        .and_then(|d| d.get("x-kubernetes-group-version-kind"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    gvks.iter()
        .filter_map(|g| {
            Some((
                g.get("group")?.as_str()?,
                g.get("version")?.as_str()?,
                g.get("kind")?.as_str()?,
            ))
        })
        .collect()
}

/// Definition names reachable from `roots` through `$ref`s (roots included),
/// sorted.
pub fn reachable<'a>(roots: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
    let mut seen: std::collections::BTreeSet<&'static str> = std::collections::BTreeSet::new();
    let mut stack: Vec<&'static str> = roots
        .into_iter()
        .filter_map(|r| DEFINITIONS.get_key_value(r).map(|(k, _)| k.as_str()))
        .collect();
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(def) = DEFINITIONS.get(name) {
            collect_refs(def, &mut stack);
        }
    }
    seen.into_iter().collect()
}

fn collect_refs(v: &'static Value, out: &mut Vec<&'static str>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "$ref" {
                    if let Some(name) = child.as_str().and_then(|r| r.rsplit('/').next())
                        && let Some((key, _)) = DEFINITIONS.get_key_value(name)
                    {
                        out.push(key.as_str());
                    }
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::RESOURCES;

    #[test]
    fn every_catalogue_kind_and_list_has_a_definition() {
        for r in RESOURCES {
            let def = definition(r.definition).unwrap_or_else(|| panic!("{}", r.definition));
            assert!(
                def["x-kubernetes-group-version-kind"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g["kind"] == r.kind
                        && g["group"] == r.group
                        && g["version"] == r.version)
            );
            // Kinds that cannot be listed (the reviews) have no list, as
            // upstream.
            assert_eq!(
                definition(&format!("{}List", r.definition)).is_some(),
                r.has_verb("list"),
                "{}",
                r.definition
            );
        }
    }

    #[test]
    fn names_and_primitive_shapes_are_upstreams() {
        let q = definition("io.k8s.apimachinery.pkg.api.resource.Quantity").unwrap();
        assert_eq!(q["type"], "string");
        let ios = definition("io.k8s.apimachinery.pkg.util.intstr.IntOrString").unwrap();
        assert_eq!(ios["format"], "int-or-string");
        assert_eq!(ios["type"], "string");
        let t = definition("io.k8s.apimachinery.pkg.apis.meta.v1.Time").unwrap();
        assert_eq!(t["format"], "date-time");
        assert_eq!(
            definition("io.k8s.apimachinery.pkg.runtime.RawExtension").unwrap()["type"],
            "object"
        );
        for (name, def) in definitions() {
            let text = def.to_string();
            assert!(!text.contains("$defs"), "{name}");
            // JSONSchemaProps has properties named after the extensions.
            if !name.ends_with(".JSONSchemaProps") {
                assert!(!text.contains("x-kubernetes-int-or-string"), "{name}");
            }
        }
        for name in [
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
            "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
            "io.k8s.api.autoscaling.v1.Scale",
            "io.k8s.api.policy.v1.Eviction",
            "io.k8s.api.core.v1.Binding",
        ] {
            assert!(definition(name).is_some(), "{name}");
        }
    }

    #[test]
    fn extensions_sit_on_properties() {
        let c = property("io.k8s.api.core.v1.PodSpec", "containers").unwrap();
        assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(c["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(c["x-kubernetes-list-type"], "map");
        let v = property("io.k8s.api.core.v1.PodSpec", "volumes").unwrap();
        assert_eq!(v["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let f = property(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
        )
        .unwrap();
        assert_eq!(f["x-kubernetes-list-type"], "set");
        let t = property("io.k8s.api.core.v1.PodSpec", "tolerations").unwrap();
        assert_eq!(t["x-kubernetes-list-type"], "atomic");
        assert_eq!(
            definition("io.k8s.api.core.v1.LocalObjectReference").unwrap()["x-kubernetes-map-type"],
            "atomic"
        );
        let ports = patch_meta("io.k8s.api.core.v1.ServiceSpec", "ports").unwrap();
        assert_eq!(ports.merge_key, Some("port"));
        assert!(ports.merges());
        assert_eq!(ports.list_map_keys, &["port", "protocol"]);
    }

    /// Guards the hand-kept facts table against k8s-openapi upgrades that
    /// rename or drop fields: every row of a served definition must land.
    #[test]
    fn every_fact_names_a_real_property() {
        for &(def, field, ..) in facts::FIELDS {
            if let Some(d) = definition(def) {
                assert!(d["properties"].get(field).is_some(), "{def}.{field}");
            }
        }
        for def in facts::ATOMIC_STRUCTS {
            assert!(definition(def).is_some(), "{def}");
        }
    }

    #[test]
    fn walking_types() {
        let spec = property("io.k8s.api.apps.v1.Deployment", "spec").unwrap();
        assert_eq!(
            shape(spec),
            Shape::Struct("io.k8s.api.apps.v1.DeploymentSpec")
        );
        let containers = property("io.k8s.api.core.v1.PodSpec", "containers").unwrap();
        assert_eq!(shape(containers), Shape::List);
        let item = resolve(element(containers).unwrap());
        assert_eq!(item["properties"]["image"]["type"], "string");
        let labels = property("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels").unwrap();
        assert_eq!(shape(labels), Shape::Object);
        let rs = reachable(["io.k8s.api.apps.v1.Deployment"]);
        assert!(rs.contains(&"io.k8s.api.core.v1.Container"));
        assert!(rs.contains(&"io.k8s.apimachinery.pkg.api.resource.Quantity"));
        assert!(!rs.contains(&"io.k8s.api.core.v1.Service"));
    }
}
