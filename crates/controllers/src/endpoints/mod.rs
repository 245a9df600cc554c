//! The Service → backends controllers: EndpointSlices ([`run_slices`]) and
//! the legacy Endpoints objects ([`run_endpoints`]). Both follow pods through
//! a per-namespace index kept from the pod change feed, and only look at the
//! Services of a changed pod's namespace whose selector matches the pod's
//! old or new labels.

mod slices;
mod v1;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use controller_runtime::pod_ready;
use controller_runtime::{Change, Informer, key_of};

pub use slices::{
    MANAGED_BY, SLICE_CONTROLLER, desired_endpoints, plan_slices, run_slices, slice_for_apiserver,
};
pub use v1::{ENDPOINTS_CONTROLLER, ENDPOINTS_MANAGED_BY, desired_subsets, run_endpoints};

/// Label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label set on the endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Annotation: when the change that led to this write happened.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The selector of a Service whose endpoints a controller manages (None for
/// Services without one: their endpoints belong to the user).
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Whether a Service's selector matches a set of labels.
fn selects(svc: &Service, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(sel) = managed_selector(svc) else {
        return false;
    };
    let Some(labels) = labels else {
        return false;
    };
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether the Service is headless (`clusterIP: None`).
fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The pod's IPv4 address, if it has one.
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let st = pod.status.as_ref()?;
    let mut ips: Vec<&str> = st.pod_ip.as_deref().into_iter().collect();
    ips.extend(st.pod_ips.iter().flatten().map(|p| p.ip.as_str()));
    ips.into_iter()
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
}

/// Upstream's ShouldPodBeInEndpoints: not terminal, has an IP, and (unless
/// terminating pods are wanted) not being deleted.
pub fn pod_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    if pod_ipv4(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The container port a Service port reaches on a pod: a numeric
/// targetPort as is (the Service port when unset), a named one looked up in
/// the pod's containers (and sidecars) by name and protocol.
pub fn resolve_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

/// Whether a pod's hostname goes into its endpoint (upstream
/// ShouldSetHostname: the pod names this Service as its subdomain).
fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.to_string())
}

/// What of a pod the endpoints depend on, hashed: pod changes that leave it
/// alone (most status heartbeats) do not recompute any Service.
fn fingerprint(pod: &Pod) -> u64 {
    let spec = pod.spec.as_ref();
    let st = pod.status.as_ref();
    let relevant = serde_json::json!([
        pod.metadata.labels,
        pod.metadata.deletion_timestamp.is_some(),
        pod.metadata.uid,
        st.and_then(|s| s.phase.as_ref()),
        pod_ipv4(pod),
        pod_ready(pod),
        spec.and_then(|s| s.node_name.as_ref()),
        spec.and_then(|s| s.hostname.as_ref()),
        spec.and_then(|s| s.subdomain.as_ref()),
        spec.map(|s| s.containers.iter().map(|c| &c.ports).collect::<Vec<_>>()),
        spec.map(|s| s
            .init_containers
            .iter()
            .flatten()
            .map(|c| (&c.ports, &c.restart_policy))
            .collect::<Vec<_>>()),
    ]);
    let mut h = DefaultHasher::new();
    relevant.to_string().hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct IndexInner {
    by_ns: HashMap<String, HashMap<String, Arc<Pod>>>,
    /// Per pod key: its fingerprint and the Services it matched last time.
    matched: HashMap<String, (u64, Vec<String>)>,
}

/// Pods by namespace plus what each matched, maintained by [`PodIndex::mapper`].
#[derive(Clone, Default)]
pub(crate) struct PodIndex {
    inner: Arc<Mutex<IndexInner>>,
}

impl PodIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, IndexInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pods of one namespace, by name order.
    pub(crate) fn pods(&self, ns: &str) -> Vec<Arc<Pod>> {
        let mut v: Vec<Arc<Pod>> = self
            .lock()
            .by_ns
            .get(ns)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        v
    }

    /// A pod-change mapper for `Queue::watch_changes`: keeps the index and
    /// returns the keys of the Services the pod matches now or matched
    /// before, or none when nothing endpoint-relevant changed.
    pub(crate) fn mapper(
        &self,
        services: Informer<Service>,
    ) -> impl Fn(&Change<Pod>) -> Vec<String> + Send + Sync + 'static {
        let index = self.clone();
        move |ch: &Change<Pod>| {
            let (pod, deleted) = match ch {
                Change::Apply(p) => (p, false),
                Change::Delete(p) => (p, true),
                Change::Resync => return Vec::new(),
            };
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let key = key_of(pod.as_ref());
            let now: Vec<String> = services
                .list_ns(&ns)
                .iter()
                .filter(|s| selects(s, pod.metadata.labels.as_ref()))
                .map(|s| key_of(s.as_ref()))
                .collect();
            let fp = fingerprint(pod);
            let mut inner = index.lock();
            let before = if deleted {
                if let Some(m) = inner.by_ns.get_mut(&ns) {
                    m.remove(&name);
                    if m.is_empty() {
                        inner.by_ns.remove(&ns);
                    }
                }
                inner.matched.remove(&key)
            } else {
                inner.by_ns.entry(ns).or_default().insert(name, pod.clone());
                inner.matched.insert(key, (fp, now.clone()))
            };
            match before {
                Some((old_fp, old)) if !deleted && old_fp == fp && old == now => Vec::new(),
                Some((_, old)) => {
                    let mut keys = now;
                    for k in old {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                    keys
                }
                None => now,
            }
        }
    }
}

/// Waits until an informer's cache is loaded. `Informer::ready` alone can
/// hang when several tasks wait at once (kube's store readiness wakes only
/// the last waiter), so this looks again every 100 ms. Controllers wait
/// here before registering their queue watches, whose own waits then return
/// at once. (Belongs in `runtime`; kept here until the framework has it.)
pub(crate) async fn wait_ready<K: controller_runtime::informer::Kind>(inf: &Informer<K>) {
    while tokio::time::timeout(std::time::Duration::from_millis(100), inf.ready())
        .await
        .is_err()
    {}
}

/// The time now as the trigger-time annotation value.
fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
pub(crate) mod testutil {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    /// A pod with labels, IP, readiness and a named container port.
    pub fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sp(v: serde_json::Value) -> ServicePort {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ports_resolve_by_number_name_and_default() {
        let p = testutil::pod("a", Some("10.0.0.1"), true);
        assert_eq!(resolve_port(&p, &sp(json!({"port": 80}))), Some(80));
        assert_eq!(
            resolve_port(&p, &sp(json!({"port": 80, "targetPort": 9090}))),
            Some(9090)
        );
        assert_eq!(
            resolve_port(&p, &sp(json!({"port": 80, "targetPort": "http"}))),
            Some(8080)
        );
        assert_eq!(
            resolve_port(&p, &sp(json!({"port": 80, "targetPort": "nope"}))),
            None
        );
        // The protocol must match too.
        assert_eq!(
            resolve_port(
                &p,
                &sp(json!({"port": 80, "targetPort": "http", "protocol": "UDP"}))
            ),
            None
        );
    }

    #[test]
    fn terminal_or_ipless_pods_are_not_endpoints() {
        let mut p = testutil::pod("a", Some("10.0.0.1"), true);
        assert!(pod_in_endpoints(&p, false));
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!pod_in_endpoints(&p, true));
        let p = testutil::pod("b", None, true);
        assert!(!pod_in_endpoints(&p, true));
    }
}
