//! What objects use of a ResourceQuota, as upstream's quota evaluators
//! (`pkg/quota/v1/evaluator/core`): a pod's requests and limits by
//! resource name, the scopes a pod falls under, the counted kinds, and a
//! namespace's whole usage. Shared by the quota controller (which
//! recomputes `status.used`) and the API server's admission (which
//! charges each new object against it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity::Qty;

/// A Kubernetes quantity as a [`Qty`].
pub fn qty_of(q: &Quantity) -> Option<Qty> {
    Qty::parse(&q.0)
}

/// Sums of quantities by resource name.
pub type Usage = BTreeMap<String, Qty>;

fn add_to(u: &mut Usage, k: &str, q: Qty) {
    u.entry(k.to_string()).or_insert(Qty::ZERO).add(q);
}

fn resources_of(
    c: &k8s_openapi::api::core::v1::Container,
    limits: bool,
) -> Option<&BTreeMap<String, Quantity>> {
    let r = c.resources.as_ref()?;
    if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }
}

/// A pod's effective requests (or limits): containers and sidecars summed,
/// each regular init container (with the sidecars started before it) taken
/// as a floor, plus the pod overhead (upstream resourcehelper.PodRequests).
pub fn pod_resources(pod: &Pod, limits: bool) -> Usage {
    let mut sum = Usage::new();
    let Some(spec) = pod.spec.as_ref() else {
        return sum;
    };
    let add_all = |u: &mut Usage, c: &k8s_openapi::api::core::v1::Container| {
        for (k, v) in resources_of(c, limits).into_iter().flatten() {
            if let Some(q) = qty_of(v) {
                add_to(u, k, q);
            }
        }
    };
    for c in &spec.containers {
        add_all(&mut sum, c);
    }
    let mut sidecars = Usage::new();
    let mut floor = Usage::new();
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            add_all(&mut sum, c);
            add_all(&mut sidecars, c);
        } else {
            let mut this = sidecars.clone();
            add_all(&mut this, c);
            for (k, q) in this {
                let f = floor.entry(k).or_insert(Qty::ZERO);
                if q.nanos > f.nanos {
                    *f = q;
                }
            }
        }
    }
    for (k, f) in floor {
        let s = sum.entry(k).or_insert(Qty::ZERO);
        if f.nanos > s.nanos {
            *s = f;
        }
    }
    for (k, v) in spec.overhead.iter().flatten() {
        if let Some(q) = qty_of(v)
            && (!limits || sum.contains_key(k))
        {
            add_to(&mut sum, k, q);
        }
    }
    sum
}

/// Whether a pod still counts against quota (upstream QuotaV1Pod): not
/// terminal, and not past its deletion grace period.
pub fn pod_counts(pod: &Pod, now: k8s_openapi::jiff::Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    if let (Some(ts), Some(grace)) = (
        pod.metadata.deletion_timestamp.as_ref(),
        pod.metadata.deletion_grace_period_seconds,
    ) {
        let end = ts.0.as_second().saturating_add(grace);
        if now.as_second() > end {
            return false;
        }
    }
    true
}

/// Whether a quota resource name is one the pod evaluator tracks.
pub fn pod_resource(k: &str) -> bool {
    matches!(
        k,
        "pods" | "count/pods" | "cpu" | "memory" | "ephemeral-storage"
    ) || (k.starts_with("requests.") && k != "requests.storage")
        || k.starts_with("limits.")
        || k.starts_with("hugepages-")
}

/// A pod's usage, named as quota resources.
pub fn pod_usage(pod: &Pod) -> Usage {
    let mut u = Usage::new();
    u.insert("pods".into(), Qty::count(1));
    u.insert("count/pods".into(), Qty::count(1));
    for (k, q) in pod_resources(pod, false) {
        match k.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                u.insert(k.clone(), q);
                u.insert(format!("requests.{k}"), q);
            }
            _ if k.starts_with("hugepages-") => {
                u.insert(format!("requests.{k}"), q);
            }
            _ => {
                u.insert(format!("requests.{k}"), q);
            }
        }
    }
    for (k, q) in pod_resources(pod, true) {
        if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            u.insert(format!("limits.{k}"), q);
        }
    }
    u
}

/// BestEffort QoS: no container has cpu or memory requests or limits.
fn best_effort(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    !spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            [false, true].iter().any(|&l| {
                resources_of(c, l)
                    .is_some_and(|r| r.contains_key("cpu") || r.contains_key("memory"))
            })
        })
}

/// Whether a pod falls under every scope of a quota.
pub fn pod_in_scopes(quota: &ResourceQuota, pod: &Pod) -> bool {
    let Some(spec) = quota.spec.as_ref() else {
        return true;
    };
    let pspec = pod.spec.as_ref();
    let terminating = pspec.and_then(|s| s.active_deadline_seconds).is_some();
    let pc = pspec
        .and_then(|s| s.priority_class_name.clone())
        .unwrap_or_default();
    let scope_ok = |scope: &str| match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => !pc.is_empty(),
        // CrossNamespacePodAffinity and unknown scopes: not evaluated.
        _ => true,
    };
    if !spec.scopes.iter().flatten().all(|s| scope_ok(s)) {
        return false;
    }
    let exprs = spec
        .scope_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref());
    exprs.into_iter().flatten().all(|e| {
        if e.scope_name != "PriorityClass" {
            return scope_ok(&e.scope_name);
        }
        let vals = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => vals.contains(&pc),
            "NotIn" => !vals.contains(&pc),
            "Exists" => !pc.is_empty(),
            "DoesNotExist" => pc.is_empty(),
            _ => false,
        }
    })
}

/// Whether a quota has scopes (then it tracks pods only).
pub fn scoped(quota: &ResourceQuota) -> bool {
    quota.spec.as_ref().is_some_and(|s| {
        s.scopes.as_ref().is_some_and(|v| !v.is_empty())
            || s.scope_selector
                .as_ref()
                .and_then(|s| s.match_expressions.as_ref())
                .is_some_and(|v| !v.is_empty())
    })
}

/// What a namespace holds, for computing a quota's usage.
#[derive(Default)]
pub struct Snapshot {
    /// The namespace's pods.
    pub pods: Vec<Arc<Pod>>,
    /// The namespace's Services.
    pub services: Vec<Arc<Service>>,
    /// The namespace's claims.
    pub pvcs: Vec<Arc<PersistentVolumeClaim>>,
    /// Object counts by quota resource name (`count/configmaps`,
    /// `count/deployments.apps`, ...).
    pub counts: HashMap<String, i64>,
}

/// The quota resource name of a count: `configmaps` → `count/configmaps`.
pub fn count_key(k: &str) -> Option<String> {
    match k {
        "configmaps"
        | "secrets"
        | "services"
        | "replicationcontrollers"
        | "resourcequotas"
        | "persistentvolumeclaims"
        | "pods" => Some(format!("count/{k}")),
        _ => k.strip_prefix("count/").map(|_| k.to_string()),
    }
}

/// What joins a storage class name and its claim resources
/// (`gold.storageclass.storage.k8s.io/requests.storage`).
pub const SC_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// `status.used` for a quota: every resource of `spec.hard` this
/// controller knows how to measure.
pub fn compute_used(
    quota: &ResourceQuota,
    snap: &Snapshot,
    now: k8s_openapi::jiff::Timestamp,
) -> Usage {
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.as_ref())
        .cloned()
        .unwrap_or_default();
    let is_scoped = scoped(quota);
    let mut total = Usage::new();
    if hard.keys().any(|k| pod_resource(k)) {
        for p in &snap.pods {
            if pod_counts(p, now) && pod_in_scopes(quota, p) {
                for (k, q) in pod_usage(p) {
                    add_to(&mut total, &k, q);
                }
            }
        }
    }
    if !is_scoped {
        for s in &snap.services {
            let spec = s.spec.as_ref();
            let ty = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
            let ports = spec.and_then(|s| s.ports.as_ref()).map_or(0, Vec::len);
            let node_ports = match ty {
                "NodePort" => ports,
                "LoadBalancer"
                    if spec.and_then(|s| s.allocate_load_balancer_node_ports) != Some(false) =>
                {
                    ports
                }
                _ => 0,
            };
            add_to(
                &mut total,
                "services.nodeports",
                Qty::count(node_ports as i64),
            );
            if ty == "LoadBalancer" {
                add_to(&mut total, "services.loadbalancers", Qty::count(1));
            }
        }
        for c in &snap.pvcs {
            let req = c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(qty_of)
                .unwrap_or(Qty::ZERO);
            add_to(&mut total, "requests.storage", req);
            if let Some(sc) = c
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
            {
                add_to(&mut total, &format!("{sc}{SC_SUFFIX}requests.storage"), req);
                add_to(
                    &mut total,
                    &format!("{sc}{SC_SUFFIX}persistentvolumeclaims"),
                    Qty::count(1),
                );
            }
        }
    }
    let mut used = Usage::new();
    for k in hard.keys() {
        let v = if pod_resource(k) {
            Some(total.get(k).copied().unwrap_or(Qty::ZERO))
        } else if is_scoped {
            None
        } else if let Some(ck) = count_key(k) {
            snap.counts.get(&ck).map(|&n| Qty::count(n))
        } else if k.starts_with("services.") || k == "requests.storage" || k.contains(SC_SUFFIX) {
            Some(total.get(k).copied().unwrap_or(Qty::ZERO))
        } else {
            None
        };
        if let Some(v) = v {
            used.insert(k.clone(), v);
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn quota(hard: serde_json::Value, extra: serde_json::Value) -> ResourceQuota {
        let mut spec = json!({"hard": hard});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": spec}))
            .unwrap()
    }

    fn res_pod(name: &str, cpu: &str, mem: &str, phase: &str) -> Arc<Pod> {
        pod(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"memory": mem}}},
                {"name": "b", "image": "i"},
            ], "initContainers": [
                {"name": "init", "image": "i", "resources": {"requests": {"cpu": "2"}}},
            ]},
            "status": {"phase": phase},
        }))
    }

    #[test]
    fn pod_usage_sums_requests_limits_and_skips_terminal_pods() {
        let q = quota(
            json!({"pods": "10", "requests.cpu": "10", "cpu": "10", "requests.memory": "1Gi",
                   "limits.memory": "1Gi", "limits.cpu": "4", "configmaps": "5", "count/deployments.apps": "3",
                   "services": "2", "services.nodeports": "2", "foo": "1"}),
            json!({}),
        );
        let mut snap = Snapshot {
            pods: vec![
                res_pod("a", "250m", "64Mi", "Running"),
                res_pod("b", "500m", "64Mi", "Pending"),
                res_pod("done", "1", "1Gi", "Succeeded"),
            ],
            services: vec![Arc::new(
                serde_json::from_value(
                    json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}}),
                )
                .unwrap(),
            )],
            ..Default::default()
        };
        snap.counts.insert("count/configmaps".into(), 3);
        snap.counts.insert("count/services".into(), 1);
        let used = compute_used(&q, &snap, test_now());
        let s = |k: &str| used.get(k).map(|q| q.canonical());
        assert_eq!(s("pods").as_deref(), Some("2"));
        // The init container's 2 CPUs exceed each pod's containers: a floor.
        assert_eq!(s("requests.cpu").as_deref(), Some("4"));
        assert_eq!(s("cpu").as_deref(), Some("4"));
        assert_eq!(s("requests.memory").as_deref(), Some("128Mi"));
        assert_eq!(s("limits.memory").as_deref(), Some("128Mi"));
        assert_eq!(s("limits.cpu").as_deref(), Some("0"));
        assert_eq!(s("configmaps").as_deref(), Some("3"));
        assert_eq!(s("services").as_deref(), Some("1"));
        assert_eq!(s("services.nodeports").as_deref(), Some("2"));
        assert_eq!(
            s("count/deployments.apps"),
            None,
            "not counted: unknown here"
        );
        assert_eq!(s("foo"), None);
    }

    #[test]
    fn scopes_select_pods() {
        let be = pod(
            json!({"metadata": {"name": "be"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}),
        );
        let burst = res_pod("burst", "1", "1Gi", "Running");
        let term = pod(
            json!({"metadata": {"name": "t"}, "spec": {"activeDeadlineSeconds": 5, "priorityClassName": "high", "containers": [{"name": "c"}]}}),
        );
        let snap = Snapshot {
            pods: vec![be, burst, term],
            ..Default::default()
        };
        let now = test_now();
        let count = |extra| {
            compute_used(
                &quota(json!({"pods": "9", "services": "1"}), extra),
                &snap,
                now,
            )
        };
        let u = count(json!({"scopes": ["BestEffort"]}));
        assert_eq!(u["pods"].canonical(), "2");
        assert!(!u.contains_key("services"), "scoped quotas track pods only");
        assert_eq!(
            count(json!({"scopes": ["NotBestEffort"]}))["pods"].canonical(),
            "1"
        );
        assert_eq!(
            count(json!({"scopes": ["Terminating"]}))["pods"].canonical(),
            "1"
        );
        assert_eq!(
            count(json!({"scopes": ["NotTerminating"]}))["pods"].canonical(),
            "2"
        );
        let pc = json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}});
        assert_eq!(count(pc)["pods"].canonical(), "1");
    }

    /// Now, without jiff's `std` feature (which `api` alone does not turn
    /// on).
    fn test_now() -> k8s_openapi::jiff::Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()
    }
}
