//! OpenAPI definitions of every served kind, generated from k8s-openapi's
//! schemars schemas (no upstream spec is committed), under upstream's
//! definition names, with the `x-kubernetes-*` extensions clients rely on:
//! group-version-kind on kinds; list types, list-map keys, map types, patch
//! merge keys and strategies on fields (from `list_types.json`, generated
//! by `tools/gen_list_types.py` from the k8s-openapi crate).

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::catalogue::RESOURCES;

/// How a list or map field merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// The list is replaced as a whole.
    AtomicList,
    /// A set of scalars, merged by value.
    SetList,
    /// A list of objects keyed by these fields.
    MapList(Vec<String>),
    /// A map replaced as a whole.
    AtomicMap,
}

static LIST_TYPES: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("list_types.json")).unwrap_or_default()
});

/// The merge behaviour of `property` of `definition`, if it is a list or map
/// with known semantics.
pub fn merge_of(definition: &str, property: &str) -> Option<Merge> {
    let f = LIST_TYPES.get(definition)?.get(property)?;
    match (f["list"].as_str(), f["map"].as_str()) {
        (Some("atomic"), _) => Some(Merge::AtomicList),
        (Some("set"), _) => Some(Merge::SetList),
        (Some("map"), _) => Some(Merge::MapList(
            f["keys"]
                .as_array()
                .map(|k| k.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
        )),
        (_, Some("atomic")) => Some(Merge::AtomicMap),
        _ => None,
    }
}

macro_rules! gen_all {
    ($gen:expr, $($ty:ty),* $(,)?) => {
        $( $gen.subschema_for::<$ty>(); )*
    };
}

fn generate() -> Map<String, Value> {
    use k8s_openapi::api::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    gen_all!(generator,
        core::v1::Binding, core::v1::ConfigMap, core::v1::Endpoints, core::v1::Event, core::v1::LimitRange,
        core::v1::Namespace, core::v1::Node, core::v1::PersistentVolumeClaim, core::v1::PersistentVolume,
        core::v1::Pod, core::v1::PodTemplate, core::v1::ReplicationController, core::v1::ResourceQuota,
        core::v1::Secret, core::v1::ServiceAccount, core::v1::Service,
        apps::v1::ControllerRevision, apps::v1::DaemonSet, apps::v1::Deployment, apps::v1::ReplicaSet, apps::v1::StatefulSet,
        autoscaling::v2::HorizontalPodAutoscaler, autoscaling::v1::HorizontalPodAutoscaler, autoscaling::v1::Scale,
        batch::v1::CronJob, batch::v1::Job,
        networking::v1::IngressClass, networking::v1::Ingress, networking::v1::IPAddress, networking::v1::NetworkPolicy, networking::v1::ServiceCIDR,
        policy::v1::PodDisruptionBudget, policy::v1::Eviction,
        rbac::v1::ClusterRoleBinding, rbac::v1::ClusterRole, rbac::v1::RoleBinding, rbac::v1::Role,
        storage::v1::CSIDriver, storage::v1::CSINode, storage::v1::CSIStorageCapacity, storage::v1::StorageClass, storage::v1::VolumeAttachment,
        coordination::v1::Lease, discovery::v1::EndpointSlice, events::v1::Event, scheduling::v1::PriorityClass,
        meta::Status, meta::DeleteOptions, meta::WatchEvent<serde_json::Value>, meta::APIResourceList, meta::Patch,
    );
    let mut defs = generator.take_definitions(true);
    for (name, schema) in defs.iter_mut() {
        shape_like_upstream(name, schema);
    }
    for r in RESOURCES {
        if let Some(d) = defs.get_mut(r.definition) {
            let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
            match d["x-kubernetes-group-version-kind"].as_array_mut() {
                Some(list) if !list.contains(&gvk) => list.push(gvk),
                Some(_) => {}
                None => d["x-kubernetes-group-version-kind"] = json!([gvk]),
            }
        }
    }
    defs
}

/// Adds the list and map extensions, and gives the special scalar types the
/// shape upstream publishes.
fn shape_like_upstream(name: &str, schema: &mut Value) {
    match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            *schema = json!({"description": schema["description"], "type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true});
            return;
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            *schema = json!({"description": schema["description"], "type": "string", "x-kubernetes-int-or-string": true});
            return;
        }
        _ => {}
    }
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (prop, ps) in props.iter_mut() {
        match merge_of(name, prop) {
            Some(Merge::AtomicList) => ps["x-kubernetes-list-type"] = json!("atomic"),
            Some(Merge::SetList) => {
                ps["x-kubernetes-list-type"] = json!("set");
                ps["x-kubernetes-patch-strategy"] = json!("merge");
            }
            Some(Merge::MapList(keys)) => {
                ps["x-kubernetes-list-type"] = json!("map");
                if let Some(first) = keys.first() {
                    ps["x-kubernetes-patch-merge-key"] = json!(first);
                }
                ps["x-kubernetes-patch-strategy"] = json!("merge");
                ps["x-kubernetes-list-map-keys"] = json!(keys);
            }
            Some(Merge::AtomicMap) => ps["x-kubernetes-map-type"] = json!("atomic"),
            None => {}
        }
    }
}

static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(generate);

/// Every definition, keyed by upstream's name (e.g.
/// `io.k8s.api.apps.v1.Deployment`); `$ref`s point at
/// `#/components/schemas/<name>`.
pub fn definitions() -> &'static Map<String, Value> {
    &DEFINITIONS
}

/// Follows a `$ref` (possibly wrapped in `allOf`) to its definition.
pub fn resolve(v: &Value) -> Option<&'static Value> {
    let r = v["$ref"].as_str().or_else(|| v["allOf"][0]["$ref"].as_str())?;
    definitions().get(r.rsplit('/').next()?)
}

/// The definition name a schema node refers to, if any.
pub fn ref_name(v: &Value) -> Option<&str> {
    let r = v["$ref"].as_str().or_else(|| v["allOf"][0]["$ref"].as_str())?;
    r.rsplit('/').next()
}

/// The definitions reachable from `roots`, for one OpenAPI document.
pub fn reachable(roots: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(d) = definitions().get(&name) else { continue };
        collect_refs(d, &mut todo);
        out.insert(name, d.clone());
    }
    out
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(n) = r.rsplit('/').next()
            {
                out.push(n.to_string());
            }
            for child in m.values() {
                collect_refs(child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_has_gvk_and_list_extensions() {
        let d = &definitions()["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let ps = &definitions()["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(ps["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(ps["x-kubernetes-list-type"], "map");
        assert_eq!(merge_of("io.k8s.api.core.v1.ServiceSpec", "ports"), Some(Merge::MapList(vec!["port".into()])));
        assert_eq!(merge_of("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers"), Some(Merge::SetList));
        assert_eq!(definitions()["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"], "int-or-string");
    }

    #[test]
    fn every_ref_resolves() {
        let all = reachable(&["io.k8s.api.apps.v1.Deployment", "io.k8s.api.core.v1.Pod"]);
        let mut refs = Vec::new();
        for v in all.values() {
            collect_refs(v, &mut refs);
        }
        for r in refs {
            assert!(definitions().contains_key(&r), "unresolved $ref {r}");
        }
    }
}
