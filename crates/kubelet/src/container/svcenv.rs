//! Service environment variables, as the kubelet sets them in every
//! container: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT NAME>]`
//! and the Docker-link style `<NAME>_PORT…` variables, for the
//! `kubernetes` Service of the default namespace always, and for every
//! Service of the pod's namespace unless `enableServiceLinks: false`.
//! In-cluster clients find the API server through `KUBERNETES_SERVICE_HOST`
//! and `KUBERNETES_SERVICE_PORT`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

use crate::KubeletError;

/// The services whose variables the upstream kubelet hands to API clients
/// in every namespace.
const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// The variables for a pod's containers.
pub async fn for_pod(
    client: &kube::Client,
    pod: &Pod,
) -> Result<Vec<(String, String)>, KubeletError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, Service> = BTreeMap::new();
    let default: Api<Service> = Api::namespaced(client.clone(), "default");
    for name in MASTER_SERVICES {
        if let Some(s) = default.get_opt(name).await? {
            chosen.insert(name.to_string(), s);
        }
    }
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        for s in api.list(&ListParams::default()).await?.items {
            // A service of the pod's namespace wins over a master service
            // of the same name.
            if let Some(name) = s.metadata.name.clone() {
                chosen.insert(name, s);
            }
        }
    }
    Ok(from_services(chosen.values()))
}

fn var_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The variables of these services, in upstream's form.
pub fn from_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in services {
        let (Some(name), Some(spec)) = (s.metadata.name.as_deref(), s.spec.as_ref()) else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = var_name(name);
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", var_name(pn)),
                    p.port.to_string(),
                ));
            }
        }
        let host = |port: i32| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let url = format!("{lower}://{}", host(p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn variables_follow_upstream() {
        let k = svc(serde_json::json!({"metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}));
        let web = svc(serde_json::json!({"metadata": {"name": "my-web"},
            "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}}));
        let headless = svc(serde_json::json!({"metadata": {"name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let vars: BTreeMap<String, String> =
            from_services([&k, &web, &headless]).into_iter().collect();
        let get = |n: &str| vars.get(n).map(String::as_str);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.43.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.43.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.43.0.1"));
        assert_eq!(get("MY_WEB_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://10.43.0.9:53"));
        assert!(
            !vars.keys().any(|k| k.starts_with("H_")),
            "headless services have none"
        );
    }
}
