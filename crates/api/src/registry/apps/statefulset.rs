//! StatefulSets: upstream's defaults (ordered pod management, a rolling
//! update from partition 0, retained claims, Filesystem claim templates)
//! over the shared workload rules.

use serde_json::{Map, Value, json};

use super::Workload;
use crate::registry::common::{child, for_each_in, set_default};

/// The one StatefulSet strategy: the shared workload rules and its defaults.
pub static STATEFUL_SET: Workload = Workload {
    name: "statefulsets",
    defaults,
    default_scale_replicas: 0,
};

/// Upstream's defaults for a StatefulSet's spec (its pod template is defaulted
/// by the shared rules).
fn defaults(spec: &mut Map<String, Value>) {
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(us) = child(spec, "updateStrategy") {
        set_default(us, "type", json!("RollingUpdate"));
        if us.get("type") == Some(&json!("RollingUpdate"))
            && let Some(ru) = child(us, "rollingUpdate")
        {
            set_default(ru, "partition", json!(0));
        }
    }
    if let Some(p) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default(p, "whenDeleted", json!("Retain"));
        set_default(p, "whenScaled", json!("Retain"));
    }
    for_each_in(spec, "volumeClaimTemplates", |pvc| {
        if let Some(s) = child(pvc, "spec") {
            set_default(s, "volumeMode", json!("Filesystem"));
        }
        set_default(pvc, "apiVersion", json!("v1"));
        set_default(pvc, "kind", json!("PersistentVolumeClaim"));
    });
}
