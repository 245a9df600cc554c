//! AppArmor, as far as a node without it goes: upstream's kubelet holds a
//! pod that asks for an AppArmor profile (anything but `Unconfined`) on a
//! host that cannot enforce one, rather than run it unconfined. r8s does
//! not load or apply profiles; where the kernel has AppArmor enabled, pods
//! run as they would with the profile ignored (see the README).

use k8s_openapi::api::core::v1::Pod;

/// The deprecated per-container annotation prefix, still honoured upstream.
const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Whether the kernel has AppArmor enabled.
pub fn enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

/// Whether the pod asks for AppArmor confinement (upstream's
/// `isRequired`): a pod- or container-level `appArmorProfile` other than
/// `Unconfined`, or a beta annotation other than `unconfined`.
pub fn required(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let confined = |t: Option<&str>| t.is_some_and(|t| t != "Unconfined");
    let pod_level = spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref())
        .map(|p| p.type_.as_str());
    if confined(pod_level) {
        return true;
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter_map(|c| c.security_context.as_ref()?.app_armor_profile.as_ref());
    if containers
        .into_iter()
        .any(|p| confined(Some(p.type_.as_str())))
    {
        return true;
    }
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, v)| k.starts_with(ANNOTATION_PREFIX) && v != "unconfined")
}

/// Upstream's admission message when the pod cannot run here.
pub fn refusal(pod: &Pod) -> Option<String> {
    (required(pod) && !enabled())
        .then(|| "Cannot enforce AppArmor: AppArmor is not enabled on the host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn profiles_other_than_unconfined_require_apparmor() {
        let plain = pod(serde_json::json!({"spec": {"containers": [{"name": "c"}]}}));
        assert!(!required(&plain));
        let unconfined = pod(serde_json::json!({"spec": {
            "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c"}]}}));
        assert!(!required(&unconfined));
        let runtime_default = pod(serde_json::json!({"spec": {"containers": [{"name": "c",
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}]}}));
        assert!(required(&runtime_default));
        let annotated = pod(serde_json::json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "runtime/default"}},
            "spec": {"containers": [{"name": "c"}]}}));
        assert!(required(&annotated));
    }
}
