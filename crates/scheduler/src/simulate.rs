//! The scheduler's decisions, simulated on a cluster of the caller's
//! making: what the cluster autoscaler asks ("would this pending pod fit on
//! a new node of this group?", "can this node's pods go elsewhere?"), as
//! upstream's cluster-autoscaler runs the scheduler framework's filters
//! itself. Nothing here talks to the API.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::cache::Cache;
use crate::framework::fit_message;
use crate::nodeinfo::PodInfo;
use crate::plugins::CycleState;
use crate::plugins::interpodaffinity::NamespaceLabels;
use crate::schedule::{Picker, schedule};

/// A cluster in memory: nodes and the pods placed on them.
pub struct Simulator {
    cache: Cache,
    picker: Picker,
    namespaces: Arc<NamespaceLabels>,
}

fn info(pod: Arc<Pod>) -> Arc<PodInfo> {
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    Arc::new(PodInfo::new(pod, priority))
}

impl Simulator {
    /// The cluster of `nodes` with the bound, unfinished `pods` on them.
    pub fn new(nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> Simulator {
        let mut cache = Cache::new();
        for n in nodes {
            cache.upsert_node(n.clone());
        }
        for p in pods {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if let Some(node) = node
                && !matches!(phase, Some("Succeeded" | "Failed"))
            {
                cache.add_bound_pod(info(p.clone()), node);
            }
        }
        Simulator {
            cache,
            // Every node is looked at: the answer must not depend on a
            // sample.
            picker: Picker::new(100),
            namespaces: Arc::default(),
        }
    }

    /// Adds (or replaces) a node.
    pub fn add_node(&mut self, node: Arc<Node>) {
        self.cache.upsert_node(node);
    }

    /// Removes a node and the pods on it.
    pub fn remove_node(&mut self, name: &str) {
        let keys: Vec<(String, String)> = self
            .cache
            .node(name)
            .map(|n| {
                n.pods
                    .iter()
                    .map(|p| (p.key.clone(), p.uid.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, uid) in keys {
            self.cache.remove_pod(&key, &uid);
        }
        self.cache.remove_node(name);
    }

    /// Places `pod` where the scheduler would, and keeps it there; or
    /// says why no node fits, in the scheduler's words.
    pub fn place(&mut self, pod: Arc<Pod>) -> Result<String, String> {
        let p = info(pod);
        let state = CycleState::new(&self.cache, p.clone(), self.namespaces.clone());
        match schedule(&self.cache, &state, &mut self.picker) {
            Ok(node) => {
                self.cache.assume(p, &node);
                Ok(node)
            }
            Err(nofit) => Err(fit_message(nofit.num_nodes, nofit.statuses.values())),
        }
    }

    /// How many nodes there are.
    pub fn num_nodes(&self) -> usize {
        self.cache.num_nodes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, cpu: &str, on: Option<&str>) -> Arc<Pod> {
        let mut spec = json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu}}}]});
        if let Some(n) = on {
            spec["nodeName"] = json!(n);
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": name},
                "spec": spec,
                "status": {"phase": if on.is_some() { "Running" } else { "Pending" }},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn pods_pack_onto_nodes_until_full_and_removed_nodes_take_their_pods() {
        let mut sim = Simulator::new(&[node("a", "2")], &[pod("x", "1500m", Some("a"))]);
        let e = sim.place(pod("p1", "1", None)).unwrap_err();
        assert!(e.contains("Insufficient cpu"), "{e}");
        sim.add_node(node("new-1", "2"));
        assert_eq!(sim.place(pod("p1", "1", None)).unwrap(), "new-1");
        assert_eq!(sim.place(pod("p2", "1", None)).unwrap(), "new-1");
        assert!(sim.place(pod("p3", "1", None)).is_err());
        // Without node a, x has room on no node.
        sim.remove_node("a");
        assert_eq!(sim.num_nodes(), 1);
        assert!(sim.place(pod("x", "1500m", None)).is_err());
    }
}
