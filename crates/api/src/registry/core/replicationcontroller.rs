//! ReplicationControllers: upstream's defaults (one replica) and a valid
//! pod template; the generation tracks spec changes.

use serde_json::{Value, json};

use super::podspec::{default_template_in, validate_pod_template};
use crate::registry::Strategy;
use crate::registry::common::{FieldError, set_default, spec_of};

/// The ReplicationController strategy.
pub struct ReplicationController;

/// The one [`ReplicationController`] strategy.
pub static REPLICATION_CONTROLLER: ReplicationController = ReplicationController;

impl Strategy for ReplicationController {
    fn name(&self) -> &'static str {
        "replicationcontrollers"
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = spec_of(obj) {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "minReadySeconds", json!(0));
            default_template_in(spec);
        }
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_template(&obj["spec"]["template"], "spec.template", &mut errs);
        errs
    }
}
