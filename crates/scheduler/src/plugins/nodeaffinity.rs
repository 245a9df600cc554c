//! NodeAffinity: spec.nodeSelector and required node affinity filter;
//! preferred node affinity scores.

use super::{CycleState, normalize};
use crate::framework::{FilterResult, Status};
use crate::nodeinfo::NodeInfo;
use crate::selector::{term_matches, terms_match};

/// Plugin name.
pub const NAME: &str = "NodeAffinity";
/// Upstream reason.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether the node satisfies the pod's nodeSelector and required affinity.
pub fn node_matches(state: &CycleState, node: &NodeInfo) -> bool {
    let Some(spec) = state.spec() else {
        return true;
    };
    let Some(n) = &node.node else {
        return false;
    };
    if let Some(sel) = &spec.node_selector {
        let labels = node.labels();
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
        Some(req) => terms_match(&req.node_selector_terms, n),
        None => true,
    }
}

/// Rejects nodes not matching the selector/required affinity.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    if node_matches(state, node) {
        Ok(())
    } else {
        Err(Status::unresolvable(NAME, REASON))
    }
}

/// Sum of the weights of matching preferred terms, normalized to 0-100.
pub fn score(state: &CycleState, nodes: &[&NodeInfo]) -> Vec<i64> {
    let prefs = state
        .spec()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    let raw = nodes
        .iter()
        .map(|n| match &n.node {
            Some(node) => prefs
                .iter()
                .filter(|p| p.weight != 0 && term_matches(&p.preference, node))
                .map(|p| p.weight as i64)
                .sum(),
            None => 0,
        })
        .collect();
    normalize(raw, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn selector_and_required_terms() {
        let ssd = node("a", json!({"disk": "ssd", "zone": "z1"}), "1", "1Gi");
        let hdd = node("b", json!({"disk": "hdd", "zone": "z1"}), "1", "1Gi");
        let s = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"nodeSelector": {"disk": "ssd"}}),
        ));
        assert!(filter(&s, &ssd).is_ok());
        assert_eq!(filter(&s, &hdd).unwrap_err().reasons, vec![REASON]);
        let aff = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
            ]}}}}),
        ));
        assert!(filter(&aff, &ssd).is_err());
        assert!(filter(&aff, &hdd).is_ok());
    }

    #[test]
    fn preferred_terms_score() {
        let a = node("a", json!({"disk": "ssd"}), "1", "1Gi");
        let b = node("b", json!({"disk": "hdd"}), "1", "1Gi");
        let s = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}),
        ));
        assert_eq!(score(&s, &[&a, &b]), vec![100, 33]);
    }
}
