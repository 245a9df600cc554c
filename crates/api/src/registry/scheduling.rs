//! The `scheduling.k8s.io` group: PriorityClasses preempt lower
//! priorities by default.

use serde_json::{Value, json};

use super::Strategy;
use super::common::set_default;

/// The PriorityClass strategy.
pub struct PriorityClass;

/// The one [`PriorityClass`] strategy.
pub static PRIORITY_CLASS: PriorityClass = PriorityClass;

impl Strategy for PriorityClass {
    fn name(&self) -> &'static str {
        "priorityclasses"
    }

    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
    }
}
