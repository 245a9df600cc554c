//! InterPodAffinity: required pod affinity/anti-affinity of the incoming pod,
//! existing pods' required anti-affinity against it, and preferred terms of
//! both for scoring, all by topology domain.

use std::collections::HashMap;

use crate::framework::{FilterResult, Status};
pub use crate::nodeinfo::terms::{NamespaceLabels, Term, Terms};
use crate::nodeinfo::{NodeInfo, PodInfo};

/// Plugin name.
pub const NAME: &str = "InterPodAffinity";
/// Upstream reason: the pod's required affinity is not met.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Upstream reason: the pod's required anti-affinity is violated.
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Upstream reason: an existing pod's anti-affinity rejects the pod.
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// Weight of an existing pod's required affinity in scoring (upstream's
/// hardPodAffinityWeight default).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// Counts by topology key, then value: lookups by `&str` without allocating.
#[derive(Debug, Default, Clone)]
struct Domains(HashMap<String, HashMap<String, i64>>);

impl Domains {
    /// Adds `delta` to the node's domain for `key` (nodes without it: no-op).
    fn add(&mut self, node: &NodeInfo, key: &str, delta: i64) {
        if let Some(v) = node.labels().get(key) {
            *self
                .0
                .entry(key.to_string())
                .or_default()
                .entry(v.clone())
                .or_default() += delta;
        }
    }

    /// The count of the node's domain for `key`.
    fn get(&self, node: &NodeInfo, key: &str) -> i64 {
        match (self.0.get(key), node.labels().get(key)) {
            (Some(vals), Some(v)) => vals.get(v).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether any of the node's domains, for any key, has a positive count.
    fn any_positive(&self, node: &NodeInfo) -> bool {
        self.0.iter().any(|(k, vals)| {
            node.labels()
                .get(k)
                .and_then(|v| vals.get(v))
                .is_some_and(|c| *c > 0)
        })
    }

    /// Whether no domain has a positive count.
    fn all_empty(&self) -> bool {
        self.0.values().flat_map(|m| m.values()).all(|c| *c <= 0)
    }
}

/// Per-cycle counts by topology domain.
#[derive(Debug, Default, Clone)]
pub struct State {
    terms: Terms,
    /// Existing pods whose required anti-affinity matches the incoming pod.
    existing_anti: Domains,
    /// Existing pods matching all of the incoming pod's affinity terms.
    affinity_counts: Domains,
    /// Existing pods matching the incoming pod's anti-affinity terms.
    anti_counts: Domains,
}

impl State {
    /// Builds the counts over every node.
    pub fn new<'a>(
        pod: &PodInfo,
        nodes: impl Iterator<Item = &'a NodeInfo>,
        ns: &NamespaceLabels,
    ) -> Self {
        let mut s = State {
            terms: pod.terms.clone(),
            ..Default::default()
        };
        let own = !s.terms.affinity.is_empty() || !s.terms.anti_affinity.is_empty();
        for node in nodes {
            if own {
                for p in &node.pods {
                    s.account(pod, p, node, ns, 1);
                }
            } else {
                for p in &node.pods_with_required_anti_affinity {
                    s.account(pod, p, node, ns, 1);
                }
            }
        }
        s
    }

    /// Adds (`delta` 1) or removes (-1) one existing pod's contribution.
    fn account(
        &mut self,
        pod: &PodInfo,
        p: &PodInfo,
        node: &NodeInfo,
        ns: &NamespaceLabels,
        delta: i64,
    ) {
        if p.has_required_anti_affinity() {
            for t in &p.terms.anti_affinity {
                if t.matches(pod, ns) {
                    self.existing_anti.add(node, &t.topology_key, delta);
                }
            }
        }
        if !self.terms.affinity.is_empty() && self.terms.affinity.iter().all(|t| t.matches(p, ns)) {
            for t in &self.terms.affinity {
                self.affinity_counts.add(node, &t.topology_key, delta);
            }
        }
        for t in &self.terms.anti_affinity {
            if t.matches(p, ns) {
                self.anti_counts.add(node, &t.topology_key, delta);
            }
        }
    }

    /// Forgets a pod removed from `node` (preemption dry runs).
    pub fn remove_pod(
        &mut self,
        pod: &PodInfo,
        victim: &PodInfo,
        node: &NodeInfo,
        ns: &NamespaceLabels,
    ) {
        self.account(pod, victim, node, ns, -1);
    }

    /// Re-adds a pod to `node` (preemption reprieve).
    pub fn add_pod(&mut self, pod: &PodInfo, p: &PodInfo, node: &NodeInfo, ns: &NamespaceLabels) {
        self.account(pod, p, node, ns, 1);
    }
}

/// Filters a node against the three required-term rules, in upstream order.
pub fn filter(state: &State, pod: &PodInfo, node: &NodeInfo, ns: &NamespaceLabels) -> FilterResult {
    if state.existing_anti.any_positive(node) {
        return Err(Status::unschedulable(NAME, REASON_EXISTING_ANTI_AFFINITY));
    }
    if state
        .terms
        .anti_affinity
        .iter()
        .any(|t| state.anti_counts.get(node, &t.topology_key) > 0)
    {
        return Err(Status::unschedulable(NAME, REASON_ANTI_AFFINITY));
    }
    let aff = &state.terms.affinity;
    if !aff.is_empty() {
        let has_keys = aff
            .iter()
            .all(|t| node.labels().contains_key(&t.topology_key));
        let satisfied = has_keys
            && aff
                .iter()
                .all(|t| state.affinity_counts.get(node, &t.topology_key) > 0);
        // The first pod of a group with affinity to itself may go anywhere
        // the topology keys exist.
        let first_of_group =
            has_keys && state.affinity_counts.all_empty() && aff.iter().all(|t| t.matches(pod, ns));
        if !satisfied && !first_of_group {
            return Err(Status::unresolvable(NAME, REASON_AFFINITY));
        }
    }
    Ok(())
}

/// Preferred terms of the pod and of existing pods, summed by domain and
/// normalized to 0-100 over `feasible`.
pub fn score<'a>(
    pod: &PodInfo,
    all: impl Iterator<Item = &'a NodeInfo>,
    feasible: &[&NodeInfo],
    ns: &NamespaceLabels,
) -> Vec<i64> {
    let terms = &pod.terms;
    let own = !terms.preferred_affinity.is_empty() || !terms.preferred_anti_affinity.is_empty();
    let mut by_key: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut add = |node: &NodeInfo, key: &str, w: i64| {
        if let Some(v) = node.labels().get(key) {
            *by_key
                .entry(key.to_string())
                .or_default()
                .entry(v.clone())
                .or_default() += w;
        }
    };
    for node in all {
        let pods = if own {
            &node.pods
        } else {
            &node.pods_with_affinity
        };
        for p in pods {
            for t in &terms.preferred_affinity {
                if t.matches(p, ns) {
                    add(node, &t.topology_key, t.weight);
                }
            }
            for t in &terms.preferred_anti_affinity {
                if t.matches(p, ns) {
                    add(node, &t.topology_key, -t.weight);
                }
            }
            if p.has_affinity() {
                let et = &p.terms;
                for t in &et.affinity {
                    if t.matches(pod, ns) {
                        add(node, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for t in &et.preferred_affinity {
                    if t.matches(pod, ns) {
                        add(node, &t.topology_key, t.weight);
                    }
                }
                for t in &et.preferred_anti_affinity {
                    if t.matches(pod, ns) {
                        add(node, &t.topology_key, -t.weight);
                    }
                }
            }
        }
    }
    if by_key.is_empty() {
        return vec![0; feasible.len()];
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|n| {
            by_key
                .iter()
                .filter_map(|(k, vals)| n.labels().get(k).and_then(|v| vals.get(v)))
                .sum()
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.iter()
        .map(|s| {
            if max > min {
                100 * (s - min) / (max - min)
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn anti(name: &str, app: &str, key: &str) -> Arc<PodInfo> {
        pod(
            name,
            json!({"app": app}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}}),
        )
    }

    fn run(p: &PodInfo, nodes: &[&NodeInfo]) -> Vec<FilterResult> {
        let ns = NamespaceLabels::new();
        let st = State::new(p, nodes.iter().copied(), &ns);
        nodes.iter().map(|n| filter(&st, p, n, &ns)).collect()
    }

    #[test]
    fn anti_affinity_spreads_by_hostname_and_zone() {
        let mut a = node("a", json!({"zone": "z1"}), "1", "1Gi");
        let b = node("b", json!({"zone": "z1"}), "1", "1Gi");
        let c = node("c", json!({"zone": "z2"}), "1", "1Gi");
        a.add_pod(pod("web-0", json!({"app": "web"}), json!({})));
        let host = anti("web-1", "web", "kubernetes.io/hostname");
        let r = run(&host, &[&a, &b, &c]);
        assert_eq!(
            r[0].clone().unwrap_err().reasons,
            vec![REASON_ANTI_AFFINITY]
        );
        assert!(r[1].is_ok() && r[2].is_ok());
        let zone = anti("web-1", "web", "zone");
        let r = run(&zone, &[&a, &b, &c]);
        assert!(r[0].is_err() && r[1].is_err() && r[2].is_ok());
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric() {
        let mut a = node("a", json!({}), "1", "1Gi");
        let b = node("b", json!({}), "1", "1Gi");
        a.add_pod(anti("db-0", "db", "kubernetes.io/hostname"));
        let plain = pod("db-1", json!({"app": "db"}), json!({}));
        let r = run(&plain, &[&a, &b]);
        assert_eq!(
            r[0].clone().unwrap_err().reasons,
            vec![REASON_EXISTING_ANTI_AFFINITY]
        );
        assert!(r[1].is_ok());
    }

    #[test]
    fn required_affinity_and_first_of_group() {
        let aff = |name: &str| {
            pod(
                name,
                json!({"app": "cache"}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}}),
            )
        };
        let mut a = node("a", json!({"zone": "z1"}), "1", "1Gi");
        let b = node("b", json!({"zone": "z2"}), "1", "1Gi");
        let nolabel = node("c", json!({}), "1", "1Gi");
        // No matching pod yet: the pod matching its own terms may go anywhere with the key.
        let r = run(&aff("c-0"), &[&a, &b, &nolabel]);
        assert!(r[0].is_ok() && r[1].is_ok());
        assert_eq!(r[2].clone().unwrap_err().reasons, vec![REASON_AFFINITY]);
        a.add_pod(aff("c-0"));
        let r = run(&aff("c-1"), &[&a, &b]);
        assert!(r[0].is_ok());
        assert!(r[1].is_err());
    }

    #[test]
    fn match_label_keys_narrow_to_the_same_revision() {
        let mut a = node("a", json!({}), "1", "1Gi");
        let b = node("b", json!({}), "1", "1Gi");
        a.add_pod(pod("old", json!({"app": "web", "rev": "1"}), json!({})));
        let p = pod(
            "new",
            json!({"app": "web", "rev": "2"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev"],
                 "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        // The old revision's pod does not count against the new one.
        let r = run(&p, &[&a, &b]);
        assert!(r[0].is_ok() && r[1].is_ok());
    }

    #[test]
    fn preferred_anti_affinity_scores_away() {
        let mut a = node("a", json!({}), "1", "1Gi");
        let b = node("b", json!({}), "1", "1Gi");
        a.add_pod(pod("web-0", json!({"app": "web"}), json!({})));
        let p = pod(
            "web-1",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}),
        );
        let ns = NamespaceLabels::new();
        let s = score(&p, [&a, &b].into_iter(), &[&a, &b], &ns);
        assert_eq!(s, vec![0, 100]);
    }
}
