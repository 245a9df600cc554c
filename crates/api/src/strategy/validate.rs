//! Kind-specific validation beyond the shape the typed decode checks:
//! required fields and cross-field rules, reported with upstream's field
//! paths and wording.

use serde_json::Value;

use crate::catalogue::ResourceInfo;

/// A field error: upstream's `field.Error`, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Cause type as in metav1.StatusCause.reason, e.g. `FieldValueRequired`.
    pub reason: &'static str,
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// Message without the field path, e.g. `Required value`.
    pub message: String,
}

fn required(field: impl Into<String>) -> FieldError {
    FieldError {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {}: {detail}", render(value)),
    }
}

fn not_supported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> FieldError {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    FieldError {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            render(value),
            list.join(", ")
        ),
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Validates the kind-specific rules of `obj`.
pub fn validate(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match (info.group, info.plural) {
        ("", "pods") => pod_spec(&obj["spec"], "spec", &mut errs),
        ("", "podtemplates") => pod_template(&obj["template"], "template", &mut errs),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            selector_matches_template(obj, &mut errs);
            pod_template(&obj["spec"]["template"], "spec.template", &mut errs);
            if let Some(r) = obj["spec"]["replicas"].as_i64()
                && r < 0
            {
                errs.push(invalid(
                    "spec.replicas",
                    &obj["spec"]["replicas"],
                    "must be greater than or equal to 0",
                ));
            }
        }
        ("", "replicationcontrollers") => {
            pod_template(&obj["spec"]["template"], "spec.template", &mut errs)
        }
        ("batch", "jobs") => {
            pod_template(&obj["spec"]["template"], "spec.template", &mut errs);
            job_restart_policy(&obj["spec"]["template"], "spec.template", &mut errs);
        }
        ("batch", "cronjobs") => {
            if is_empty(&obj["spec"]["schedule"]) {
                errs.push(required("spec.schedule"));
            }
            let t = &obj["spec"]["jobTemplate"]["spec"]["template"];
            pod_template(t, "spec.jobTemplate.spec.template", &mut errs);
            job_restart_policy(t, "spec.jobTemplate.spec.template", &mut errs);
        }
        ("", "services") => service(obj, &mut errs),
        ("", "configmaps" | "secrets") => {
            for key in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj[key].as_object() {
                    for k in m.keys() {
                        if !config_key_ok(k) {
                            errs.push(invalid(
                                format!("{key}[{k}]"),
                                &Value::String(k.clone()),
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    errs
}

fn config_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn job_restart_policy(template: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let rp = &template["spec"]["restartPolicy"];
    let ok = matches!(rp.as_str(), Some("Never" | "OnFailure"));
    if !ok {
        errs.push(not_supported(
            format!("{path}.spec.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
}

fn selector_matches_template(obj: &Value, errs: &mut Vec<FieldError>) {
    let selector = &obj["spec"]["selector"];
    if is_empty(selector) {
        errs.push(required("spec.selector"));
        return;
    }
    let labels = obj["spec"]["template"]["metadata"]["labels"].as_object();
    let matches = match selector["matchLabels"].as_object() {
        Some(ml) => ml
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)),
        None => true,
    };
    let expressions_ok = selector["matchExpressions"]
        .as_array()
        .map(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or("");
                let val = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap_or("") {
                    "In" => val.is_some_and(|v| values.contains(&v)),
                    "NotIn" => !val.is_some_and(|v| values.contains(&v)),
                    "Exists" => val.is_some(),
                    "DoesNotExist" => val.is_none(),
                    _ => false,
                }
            })
        })
        .unwrap_or(true);
    if !matches || !expressions_ok {
        let l = obj["spec"]["template"]["metadata"]["labels"].clone();
        errs.push(invalid(
            "spec.template.metadata.labels",
            &Value::String(render_labels(&l)),
            "`selector` does not match template `labels`",
        ));
    }
}

fn render_labels(l: &Value) -> String {
    let mut parts: Vec<String> = l
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    format!("map[{}]", parts.join(" "))
}

fn pod_template(t: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if t.is_null() {
        errs.push(required(path));
        return;
    }
    pod_spec(&t["spec"], &format!("{path}.spec"), errs);
}

fn pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
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
                        errs.push(FieldError {
                            reason: "FieldValueDuplicate",
                            field: format!("{p}.name"),
                            message: format!("Duplicate value: \"{n}\""),
                        });
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
            Some(n) if !seen.insert(n.to_string()) => errs.push(FieldError {
                reason: "FieldValueDuplicate",
                field: format!("{p}.name"),
                message: format!("Duplicate value: \"{n}\""),
            }),
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

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errs.push(not_supported(
            "spec.type",
            &spec["type"],
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array();
    if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
        errs.push(required("spec.ports"));
    }
    if ty == "ExternalName" && is_empty(&spec["externalName"]) {
        errs.push(required("spec.externalName"));
    }
    let many = ports.is_some_and(|p| p.len() > 1);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(invalid(
                format!("spec.ports[{i}].port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        if many && is_empty(&p["name"]) {
            errs.push(required(format!("spec.ports[{i}].name")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;
    use serde_json::json;

    #[test]
    fn seccomp_profiles_follow_upstream_rules() {
        let info = catalogue::find("", "v1", "pods").unwrap();
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
        let info = catalogue::find("", "v1", "pods").unwrap();
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
        let info = catalogue::find("", "v1", "pods").unwrap();
        let errs = validate(info, &json!({"spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(errs, vec![required("spec.containers[0].image")]);
    }

    #[test]
    fn deployment_selector_must_match() {
        let info = catalogue::find("apps", "v1", "deployments").unwrap();
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let errs = validate(info, &d);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        assert!(
            errs[0]
                .message
                .contains("`selector` does not match template `labels`")
        );
    }

    #[test]
    fn job_needs_never_or_onfailure() {
        let info = catalogue::find("batch", "v1", "jobs").unwrap();
        let j = json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}});
        let errs = validate(info, &j);
        assert_eq!(errs[0].field, "spec.template.spec.restartPolicy");
    }

    #[test]
    fn volumes_have_unique_names_and_one_source() {
        let pods = crate::catalogue::find("", "v1", "pods").unwrap();
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
}
