//! Pod sysctls (`securityContext.sysctls`): upstream's safe set is always
//! allowed, namespaced others only when `--allowed-unsafe-sysctls` names
//! them (`kernel.msg*`, `net.core.somaxconn`). A pod asking for anything
//! else is refused at admission with upstream's reason and message; the
//! allowed ones are set by the runtime inside the pod's namespaces.

use k8s_openapi::api::core::v1::Pod;

/// Upstream's safe sysctls (Kubernetes 1.33).
const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Sysctls that live in a namespace of the pod: which one.
fn namespace_of(name: &str) -> Option<&'static str> {
    if name.starts_with("net.") {
        return Some("net");
    }
    if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name.starts_with("kernel.sem")
        || name.starts_with("fs.mqueue.")
    {
        return Some("ipc");
    }
    if matches!(name, "kernel.hostname" | "kernel.domainname") {
        return Some("uts");
    }
    None
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Why the node refuses the pod's sysctls (upstream's `SysctlForbidden`
/// message), if it does.
pub fn forbidden(pod: &Pod, allowed_unsafe: &[String]) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let sysctls = spec.security_context.as_ref()?.sysctls.as_ref()?;
    for s in sysctls {
        let name = s.name.replace('/', ".");
        let ns = namespace_of(&name);
        let allowed =
            SAFE.contains(&name.as_str()) || allowed_unsafe.iter().any(|p| matches(p, &name));
        if !allowed || ns.is_none() {
            return Some(format!("forbidden sysctl: \"{}\" not allowlisted", s.name));
        }
        let host = match ns {
            Some("net") => spec.host_network == Some(true),
            Some("ipc") => spec.host_ipc == Some(true),
            _ => false,
        };
        if host {
            return Some(format!(
                "forbidden sysctl: \"{}\" not allowed with host {} enabled",
                s.name,
                ns.unwrap_or("")
            ));
        }
    }
    None
}

/// The pod's sysctls for the runtime spec (dotted names).
pub fn of(pod: &Pod) -> std::collections::HashMap<String, String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.name.replace('/', "."), s.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(sysctls: serde_json::Value, host_network: bool) -> Pod {
        serde_json::from_value(json!({"spec": {
            "containers": [],
            "hostNetwork": host_network,
            "securityContext": {"sysctls": sysctls}
        }}))
        .unwrap()
    }

    #[test]
    fn safe_sysctls_pass_others_need_the_flag() {
        let safe = pod(
            json!([{"name": "net.ipv4.ip_local_port_range", "value": "1024 2048"}]),
            false,
        );
        assert_eq!(forbidden(&safe, &[]), None);
        assert_eq!(of(&safe)["net.ipv4.ip_local_port_range"], "1024 2048");
        let unsafe_ = pod(json!([{"name": "kernel.msgmax", "value": "65536"}]), false);
        assert_eq!(
            forbidden(&unsafe_, &[]).unwrap(),
            "forbidden sysctl: \"kernel.msgmax\" not allowlisted"
        );
        assert_eq!(forbidden(&unsafe_, &["kernel.msg*".into()]), None);
        let global = pod(json!([{"name": "vm.swappiness", "value": "1"}]), false);
        assert!(forbidden(&global, &["vm.*".into()]).is_some());
        let host = pod(
            json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}]),
            true,
        );
        assert_eq!(
            forbidden(&host, &[]).unwrap(),
            "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled"
        );
    }
}
