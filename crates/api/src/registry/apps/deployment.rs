//! Deployments: upstream's defaults (one replica, a 25% rolling update,
//! ten old ReplicaSets kept) over the shared workload rules.

use serde_json::{Value, json};

use super::{validate_workload, validate_workload_update};
use crate::registry::Strategy;
use crate::registry::common::{FieldError, child, set_default, spec_of};
use crate::registry::core::podspec::default_template_in;

/// The Deployment strategy.
pub struct Deployment;

/// The one [`Deployment`] strategy.
pub static DEPLOYMENT: Deployment = Deployment;

impl Strategy for Deployment {
    fn name(&self) -> &'static str {
        "deployments"
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = spec_of(obj) else { return };
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        if let Some(strategy) = child(spec, "strategy") {
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate"))
                && let Some(ru) = child(strategy, "rollingUpdate")
            {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
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

    /// A Deployment without replicas runs one (its defaulting).
    fn default_scale_replicas(&self) -> i64 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(_group: &str, _plural: &str, obj: &mut Value) {
        DEPLOYMENT.default(obj);
    }

    #[test]
    fn deployment_defaults_like_upstream() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}}}});
        apply("apps", "deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply("apps", "deployments", &mut d);
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }
}
