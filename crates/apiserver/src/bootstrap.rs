//! The objects every cluster starts with, created (and where marked for
//! it, brought up to date) by the API server at start: the system
//! namespaces and priority classes, the local APIServices, the default
//! StorageClass and ServiceCIDR, the `kubernetes` and `kube-dns` Services,
//! and upstream's bootstrap RBAC policy.

use api::catalogue;
use serde_json::json;

use crate::rest::Rest;
use crate::server::{Config, ServerError};

/// Creates the objects every cluster has: the system namespaces and the
/// `kubernetes` Service with its endpoints.
pub(crate) async fn objects(
    rest: &Rest,
    cfg: &Config,
    host: &str,
    port: u16,
) -> Result<(), ServerError> {
    let data_dir = &cfg.data_dir;
    let ns = catalogue::find("", "v1", "namespaces")
        .ok_or_else(|| ServerError::Bootstrap("no namespaces".into()))?;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        rest.ensure(
            ns,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await
        .map_err(|e| ServerError::Bootstrap(e.message))?;
    }
    let pc = catalogue::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ServerError::Bootstrap("no priorityclasses".into()))?;
    for class in crate::admission::priority::system_priority_classes() {
        rest.ensure(pc, None, class)
            .await
            .map_err(|e| ServerError::Bootstrap(e.message))?;
    }
    policy(rest).await?;
    // The built-in group versions, listed as local APIServices.
    let apiservices = catalogue::find("apiregistration.k8s.io", "v1", "apiservices")
        .ok_or_else(|| ServerError::Bootstrap("no apiservices".into()))?;
    for svc in crate::aggregator::local_apiservices() {
        rest.ensure(apiservices, None, svc)
            .await
            .map_err(|e| ServerError::Bootstrap(e.message))?;
    }
    let sc = catalogue::find("storage.k8s.io", "v1", "storageclasses")
        .ok_or_else(|| ServerError::Bootstrap("no storageclasses".into()))?;
    let node_path = data_dir.join("storage");
    rest.ensure(
        sc,
        None,
        crate::admission::storageclass::local_path_storage_class(&node_path.to_string_lossy()),
    )
    .await
    .map_err(|e| ServerError::Bootstrap(e.message))?;
    // The default ServiceCIDR, as upstream's API server keeps one named
    // `kubernetes` for its --service-cluster-ip-range: node agents read the
    // service range from it.
    let scidr = catalogue::find("networking.k8s.io", "v1", "servicecidrs")
        .ok_or_else(|| ServerError::Bootstrap("no servicecidrs".into()))?;
    rest.ensure(
        scidr,
        None,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
            "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": [cfg.service_cidr.to_string()]},
        }),
    )
    .await
    .map_err(|e| ServerError::Bootstrap(e.message))?;
    let svc = catalogue::find("", "v1", "services")
        .ok_or_else(|| ServerError::Bootstrap("no services".into()))?;
    rest.ensure(svc, Some("default"), json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": cfg.kubernetes_service_ip().to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    })).await.map_err(|e| ServerError::Bootstrap(e.message))?;
    // Cluster DNS: every node agent answers this address itself (its DNS
    // server holds it locally), so the Service has no selector and no
    // endpoints, as k3s names and numbers it.
    rest.ensure(
        svc,
        Some("kube-system"),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "labels": {
                "k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                "kubernetes.io/cluster-service": "true"}},
            "spec": {"clusterIP": cfg.cluster_dns_ip().to_string(), "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ]},
        }),
    )
    .await
    .map_err(|e| ServerError::Bootstrap(e.message))?;
    let ip = if host.parse::<std::net::Ipv4Addr>().is_ok() {
        host.to_string()
    } else {
        "127.0.0.1".to_string()
    };
    let ep = catalogue::find("", "v1", "endpoints")
        .ok_or_else(|| ServerError::Bootstrap("no endpoints".into()))?;
    let subsets = json!([{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]);
    rest.ensure(ep, Some("default"), json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    })).await.map_err(|e| ServerError::Bootstrap(e.message))?;
    // The port may differ from the last run (--https-port 0): point the
    // endpoints at this run's address.
    let (mut live, kv) = rest
        .load(ep, Some("default"), "kubernetes")
        .await
        .map_err(|e| ServerError::Bootstrap(e.message))?;
    if live["subsets"] != subsets {
        live["subsets"] = subsets;
        if let Some(m) = live["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let bytes = serde_json::to_vec(&live).map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        rest.store.update(&kv.key, bytes, kv.mod_revision).await?;
    }
    Ok(())
}

/// Creates upstream's bootstrap RBAC policy, and brings back what is
/// missing from it while it is marked for automatic update.
async fn policy(rest: &Rest) -> Result<(), ServerError> {
    use crate::authz::bootstrap;
    let group = "rbac.authorization.k8s.io";
    let kinds = [
        ("clusterroles", bootstrap::cluster_roles()),
        ("clusterrolebindings", bootstrap::cluster_role_bindings()),
    ];
    for (plural, objs) in kinds {
        let info = catalogue::find(group, "v1", plural)
            .ok_or_else(|| ServerError::Bootstrap(format!("no {plural}")))?;
        for want in objs {
            let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = crate::objects::object_key(info, None, &name);
            let Some(kv) = rest.store.get(&key).await? else {
                rest.ensure(info, None, want)
                    .await
                    .map_err(|e| ServerError::Bootstrap(e.message))?;
                continue;
            };
            let stored: serde_json::Value = serde_json::from_slice(&kv.value)
                .map_err(|e| ServerError::Bootstrap(format!("{plural} {name}: {e}")))?;
            if !bootstrap::autoupdate(&stored) {
                continue;
            }
            let updated = if plural == "clusterroles" {
                bootstrap::reconcile_role(&stored, &want)
            } else {
                bootstrap::reconcile_binding(&stored, &want)
            };
            if let Some(mut obj) = updated {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let bytes =
                    serde_json::to_vec(&obj).map_err(|e| ServerError::Bootstrap(e.to_string()))?;
                rest.store.update(&key, bytes, kv.mod_revision).await?;
            }
        }
    }
    Ok(())
}
