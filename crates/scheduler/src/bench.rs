//! Throughput check of the decision path (cache + plugins), without the API.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use crate::cache::Cache;
use crate::nodeinfo::PodInfo;
use crate::plugins::CycleState;
use crate::schedule::{Picker, schedule};

fn node(i: usize) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("n{i}"), "labels": {
                "kubernetes.io/hostname": format!("n{i}"),
                "topology.kubernetes.io/zone": format!("z{}", i % 3)}},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap_or_default(),
    )
}

fn pod(i: usize, anti: bool) -> Arc<PodInfo> {
    let affinity = if anti {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": format!("a{}", i % 50)}},
             "topologyKey": "kubernetes.io/hostname"}]}})
    } else {
        json!(null)
    };
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("u{i}"),
                     "labels": {"app": format!("a{}", i % 50)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "name": format!("rs{}", i % 50), "uid": format!("rs{}", i % 50),
                         "controller": true}]},
        "spec": {"affinity": affinity, "containers": [{"name": "c", "image": "nginx",
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    }))
    .unwrap_or_default();
    Arc::new(PodInfo::new(Arc::new(p), 0))
}

/// Schedules `pods` pods on `nodes` nodes (with hostname anti-affinity per
/// app when `anti`); returns decisions per second.
pub fn decisions_per_second(nodes: usize, pods: usize, anti: bool) -> f64 {
    let mut cache = Cache::new();
    for i in 0..nodes {
        cache.upsert_node(node(i));
    }
    let mut picker = Picker::new(0);
    let ns = Arc::new(Default::default());
    let start = Instant::now();
    for i in 0..pods {
        let p = pod(i, anti);
        let state = CycleState::new(&cache, p.clone(), Arc::clone(&ns));
        if let Ok(n) = schedule(&cache, &state, &mut picker) {
            cache.assume(p, &n);
        }
    }
    pods as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_of_decisions_per_second_on_5000_nodes() {
        let rate = super::decisions_per_second(5000, 3000, false);
        eprintln!("decisions/s on 5000 nodes: {rate:.0}");
        // Debug builds are far slower than release; this only guards against
        // accidental per-pod work proportional to the cluster size squared.
        assert!(rate > 100.0, "{rate}");
    }

    #[test]
    fn anti_affinity_pods_stay_fast() {
        let rate = super::decisions_per_second(2000, 1000, true);
        eprintln!("anti-affinity decisions/s on 2000 nodes: {rate:.0}");
        assert!(rate > 50.0, "{rate}");
    }
}
