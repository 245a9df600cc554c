//! ReplicaSets: one replica by default, over the shared workload rules.

use serde_json::{Map, Value, json};

use super::Workload;
use crate::registry::common::set_default;

/// The one ReplicaSet strategy: the shared workload rules and its defaults.
pub static REPLICA_SET: Workload = Workload {
    name: "replicasets",
    defaults,
    default_scale_replicas: 0,
};

/// Upstream's defaults for a ReplicaSet's spec (its pod template is defaulted
/// by the shared rules).
fn defaults(spec: &mut Map<String, Value>) {
    set_default(spec, "replicas", json!(1));
}
