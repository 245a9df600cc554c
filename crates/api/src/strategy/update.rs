//! What an update may change, beyond what a create must satisfy:
//!
//! - a pod's spec is immutable but for container images, a lowered or newly
//!   set `activeDeadlineSeconds`, added tolerations, removed scheduling
//!   gates and a negative grace period set to 1 (upstream's
//!   `ValidatePodUpdate`); its ephemeral containers change only through the
//!   `ephemeralcontainers` subresource, which changes nothing else and may
//!   only add them (upstream's `ValidatePodEphemeralContainersUpdate`);
//! - the `resize` subresource (in-place pod resize) changes only the CPU
//!   and memory requests and limits of a pod's containers and never its
//!   QoS class (upstream's `ValidatePodResize`);
//! - workload selectors are immutable (apps/v1 and Jobs), as is a Job's
//!   pod template except while the Job is suspended and never started.

use serde_json::Value;

use super::validate::FieldError;
use crate::catalogue::ResourceInfo;

/// Upstream's message for a forbidden pod spec change (kubectl shows it).
pub const POD_SPEC_IMMUTABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn forbidden(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {}", message.into()),
    }
}

fn immutable(field: impl Into<String>, value: &Value) -> FieldError {
    let v = match value {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    };
    FieldError {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {v}: field is immutable"),
    }
}

/// Prepares an update of the main resource: a pod's ephemeral containers
/// stay as they were (upstream's pod strategy does the same).
pub fn prepare(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if info.group.is_empty() && info.plural == "pods" {
        match old["spec"].get("ephemeralContainers") {
            Some(v) => new["spec"]["ephemeralContainers"] = v.clone(),
            None => {
                if let Some(s) = new["spec"].as_object_mut() {
                    s.remove("ephemeralContainers");
                }
            }
        }
    }
}

/// The object an `ephemeralcontainers` update stores: the old pod with
/// only `spec.ephemeralContainers` taken from the request.
pub fn ephemeral_containers_update(new: &Value, old: &Value) -> Value {
    let mut out = old.clone();
    match new["spec"].get("ephemeralContainers") {
        Some(v) if !v.is_null() => out["spec"]["ephemeralContainers"] = v.clone(),
        _ => {
            if let Some(s) = out["spec"].as_object_mut() {
                s.remove("ephemeralContainers");
            }
        }
    }
    out
}

/// The object a `resize` update stores: the old pod with only its
/// containers' `resources` (and `resizePolicy`) taken from the request.
pub fn resize_update(new: &Value, old: &Value) -> Value {
    let mut out = old.clone();
    for list in ["containers", "initContainers"] {
        let Some(cs) = out
            .get_mut("spec")
            .and_then(|s| s.get_mut(list))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs.iter_mut() {
            let Some(n) = new["spec"][list]
                .as_array()
                .and_then(|l| l.iter().find(|x| x["name"] == c["name"]))
            else {
                continue;
            };
            for key in ["resources", "resizePolicy"] {
                match n.get(key) {
                    Some(v) if !v.is_null() => c[key] = v.clone(),
                    _ => {}
                }
            }
        }
    }
    out
}

/// Checks `new` against the `old` it replaces; `sub` is the subresource
/// written, if any.
pub fn validate_update(
    info: &ResourceInfo,
    new: &Value,
    old: &Value,
    sub: Option<&str>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match (info.group, info.plural, sub) {
        ("", "pods", None) => pod_spec_update(&new["spec"], &old["spec"], &mut errs),
        ("", "pods", Some("ephemeralcontainers")) => {
            ephemeral_update(&new["spec"], &old["spec"], &mut errs)
        }
        ("", "pods", Some("resize")) => pod_resize(&new["spec"], &old["spec"], &mut errs),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets", None)
            if new["spec"]["selector"] != old["spec"]["selector"] =>
        {
            errs.push(immutable("spec.selector", &new["spec"]["selector"]));
        }
        ("batch", "jobs", None) => job_update(new, old, &mut errs),
        ("", "nodes", None) => node_update(&new["spec"], &old["spec"], &mut errs),
        _ => {}
    }
    errs
}

/// A node's pod ranges are set once, by its agent or the node IPAM
/// controller (upstream's `ValidateNodeUpdate`): moving them would strand
/// the pods already addressed from them.
fn node_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    const MSG: &str = "node updates may not change podCIDR except from \"\" to valid";
    let set = |v: &Value| v.as_str().filter(|s| !s.is_empty()).is_some();
    if set(&old["podCIDR"]) && new["podCIDR"] != old["podCIDR"] {
        errs.push(forbidden("spec.podCIDR", MSG));
    }
    let old_list = old["podCIDRs"].as_array().filter(|a| !a.is_empty());
    if old_list.is_some() && new["podCIDRs"].as_array() != old_list {
        errs.push(forbidden("spec.podCIDRs", MSG));
    }
}

/// A spec without null fields (a patch may leave `"initContainers": null`
/// where the stored spec has no key: the same spec).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
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

fn pod_resize(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    // Anything but CPU and memory stays as it was.
    let others = |spec: &Value| -> Vec<Value> {
        ["containers", "initContainers"]
            .iter()
            .flat_map(|l| spec[*l].as_array().cloned().unwrap_or_default())
            .map(|c| {
                let mut r = c["resources"].clone();
                for part in ["requests", "limits"] {
                    if let Some(m) = r.get_mut(part).and_then(Value::as_object_mut) {
                        m.remove("cpu");
                        m.remove("memory");
                    }
                }
                without_nulls(&r)
            })
            .collect()
    };
    if others(new) != others(old) {
        errs.push(forbidden(
            "spec",
            "only cpu and memory resources are mutable",
        ));
    }
    // Per container: a regular init container's resources are fixed (only
    // sidecars resize), and no request or limit may be removed.
    for list in ["containers", "initContainers"] {
        let olds = old[list].as_array().cloned().unwrap_or_default();
        for (ix, oc) in olds.iter().enumerate() {
            let Some(nc) = new[list]
                .as_array()
                .and_then(|l| l.iter().find(|c| c["name"] == oc["name"]))
            else {
                continue;
            };
            let path = format!("spec.{list}[{ix}].resources");
            let (or, nr) = (
                without_nulls(&oc["resources"]),
                without_nulls(&nc["resources"]),
            );
            if list == "initContainers" && oc["restartPolicy"] != "Always" {
                if or != nr {
                    errs.push(forbidden(
                        &path,
                        "resources for non-sidecar init containers are immutable",
                    ));
                }
                continue;
            }
            for kind in ["requests", "limits"] {
                let had = or[kind].as_object().cloned().unwrap_or_default();
                if had.keys().any(|k| nr[kind].get(k.as_str()).is_none()) {
                    errs.push(forbidden(
                        format!("{path}.{kind}"),
                        format!("resource {kind} cannot be removed"),
                    ));
                }
            }
        }
    }
    if super::qos_class(new) != super::qos_class(old) {
        errs.push(forbidden(
            "",
            "Pod QOS Class may not change as a result of resizing",
        ));
    }
}

/// Fields an ephemeral container may not set (upstream forbids what makes
/// no sense for a container that is never restarted nor probed).
const EPHEMERAL_FORBIDDEN: &[&str] = &[
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

fn ephemeral_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let ne = new["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let oe = old["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for o in &oe {
        let name = o["name"].as_str().unwrap_or("");
        match ne.iter().find(|c| c["name"] == name) {
            None => errs.push(forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers \"{name}\" may not be removed\n"),
            )),
            Some(c) if c != o => errs.push(forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers \"{name}\" may not be changed\n"),
            )),
            Some(_) => {}
        }
    }
    let mut names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| old[*l].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    for (i, c) in ne.iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{i}]");
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError {
                reason: "FieldValueRequired",
                field: format!("{path}.name"),
                message: "Required value".into(),
            });
        } else if names.iter().any(|n| n == name) {
            errs.push(FieldError {
                reason: "FieldValueDuplicate",
                field: format!("{path}.name"),
                message: format!("Duplicate value: \"{name}\""),
            });
        } else {
            names.push(name.to_string());
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError {
                reason: "FieldValueRequired",
                field: format!("{path}.image"),
                message: "Required value".into(),
            });
        }
        for f in EPHEMERAL_FORBIDDEN {
            let set = match &c[*f] {
                Value::Null => false,
                Value::Object(o) => !o.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            if set {
                errs.push(forbidden(
                    format!("{path}.{f}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        if let Some(t) = c["targetContainerName"].as_str()
            && !old["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(old["initContainers"].as_array().into_iter().flatten())
                .any(|x| x["name"] == t)
        {
            errs.push(FieldError {
                reason: "FieldValueNotFound",
                field: format!("{path}.targetContainerName"),
                message: format!("Not found: \"{t}\""),
            });
        }
    }
}

fn job_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    // The selector may be set once (defaulting), never changed after.
    if !old["spec"]["selector"].is_null() && new["spec"]["selector"] != old["spec"]["selector"] {
        errs.push(immutable("spec.selector", &new["spec"]["selector"]));
    }
    // The template may change only while suspended and never started
    // (upstream's mutable scheduling directives, widened to the template).
    let suspended = old["spec"]["suspend"] == true && old["status"]["startTime"].is_null();
    let (mut nt, mut ot) = (
        new["spec"]["template"].clone(),
        old["spec"]["template"].clone(),
    );
    // Labels the controller adds when it defaults the selector.
    for t in [&mut nt, &mut ot] {
        if let Some(l) = t
            .get_mut("metadata")
            .and_then(|m| m.get_mut("labels"))
            .and_then(Value::as_object_mut)
        {
            for k in [
                "controller-uid",
                "batch.kubernetes.io/controller-uid",
                "job-name",
                "batch.kubernetes.io/job-name",
            ] {
                l.remove(k);
            }
        }
    }
    if !suspended && nt != ot {
        errs.push(immutable("spec.template", &Value::String("…".into())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        crate::catalogue::find("", "v1", "pods").unwrap()
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

    #[test]
    fn resizes_change_cpu_and_memory_and_keep_the_qos_class() {
        let old = json!({"spec": {"containers": [{
            "name": "c", "image": "x",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
        }]}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("200m");
        new["spec"]["containers"][0]["image"] = json!("ignored");
        let stored = resize_update(&new, &old);
        assert_eq!(stored["spec"]["containers"][0]["image"], "x");
        assert_eq!(
            stored["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "200m"
        );
        let sub = Some("resize");
        assert!(validate_update(pods(), &stored, &old, sub).is_empty());

        let mut eph = new.clone();
        eph["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("1Gi");
        let errs = validate_update(pods(), &resize_update(&eph, &old), &old, sub);
        assert_eq!(
            errs[0].message,
            "Forbidden: only cpu and memory resources are mutable"
        );

        let mut guaranteed = old.clone();
        guaranteed["spec"]["containers"][0]["resources"] = json!({
            "requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}
        });
        let errs = validate_update(pods(), &resize_update(&guaranteed, &old), &old, sub);
        assert_eq!(
            errs[0].message,
            "Forbidden: Pod QOS Class may not change as a result of resizing"
        );

        // No request or limit may be removed.
        let mut removed = old.clone();
        removed["spec"]["containers"][0]["resources"]["limits"] = json!({"memory": null});
        let errs = validate_update(pods(), &resize_update(&removed, &old), &old, sub);
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.containers[0].resources.limits"
                    && e.message == "Forbidden: resource limits cannot be removed"),
            "{errs:?}"
        );
    }

    #[test]
    fn only_sidecar_init_containers_resize() {
        let old = json!({"spec": {
            "initContainers": [
                {"name": "setup", "image": "x", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "side", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}
            ],
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m"}}}]
        }});
        let sub = Some("resize");
        let mut side = old.clone();
        side["spec"]["initContainers"][1]["resources"]["requests"]["cpu"] = json!("300m");
        let stored = resize_update(&side, &old);
        assert_eq!(
            stored["spec"]["initContainers"][1]["resources"]["requests"]["cpu"],
            "300m"
        );
        assert!(validate_update(pods(), &stored, &old, sub).is_empty());
        let mut setup = old.clone();
        setup["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = json!("300m");
        let errs = validate_update(pods(), &resize_update(&setup, &old), &old, sub);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.initContainers[0].resources");
        assert_eq!(
            errs[0].message,
            "Forbidden: resources for non-sidecar init containers are immutable"
        );
    }

    #[test]
    fn ephemeral_containers_are_only_added() {
        let old = json!({"spec": {
            "containers": [{"name": "app", "image": "x"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]
        }});
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "dbg2", "image": "busybox", "targetContainerName": "app"}));
        let sub = Some("ephemeralcontainers");
        assert!(validate_update(pods(), &new, &old, sub).is_empty());

        let removed = json!({"spec": {"containers": old["spec"]["containers"].clone()}});
        let errs = validate_update(pods(), &removed, &old, sub);
        assert!(
            errs[0].message.contains("\"dbg\" may not be removed"),
            "{errs:?}"
        );

        let bad = json!({"spec": {"ephemeralContainers": [
            {"name": "dbg", "image": "busybox"},
            {"name": "app", "image": "", "ports": [{"containerPort": 80}], "targetContainerName": "nope"}
        ]}});
        let fields: Vec<String> = validate_update(pods(), &bad, &old, sub)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.ephemeralContainers[1].name",
                "spec.ephemeralContainers[1].image",
                "spec.ephemeralContainers[1].ports",
                "spec.ephemeralContainers[1].targetContainerName",
            ]
        );
        // Only the ephemeral containers come from the request.
        let mut sneaky = new.clone();
        sneaky["spec"]["containers"][0]["image"] = json!("evil");
        let stored = ephemeral_containers_update(&sneaky, &old);
        assert_eq!(stored["spec"]["containers"][0]["image"], "x");
        assert_eq!(stored["spec"]["ephemeralContainers"][1]["name"], "dbg2");
    }

    #[test]
    fn a_node_pod_range_is_set_once() {
        let nodes = crate::catalogue::find("", "v1", "nodes").unwrap();
        let empty = json!({"spec": {}});
        let set = json!({"spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}});
        assert!(validate_update(nodes, &set, &empty, None).is_empty());
        assert!(validate_update(nodes, &set, &set, None).is_empty());
        let moved = json!({"spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}});
        let errs = validate_update(nodes, &moved, &set, None);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.podCIDR", "spec.podCIDRs"]);
        assert!(
            errs[0]
                .message
                .contains("may not change podCIDR except from \"\" to valid")
        );
    }
}
