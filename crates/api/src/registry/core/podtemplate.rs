//! PodTemplates: a pod template, defaulted and validated as a pod's.

use serde_json::Value;

use super::podspec::{default_template_in, validate_pod_template};
use crate::registry::Strategy;
use crate::registry::common::FieldError;

/// The PodTemplate strategy.
pub struct PodTemplate;

/// The one [`PodTemplate`] strategy.
pub static POD_TEMPLATE: PodTemplate = PodTemplate;

impl Strategy for PodTemplate {
    fn name(&self) -> &'static str {
        "podtemplates"
    }

    fn default(&self, obj: &mut Value) {
        // The template sits at the top level, where workloads have `spec`.
        if let Some(o) = obj.as_object_mut() {
            default_template_in(o);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_template(&obj["template"], "template", &mut errs);
        errs
    }
}
