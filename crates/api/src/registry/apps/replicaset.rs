//! ReplicaSets: one replica by default, over the shared workload rules.

use serde_json::{Value, json};

use super::{validate_workload, validate_workload_update};
use crate::registry::Strategy;
use crate::registry::common::{FieldError, set_default, spec_of};
use crate::registry::core::podspec::default_template_in;

/// The ReplicaSet strategy.
pub struct ReplicaSet;

/// The one [`ReplicaSet`] strategy.
pub static REPLICA_SET: ReplicaSet = ReplicaSet;

impl Strategy for ReplicaSet {
    fn name(&self) -> &'static str {
        "replicasets"
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = spec_of(obj) else { return };
        set_default(spec, "replicas", json!(1));
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
