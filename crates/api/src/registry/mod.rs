//! Per-kind strategies over one generic store, as upstream's
//! `pkg/registry/<group>/<resource>/strategy.go`: what create and update
//! may change, how objects are defaulted and validated, when
//! `metadata.generation` moves. The REST layer asks [`strategy`] for the
//! kind's rules and never tests kinds by name.
//!
//! Each kind with rules has its file under its group (`core` for the legacy
//! group); kinds without rules share [`GENERIC`].

pub mod apiregistration;
pub mod apps;
pub mod autoscaling;
pub mod batch;
pub mod certificates;
pub mod common;
pub mod coordination;
pub mod core;
pub mod discovery;
pub mod networking;
pub mod policy;
pub mod rbac;
pub mod scheduling;
pub mod storage;
pub mod typed;

use serde_json::{Value, json};

use crate::catalogue::ResourceInfo;
pub use common::FieldError;

/// The rules of one kind. Every step has a default that suits a kind with
/// no special rules, so a strategy states only where its kind differs.
pub trait Strategy: Sync {
    /// The kind's resource name (`generic` for [`GENERIC`]), for
    /// diagnostics and tests.
    fn name(&self) -> &'static str;

    /// Applies the kind's `SetDefaults_*` to a written object.
    fn default(&self, _obj: &mut Value) {}

    /// Whether spec changes move `metadata.generation`.
    fn tracks_generation(&self) -> bool {
        false
    }

    /// Whether a create keeps the `status` it is given although the kind
    /// has a status subresource (a node registers with its status).
    fn keeps_status_on_create(&self) -> bool {
        false
    }

    /// Whether a PUT to an absent object creates it (upstream's
    /// `AllowCreateOnUpdate`).
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// Resets what a create may not set, as upstream's PrepareForCreate.
    fn prepare_for_create(&self, info: &ResourceInfo, obj: &mut Value) {
        base_prepare_for_create(self, info, obj);
    }

    /// Records who created the object, for kinds that keep it (a
    /// CertificateSigningRequest's `spec.username`, `groups`, …).
    fn record_requester(&self, _obj: &mut Value, _requester: &Requester<'_>) {}

    /// Carries over what an update of the main resource (or the
    /// subresource `sub` written through the main path, e.g. a namespace's
    /// `finalize`) may not change, and bumps the generation.
    fn prepare_for_update(
        &self,
        info: &ResourceInfo,
        new: &mut Value,
        old: &Value,
        _sub: Option<&str>,
    ) {
        base_prepare_for_update(self, info, new, old);
    }

    /// The object a write to subresource `sub` stores, when the kind owns
    /// that subresource's semantics (a pod's `ephemeralcontainers` and
    /// `resize`); `None` sends the write down the main update path.
    fn prepare_for_subresource_update(
        &self,
        _sub: Option<&str>,
        _new: &Value,
        _old: &Value,
    ) -> Option<Value> {
        None
    }

    /// Kind-specific validation beyond the shape the typed decode checks.
    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Checks `new` against the `old` it replaces; `sub` is the subresource
    /// written, if any.
    fn validate_update(&self, _new: &Value, _old: &Value, _sub: Option<&str>) -> Vec<FieldError> {
        Vec::new()
    }

    /// Seconds a delete waits for the object's owner to finish it (pods on
    /// a node); 0 deletes at once.
    fn graceful_delete_seconds(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Whether kind-specific finalizers (a namespace's `spec.finalizers`)
    /// still hold the object once it is being deleted.
    fn finalizers_pending(&self, _obj: &Value) -> bool {
        false
    }

    /// Marks an object whose deletion waits (a namespace turns
    /// Terminating).
    fn prepare_for_delete(&self, _obj: &mut Value) {}

    /// The replicas a Scale reports when the spec leaves them out (what the
    /// kind's defaulting would have set).
    fn default_scale_replicas(&self) -> i64 {
        0
    }
}

/// Who makes a request, for [`Strategy::record_requester`].
pub struct Requester<'a> {
    /// The user name.
    pub name: &'a str,
    /// The user's groups.
    pub groups: &'a [String],
    /// The user's uid (may be empty).
    pub uid: &'a str,
    /// Further facts from the authenticator.
    pub extra: &'a std::collections::BTreeMap<String, Vec<String>>,
}

/// The strategy of kinds without special rules (and of custom resources
/// until they get their own).
pub struct Generic;

impl Strategy for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }
}

/// The one [`Generic`] strategy.
pub static GENERIC: Generic = Generic;

/// The strategy of `info`'s kind.
pub fn strategy(info: &ResourceInfo) -> &'static dyn Strategy {
    use self::{apps::*, batch::*, core::*};
    match (info.group, info.plural) {
        ("", "pods") => &pod::POD,
        ("", "podtemplates") => &podtemplate::POD_TEMPLATE,
        ("", "replicationcontrollers") => &replicationcontroller::REPLICATION_CONTROLLER,
        ("", "services") => &service::SERVICE,
        ("", "nodes") => &node::NODE,
        ("", "namespaces") => &namespace::NAMESPACE,
        ("", "secrets") => &secret::SECRET,
        ("", "configmaps") => &configmap::CONFIG_MAP,
        ("", "persistentvolumeclaims") => &volume::PERSISTENT_VOLUME_CLAIM,
        ("", "persistentvolumes") => &volume::PERSISTENT_VOLUME,
        ("", "endpoints") => &endpoints::ENDPOINTS,
        ("", "events") | ("events.k8s.io", "events") => &event::EVENT,
        ("apps", "deployments") => &deployment::DEPLOYMENT,
        ("apps", "replicasets") => &replicaset::REPLICA_SET,
        ("apps", "statefulsets") => &statefulset::STATEFUL_SET,
        ("apps", "daemonsets") => &daemonset::DAEMON_SET,
        ("batch", "jobs") => &job::JOB,
        ("batch", "cronjobs") => &cronjob::CRON_JOB,
        ("autoscaling", "horizontalpodautoscalers") => &autoscaling::HORIZONTAL_POD_AUTOSCALER,
        ("policy", "poddisruptionbudgets") => &policy::POD_DISRUPTION_BUDGET,
        ("networking.k8s.io", "ingresses") => &networking::INGRESS,
        ("networking.k8s.io", "networkpolicies") => &networking::NETWORK_POLICY,
        ("discovery.k8s.io", "endpointslices") => &discovery::ENDPOINT_SLICE,
        ("rbac.authorization.k8s.io", "rolebindings") => &rbac::ROLE_BINDING,
        ("rbac.authorization.k8s.io", "clusterrolebindings") => &rbac::CLUSTER_ROLE_BINDING,
        ("coordination.k8s.io", "leases") => &coordination::LEASE,
        ("storage.k8s.io", "storageclasses") => &storage::STORAGE_CLASS,
        ("scheduling.k8s.io", "priorityclasses") => &scheduling::PRIORITY_CLASS,
        ("apiregistration.k8s.io", "apiservices") => &apiregistration::API_SERVICE,
        ("certificates.k8s.io", "certificatesigningrequests") => {
            &certificates::CERTIFICATE_SIGNING_REQUEST
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            &crate::crd::strategy::CUSTOM_RESOURCE_DEFINITION
        }
        _ => &GENERIC,
    }
}

/// What every create resets: `status` when a status subresource owns it
/// (unless the kind keeps it), and the first generation.
pub fn base_prepare_for_create<S: Strategy + ?Sized>(s: &S, info: &ResourceInfo, obj: &mut Value) {
    if info.has_subresource("status")
        && !s.keeps_status_on_create()
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    if s.tracks_generation() {
        obj["metadata"]["generation"] = json!(1);
    }
}

/// What every update of the main resource does: the status stays as it was
/// when a status subresource owns it, and the generation moves when the
/// desired state changed.
pub fn base_prepare_for_update<S: Strategy + ?Sized>(
    s: &S,
    info: &ResourceInfo,
    new: &mut Value,
    old: &Value,
) {
    if info.has_subresource("status") {
        match old.get("status") {
            Some(st) => new["status"] = st.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    if s.tracks_generation() {
        let old_gen = old["metadata"]["generation"].as_i64().unwrap_or(0);
        let gen_ = if desired_state_differs(new, old) {
            old_gen + 1
        } else {
            old_gen
        };
        new["metadata"]["generation"] = json!(gen_.max(1));
    }
}

/// Builds the result of a status-subresource update: the old object with
/// only its status replaced (upstream also keeps metadata, bar the
/// resourceVersion used for the precondition).
pub fn prepare_for_status_update(new: &Value, old: &Value) -> Value {
    let mut out = old.clone();
    match new.get("status") {
        Some(s) => out["status"] = s.clone(),
        None => {
            if let Some(o) = out.as_object_mut() {
                o.remove("status");
            }
        }
    }
    out
}

fn desired_state_differs(new: &Value, old: &Value) -> bool {
    let (Some(n), Some(o)) = (new.as_object(), old.as_object()) else {
        return new != old;
    };
    let keys: std::collections::BTreeSet<&String> = n.keys().chain(o.keys()).collect();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
        .any(|k| n.get(k) != o.get(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    fn find(group: &str, version: &str, plural: &str) -> &'static ResourceInfo {
        catalogue::find(group, version, plural).unwrap()
    }

    #[test]
    fn kinds_find_their_strategy() {
        assert_eq!(strategy(find("", "v1", "pods")).name(), "pods");
        assert_eq!(
            strategy(find("apps", "v1", "deployments")).name(),
            "deployments"
        );
        assert_eq!(strategy(find("batch", "v1", "jobs")).name(), "jobs");
        assert_eq!(
            strategy(find("events.k8s.io", "v1", "events")).name(),
            "events"
        );
        assert_eq!(strategy(find("", "v1", "configmaps")).name(), "configmaps");
    }

    #[test]
    fn kinds_without_rules_and_custom_kinds_are_generic() {
        assert_eq!(
            strategy(find("", "v1", "serviceaccounts")).name(),
            "generic"
        );
        let custom = ResourceInfo {
            group: "example.com",
            plural: "widgets",
            ..*find("", "v1", "configmaps")
        };
        let s = strategy(&custom);
        assert_eq!(s.name(), "generic");
        assert!(!s.tracks_generation());
        assert!(s.validate(&json!({"data": {"bad key": "x"}})).is_empty());
    }

    #[test]
    fn the_rest_layer_switches_match_upstream() {
        let creates_on_update: Vec<&str> = catalogue::RESOURCES
            .iter()
            .filter(|i| strategy(i).allow_create_on_update())
            .map(|i| i.plural)
            .collect();
        assert!(
            creates_on_update
                .iter()
                .all(|p| ["endpoints", "events", "leases"].contains(p))
        );
        assert!(creates_on_update.contains(&"leases"));
        assert_eq!(
            strategy(find("apps", "v1", "deployments")).default_scale_replicas(),
            1
        );
        assert_eq!(
            strategy(find("apps", "v1", "replicasets")).default_scale_replicas(),
            0
        );
        assert!(strategy(find("", "v1", "nodes")).keeps_status_on_create());
    }

    #[test]
    fn generation_moves_only_on_spec_change() {
        let info = find("apps", "v1", "deployments");
        let s = strategy(info);
        let old = json!({"metadata": {"generation": 3, "labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut same = json!({"metadata": {"labels": {"a": "c"}}, "spec": {"replicas": 1}, "status": {"replicas": 5}});
        s.prepare_for_update(info, &mut same, &old, None);
        assert_eq!(same["metadata"]["generation"], 3);
        assert_eq!(
            same["status"]["replicas"], 1,
            "status is owned by the subresource"
        );
        let mut changed = json!({"metadata": {}, "spec": {"replicas": 2}});
        s.prepare_for_update(info, &mut changed, &old, None);
        assert_eq!(changed["metadata"]["generation"], 4);
    }
}
