//! NodeResourcesFit: requests must fit in allocatable minus what the node's
//! pods (and pods nominated there with at least this priority) request;
//! LeastAllocated scoring favours emptier nodes.

use super::CycleState;
use crate::framework::{Code, FilterResult, Status};
use crate::nodeinfo::NodeInfo;

/// Plugin name.
pub const NAME: &str = "NodeResourcesFit";

/// Rejects nodes lacking any requested resource, listing every shortage.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let req = &state.pod.requests;
    let alloc = &node.allocatable;
    let used = &node.requested;
    let extra = state.nominated_on(&node.name);
    let (mut pods, mut cpu, mut mem, mut eph) = (
        used.pods,
        used.milli_cpu,
        used.memory,
        used.ephemeral_storage,
    );
    if let Some(e) = extra {
        pods += e.pods;
        cpu += e.milli_cpu;
        mem += e.memory;
        eph += e.ephemeral_storage;
    }
    let short_pods = pods + 1 > alloc.pods;
    let short_cpu = req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - cpu;
    let short_mem = req.memory > 0 && req.memory > alloc.memory - mem;
    let short_eph =
        req.ephemeral_storage > 0 && req.ephemeral_storage > alloc.ephemeral_storage - eph;
    let short_scalar = req.scalar.iter().any(|(name, want)| {
        *want > 0
            && *want > alloc.scalar(name) - used.scalar(name) - extra.map_or(0, |e| e.scalar(name))
    });
    if !(short_pods || short_cpu || short_mem || short_eph || short_scalar) {
        return Ok(());
    }
    // The slow path only runs on failure: build upstream's reasons in order.
    let mut reasons = Vec::new();
    if short_pods {
        reasons.push("Too many pods".to_string());
    }
    for (short, name) in [
        (short_cpu, "cpu"),
        (short_mem, "memory"),
        (short_eph, "ephemeral-storage"),
    ] {
        if short {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    for (name, want) in &req.scalar {
        let taken = used.scalar(name) + extra.map_or(0, |e| e.scalar(name));
        if *want > 0 && *want > alloc.scalar(name) - taken {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    // Evicting pods cannot help when the request exceeds the whole node.
    let unresolvable = (short_cpu && req.milli_cpu > alloc.milli_cpu)
        || (short_mem && req.memory > alloc.memory)
        || (short_eph && req.ephemeral_storage > alloc.ephemeral_storage)
        || req
            .scalar
            .iter()
            .any(|(name, want)| *want > 0 && *want > alloc.scalar(name));
    Err(Status {
        plugin: NAME,
        code: if unresolvable {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        },
        reasons,
    })
}

/// Fraction of capacity left, 0-100 (upstream's leastRequestedScore).
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * 100 / capacity
}

/// CPU and memory after placing the pod, with non-zero defaults.
pub fn requested_after(state: &CycleState, node: &NodeInfo) -> (i64, i64) {
    (
        node.non_zero_requested.0 + state.pod.non_zero.0,
        node.non_zero_requested.1 + state.pod.non_zero.1,
    )
}

/// LeastAllocated over cpu and memory (weights 1:1).
pub fn score(state: &CycleState, nodes: &[&NodeInfo]) -> Vec<i64> {
    nodes
        .iter()
        .map(|n| {
            let (cpu, mem) = requested_after(state, n);
            (least_requested(cpu, n.allocatable.milli_cpu)
                + least_requested(mem, n.allocatable.memory))
                / 2
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    fn req(name: &str, cpu: &str, mem: &str) -> std::sync::Arc<crate::nodeinfo::PodInfo> {
        pod(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}),
        )
    }

    #[test]
    fn insufficient_resources_are_all_listed() {
        let mut n = node("n", json!({}), "2", "2Gi");
        n.add_pod(req("a", "1500m", "1Gi"));
        let s = CycleState::simple(req("p", "1", "2Gi"));
        assert_eq!(
            filter(&s, &n).unwrap_err().reasons,
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        let whole = filter(&CycleState::simple(req("p", "3", "1Gi")), &n).unwrap_err();
        // More than the whole node: evicting pods cannot help.
        assert_eq!(whole.code, Code::UnschedulableAndUnresolvable);
        let half = filter(&CycleState::simple(req("p", "1", "512Mi")), &n).unwrap_err();
        assert_eq!(half.reasons, vec!["Insufficient cpu"]);
        // Evicting the other pod would make room: preemption may help.
        assert_eq!(half.code, Code::Unschedulable);
        assert!(filter(&CycleState::simple(req("p", "500m", "1Gi")), &n).is_ok());
    }

    #[test]
    fn too_many_pods_and_extended_resources() {
        let mut n = node("n", json!({}), "2", "2Gi");
        n.allocatable.pods = 1;
        n.add_pod(req("a", "0", "0"));
        let s = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"containers": [{"name": "c", "resources": {"limits": {"example.com/gpu": "1"}}}]}),
        ));
        assert_eq!(
            filter(&s, &n).unwrap_err().reasons,
            vec!["Too many pods", "Insufficient example.com/gpu"]
        );
    }

    #[test]
    fn least_allocated_prefers_empty_nodes() {
        let empty = node("a", json!({}), "4", "4Gi");
        let mut busy = node("b", json!({}), "4", "4Gi");
        busy.add_pod(req("x", "2", "2Gi"));
        let s = CycleState::simple(req("p", "1", "1Gi"));
        assert_eq!(score(&s, &[&empty, &busy]), vec![75, 25]);
    }
}
