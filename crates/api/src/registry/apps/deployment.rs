//! Deployments: upstream's defaults (one replica, a 25% rolling update,
//! ten old ReplicaSets kept) over the shared workload rules.

use serde_json::{Map, Value, json};

use super::Workload;
use crate::registry::common::{child, set_default};

/// The one Deployment strategy: the shared workload rules and its defaults.
pub static DEPLOYMENT: Workload = Workload {
    name: "deployments",
    defaults,
    default_scale_replicas: 1,
};

/// Upstream's defaults for a Deployment's spec (its pod template is defaulted
/// by the shared rules).
fn defaults(spec: &mut Map<String, Value>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Strategy;

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
