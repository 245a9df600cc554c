//! DaemonSets: upstream's defaults (a rolling update of one node at a
//! time, no surge) over the shared workload rules.

use serde_json::{Value, json};

use super::{validate_workload, validate_workload_update};
use crate::registry::Strategy;
use crate::registry::common::{FieldError, child, set_default, spec_of};
use crate::registry::core::podspec::default_template_in;

/// The DaemonSet strategy.
pub struct DaemonSet;

/// The one [`DaemonSet`] strategy.
pub static DAEMON_SET: DaemonSet = DaemonSet;

impl Strategy for DaemonSet {
    fn name(&self) -> &'static str {
        "daemonsets"
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = spec_of(obj) else { return };
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
        default_template_in(spec);
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_workload(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value, sub: Option<&str>) -> Vec<FieldError> {
        validate_workload_update(new, old, sub)
    }
}
