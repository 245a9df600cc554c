//! NodePorts: a host port can be bound by one pod per node.

use super::CycleState;
use crate::framework::{FilterResult, Status};
use crate::nodeinfo::NodeInfo;

/// Plugin name.
pub const NAME: &str = "NodePorts";
/// Upstream reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// Rejects nodes where a requested host port is taken.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    if state.pod.ports.iter().any(|hp| node.port_conflicts(hp)) {
        Err(Status::unschedulable(NAME, REASON))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    fn with_port(name: &str, ip: &str, port: i32) -> std::sync::Arc<crate::nodeinfo::PodInfo> {
        pod(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}),
        )
    }

    #[test]
    fn host_port_conflicts() {
        let mut n = node("n", json!({}), "1", "1Gi");
        n.add_pod(with_port("a", "10.0.0.1", 8080));
        assert!(filter(&CycleState::simple(with_port("b", "10.0.0.1", 8080)), &n).is_err());
        assert!(filter(&CycleState::simple(with_port("b", "0.0.0.0", 8080)), &n).is_err());
        assert!(filter(&CycleState::simple(with_port("b", "10.0.0.2", 8080)), &n).is_ok());
        assert!(filter(&CycleState::simple(with_port("b", "10.0.0.1", 8081)), &n).is_ok());
        n.remove_pod("default/a");
        assert!(filter(&CycleState::simple(with_port("b", "10.0.0.1", 8080)), &n).is_ok());
    }
}
