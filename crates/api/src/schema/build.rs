//! Generates the definitions from k8s-openapi's `schemars` impls and shapes
//! them like upstream's swagger: list kinds, primitive wrappers,
//! group-version-kind and merge extensions.

use k8s_openapi::api::{
    admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates,
    coordination, core, discovery, events, networking, policy, rbac, scheduling, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::facts;
use crate::catalogue::RESOURCES;

/// Where generated `$ref`s point; upstream's swagger layout.
pub(super) const REF_PREFIX: &str = "#/definitions/";

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

/// Builds every definition, sorted by name.
pub(super) fn definitions() -> Map<String, Value> {
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/definitions".into();
            s.meta_schema = None;
        })
        .into_generator();
    macro_rules! gen_all {
        ($($t:ty),* $(,)?) => { $( let _ = generator.subschema_for::<$t>(); )* };
    }
    // Every kind the catalogue serves, plus the kinds its subresources and
    // errors speak (keep in step with `catalogue::RESOURCES`; a test checks).
    gen_all!(
        core::v1::Binding,
        core::v1::ConfigMap,
        core::v1::Endpoints,
        core::v1::Event,
        core::v1::LimitRange,
        core::v1::Namespace,
        core::v1::Node,
        core::v1::PersistentVolumeClaim,
        core::v1::PersistentVolume,
        core::v1::Pod,
        core::v1::PodTemplate,
        core::v1::ReplicationController,
        core::v1::ResourceQuota,
        core::v1::Secret,
        core::v1::ServiceAccount,
        core::v1::Service,
        apps::v1::ControllerRevision,
        apps::v1::DaemonSet,
        apps::v1::Deployment,
        apps::v1::ReplicaSet,
        apps::v1::StatefulSet,
        autoscaling::v2::HorizontalPodAutoscaler,
        autoscaling::v1::HorizontalPodAutoscaler,
        autoscaling::v1::Scale,
        batch::v1::CronJob,
        batch::v1::Job,
        networking::v1::IngressClass,
        networking::v1::Ingress,
        networking::v1::IPAddress,
        networking::v1::NetworkPolicy,
        networking::v1::ServiceCIDR,
        policy::v1::PodDisruptionBudget,
        policy::v1::Eviction,
        rbac::v1::ClusterRoleBinding,
        rbac::v1::ClusterRole,
        rbac::v1::RoleBinding,
        rbac::v1::Role,
        storage::v1::CSIDriver,
        storage::v1::CSINode,
        storage::v1::CSIStorageCapacity,
        storage::v1::StorageClass,
        storage::v1::VolumeAttachment,
        coordination::v1::Lease,
        discovery::v1::EndpointSlice,
        events::v1::Event,
        scheduling::v1::PriorityClass,
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        admissionregistration::v1::MutatingWebhookConfiguration,
        admissionregistration::v1::ValidatingWebhookConfiguration,
        admissionregistration::v1::ValidatingAdmissionPolicy,
        admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        authentication::v1::TokenRequest,
        authentication::v1::TokenReview,
        authentication::v1::SelfSubjectReview,
        authorization::v1::LocalSubjectAccessReview,
        authorization::v1::SelfSubjectAccessReview,
        authorization::v1::SelfSubjectRulesReview,
        authorization::v1::SubjectAccessReview,
        certificates::v1::CertificateSigningRequest,
        meta::APIGroup,
        meta::APIGroupList,
        meta::APIResourceList,
        meta::APIVersions,
        meta::DeleteOptions,
        meta::Patch,
        meta::Status,
        meta::WatchEvent<core::v1::ConfigMap>,
    );
    let mut defs = generator.take_definitions(false);

    add_metrics(&mut defs);
    add_lists(&mut defs);
    shape_primitives(&mut defs);
    add_group_version_kinds(&mut defs);
    add_merge_facts(&mut defs);

    let mut sorted: Vec<(String, Value)> = defs.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

/// `<Kind>List` definitions: k8s-openapi has one generic `List<T>` without a
/// schema, upstream names one per kind.
fn add_lists(defs: &mut Map<String, Value>) {
    let meta_ref = |name: &str, description: &str| json!({ "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.{name}"), "description": description });
    for r in RESOURCES {
        let list = format!("{}List", r.definition);
        if defs.contains_key(&list) || !defs.contains_key(r.definition) || !r.has_verb("list") {
            continue;
        }
        let api_version = object_property(defs, r.definition, "apiVersion");
        let kind = object_property(defs, r.definition, "kind");
        let schema = json!({
            "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
            "type": "object",
            "properties": {
                "apiVersion": api_version,
                "items": {
                    "description": format!("List of {}.", r.plural),
                    "type": "array",
                    "items": { "$ref": format!("{REF_PREFIX}{}", r.definition) },
                },
                "kind": kind,
                "metadata": meta_ref("ListMeta", "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"),
            },
            "required": ["items"],
        });
        defs.insert(list, schema);
    }
}

/// metrics.k8s.io/v1beta1 (NodeMetrics, PodMetrics): not in k8s-openapi,
/// written here as metrics-server publishes them.
fn add_metrics(defs: &mut Map<String, Value>) {
    const P: &str = "io.k8s.metrics.pkg.apis.metrics.v1beta1";
    let r = |name: &str| json!({ "$ref": format!("{REF_PREFIX}{name}") });
    let usage = json!({
        "type": "object",
        "description": "The memory and CPU usage.",
        "additionalProperties": r(QUANTITY),
    });
    let common = |extra: (&str, Value), description: &str| {
        let mut props = json!({
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "timestamp": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"),
            "window": {"type": "string", "description": "The window of the measurement: usage is the average over [timestamp - window, timestamp]."},
        });
        props[extra.0] = extra.1;
        json!({"type": "object", "description": description, "properties": props, "required": ["timestamp", "window", extra.0]})
    };
    defs.insert(
        format!("{P}.NodeMetrics"),
        common(
            ("usage", usage.clone()),
            "NodeMetrics sets resource usage metrics of a node.",
        ),
    );
    defs.insert(
        format!("{P}.ContainerMetrics"),
        json!({"type": "object", "description": "ContainerMetrics sets resource usage metrics of a container.",
            "properties": {"name": {"type": "string", "description": "Container name corresponding to the one from pod.spec.containers."}, "usage": usage},
            "required": ["name", "usage"]}),
    );
    defs.insert(
        format!("{P}.PodMetrics"),
        common(
            (
                "containers",
                json!({"type": "array", "description": "Metrics for all containers are collected within the same time window.",
                    "items": r(&format!("{P}.ContainerMetrics"))}),
            ),
            "PodMetrics sets resource usage metrics of a pod.",
        ),
    );
}

/// A property of a generated definition (its `apiVersion`/`kind` texts are
/// the same on every kind, so lists borrow them).
fn object_property(defs: &Map<String, Value>, def: &str, prop: &str) -> Value {
    defs.get(def)
        .and_then(|d| d.get("properties"))
        .and_then(|p| p.get(prop))
        .cloned()
        .unwrap_or_else(|| json!({ "type": "string" }))
}

/// Quantity and IntOrString as upstream's swagger spells them (k8s-openapi
/// uses the CRD-only `x-kubernetes-int-or-string` marker, which kubectl's
/// swagger reader does not know).
fn shape_primitives(defs: &mut Map<String, Value>) {
    if let Some(Value::Object(q)) = defs.get_mut(QUANTITY) {
        q.remove("x-kubernetes-int-or-string");
        q.insert("type".into(), "string".into());
    }
    if let Some(Value::Object(i)) = defs.get_mut(INT_OR_STRING) {
        i.remove("x-kubernetes-int-or-string");
        i.insert("type".into(), "string".into());
        i.insert("format".into(), "int-or-string".into());
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn push_gvk(defs: &mut Map<String, Value>, def: &str, entry: Value) {
    let Some(Value::Object(d)) = defs.get_mut(def) else {
        return;
    };
    let list = d
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = list
        && !a.contains(&entry)
    {
        a.push(entry);
    }
}

/// `x-kubernetes-group-version-kind` on every top-level kind, which is how
/// kubectl (explain, apply) finds a kind's schema.
fn add_group_version_kinds(defs: &mut Map<String, Value>) {
    for r in RESOURCES {
        push_gvk(defs, r.definition, gvk(r.group, r.version, r.kind));
        let list = format!("{}List", r.definition);
        push_gvk(
            defs,
            &list,
            gvk(r.group, r.version, &format!("{}List", r.kind)),
        );
    }
    let fixed = [
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "",
            "v1",
            "Status",
        ),
        (
            "io.k8s.api.autoscaling.v1.Scale",
            "autoscaling",
            "v1",
            "Scale",
        ),
        ("io.k8s.api.policy.v1.Eviction", "policy", "v1", "Eviction"),
        (
            "io.k8s.api.authentication.v1.TokenRequest",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
        ),
    ];
    for (def, g, v, k) in fixed {
        push_gvk(defs, def, gvk(g, v, k));
    }
    // Upstream registers these option/event kinds in every group version.
    for (group, versions) in crate::catalogue::groups() {
        for version in versions {
            for (def, kind) in [
                (
                    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
                    "DeleteOptions",
                ),
                (
                    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
                    "WatchEvent",
                ),
            ] {
                push_gvk(defs, def, gvk(group, version, kind));
            }
        }
    }
}

/// The merge and list-type extensions from the facts table.
fn add_merge_facts(defs: &mut Map<String, Value>) {
    for &(def, field, strategy, key, list, keys, map) in facts::FIELDS {
        let Some(Value::Object(prop)) = defs
            .get_mut(def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
        else {
            continue;
        };
        let mut set = |k: &str, v: &str| {
            if !v.is_empty() {
                prop.insert(k.into(), v.into());
            }
        };
        set("x-kubernetes-patch-strategy", strategy);
        set("x-kubernetes-patch-merge-key", key);
        set("x-kubernetes-list-type", list);
        set("x-kubernetes-map-type", map);
        if !keys.is_empty() {
            prop.insert("x-kubernetes-list-map-keys".into(), json!(keys));
        }
    }
    for def in facts::ATOMIC_STRUCTS {
        if let Some(Value::Object(d)) = defs.get_mut(*def) {
            d.insert("x-kubernetes-map-type".into(), "atomic".into());
        }
    }
}
