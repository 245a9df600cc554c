//! TaintToleration: NoSchedule/NoExecute taints need tolerations; untolerated
//! PreferNoSchedule taints lower the score.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::{CycleState, normalize};
use crate::framework::{FilterResult, Status};
use crate::nodeinfo::NodeInfo;

/// Plugin name.
pub const NAME: &str = "TaintToleration";

/// Whether one toleration tolerates a taint (upstream's ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Whether any toleration tolerates the taint.
pub fn tolerated(tols: &[Toleration], taint: &Taint) -> bool {
    tols.iter().any(|t| tolerates(t, taint))
}

/// The first NoSchedule/NoExecute taint the tolerations miss.
pub fn first_untolerated<'a>(tols: &[Toleration], taints: &'a [Taint]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(tols, t))
}

/// Rejects nodes with an untolerated NoSchedule/NoExecute taint.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    match first_untolerated(state.tolerations(), &node.taints) {
        None => Ok(()),
        Some(t) => Err(Status::unresolvable(
            NAME,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ),
        )),
    }
}

/// Fewer untolerated PreferNoSchedule taints score higher.
pub fn score(state: &CycleState, nodes: &[&NodeInfo]) -> Vec<i64> {
    let tols: Vec<&Toleration> = state
        .tolerations()
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            n.taints
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule")
                .filter(|t| !tols.iter().any(|tol| tolerates(tol, t)))
                .count() as i64
        })
        .collect();
    normalize(raw, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node_with, pod};
    use serde_json::json;

    fn tainted(effect: &str) -> NodeInfo {
        node_with(
            "n",
            json!({}),
            "1",
            "1Gi",
            json!({"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": effect}]}),
        )
    }

    #[test]
    fn untolerated_taint_message() {
        let s = CycleState::simple(pod("p", json!({}), json!({})));
        let err = filter(&s, &tainted("NoSchedule")).unwrap_err();
        assert_eq!(
            err.reasons,
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
        assert!(filter(&s, &tainted("PreferNoSchedule")).is_ok());
    }

    #[test]
    fn tolerations_match() {
        let s = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}),
        ));
        assert!(filter(&s, &tainted("NoExecute")).is_ok());
        let eq = Toleration {
            key: Some("k".into()),
            value: Some("v".into()),
            ..Default::default()
        };
        let taint = |v: &str| Taint {
            key: "k".into(),
            value: Some(v.into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        assert!(tolerates(&eq, &taint("v")));
        assert!(!tolerates(&eq, &taint("w")));
        let all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&all, &taint("w")));
    }

    #[test]
    fn not_ready_nodes_carry_the_lifecycle_taint() {
        let node = |status: &str| {
            let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
                "metadata": {"name": "n"},
                "status": {"conditions": [{"type": "Ready", "status": status}]}
            }))
            .unwrap();
            let mut info = NodeInfo::new("n");
            info.set_node(std::sync::Arc::new(n));
            info
        };
        let s = CycleState::simple(pod("p", json!({}), json!({})));
        assert_eq!(
            filter(&s, &node("False")).unwrap_err().reasons,
            vec!["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        assert_eq!(
            filter(&s, &node("Unknown")).unwrap_err().reasons,
            vec!["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]
        );
        assert!(filter(&s, &node("True")).is_ok());
        // DaemonSet pods tolerate both.
        let ds = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]}),
        ));
        assert!(filter(&ds, &node("False")).is_ok());
    }

    #[test]
    fn prefer_no_schedule_scores_lower() {
        let s = CycleState::simple(pod("p", json!({}), json!({})));
        let clean = node_with("a", json!({}), "1", "1Gi", json!({}));
        let t = tainted("PreferNoSchedule");
        assert_eq!(score(&s, &[&clean, &t]), vec![100, 0]);
    }
}
