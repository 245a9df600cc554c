//! The default profile's filter and score plugins, run in upstream order,
//! over per-cycle state computed once per pod.

pub mod balancedallocation;
pub mod imagelocality;
pub mod interpodaffinity;
pub mod nodeaffinity;
pub mod nodename;
pub mod nodeports;
pub mod noderesources;
pub mod nodeunschedulable;
pub mod podtopologyspread;
pub mod tainttoleration;
#[cfg(test)]
pub mod testutil;
pub mod volumebinding;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodSpec, Toleration};

use crate::cache::Cache;
use crate::framework::FilterResult;
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::resources::Resource;

/// Everything computed once per scheduling attempt of one pod.
#[derive(Debug, Clone)]
pub struct CycleState {
    /// The pod being scheduled.
    pub pod: Arc<PodInfo>,
    /// Requests of pods nominated to a node with at least this priority.
    pub nominated: HashMap<String, Resource>,
    /// InterPodAffinity counts.
    pub affinity: interpodaffinity::State,
    /// PodTopologySpread counts.
    pub spread: podtopologyspread::State,
    /// Namespace labels (for namespaceSelector terms).
    pub namespaces: Arc<interpodaffinity::NamespaceLabels>,
    /// Node-affinity terms of the pod's bound volumes (VolumeBinding).
    pub volume_affinity: Vec<Vec<k8s_openapi::api::core::v1::NodeSelectorTerm>>,
}

impl CycleState {
    /// State with no cluster-wide counts (for single-node plugins and tests).
    pub fn simple(pod: Arc<PodInfo>) -> Self {
        CycleState {
            pod,
            nominated: HashMap::new(),
            affinity: Default::default(),
            spread: Default::default(),
            namespaces: Default::default(),
            volume_affinity: Vec::new(),
        }
    }

    /// Computes the pre-filter state of `pod` against the cache.
    pub fn new(
        cache: &Cache,
        pod: Arc<PodInfo>,
        namespaces: Arc<interpodaffinity::NamespaceLabels>,
    ) -> Self {
        let mut s = CycleState::simple(pod);
        s.namespaces = namespaces;
        if s.pod.has_affinity() || cache.any_anti_affinity_pods() {
            s.affinity = interpodaffinity::State::new(&s.pod, cache.nodes(), &s.namespaces);
        }
        let policy = |n: &NodeInfo| s.policy(n);
        s.spread = podtopologyspread::State::new(&s.pod, cache.nodes(), &policy);
        if cache.has_nominated() {
            for n in cache.nodes() {
                for p in cache.nominated_on(&n.name) {
                    if p.key != s.pod.key && p.priority >= s.pod.priority {
                        let e = s.nominated.entry(n.name.clone()).or_default();
                        e.add(&p.requests);
                        e.pods += 1;
                    }
                }
            }
        }
        s
    }

    /// The pod's spec.
    pub fn spec(&self) -> Option<&PodSpec> {
        self.pod.pod.spec.as_ref()
    }

    /// The pod's tolerations.
    pub fn tolerations(&self) -> &[Toleration] {
        self.spec()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default()
    }

    /// Extra requests on a node from nominated pods.
    pub fn nominated_on(&self, node: &str) -> Option<&Resource> {
        if self.nominated.is_empty() {
            return None;
        }
        self.nominated.get(node)
    }

    /// (matches node affinity, tolerates NoSchedule/NoExecute taints): the
    /// inputs of topology spread's node policies.
    pub fn policy(&self, n: &NodeInfo) -> (bool, bool) {
        (
            nodeaffinity::node_matches(self, n),
            tainttoleration::first_untolerated(self.tolerations(), &n.taints).is_none(),
        )
    }
}

/// Runs every filter in upstream's order, stopping at the first failure.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    nodeunschedulable::filter(state, node)?;
    nodename::filter(state, node)?;
    tainttoleration::filter(state, node)?;
    nodeaffinity::filter(state, node)?;
    nodeports::filter(state, node)?;
    noderesources::filter(state, node)?;
    volumebinding::filter(state, node)?;
    podtopologyspread::filter(&state.spread, &state.pod, node)?;
    interpodaffinity::filter(&state.affinity, &state.pod, node, &state.namespaces)
}

/// Weighted sum of every score plugin (default profile weights).
pub fn score(cache: &Cache, state: &CycleState, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut total = vec![0; nodes.len()];
    let mut add = |w: i64, s: Vec<i64>| {
        for (t, v) in total.iter_mut().zip(s) {
            *t += w * v;
        }
    };
    add(3, tainttoleration::score(state, nodes));
    add(2, nodeaffinity::score(state, nodes));
    add(1, noderesources::score(state, nodes));
    add(1, balancedallocation::score(state, nodes));
    add(
        1,
        imagelocality::score(
            state,
            nodes,
            |i| cache.image_node_count(i),
            cache.num_nodes(),
        ),
    );
    if state.pod.has_affinity() || cache.any_affinity_pods() {
        add(
            2,
            interpodaffinity::score(&state.pod, cache.nodes(), nodes, &state.namespaces),
        );
    }
    if state
        .spec()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty())
    {
        let policy = |n: &NodeInfo| state.policy(n);
        add(
            2,
            podtopologyspread::score(&state.pod, cache.nodes(), nodes, &policy),
        );
    } else if let Some(owner) = &state.pod.owner {
        add(
            2,
            podtopologyspread::system_default_score(
                cache.owner_pods(owner),
                nodes,
                &|name| cache.node(name),
                &|n| nodeaffinity::node_matches(state, n),
            ),
        );
    }
    total
}

/// Upstream's DefaultNormalizeScore: scale to 0-100 by the maximum,
/// reversed when lower raw values are better.
pub fn normalize(raw: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return vec![if reverse { 100 } else { 0 }; raw.len()];
    }
    raw.into_iter()
        .map(|s| {
            let v = 100 * s / max;
            if reverse { 100 - v } else { v }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    fn prio(name: &str, cpu: &str, priority: i32) -> Arc<PodInfo> {
        pod(
            name,
            json!({}),
            json!({"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    #[test]
    fn nominated_pods_reserve_room_for_equal_or_lower_priority() {
        let mut cache = Cache::new();
        cache.upsert_node(node("a", json!({}), "1", "1Gi").node.unwrap());
        cache.set_nominated(prio("vip", "800m", 100), Some("a"));
        let ns = Arc::new(interpodaffinity::NamespaceLabels::new());
        let low = CycleState::new(&cache, prio("low", "500m", 0), ns.clone());
        let n = cache.node("a").unwrap();
        assert_eq!(
            filter(&low, n).unwrap_err().reasons,
            vec!["Insufficient cpu"]
        );
        // A more important pod ignores the reservation.
        let higher = CycleState::new(&cache, prio("higher", "500m", 1000), ns.clone());
        assert!(filter(&higher, n).is_ok());
        // The nominated pod itself fits.
        let vip = CycleState::new(&cache, prio("vip", "800m", 100), ns);
        assert!(filter(&vip, n).is_ok());
    }

    #[test]
    fn filters_stop_at_the_first_failing_plugin_in_upstream_order() {
        let n = crate::plugins::testutil::node_with(
            "a",
            json!({}),
            "1",
            "1Gi",
            json!({"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]}),
        );
        let s = CycleState::simple(prio("p", "2", 0));
        let err = filter(&s, &n).unwrap_err();
        assert_eq!(err.plugin, nodeunschedulable::NAME);
        assert_eq!(err.reasons, vec!["node(s) were unschedulable"]);
    }
}
