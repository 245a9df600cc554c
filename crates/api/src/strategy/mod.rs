//! Per-kind strategies: what create and update may change, how objects are
//! defaulted and validated, when `metadata.generation` moves. One generic
//! entry point per step, dispatching on the kind, so the REST layer stays
//! kind-agnostic.

pub mod defaults;
pub mod typed;
pub mod update;
pub mod validate;

use serde_json::{Value, json};

use crate::catalogue::ResourceInfo;

/// Whether the kind tracks spec changes in `metadata.generation`.
pub fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.plural),
        (
            "apps",
            "deployments" | "replicasets" | "statefulsets" | "daemonsets"
        ) | ("batch", "jobs" | "cronjobs")
            | ("autoscaling", "horizontalpodautoscalers")
            | ("policy", "poddisruptionbudgets")
            | ("", "replicationcontrollers")
            | ("networking.k8s.io", "ingresses" | "networkpolicies")
            | ("", "pods")
    )
}

/// Whether writes to the main resource ignore `status` (it has a status
/// subresource that owns it).
pub fn status_is_subresource(info: &ResourceInfo) -> bool {
    info.has_subresource("status")
}

/// Resets what a create may not set, as upstream's PrepareForCreate does.
pub fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
    if status_is_subresource(info) {
        let keep_status = matches!(info.plural, "nodes");
        if !keep_status && let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    if info.plural == "pods" && info.group.is_empty() {
        let qos = qos_class(&obj["spec"]);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    if tracks_generation(info) {
        obj["metadata"]["generation"] = json!(1);
    }
    if info.plural == "jobs" && info.group == "batch" {
        generate_job_selector(obj);
    }
}

/// Upstream's Job strategy: unless `spec.manualSelector` is true, the pods
/// of a Job are selected by the Job's uid, and the template carries the
/// uid and job-name labels (new and legacy names).
fn generate_job_selector(obj: &mut Value) {
    if obj["spec"]["manualSelector"].as_bool() == Some(true) {
        return;
    }
    let uid = obj["metadata"]["uid"].clone();
    let name = obj["metadata"]["name"].clone();
    let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    if let Some(l) = labels.as_object_mut() {
        for (k, v) in [
            ("controller-uid", &uid),
            ("batch.kubernetes.io/controller-uid", &uid),
            ("job-name", &name),
            ("batch.kubernetes.io/job-name", &name),
        ] {
            l.entry(k).or_insert_with(|| v.clone());
        }
    }
    let ml = &mut obj["spec"]["selector"]["matchLabels"];
    if !ml.is_object() {
        *ml = json!({});
    }
    if let Some(m) = ml.as_object_mut() {
        m.entry("batch.kubernetes.io/controller-uid")
            .or_insert_with(|| uid.clone());
    }
}

/// Carries over what an update of the main resource may not change (status
/// when a status subresource exists) and bumps the generation when the
/// object's desired state changed.
pub fn prepare_for_update(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if status_is_subresource(info) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    bump_generation(info, new, old);
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

fn bump_generation(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if !tracks_generation(info) {
        return;
    }
    let old_gen = old["metadata"]["generation"].as_i64().unwrap_or(0);
    let gen_ = if desired_state_differs(new, old) {
        old_gen + 1
    } else {
        old_gen
    };
    new["metadata"]["generation"] = json!(gen_.max(1));
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

    #[test]
    fn jobs_get_a_uid_selector_unless_manual() {
        let info = catalogue::find("batch", "v1", "jobs").unwrap();
        let mut j = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}});
        prepare_for_create(info, &mut j);
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        let l = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(l["app"], "x");
        assert_eq!(l["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(l["controller-uid"], "u1");
        let mut manual = json!({"metadata": {"name": "m", "uid": "u2"}, "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        prepare_for_create(info, &mut manual);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
    }

    #[test]
    fn generation_moves_only_on_spec_change() {
        let info = catalogue::find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"generation": 3, "labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut same = json!({"metadata": {"labels": {"a": "c"}}, "spec": {"replicas": 1}, "status": {"replicas": 5}});
        prepare_for_update(info, &mut same, &old);
        assert_eq!(same["metadata"]["generation"], 3);
        assert_eq!(
            same["status"]["replicas"], 1,
            "status is owned by the subresource"
        );
        let mut changed = json!({"metadata": {}, "spec": {"replicas": 2}});
        prepare_for_update(info, &mut changed, &old);
        assert_eq!(changed["metadata"]["generation"], 4);
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
}
