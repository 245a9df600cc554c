//! The scheduler's view of the cluster: nodes with the pods bound or assumed
//! on them, kept up to date from informer events and scheduling decisions.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::nodeinfo::{FastMap, NodeInfo, PodInfo};
use crate::selector::Labels;

#[derive(Debug)]
struct PodState {
    node: String,
    uid: String,
    assumed: bool,
}

/// Nodes, pods on them, and the few cluster facts plugins need.
#[derive(Debug, Default)]
pub struct Cache {
    /// Node entries in slots, so the hot loop walks indices, not hash maps.
    slots: Vec<NodeInfo>,
    index: FastMap<String, usize>,
    free: Vec<usize>,
    /// Slots of nodes whose Node object is known, in arrival order (the
    /// round-robin order of node evaluation).
    order: Vec<usize>,
    pods: HashMap<String, PodState>,
    /// How many nodes hold each normalized image.
    image_nodes: HashMap<String, usize>,
    /// Namespace labels, for affinity terms with a namespaceSelector.
    pub namespaces: HashMap<String, Labels>,
    /// Pods nominated to a node by preemption, waiting to be scheduled there.
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_node: HashMap<String, String>,
    /// Pods with any pod (anti-)affinity, and with required anti-affinity:
    /// when zero, affinity bookkeeping can skip the node scan.
    affinity_pods: usize,
    anti_affinity_pods: usize,
    /// Live pods per node for each controller owner UID.
    owner_nodes: FastMap<String, FastMap<String, i64>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a node; returns whether anything that can make a
    /// pending pod fit changed (so the unschedulable pods are retried).
    pub fn upsert_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let slot = self.slot(&name);
        let info = &mut self.slots[slot];
        let old = info.node.clone();
        if old.is_none() {
            self.order.push(slot);
        }

        for img in info.images.keys() {
            if let Some(c) = self.image_nodes.get_mut(img) {
                *c = c.saturating_sub(1);
            }
        }
        info.set_node(node.clone());
        for img in info.images.keys() {
            *self.image_nodes.entry(img.clone()).or_default() += 1;
        }
        match old {
            None => true,
            Some(old) => scheduling_relevant_change(&old, &node),
        }
    }

    /// Removes a node (its pods stay accounted until they are deleted).
    pub fn remove_node(&mut self, name: &str) {
        let Some(&slot) = self.index.get(name) else {
            return;
        };
        let info = &mut self.slots[slot];
        for img in info.images.keys() {
            if let Some(c) = self.image_nodes.get_mut(img) {
                *c = c.saturating_sub(1);
            }
        }
        info.node = None;
        info.images.clear();
        self.order.retain(|s| *s != slot);
        self.release_if_empty(slot);
    }

    /// The slot of a node name, allocating one if needed.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&s) = self.index.get(name) {
            return s;
        }
        let info = NodeInfo::new(name);
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s] = info;
                s
            }
            None => {
                self.slots.push(info);
                self.slots.len() - 1
            }
        };
        self.index.insert(name.to_string(), s);
        s
    }

    /// Frees a slot with neither a node nor pods.
    fn release_if_empty(&mut self, slot: usize) {
        let info = &self.slots[slot];
        if info.node.is_none() && info.pods.is_empty() {
            self.index.remove(&info.name);
            self.slots[slot] = NodeInfo::default();
            self.free.push(slot);
        }
    }

    /// Adds or updates a pod bound to `node` as seen from the API.
    pub fn add_bound_pod(&mut self, p: Arc<PodInfo>, node: &str) {
        self.remove_pod_entry(&p.key);
        self.insert(p, node, false);
    }

    /// Accounts a pod on `node` before its binding is confirmed.
    pub fn assume(&mut self, p: Arc<PodInfo>, node: &str) {
        self.remove_pod_entry(&p.key);
        self.insert(p, node, true);
    }

    /// Undoes `assume` after a failed binding (no-op once confirmed).
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|s| s.assumed) {
            self.remove_pod_entry(key);
        }
    }

    /// Whether a pod is assumed and not yet confirmed by the API.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|s| s.assumed)
    }

    /// The labels of a pod the API has confirmed on a node.
    pub fn bound_labels(&self, key: &str) -> Option<crate::selector::Labels> {
        let s = self.pods.get(key).filter(|s| !s.assumed)?;
        let slot = *self.index.get(&s.node)?;
        self.slots[slot]
            .pods
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.labels().clone())
    }

    /// Whether the API has confirmed the pod on a node.
    pub fn is_bound(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|s| !s.assumed)
    }

    /// Removes a pod (deleted or finished) if it is the same pod; returns
    /// whether it was accounted on a node.
    pub fn remove_pod(&mut self, key: &str, uid: &str) -> bool {
        match self.pods.get(key) {
            Some(s) if s.uid == uid || uid.is_empty() => {
                self.remove_pod_entry(key);
                true
            }
            _ => false,
        }
    }

    fn insert(&mut self, p: Arc<PodInfo>, node: &str, assumed: bool) {
        self.pods.insert(
            p.key.clone(),
            PodState {
                node: node.to_string(),
                uid: p.uid.clone(),
                assumed,
            },
        );
        self.affinity_pods += usize::from(p.has_affinity());
        self.anti_affinity_pods += usize::from(p.has_required_anti_affinity());
        if let Some(o) = owned_live(&p) {
            *self
                .owner_nodes
                .entry(o.to_string())
                .or_default()
                .entry(node.to_string())
                .or_default() += 1;
        }
        let slot = self.slot(node);
        self.slots[slot].add_pod(p);
    }

    fn remove_pod_entry(&mut self, key: &str) {
        if let Some(s) = self.pods.remove(key)
            && let Some(&slot) = self.index.get(&s.node)
        {
            if let Some(p) = self.slots[slot].remove_pod(key) {
                self.affinity_pods -= usize::from(p.has_affinity());
                self.anti_affinity_pods -= usize::from(p.has_required_anti_affinity());
                if let Some(o) = owned_live(&p)
                    && let Some(m) = self.owner_nodes.get_mut(o)
                {
                    if let Some(c) = m.get_mut(&s.node) {
                        *c -= 1;
                        if *c <= 0 {
                            m.remove(&s.node);
                        }
                    }
                    if m.is_empty() {
                        self.owner_nodes.remove(o);
                    }
                }
            }
            self.release_if_empty(slot);
        }
    }

    /// A node's entry.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index
            .get(name)
            .map(|&s| &self.slots[s])
            .filter(|n| n.node.is_some())
    }

    /// The `i`-th node in evaluation order (`i < num_nodes()`).
    pub fn at(&self, i: usize) -> &NodeInfo {
        &self.slots[self.order[i]]
    }

    /// Number of known nodes.
    pub fn num_nodes(&self) -> usize {
        self.order.len()
    }

    /// Every known node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.order.iter().map(|&s| &self.slots[s])
    }

    /// How many nodes hold an image (normalized name).
    pub fn image_node_count(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// Forgets a pod's nomination.
    pub fn clear_nominated(&mut self, key: &str) {
        if let Some(old) = self.nominated_node.remove(key)
            && let Some(v) = self.nominated.get_mut(&old)
        {
            v.retain(|q| q.key != key);
            if v.is_empty() {
                self.nominated.remove(&old);
            }
        }
    }

    /// Records (or clears, with None) the node a pending pod is nominated to.
    pub fn set_nominated(&mut self, p: Arc<PodInfo>, node: Option<&str>) {
        self.clear_nominated(&p.key);
        if let Some(node) = node.filter(|n| !n.is_empty()) {
            self.nominated_node.insert(p.key.clone(), node.to_string());
            self.nominated.entry(node.to_string()).or_default().push(p);
        }
    }

    /// Pods nominated to a node.
    pub fn nominated_on(&self, node: &str) -> &[Arc<PodInfo>] {
        self.nominated
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether any cached pod has pod affinity or anti-affinity terms.
    pub fn any_affinity_pods(&self) -> bool {
        self.affinity_pods > 0
    }

    /// Whether any cached pod has required anti-affinity terms.
    pub fn any_anti_affinity_pods(&self) -> bool {
        self.anti_affinity_pods > 0
    }

    /// Live pods of a controller owner, by node name.
    pub fn owner_pods(&self, owner: &str) -> Option<&FastMap<String, i64>> {
        self.owner_nodes.get(owner)
    }

    /// Whether any pod is nominated anywhere.
    pub fn has_nominated(&self) -> bool {
        !self.nominated.is_empty()
    }
}

/// The owner a pod counts for in default spreading (terminating pods do not count).
fn owned_live(p: &PodInfo) -> Option<&str> {
    if p.pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    p.owner.as_deref()
}

/// Whether a node update can make a pending pod schedulable (upstream's
/// queueing hints for Node/Update: allocatable, labels, taints, conditions,
/// unschedulable flag).
fn scheduling_relevant_change(old: &Node, new: &Node) -> bool {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    old.metadata.labels != new.metadata.labels
        || old.spec != new.spec
        || old.status.as_ref().and_then(|s| s.allocatable.as_ref())
            != new.status.as_ref().and_then(|s| s.allocatable.as_ref())
        || ready(old) != ready(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(name: &str, cpu: &str) -> Arc<PodInfo> {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(p), 0))
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn owner_counts_follow_pods() {
        let mut c = Cache::new();
        c.upsert_node(node("n1"));
        let owned = |name: &str| {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": name,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "rs", "uid": "rs-uid", "controller": true}]},
                "spec": {"containers": [{"name": "c"}]}
            }))
            .unwrap();
            Arc::new(PodInfo::new(Arc::new(p), 0))
        };
        c.assume(owned("a"), "n1");
        c.add_bound_pod(owned("b"), "n1");
        assert_eq!(c.owner_pods("rs-uid").unwrap()["n1"], 2);
        c.forget("default/a");
        assert_eq!(c.owner_pods("rs-uid").unwrap()["n1"], 1);
        c.remove_pod("default/b", "b");
        assert!(c.owner_pods("rs-uid").is_none());
    }

    #[test]
    fn assume_confirm_and_forget() {
        let mut c = Cache::new();
        assert!(c.upsert_node(node("n1")));
        // A heartbeat-like update with nothing relevant changed.
        assert!(!c.upsert_node(node("n1")));
        c.assume(pod("a", "1"), "n1");
        assert!(c.is_assumed("default/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        c.forget("default/a");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 0);
        c.assume(pod("a", "1"), "n1");
        c.add_bound_pod(pod("a", "1"), "n1");
        assert!(!c.is_assumed("default/a"));
        c.forget("default/a");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.node("n1").unwrap().requested.pods, 1);
        assert!(!c.remove_pod("default/a", "other-uid"));
        assert!(c.remove_pod("default/a", "a"));
        assert_eq!(c.node("n1").unwrap().requested.pods, 0);
    }
}
