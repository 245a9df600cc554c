//! Cluster IP allocation through IPAddress objects (networking.k8s.io/v1),
//! as upstream's MultiCIDRServiceAllocator: an address is taken by
//! creating the IPAddress named after it, which the store does atomically,
//! so two creates (or two API servers on one etcd) never get the same one,
//! and taking one costs a few store operations however many Services exist.
//! A repair pass, at start and then periodically, gives every Service's
//! address its IPAddress and removes IPAddresses no Service holds.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use api::catalogue;
use serde_json::{Value, json};
use store::StoreError;

use crate::error::ApiError;
use store::SharedStore;

/// Who manages the IPAddresses this allocator makes (upstream's value).
const MANAGED_BY: &str = "ipallocator.k8s.io";
/// How often the repair pass runs.
pub const REPAIR_PERIOD: Duration = Duration::from_secs(30);
/// An IPAddress younger than this is never removed by repair: its Service
/// may be being created right now.
const GRACE_SECS: i64 = 60;

fn prefix() -> Result<String, ApiError> {
    catalogue::find("networking.k8s.io", "v1", "ipaddresses")
        .map(|i| i.storage_prefix())
        .ok_or_else(|| ApiError::internal("ipaddresses missing from the catalogue"))
}

/// The IPAddress of `ip` held by Service `ns/name`.
fn ip_object(ip: Ipv4Addr, ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip.to_string(),
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": crate::objects::now_rfc3339(),
            "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": name}},
    })
}

fn parent_is(obj: &Value, ns: &str, name: &str) -> bool {
    let p = &obj["spec"]["parentRef"];
    p["resource"] == "services" && p["namespace"] == ns && p["name"] == name
}

/// Takes `ip` for Service `ns/name`: true when it is now (or already was)
/// that Service's, false when another holds it. With `dry`, only looks.
pub async fn claim(
    store: &SharedStore,
    ip: Ipv4Addr,
    ns: &str,
    name: &str,
    dry: bool,
) -> Result<bool, ApiError> {
    let key = format!("{}{ip}", prefix()?);
    if !dry {
        let bytes = serde_json::to_vec(&ip_object(ip, ns, name))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match store.create(&key, bytes).await {
            Ok(_) => return Ok(true),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match store.get(&key).await? {
        None => Ok(true),
        Some(kv) => {
            let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            Ok(parent_is(&obj, ns, name))
        }
    }
}

/// Gives `ip` back when Service `ns/name` holds it.
pub async fn release(store: &SharedStore, ip: Ipv4Addr, ns: &str, name: &str) {
    let Ok(p) = prefix() else { return };
    let key = format!("{p}{ip}");
    if let Ok(Some(kv)) = store.get(&key).await {
        let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if parent_is(&obj, ns, name) {
            let _ = store.delete(&key, kv.mod_revision).await;
        }
    }
}

/// The IPv4 cluster IPs a Service object holds.
pub fn service_ips(svc: &Value) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&svc["spec"]["clusterIP"]))
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// One repair pass: every Service's address gets its IPAddress, and
/// IPAddresses of ours that no Service holds (older than the grace period)
/// go.
pub async fn repair(store: &SharedStore) -> Result<(), ApiError> {
    let svc_info = catalogue::find("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services missing from the catalogue"))?;
    let services = store.range(&svc_info.storage_prefix(), None, 0, 0).await?;
    let mut held: HashMap<Ipv4Addr, (String, String)> = HashMap::new();
    for kv in &services.kvs {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let ns = svc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
        for ip in service_ips(&svc) {
            if !claim(store, ip, &ns, &name, false).await? {
                tracing::warn!(%ip, service = %format!("{ns}/{name}"), "cluster IP held by two Services");
            }
            held.insert(ip, (ns.clone(), name.clone()));
        }
    }
    let now = chrono::Utc::now();
    let addrs = store.range(&prefix()?, None, 0, 0).await?;
    for kv in &addrs.kvs {
        let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if obj["metadata"]["labels"]["ipaddress.kubernetes.io/managed-by"] != MANAGED_BY {
            continue;
        }
        let young = obj["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds() < GRACE_SECS);
        let Some(Ok(ip)) = obj["metadata"]["name"].as_str().map(str::parse::<Ipv4Addr>) else {
            continue;
        };
        let owned = held
            .get(&ip)
            .is_some_and(|(ns, name)| parent_is(&obj, ns, name));
        if !owned && !young {
            let _ = store.delete(&kv.key, kv.mod_revision).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ips_and_parents() {
        let svc = json!({"spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"]}});
        assert_eq!(service_ips(&svc), vec![Ipv4Addr::new(10, 43, 0, 5)]);
        assert!(service_ips(&json!({"spec": {"clusterIP": "None"}})).is_empty());
        let o = ip_object(Ipv4Addr::new(10, 43, 0, 5), "shop", "web");
        assert!(parent_is(&o, "shop", "web"));
        assert!(!parent_is(&o, "shop", "api"));
        assert_eq!(o["metadata"]["name"], "10.43.0.5");
    }
}
