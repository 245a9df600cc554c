//! NodeResourcesBalancedAllocation: favour nodes whose CPU and memory
//! utilisation stay close to each other after placing the pod.

use super::CycleState;
use super::noderesources::requested_after;
use crate::nodeinfo::NodeInfo;

/// Plugin name.
pub const NAME: &str = "NodeResourcesBalancedAllocation";

/// (1 - standard deviation of the cpu/memory fractions) * 100.
pub fn score(state: &CycleState, nodes: &[&NodeInfo]) -> Vec<i64> {
    nodes
        .iter()
        .map(|n| {
            let (cpu, mem) = requested_after(state, n);
            let frac = |r: i64, c: i64| {
                if c <= 0 {
                    1.0
                } else {
                    (r as f64 / c as f64).min(1.0)
                }
            };
            let std =
                (frac(cpu, n.allocatable.milli_cpu) - frac(mem, n.allocatable.memory)).abs() / 2.0;
            ((1.0 - std) * 100.0) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn balanced_nodes_score_higher() {
        let s = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}),
        ));
        let even = node("a", json!({}), "4", "4Gi");
        let skewed = node("b", json!({}), "4", "1Gi");
        let scores = score(&s, &[&even, &skewed]);
        assert_eq!(scores[0], 100);
        assert_eq!(scores[1], 62);
    }
}
