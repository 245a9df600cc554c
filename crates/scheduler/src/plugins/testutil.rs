//! Builders for plugin unit tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::nodeinfo::{NodeInfo, PodInfo};

/// A pod from a JSON spec (name, namespace default, uid = name).
pub fn pod(name: &str, labels: Value, spec: Value) -> Arc<PodInfo> {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c"}]);
    }
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
        "spec": spec
    }))
    .unwrap();
    let prio = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    Arc::new(PodInfo::new(Arc::new(p), prio))
}

/// A Ready node with labels and allocatable cpu/memory/pods.
pub fn node(name: &str, labels: Value, cpu: &str, mem: &str) -> NodeInfo {
    node_with(name, labels, cpu, mem, json!({}))
}

/// Like `node`, with a spec.
pub fn node_with(name: &str, labels: Value, cpu: &str, mem: &str, spec: Value) -> NodeInfo {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    let mut info = NodeInfo::new(name);
    info.set_node(Arc::new(n));
    info
}
