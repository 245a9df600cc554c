//! PodTopologySpread: DoNotSchedule constraints filter on skew, ScheduleAnyway
//! constraints score (fewer matching pods in the node's domain is better).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::framework::{FilterResult, Status};
use crate::nodeinfo::{FastMap, NodeInfo, PodInfo};
use crate::selector::matches;

/// Plugin name.
pub const NAME: &str = "PodTopologySpread";
/// Upstream reason: skew would be exceeded.
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream reason: the node lacks a constraint's topology label.
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One constraint, resolved for the incoming pod.
#[derive(Debug, Clone)]
pub struct Constraint {
    max_skew: i64,
    key: String,
    selector: LabelSelector,
    min_domains: usize,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &PodInfo) -> Self {
        let mut selector = c.label_selector.clone().unwrap_or_default();
        // matchLabelKeys narrow the selector to the incoming pod's values.
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod.labels().get(k) {
                selector
                    .match_expressions
                    .get_or_insert_with(Vec::new)
                    .push(LabelSelectorRequirement {
                        key: k.clone(),
                        operator: "In".into(),
                        values: Some(vec![v.clone()]),
                    });
            }
        }
        let has_selector = c.label_selector.is_some();
        Constraint {
            max_skew: c.max_skew as i64,
            key: c.topology_key.clone(),
            // A constraint without a selector selects nothing.
            selector: if has_selector {
                selector
            } else {
                LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "r8s.io/never".into(),
                        operator: "In".into(),
                        values: Some(Vec::new()),
                    }]),
                    ..Default::default()
                }
            },
            min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn counts_pod(&self, incoming: &PodInfo, p: &PodInfo) -> bool {
        p.namespace == incoming.namespace
            && p.pod.metadata.deletion_timestamp.is_none()
            && matches(&self.selector, p.labels())
    }
}

/// The pod's constraints with the given whenUnsatisfiable.
pub fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(c, pod))
        .collect()
}

/// Matching-pod counts per domain, per constraint.
#[derive(Debug, Clone, Default)]
pub struct State {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    /// Global minimum per constraint (0 below minDomains), kept current so
    /// the per-node filter is O(constraints).
    mins: Vec<i64>,
}

/// Whether a node is counted for spreading: it passes the constraint
/// policies (`affinity_ok`, `taints_ok`) and has every topology key.
fn eligible(cs: &[Constraint], node: &NodeInfo, affinity_ok: bool, taints_ok: bool) -> bool {
    cs.iter().all(|c| {
        (!c.honor_affinity || affinity_ok)
            && (!c.honor_taints || taints_ok)
            && node.labels().contains_key(&c.key)
    })
}

fn count_over<'a>(
    cs: &[Constraint],
    pod: &PodInfo,
    nodes: impl Iterator<Item = &'a NodeInfo>,
    policy: &dyn Fn(&NodeInfo) -> (bool, bool),
) -> Vec<HashMap<String, i64>> {
    let mut counts = vec![HashMap::new(); cs.len()];
    for node in nodes {
        let (aff, taints) = policy(node);
        if !eligible(cs, node, aff, taints) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            let v = &node.labels()[&c.key];
            let n = node.pods.iter().filter(|p| c.counts_pod(pod, p)).count() as i64;
            *counts[i].entry(v.clone()).or_default() += n;
        }
    }
    counts
}

impl State {
    /// Counts the DoNotSchedule constraints' matching pods over every node;
    /// `policy(node)` says whether the node matches the pod's node affinity
    /// and tolerates its taints.
    pub fn new<'a>(
        pod: &PodInfo,
        nodes: impl Iterator<Item = &'a NodeInfo>,
        policy: &dyn Fn(&NodeInfo) -> (bool, bool),
    ) -> Self {
        let constraints = constraints(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return State::default();
        }
        let counts = count_over(&constraints, pod, nodes, policy);
        let mut s = State {
            constraints,
            counts,
            mins: Vec::new(),
        };
        s.mins = (0..s.constraints.len()).map(|i| s.min_of(i)).collect();
        s
    }

    fn min_of(&self, i: usize) -> i64 {
        let counts = &self.counts[i];
        if counts.len() < self.constraints[i].min_domains {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        }
    }

    /// Adjusts counts for a pod removed from (-1) or added to (1) a node.
    pub fn update(&mut self, incoming: &PodInfo, p: &PodInfo, node: &NodeInfo, delta: i64) {
        for i in 0..self.constraints.len() {
            let c = &self.constraints[i];
            if let Some(v) = node.labels().get(&c.key)
                && c.counts_pod(incoming, p)
                && let Some(n) = self.counts[i].get_mut(v)
            {
                *n += delta;
                self.mins[i] = self.min_of(i);
            }
        }
    }
}

/// Rejects nodes where placing the pod would exceed a constraint's maxSkew.
pub fn filter(state: &State, pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(v) = node.labels().get(&c.key) else {
            return Err(Status::unresolvable(NAME, REASON_MISSING_LABEL));
        };
        let counts = &state.counts[i];
        let min = state.mins[i];
        let self_match = i64::from(matches(&c.selector, pod.labels()));
        let here = counts.get(v).copied().unwrap_or(0);
        if here + self_match - min > c.max_skew {
            return Err(Status::unschedulable(NAME, REASON));
        }
    }
    Ok(())
}

/// ScheduleAnyway constraints: fewer matching pods in the domain scores
/// higher; nodes missing a topology key score 0.
pub fn score<'a>(
    pod: &PodInfo,
    all: impl Iterator<Item = &'a NodeInfo>,
    feasible: &[&NodeInfo],
    policy: &dyn Fn(&NodeInfo) -> (bool, bool),
) -> Vec<i64> {
    let cs = constraints(pod, "ScheduleAnyway");
    if cs.is_empty() {
        return vec![0; feasible.len()];
    }
    let counts = count_over(&cs, pod, all, policy);
    let weights: Vec<f64> = counts.iter().map(|m| ((m.len() + 2) as f64).ln()).collect();
    let raw: Vec<Option<i64>> = feasible
        .iter()
        .map(|n| {
            let mut s = 0.0;
            for (i, c) in cs.iter().enumerate() {
                let v = n.labels().get(&c.key)?;
                let cnt = counts[i].get(v).copied().unwrap_or(0) as f64;
                s += cnt * weights[i] + (c.max_skew - 1) as f64;
            }
            Some(s.round() as i64)
        })
        .collect();
    let vals = raw.iter().flatten().copied();
    let (min, max) = (vals.clone().min().unwrap_or(0), vals.max().unwrap_or(0));
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => 100,
            Some(s) => 100 * (max + min - s) / max,
        })
        .collect()
}

/// Upstream's system default constraints, both ScheduleAnyway: maxSkew 3
/// by hostname and 5 by `topology.kubernetes.io/zone`.
const SYSTEM_DEFAULT_SKEWS: (i64, i64) = (3, 5);

/// Scores for pods without explicit constraints but with a controlling
/// ReplicaSet/StatefulSet/ReplicationController: spread them by hostname and
/// zone. `owner_pods` gives that owner's live pods per node name (pods of
/// the same controller stand in for upstream's selector-derived matching);
/// `node_of` resolves names for zone counting and `affinity_ok` applies the
/// node affinity policy.
pub fn system_default_score<'a>(
    owner_pods: Option<&FastMap<String, i64>>,
    feasible: &[&NodeInfo],
    node_of: &dyn Fn(&str) -> Option<&'a NodeInfo>,
    affinity_ok: &dyn Fn(&NodeInfo) -> bool,
) -> Vec<i64> {
    let Some(owner_pods) = owner_pods.filter(|m| !m.is_empty()) else {
        // No pod of the owner anywhere: every node scores the same.
        return vec![100; feasible.len()];
    };
    fn zone_of(n: &NodeInfo) -> Option<&str> {
        n.zone.as_deref()
    }
    // Zones are few: small vectors beat hashing here.
    let mut zones: Vec<(&str, i64)> = Vec::new();
    let mut zone_idx: Vec<Option<usize>> = Vec::with_capacity(feasible.len());
    for n in feasible {
        let z = zone_of(n).unwrap_or("");
        let i = match zones.iter().position(|(v, _)| *v == z) {
            Some(i) => i,
            None => {
                zones.push((z, 0));
                zones.len() - 1
            }
        };
        zone_idx.push(zone_of(n).map(|_| i));
    }
    for (name, cnt) in owner_pods {
        if let Some(n) = node_of(name)
            && affinity_ok(n)
        {
            let z = zone_of(n).unwrap_or("");
            if let Some(e) = zones.iter_mut().find(|(v, _)| *v == z) {
                e.1 += cnt;
            }
        }
    }
    let host_weight = ((feasible.len() + 2) as f64).ln();
    let zone_weight = ((zones.len() + 2) as f64).ln();
    let raw: Vec<i64> = feasible
        .iter()
        .zip(&zone_idx)
        .map(|(n, zi)| {
            let host = owner_pods.get(&n.name).copied().unwrap_or(0) as f64;
            let mut s = host * host_weight + (SYSTEM_DEFAULT_SKEWS.0 - 1) as f64;
            if let Some(i) = zi {
                s += zones[*i].1 as f64 * zone_weight + (SYSTEM_DEFAULT_SKEWS.1 - 1) as f64;
            }
            s.round() as i64
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.iter()
        .map(|s| {
            if max == 0 {
                100
            } else {
                100 * (max + min - s) / max
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

    fn spread(name: &str, when: &str, extra: serde_json::Value) -> Arc<PodInfo> {
        let mut c = json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
                           "labelSelector": {"matchLabels": {"app": "web"}}});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        pod(
            name,
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [c]}),
        )
    }

    fn web(name: &str) -> Arc<PodInfo> {
        pod(name, json!({"app": "web"}), json!({}))
    }

    fn all_ok(_: &NodeInfo) -> (bool, bool) {
        (true, true)
    }

    #[test]
    fn zone_skew_filter() {
        let mut a = node("a", json!({"zone": "z1"}), "1", "1Gi");
        let b = node("b", json!({"zone": "z2"}), "1", "1Gi");
        let bare = node("c", json!({}), "1", "1Gi");
        a.add_pod(web("w0"));
        let p = spread("w1", "DoNotSchedule", json!({}));
        let st = State::new(&p, [&a, &b, &bare].into_iter(), &all_ok);
        assert_eq!(filter(&st, &p, &a).unwrap_err().reasons, vec![REASON]);
        assert!(filter(&st, &p, &b).is_ok());
        assert_eq!(
            filter(&st, &p, &bare).unwrap_err().reasons,
            vec![REASON_MISSING_LABEL]
        );
    }

    #[test]
    fn removing_pods_updates_skew_for_preemption() {
        let mut a = node("a", json!({"zone": "z1"}), "1", "1Gi");
        let b = node("b", json!({"zone": "z2"}), "1", "1Gi");
        let (w0, w1) = (web("w0"), web("w1"));
        a.add_pod(w0.clone());
        a.add_pod(w1.clone());
        let p = spread("w2", "DoNotSchedule", json!({}));
        let mut st = State::new(&p, [&a, &b].into_iter(), &all_ok);
        assert!(filter(&st, &p, &a).is_err());
        st.update(&p, &w0, &a, -1);
        st.update(&p, &w1, &a, -1);
        assert!(filter(&st, &p, &a).is_ok());
        st.update(&p, &w0, &a, 1);
        st.update(&p, &w1, &a, 1);
        assert!(filter(&st, &p, &a).is_err());
    }

    #[test]
    fn min_domains_forces_new_domains() {
        let mut a = node("a", json!({"zone": "z1"}), "1", "1Gi");
        a.add_pod(web("w0"));
        let p = spread("w1", "DoNotSchedule", json!({"minDomains": 2}));
        let st = State::new(&p, [&a].into_iter(), &all_ok);
        // Only one domain exists: the global minimum counts as 0, skew 2 > 1.
        assert!(filter(&st, &p, &a).is_err());
        let p1 = spread("w1", "DoNotSchedule", json!({}));
        let st1 = State::new(&p1, [&a].into_iter(), &all_ok);
        assert!(filter(&st1, &p1, &a).is_ok());
    }

    #[test]
    fn node_affinity_policy_excludes_domains() {
        let mut a = node("a", json!({"zone": "z1"}), "1", "1Gi");
        let b = node("b", json!({"zone": "z2"}), "1", "1Gi");
        a.add_pod(web("w0"));
        let p = spread("w1", "DoNotSchedule", json!({}));
        // z2 does not match the pod's node affinity: only z1 is counted.
        let st = State::new(&p, [&a, &b].into_iter(), &|n: &NodeInfo| {
            (n.name == "a", true)
        });
        assert!(filter(&st, &p, &a).is_ok());
    }

    #[test]
    fn system_defaults_spread_a_controllers_pods() {
        let a = node(
            "a",
            json!({"topology.kubernetes.io/zone": "z1"}),
            "1",
            "1Gi",
        );
        let b = node(
            "b",
            json!({"topology.kubernetes.io/zone": "z1"}),
            "1",
            "1Gi",
        );
        let c = node(
            "c",
            json!({"topology.kubernetes.io/zone": "z2"}),
            "1",
            "1Gi",
        );
        let nodes = [&a, &b, &c];
        let lookup =
            |name: &str| -> Option<&NodeInfo> { nodes.iter().copied().find(|n| n.name == name) };
        let owned: FastMap<String, i64> = [("a".to_string(), 2)].into_iter().collect();
        let s = system_default_score(Some(&owned), &nodes, &lookup, &|_| true);
        // c is in the other zone and has none of the pods: best; a worst.
        assert_eq!(s[2], 100);
        assert!(s[1] > s[0], "{s:?}");
        assert!(s[2] > s[1], "{s:?}");
        // No pods of the owner yet: every node is equal.
        let s = system_default_score(None, &nodes, &lookup, &|_| true);
        assert_eq!(s, vec![100, 100, 100]);
    }

    #[test]
    fn schedule_anyway_scores_emptier_domain() {
        let mut a = node("a", json!({"zone": "z1"}), "1", "1Gi");
        let b = node("b", json!({"zone": "z2"}), "1", "1Gi");
        a.add_pod(web("w0"));
        a.add_pod(web("w1"));
        let p = spread("w2", "ScheduleAnyway", json!({}));
        let s = score(&p, [&a, &b].into_iter(), &[&a, &b], &all_ok);
        assert!(s[1] > s[0], "{s:?}");
        assert_eq!(s[1], 100);
    }
}
