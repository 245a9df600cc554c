//! A pod's own subresources: `ephemeralcontainers`, which changes nothing
//! but the ephemeral containers and may only add them (upstream's
//! `ValidatePodEphemeralContainersUpdate`), and `resize` (in-place pod
//! resize), which changes only the CPU and memory requests and limits of
//! a pod's containers and never its QoS class (upstream's
//! `ValidatePodResize`).

use serde_json::Value;

use crate::registry::common::{FieldError, forbidden, without_nulls};

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

/// Upstream's `ValidatePodResize`: only CPU and memory change, never the
/// QoS class.
pub(crate) fn validate_resize(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
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
    if super::pod::qos_class(new) != super::pod::qos_class(old) {
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

/// Upstream's `ValidatePodEphemeralContainersUpdate`: ephemeral containers
/// are only added, each named uniquely and without what a never-restarted,
/// never-probed container cannot have.
pub(crate) fn validate_ephemeral_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::ResourceInfo;
    use crate::registry::Strategy;
    use crate::registry::core::pod::POD;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        crate::catalogue::find("", "v1", "pods").unwrap()
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
}
