//! NodeUnschedulable: cordoned nodes take only pods tolerating
//! `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::Taint;

use super::CycleState;
use super::tainttoleration::tolerated;
use crate::framework::{FilterResult, Status};
use crate::nodeinfo::NodeInfo;

/// Plugin name.
pub const NAME: &str = "NodeUnschedulable";
/// Upstream reason.
pub const REASON: &str = "node(s) were unschedulable";

/// Rejects cordoned nodes.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let cordoned = node
        .node
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if tolerated(state.tolerations(), &taint) {
        Ok(())
    } else {
        Err(Status::unresolvable(NAME, REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node_with, pod};
    use serde_json::json;

    #[test]
    fn cordoned_node_needs_toleration() {
        let n = node_with("n", json!({}), "1", "1Gi", json!({"unschedulable": true}));
        let plain = CycleState::simple(pod("p", json!({}), json!({})));
        assert_eq!(filter(&plain, &n).unwrap_err().reasons, vec![REASON]);
        let tol = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
        ));
        assert!(filter(&tol, &n).is_ok());
        let open = node_with("m", json!({}), "1", "1Gi", json!({}));
        assert!(filter(&plain, &open).is_ok());
    }
}
