//! DaemonSets: upstream's defaults (a rolling update of one node at a
//! time, no surge) over the shared workload rules.

use serde_json::{Map, Value, json};

use super::Workload;
use crate::registry::common::{child, set_default};

/// The one DaemonSet strategy: the shared workload rules and its defaults.
pub static DAEMON_SET: Workload = Workload {
    name: "daemonsets",
    defaults,
    default_scale_replicas: 0,
};

/// Upstream's defaults for a DaemonSet's spec (its pod template is defaulted
/// by the shared rules).
fn defaults(spec: &mut Map<String, Value>) {
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(us) = child(spec, "updateStrategy") {
        set_default(us, "type", json!("RollingUpdate"));
        if us.get("type") == Some(&json!("RollingUpdate"))
            && let Some(ru) = child(us, "rollingUpdate")
        {
            set_default(ru, "maxUnavailable", json!(1));
            set_default(ru, "maxSurge", json!(0));
        }
    }
}
