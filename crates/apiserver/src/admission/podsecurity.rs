//! Pod Security admission: a namespace's `pod-security.kubernetes.io/
//! enforce|warn|audit` labels choose a level (privileged, baseline,
//! restricted) of the Pod Security Standards; pods that break the
//! enforced level are refused, and pods or workload templates that break
//! the warned level come back with warnings, in upstream's
//! pod-security-admission words (`violates PodSecurity "restricted:latest":
//! privileged (container "c" must not set securityContext.privileged=true),
//! …`). Every version label is checked against the latest standard.

use std::collections::BTreeSet;

use api::catalogue::{self, ResourceInfo};
use serde_json::Value;

use super::{Context, Operation};
use crate::error::ApiError;

/// The Pod Security Standards levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations are prevented.
    Baseline,
    /// Current hardening best practice.
    Restricted,
}

fn level(s: &str) -> Option<Level> {
    match s {
        "privileged" => Some(Level::Privileged),
        "baseline" => Some(Level::Baseline),
        "restricted" => Some(Level::Restricted),
        _ => None,
    }
}

/// One container (or the pod) in a check's messages.
struct Ctr<'a> {
    name: &'a str,
    sc: &'a Value,
    c: &'a Value,
}

fn ctrs(spec: &Value) -> Vec<Ctr<'_>> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .map(|c| Ctr {
            name: c["name"].as_str().unwrap_or(""),
            sc: &c["securityContext"],
            c,
        })
        .collect()
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 { one } else { many }
}

fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        quoted(names)
    )
}

type Violation = (String, String);

fn host_namespaces(spec: &Value) -> Option<Violation> {
    let set: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|k| spec[*k] == true)
        .collect();
    (!set.is_empty()).then(|| {
        (
            "host namespaces".into(),
            set.iter()
                .map(|k| format!("{k}=true"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

fn host_path(spec: &Value) -> Option<Violation> {
    let vols: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["hostPath"].is_object())
        .filter_map(|v| v["name"].as_str())
        .collect();
    (!vols.is_empty()).then(|| {
        (
            "hostPath volumes".into(),
            format!(
                "{} {}",
                plural("volume", "volumes", vols.len()),
                quoted(&vols)
            ),
        )
    })
}

fn host_ports(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = Vec::new();
    for c in ctrs(spec) {
        let mine: Vec<String> = c.c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["hostPort"].as_i64().filter(|h| *h != 0))
            .map(|p| p.to_string())
            .collect();
        if !mine.is_empty() {
            bad.push(c.name);
            ports.extend(mine);
        }
    }
    (!bad.is_empty()).then(|| {
        (
            "hostPort".into(),
            format!(
                "{} {} {} {}",
                containers_phrase(&bad),
                plural("uses", "use", bad.len()),
                plural("hostPort", "hostPorts", ports.len()),
                ports.join(", ")
            ),
        )
    })
}

fn privileged(spec: &Value) -> Option<Violation> {
    let bad: Vec<&str> = ctrs(spec)
        .iter()
        .filter(|c| c.sc["privileged"] == true)
        .map(|c| c.name)
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "privileged".into(),
            format!(
                "{} must not set securityContext.privileged=true",
                containers_phrase(&bad)
            ),
        )
    })
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_caps<'a>(c: &Ctr<'a>, allowed: &[&str]) -> Vec<&'a str> {
    c.sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|cap| !allowed.contains(cap))
        .collect()
}

fn capabilities_baseline(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in ctrs(spec) {
        let extra = added_caps(&c, BASELINE_CAPS);
        if !extra.is_empty() {
            bad.push(c.name);
            caps.extend(extra);
        }
    }
    (!bad.is_empty()).then(|| {
        let caps: Vec<&str> = caps.into_iter().collect();
        (
            "non-default capabilities".into(),
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&bad),
                quoted(&caps)
            ),
        )
    })
}

fn capabilities_restricted(spec: &Value) -> Option<Violation> {
    let mut no_drop = Vec::new();
    let mut bad_add = Vec::new();
    let mut caps = BTreeSet::new();
    for c in ctrs(spec) {
        let drops_all = c.sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            no_drop.push(c.name);
        }
        let extra = added_caps(&c, &["NET_BIND_SERVICE"]);
        if !extra.is_empty() {
            bad_add.push(c.name);
            caps.extend(extra);
        }
    }
    let mut details = Vec::new();
    if !no_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&no_drop)
        ));
    }
    if !bad_add.is_empty() {
        let caps: Vec<&str> = caps.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad_add),
            quoted(&caps)
        ));
    }
    (!details.is_empty()).then(|| ("unrestricted capabilities".into(), details.join("; ")))
}

fn proc_mount(spec: &Value) -> Option<Violation> {
    let bad: Vec<&str> = ctrs(spec)
        .iter()
        .filter(|c| c.sc["procMount"].as_str().is_some_and(|p| p != "Default"))
        .map(|c| c.name)
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "procMount".into(),
            format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                containers_phrase(&bad)
            ),
        )
    })
}

fn seccomp_type(sc: &Value) -> Option<&str> {
    sc["seccompProfile"]["type"].as_str()
}

fn seccomp_baseline(spec: &Value) -> Option<Violation> {
    let mut details = Vec::new();
    if seccomp_type(&spec["securityContext"]) == Some("Unconfined") {
        details.push(
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string(),
        );
    }
    let bad: Vec<&str> = ctrs(spec)
        .iter()
        .filter(|c| seccomp_type(c.sc) == Some("Unconfined"))
        .map(|c| c.name)
        .collect();
    if !bad.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            containers_phrase(&bad)
        ));
    }
    (!details.is_empty()).then(|| ("seccompProfile".into(), details.join("; ")))
}

fn seccomp_restricted(spec: &Value) -> Option<Violation> {
    let ok = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
    let pod = seccomp_type(&spec["securityContext"]);
    let mut details = Vec::new();
    if pod.is_some() && !ok(pod) {
        details.push(format!(
            "pod must not set securityContext.seccompProfile.type to {:?}",
            pod.unwrap_or("")
        ));
    }
    let mut bad_set: Vec<&str> = Vec::new();
    let mut unset: Vec<&str> = Vec::new();
    for c in ctrs(spec) {
        match seccomp_type(c.sc) {
            Some(t) if !ok(Some(t)) => bad_set.push(c.name),
            None if !ok(pod) => unset.push(c.name),
            _ => {}
        }
    }
    if !bad_set.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            containers_phrase(&bad_set)
        ));
    }
    if !unset.is_empty() && pod.is_none() {
        details.push(format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_phrase(&unset)
        ));
    }
    (!details.is_empty()).then(|| ("seccompProfile".into(), details.join("; ")))
}

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn sysctls(spec: &Value) -> Option<Violation> {
    let bad: Vec<&str> = spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    (!bad.is_empty()).then(|| ("forbidden sysctls".into(), bad.join(", ")))
}

const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn restricted_volumes(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let Some(obj) = v.as_object() else { continue };
        let kinds: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "name" && !RESTRICTED_VOLUMES.contains(k))
            .collect();
        if !kinds.is_empty() {
            bad.push(v["name"].as_str().unwrap_or(""));
            types.extend(kinds);
        }
    }
    (!bad.is_empty()).then(|| {
        let types: Vec<&str> = types.into_iter().collect();
        (
            "restricted volume types".into(),
            format!(
                "{} {} {} {}",
                format_args!(
                    "{} {}",
                    plural("volume", "volumes", bad.len()),
                    quoted(&bad)
                ),
                plural("uses", "use", bad.len()),
                plural(
                    "restricted volume type",
                    "restricted volume types",
                    types.len()
                ),
                quoted(&types)
            ),
        )
    })
}

fn privilege_escalation(spec: &Value) -> Option<Violation> {
    let bad: Vec<&str> = ctrs(spec)
        .iter()
        .filter(|c| c.sc["allowPrivilegeEscalation"] != false)
        .map(|c| c.name)
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "allowPrivilegeEscalation != false".into(),
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_phrase(&bad)
            ),
        )
    })
}

fn run_as_non_root(spec: &Value) -> Option<Violation> {
    let pod = &spec["securityContext"]["runAsNonRoot"];
    let mut details = Vec::new();
    if *pod == false {
        details.push("pod must not set securityContext.runAsNonRoot=false".to_string());
    }
    let mut explicit_false = Vec::new();
    let mut unset = Vec::new();
    for c in ctrs(spec) {
        match &c.sc["runAsNonRoot"] {
            Value::Bool(false) => explicit_false.push(c.name),
            Value::Bool(true) => {}
            _ if *pod != true => unset.push(c.name),
            _ => {}
        }
    }
    if !explicit_false.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            containers_phrase(&explicit_false)
        ));
    }
    if !unset.is_empty() && pod.is_null() {
        details.push(format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&unset)
        ));
    }
    (!details.is_empty()).then(|| ("runAsNonRoot != true".into(), details.join("; ")))
}

fn run_as_user(spec: &Value) -> Option<Violation> {
    let pod = spec["securityContext"]["runAsUser"] == 0;
    let bad: Vec<&str> = ctrs(spec)
        .iter()
        .filter(|c| c.sc["runAsUser"] == 0)
        .map(|c| c.name)
        .collect();
    let who = match (pod, bad.is_empty()) {
        (false, true) => return None,
        (true, true) => "pod".to_string(),
        (false, false) => containers_phrase(&bad),
        (true, false) => format!("pod and {}", containers_phrase(&bad)),
    };
    Some((
        "runAsUser=0".into(),
        format!("{who} must not set runAsUser=0"),
    ))
}

/// Every violation of `level` by a pod spec, in upstream's order.
pub fn violations(level: Level, spec: &Value) -> Vec<Violation> {
    let mut checks: Vec<fn(&Value) -> Option<Violation>> = Vec::new();
    if level >= Level::Baseline {
        if level == Level::Baseline {
            checks.push(capabilities_baseline);
        }
        checks.extend([host_namespaces as fn(&Value) -> Option<Violation>]);
        if level == Level::Baseline {
            checks.push(host_path);
        }
        checks.extend([
            host_ports as fn(&Value) -> Option<Violation>,
            privileged,
            proc_mount,
        ]);
        if level == Level::Baseline {
            checks.push(seccomp_baseline);
        }
        checks.push(sysctls);
    }
    if level == Level::Restricted {
        checks.extend([
            privilege_escalation as fn(&Value) -> Option<Violation>,
            capabilities_restricted,
            restricted_volumes,
            run_as_non_root,
            run_as_user,
            seccomp_restricted,
        ]);
    }
    checks.iter().filter_map(|c| c(spec)).collect()
}

/// The pod spec of a pod or of a workload's pod template.
fn pod_spec<'a>(info: &ResourceInfo, obj: &'a Value) -> Option<&'a Value> {
    match (info.group, info.plural) {
        ("", "pods") => Some(&obj["spec"]),
        ("", "podtemplates") => Some(&obj["template"]["spec"]),
        ("batch", "cronjobs") => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => Some(&obj["spec"]["template"]["spec"]),
        _ => None,
    }
    .filter(|s| s.is_object())
}

fn policy(labels: &Value, mode: &str) -> Option<(Level, String)> {
    let key = format!("pod-security.kubernetes.io/{mode}");
    let lvl = level(labels[&key].as_str()?)?;
    let version = labels[format!("{key}-version")]
        .as_str()
        .unwrap_or("latest")
        .to_string();
    Some((lvl, version))
}

fn describe(level: Level, version: &str, v: &[Violation]) -> String {
    let name = match level {
        Level::Privileged => "privileged",
        Level::Baseline => "baseline",
        Level::Restricted => "restricted",
    };
    let list = v
        .iter()
        .map(|(reason, detail)| format!("{reason} ({detail})"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("PodSecurity \"{name}:{version}\": {list}")
}

/// Checks a create (or an update that changes a pod template) of `obj`:
/// refuses a pod that breaks its namespace's enforced level, and returns
/// the warnings of the warned level (and, for workloads, of the enforced
/// one).
pub async fn check(
    ctx: &Context<'_>,
    info: &ResourceInfo,
    op: Operation,
    sub: Option<&str>,
    namespace: Option<&str>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let (Some(ns), Some(spec)) = (namespace, pod_spec(info, obj)) else {
        return Ok(Vec::new());
    };
    let is_pod = info.plural == "pods";
    match op {
        Operation::Delete => return Ok(Vec::new()),
        // Pods are checked when made and when ephemeral containers are
        // added (the rest of a pod's spec cannot change); a workload when
        // its template changes.
        Operation::Update if is_pod && sub != Some("ephemeralcontainers") => {
            return Ok(Vec::new());
        }
        Operation::Update if is_pod => {}
        Operation::Update if old.and_then(|o| pod_spec(info, o)) == Some(spec) => {
            return Ok(Vec::new());
        }
        _ => {}
    }
    let Some(ns_info) = catalogue::find("", "v1", "namespaces") else {
        return Ok(Vec::new());
    };
    let Ok((namespace_obj, _)) = ctx.load(ns_info, None, ns).await else {
        return Ok(Vec::new());
    };
    let labels = &namespace_obj["metadata"]["labels"];
    let mut warnings = Vec::new();
    if let Some((lvl, version)) = policy(labels, "enforce") {
        let v = violations(lvl, spec);
        if !v.is_empty() {
            let text = describe(lvl, &version, &v);
            if is_pod {
                let name = obj["metadata"]["name"].as_str().unwrap_or("");
                return Err(ApiError::forbidden(format!(
                    "pods {name:?} is forbidden: violates {text}"
                )));
            }
            warnings.push(format!("would violate {text}"));
        }
    }
    if let Some((lvl, version)) = policy(labels, "warn") {
        let v = violations(lvl, spec);
        let text = format!("would violate {}", describe(lvl, &version, &v));
        if !v.is_empty() && !warnings.contains(&text) {
            warnings.push(text);
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(level: Level, spec: Value) -> String {
        describe(level, "latest", &violations(level, &spec))
    }

    #[test]
    fn a_privileged_pod_in_restricted_gets_upstreams_list() {
        let spec = json!({"containers": [{"name": "c", "image": "i",
            "securityContext": {"privileged": true}}]});
        assert_eq!(
            text(Level::Restricted, spec),
            "PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn baseline_catches_host_access_and_allows_a_plain_pod() {
        let spec = json!({"hostNetwork": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}]});
        assert_eq!(
            text(Level::Baseline, spec),
            "PodSecurity \"baseline:latest\": non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add), host namespaces (hostNetwork=true), hostPath volumes (volume \"h\"), hostPort (container \"a\" uses hostPort 8080)"
        );
        assert!(violations(Level::Baseline, &json!({"containers": [{"name": "a"}]})).is_empty());
        assert!(violations(Level::Privileged, &json!({"hostPID": true})).is_empty());
    }

    #[test]
    fn a_hardened_pod_meets_restricted() {
        let spec = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "cfg", "configMap": {"name": "x"}}],
            "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]});
        assert!(violations(Level::Restricted, &spec).is_empty());
        let with_host = json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]});
        let v = violations(Level::Restricted, &with_host);
        assert_eq!(
            v[0].1,
            "volume \"h\" uses restricted volume type \"hostPath\""
        );
    }
}
