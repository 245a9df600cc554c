//! NodeName: a pod naming a node fits only there.

use super::CycleState;
use crate::framework::{FilterResult, Status};
use crate::nodeinfo::NodeInfo;

/// Plugin name.
pub const NAME: &str = "NodeName";
/// Upstream reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// Rejects nodes other than spec.nodeName when set.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    match state.spec().and_then(|s| s.node_name.as_deref()) {
        Some(n) if !n.is_empty() && n != node.name => Err(Status::unresolvable(NAME, REASON)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn only_named_node_fits() {
        let s = CycleState::simple(pod("p", json!({}), json!({"nodeName": "a"})));
        assert!(filter(&s, &node("a", json!({}), "1", "1Gi")).is_ok());
        assert!(filter(&s, &node("b", json!({}), "1", "1Gi")).is_err());
        let any = CycleState::simple(pod("p", json!({}), json!({})));
        assert!(filter(&any, &node("b", json!({}), "1", "1Gi")).is_ok());
    }
}
