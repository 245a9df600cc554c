//! Pods (upstream's `pkg/registry/core/pod/strategy.go`): the pod spec
//! defaults and checks, the Pending status and QoS class a new pod gets,
//! and what an update may change: the spec is immutable but for container
//! images, a lowered or newly set `activeDeadlineSeconds`, added
//! tolerations, removed scheduling gates and a negative grace period set
//! to 1 (upstream's `ValidatePodUpdate`). Ephemeral containers and in-place
//! resize have their own subresources ([`super::pod_subresources`]).

use serde_json::{Value, json};

use super::pod_subresources::{
    ephemeral_containers_update, resize_update, validate_ephemeral_update, validate_resize,
};
use super::podspec::{default_pod_spec, validate_pod_spec};
use crate::catalogue::ResourceInfo;
use crate::registry::common::{FieldError, forbidden, spec_of, without_nulls};
use crate::registry::{Strategy, base_prepare_for_create, base_prepare_for_update};

/// Upstream's message for a forbidden pod spec change (kubectl shows it).
pub const POD_SPEC_IMMUTABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The pod strategy.
pub struct Pod;

/// The one [`Pod`] strategy.
pub static POD: Pod = Pod;

impl Strategy for Pod {
    fn name(&self) -> &'static str {
        "pods"
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = spec_of(obj) {
            default_pod_spec(spec);
        }
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, info: &ResourceInfo, obj: &mut Value) {
        base_prepare_for_create(self, info, obj);
        // The QoS class is that of the spec as written, before defaulting
        // copies limits into requests.
        let qos = qos_class(&obj["spec"]);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }

    /// A pod's ephemeral containers stay as they were: only their
    /// subresource changes them (upstream's pod strategy does the same).
    fn prepare_for_update(
        &self,
        info: &ResourceInfo,
        new: &mut Value,
        old: &Value,
        _sub: Option<&str>,
    ) {
        match old["spec"].get("ephemeralContainers") {
            Some(v) => new["spec"]["ephemeralContainers"] = v.clone(),
            None => {
                if let Some(s) = new["spec"].as_object_mut() {
                    s.remove("ephemeralContainers");
                }
            }
        }
        base_prepare_for_update(self, info, new, old);
    }

    fn prepare_for_subresource_update(
        &self,
        sub: Option<&str>,
        new: &Value,
        old: &Value,
    ) -> Option<Value> {
        match sub {
            Some("ephemeralcontainers") => Some(ephemeral_containers_update(new, old)),
            Some("resize") => Some(resize_update(new, old)),
            _ => None,
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_spec(&obj["spec"], "spec", &mut errs);
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value, sub: Option<&str>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        match sub {
            None => pod_spec_update(&new["spec"], &old["spec"], &mut errs),
            Some("ephemeralcontainers") => {
                validate_ephemeral_update(&new["spec"], &old["spec"], &mut errs)
            }
            Some("resize") => validate_resize(&new["spec"], &old["spec"], &mut errs),
            _ => {}
        }
        errs
    }

    /// Pods on a node terminate gracefully (the kubelet finishes the
    /// delete); unscheduled or finished pods go at once.
    fn graceful_delete_seconds(&self, obj: &Value, requested: Option<i64>) -> i64 {
        let scheduled = obj["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if !scheduled || finished {
            return 0;
        }
        let g = requested
            .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        // Upstream turns a requested 0 into 1 unless forced, so the kubelet
        // still gets to kill the containers; a forced delete removes at once.
        g.max(0)
    }
}

fn pod_spec_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let mut n = without_nulls(new);
    let old = &without_nulls(old);
    // Images may change.
    for list in ["containers", "initContainers"] {
        // (get_mut: indexing a missing key mutably would insert a null.)
        if let (Some(nl), Some(ol)) = (
            n.get_mut(list).and_then(Value::as_array_mut),
            old[list].as_array(),
        ) {
            for (nc, oc) in nl.iter_mut().zip(ol) {
                if nc["name"] == oc["name"] {
                    nc["image"] = oc["image"].clone();
                }
            }
        }
    }
    // activeDeadlineSeconds may be set, or lowered; never raised or removed.
    let (na, oa) = (
        n["activeDeadlineSeconds"].as_i64(),
        old["activeDeadlineSeconds"].as_i64(),
    );
    match (oa, na) {
        (None, Some(v)) if v > 0 => copy(&mut n, old, "activeDeadlineSeconds"),
        (Some(o), Some(v)) if v > 0 && v <= o => copy(&mut n, old, "activeDeadlineSeconds"),
        _ => {}
    }
    // Tolerations may be added to.
    let ot = old["tolerations"].as_array().cloned().unwrap_or_default();
    let nt = n["tolerations"].as_array().cloned().unwrap_or_default();
    if ot.iter().all(|t| nt.contains(t)) {
        copy(&mut n, old, "tolerations");
    }
    // Scheduling gates may be removed.
    let og = old["schedulingGates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ng = n["schedulingGates"].as_array().cloned().unwrap_or_default();
    if ng.iter().all(|g| og.contains(g)) {
        copy(&mut n, old, "schedulingGates");
    }
    // A negative grace period may become 1.
    if old["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
        && n["terminationGracePeriodSeconds"].as_i64() == Some(1)
    {
        copy(&mut n, old, "terminationGracePeriodSeconds");
    }
    if n != *old {
        let changed = changed_fields(&n, old);
        errs.push(forbidden(
            "spec",
            format!("{POD_SPEC_IMMUTABLE}\n  changed: {}", changed.join(", ")),
        ));
    }
}

fn copy(n: &mut Value, old: &Value, key: &str) {
    match old.get(key) {
        Some(v) => n[key] = v.clone(),
        None => {
            if let Some(o) = n.as_object_mut() {
                o.remove(key);
            }
        }
    }
}

/// The spec keys that differ, to say what was refused.
fn changed_fields(n: &Value, o: &Value) -> Vec<String> {
    let mut keys: Vec<&String> = n
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .chain(o.as_object().into_iter().flat_map(|m| m.keys()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| n.get(k.as_str()) != o.get(k.as_str()))
        .map(|k| format!("spec.{k}"))
        .collect()
}

/// Upstream's QoS class of a pod spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any_set = false;
    let mut guaranteed = true;
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten();
    for c in containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        for res in ["cpu", "memory"] {
            let r = req.and_then(|m| m.get(res)).filter(|v| !is_zero(v));
            let l = lim.and_then(|m| m.get(res)).filter(|v| !is_zero(v));
            if r.is_some() || l.is_some() {
                any_set = true;
            }
            match (r, l) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn is_zero(v: &Value) -> bool {
    matches!(v.as_str(), Some("0")) || v.as_i64() == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    fn validate(_info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
        POD.validate(obj)
    }

    fn pods() -> &'static ResourceInfo {
        catalogue::find("", "v1", "pods").unwrap()
    }

    fn validate_update(
        _info: &ResourceInfo,
        new: &Value,
        old: &Value,
        sub: Option<&str>,
    ) -> Vec<FieldError> {
        POD.validate_update(new, old, sub)
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn seccomp_profiles_follow_upstream_rules() {
        let info = pods();
        let pod = |sp: Value| {
            json!({"spec": {"securityContext": {"seccompProfile": sp},
                "containers": [{"name": "c", "image": "i",
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}]}})
        };
        assert!(validate(info, &pod(json!({"type": "RuntimeDefault"}))).is_empty());
        assert!(
            validate(
                info,
                &pod(json!({"type": "Localhost", "localhostProfile": "p/a.json"}))
            )
            .is_empty()
        );
        let e = validate(info, &pod(json!({"type": "Localhost"})));
        assert_eq!(
            e[0].field,
            "spec.securityContext.seccompProfile.localhostProfile"
        );
        assert_eq!(e[0].reason, "FieldValueRequired");
        let e = validate(info, &pod(json!({"type": "Bogus"})));
        assert_eq!(e[0].field, "spec.securityContext.seccompProfile.type");
        assert_eq!(e[0].reason, "FieldValueNotSupported");
        let e = validate(
            info,
            &pod(json!({"type": "Unconfined", "localhostProfile": "x"})),
        );
        assert_eq!(e[0].reason, "FieldValueInvalid");
        let e = validate(
            info,
            &pod(json!({"type": "Localhost", "localhostProfile": "../x"})),
        );
        assert!(e[0].message.contains("'..'"), "{e:?}");
        let bad_container = json!({"spec": {"containers": [{"name": "c", "image": "i",
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "/abs"}}}]}});
        let e = validate(info, &bad_container);
        assert_eq!(
            e[0].field,
            "spec.containers[0].securityContext.seccompProfile.localhostProfile"
        );
    }

    #[test]
    fn pod_hostnames_and_subdomains_are_dns_labels() {
        let info = pods();
        let pod =
            |k: &str, v: &str| json!({"spec": {k: v, "containers": [{"name": "c", "image": "i"}]}});
        assert!(validate(info, &pod("hostname", "web-0")).is_empty());
        assert!(validate(info, &pod("subdomain", "db")).is_empty());
        let e = validate(info, &pod("hostname", &"é".repeat(32)));
        assert_eq!(e[0].field, "spec.hostname");
        assert_eq!(e[0].reason, "FieldValueInvalid");
        let e = validate(info, &pod("subdomain", "Bad_Name"));
        assert_eq!(e[0].field, "spec.subdomain");
        let e = validate(info, &pod("hostname", &"a".repeat(64)));
        assert!(e[0].message.contains("63"), "{e:?}");
    }

    #[test]
    fn pod_without_image_is_invalid() {
        let info = pods();
        let errs = validate(info, &json!({"spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(
            errs,
            vec![crate::registry::common::required(
                "spec.containers[0].image"
            )]
        );
    }

    #[test]
    fn volumes_have_unique_names_and_one_source() {
        let pods = pods();
        let pod = json!({"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "x"}],
        "volumes": [
            {"name": "a", "emptyDir": {}},
            {"name": "a", "emptyDir": {}},
            {"name": "b", "emptyDir": {}, "hostPath": {"path": "/x"}},
            {"name": "c"},
        ]}});
        let errs = validate(pods, &pod);
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("spec.volumes[1].name", "Duplicate value: \"a\""),
                (
                    "spec.volumes[2].hostPath",
                    "Forbidden: may not specify more than 1 volume type"
                ),
                (
                    "spec.volumes[3]",
                    "Required value: must specify a volume type"
                ),
            ]
        );
    }

    #[test]
    fn pod_specs_change_only_where_upstream_allows() {
        let old = json!({"spec": {
            "containers": [{"name": "a", "image": "x:1", "command": ["sleep"]}],
            "tolerations": [{"key": "k", "operator": "Exists"}]
        }});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "j", "operator": "Exists"}));
        let errs = validate_update(pods(), &new, &old, None);
        assert!(errs.is_empty(), "{errs:?}");

        new["spec"]["containers"][0]["command"] = json!(["true"]);
        let errs = validate_update(pods(), &new, &old, None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
        ));
        assert!(
            errs[0].message.contains("spec.containers"),
            "{}",
            errs[0].message
        );

        let mut fewer = old.clone();
        fewer["spec"]["tolerations"] = json!([]);
        assert_eq!(validate_update(pods(), &fewer, &old, None).len(), 1);
    }
}
