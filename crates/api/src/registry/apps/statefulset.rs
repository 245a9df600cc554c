//! StatefulSets: upstream's defaults (ordered pod management, a rolling
//! update from partition 0, retained claims, Filesystem claim templates)
//! over the shared workload rules.

use serde_json::{Value, json};

use super::{validate_workload, validate_workload_update};
use crate::registry::Strategy;
use crate::registry::common::{FieldError, child, for_each_in, set_default, spec_of};
use crate::registry::core::podspec::default_template_in;

/// The StatefulSet strategy.
pub struct StatefulSet;

/// The one [`StatefulSet`] strategy.
pub static STATEFUL_SET: StatefulSet = StatefulSet;

impl Strategy for StatefulSet {
    fn name(&self) -> &'static str {
        "statefulsets"
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = spec_of(obj) else { return };
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
