//! The pod spec rules pods and every pod template share (Deployments,
//! Jobs, ReplicationControllers, PodTemplates, …): upstream's
//! `SetDefaults_PodSpec` and the container and volume defaults under it,
//! and `ValidatePodSpec`'s checks that r8s enforces.

use serde_json::{Map, Value, json};

use crate::registry::common::{
    FieldError, child, duplicate, for_each_in, invalid, is_empty, not_supported, required,
    set_default,
};

/// Defaults the pod spec of `spec.template` (workload specs).
pub(crate) fn default_template_in(spec: &mut Map<String, Value>) {
    if let Some(t) = child(spec, "template")
        && let Some(s) = child(t, "spec")
    {
        default_pod_spec(s);
    }
}

/// Upstream's SetDefaults_PodSpec and the container defaults under it.
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for key in ["containers", "initContainers"] {
        for_each_in(spec, key, |c| container(c, host_network));
    }
    for_each_in(spec, "ephemeralContainers", |c| container(c, host_network));
    for_each_in(spec, "volumes", volume);
}

fn container(c: &mut Map<String, Value>, host_network: bool) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "resources", json!({}));
    for_each_in(c, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        if host_network && let Some(cp) = p.get("containerPort").cloned() {
            set_default(p, "hostPort", cp);
        }
    });
    for_each_in(c, "env", |e| {
        if let Some(Value::Object(vf)) = e.get_mut("valueFrom")
            && let Some(Value::Object(fr)) = vf.get_mut("fieldRef")
        {
            set_default(fr, "apiVersion", json!("v1"));
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(Value::Object(h)) = p.get_mut("httpGet") {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
    // Limits without requests mean requests equal to the limits.
    if let Some(Value::Object(res)) = c.get_mut("resources")
        && let Some(Value::Object(limits)) = res.get("limits").cloned()
        && let Some(req) = child(res, "requests")
    {
        for (k, v) in limits {
            req.entry(k).or_insert(v);
        }
    }
}

fn volume(v: &mut Map<String, Value>) {
    // A volume that names no source is an emptyDir (upstream's
    // SetDefaults_Volume).
    if !v.iter().any(|(k, x)| k != "name" && !x.is_null()) {
        v.insert("emptyDir".into(), json!({}));
    }
    for (key, mode) in [
        ("secret", 420),
        ("configMap", 420),
        ("projected", 420),
        ("downwardAPI", 420),
    ] {
        if let Some(Value::Object(src)) = v.get_mut(key) {
            set_default(src, "defaultMode", json!(mode));
        }
    }
    if let Some(Value::Object(hp)) = v.get_mut("hostPath") {
        set_default(hp, "type", json!(""));
    }
}

/// Whether an image reference pulls `:latest` (explicitly or by omission).
pub fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a
    // registry port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// A pod template at `path`: required, with a valid pod spec.
pub(crate) fn validate_pod_template(t: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if t.is_null() {
        errs.push(required(path));
        return;
    }
    validate_pod_spec(&t["spec"], &format!("{path}.spec"), errs);
}

/// A pod spec at `path`.
pub(crate) fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec["containers"].as_array();
    if containers.is_none_or(|c| c.is_empty()) {
        errs.push(required(format!("{path}.containers")));
    }
    // The pod's hostname and subdomain become a kernel hostname and a DNS
    // name: DNS labels, as upstream checks them.
    for key in ["hostname", "subdomain"] {
        if let Some(v) = spec[key].as_str().filter(|v| !v.is_empty()) {
            for msg in crate::validation::is_dns1123_label(v) {
                errs.push(invalid(format!("{path}.{key}"), &spec[key], &msg));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for key in ["initContainers", "containers"] {
        for (i, c) in spec[key].as_array().into_iter().flatten().enumerate() {
            let p = format!("{path}.{key}[{i}]");
            let name = &c["name"];
            match name.as_str() {
                None | Some("") => errs.push(required(format!("{p}.name"))),
                Some(n) => {
                    if !crate::validation::is_dns1123_label(n).is_empty() {
                        errs.push(invalid(
                            format!("{p}.name"),
                            name,
                            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                        ));
                    } else if !seen.insert(n.to_string()) {
                        errs.push(duplicate(format!("{p}.name"), n));
                    }
                }
            }
            if is_empty(&c["image"]) {
                errs.push(required(format!("{p}.image")));
            }
            seccomp_profile(
                &c["securityContext"]["seccompProfile"],
                &format!("{p}.securityContext.seccompProfile"),
                errs,
            );
            for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let cp = port["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&cp) {
                    errs.push(invalid(
                        format!("{p}.ports[{j}].containerPort"),
                        &port["containerPort"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    volumes(spec, path, errs);
    seccomp_profile(
        &spec["securityContext"]["seccompProfile"],
        &format!("{path}.securityContext.seccompProfile"),
        errs,
    );
    let rp = &spec["restartPolicy"];
    if !rp.is_null() && !matches!(rp.as_str(), Some("Always" | "OnFailure" | "Never")) {
        errs.push(not_supported(
            format!("{path}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
}

/// Each volume has a unique DNS-label name and exactly one source, as
/// upstream's `ValidateVolumes`.
fn volumes(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let mut seen = std::collections::HashSet::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        match v["name"].as_str() {
            None | Some("") => errs.push(required(format!("{p}.name"))),
            Some(n) if !crate::validation::is_dns1123_label(n).is_empty() => {
                for msg in crate::validation::is_dns1123_label(n) {
                    errs.push(invalid(format!("{p}.name"), &v["name"], &msg));
                }
            }
            Some(n) if !seen.insert(n.to_string()) => errs.push(duplicate(format!("{p}.name"), n)),
            Some(_) => {}
        }
        let sources: Vec<&String> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, x)| *k != "name" && !x.is_null())
            .map(|(k, _)| k)
            .collect();
        match sources.as_slice() {
            [] => errs.push(FieldError {
                reason: "FieldValueRequired",
                field: p,
                message: "Required value: must specify a volume type".into(),
            }),
            [_] => {}
            [_, more @ ..] => {
                for k in more {
                    errs.push(FieldError {
                        reason: "FieldValueForbidden",
                        field: format!("{p}.{k}"),
                        message: "Forbidden: may not specify more than 1 volume type".into(),
                    });
                }
            }
        }
    }
}

/// A pod's or container's `seccompProfile`, with upstream's rules: a type
/// from the three known ones, and a local profile path exactly when the
/// type is `Localhost`, relative and without `..`.
fn seccomp_profile(sp: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if sp.is_null() {
        return;
    }
    let ty = &sp["type"];
    let local = &sp["localhostProfile"];
    match ty.as_str() {
        None | Some("") => errs.push(required(format!("{path}.type"))),
        Some("Localhost") => match local.as_str() {
            None | Some("") => errs.push(FieldError {
                reason: "FieldValueRequired",
                field: format!("{path}.localhostProfile"),
                message: "Required value: must be set when seccomp type is Localhost".into(),
            }),
            Some(p) if p.starts_with('/') => errs.push(invalid(
                format!("{path}.localhostProfile"),
                local,
                "must be a relative path",
            )),
            Some(p) if p.split('/').any(|part| part == "..") => errs.push(invalid(
                format!("{path}.localhostProfile"),
                local,
                "must not contain '..'",
            )),
            Some(_) => {}
        },
        Some("RuntimeDefault" | "Unconfined") => {
            if !local.is_null() {
                errs.push(invalid(
                    format!("{path}.localhostProfile"),
                    local,
                    "can only be set when seccomp type is Localhost",
                ));
            }
        }
        Some(_) => errs.push(not_supported(
            format!("{path}.type"),
            ty,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_tag_detection() {
        assert!(image_tag_is_latest("busybox"));
        assert!(image_tag_is_latest("busybox:latest"));
        assert!(!image_tag_is_latest("busybox:1.36"));
        assert!(image_tag_is_latest("localhost:5000/busybox"));
        assert!(!image_tag_is_latest("localhost:5000/busybox:1"));
        assert!(!image_tag_is_latest("busybox@sha256:abc"));
    }
}
