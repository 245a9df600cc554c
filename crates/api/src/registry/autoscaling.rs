//! The `autoscaling` group (v1 and v2 share storage and rules): the
//! generation of a HorizontalPodAutoscaler tracks spec changes, and its
//! spec is defaulted as upstream's autoscaling/v2 `SetDefaults`.

use serde_json::{Value, json};

use super::Strategy;
use super::common::set_default;

/// The HorizontalPodAutoscaler strategy.
pub struct HorizontalPodAutoscaler;

/// The one [`HorizontalPodAutoscaler`] strategy.
pub static HORIZONTAL_POD_AUTOSCALER: HorizontalPodAutoscaler = HorizontalPodAutoscaler;

/// Fills in a direction's scaling rules from upstream's defaults.
fn default_rules(rules: &mut Value, window: Option<i64>, policies: Value) {
    if !rules.is_object() {
        *rules = json!({});
    }
    let Some(r) = rules.as_object_mut() else {
        return;
    };
    if let Some(w) = window {
        set_default(r, "stabilizationWindowSeconds", json!(w));
    }
    set_default(r, "selectPolicy", json!("Max"));
    set_default(r, "policies", policies);
}

impl Strategy for HorizontalPodAutoscaler {
    fn name(&self) -> &'static str {
        "horizontalpodautoscalers"
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        set_default(spec, "minReplicas", json!(1));
        if spec
            .get("metrics")
            .and_then(Value::as_array)
            .is_none_or(|m| m.is_empty())
        {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
        // A behavior, once given, is filled in for both directions; the
        // scale-down window is left to the controller's flag.
        if let Some(b) = spec.get_mut("behavior").filter(|b| b.is_object()) {
            default_rules(
                &mut b["scaleUp"],
                Some(0),
                json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                       {"type": "Percent", "value": 100, "periodSeconds": 15}]),
            );
            default_rules(
                &mut b["scaleDown"],
                None,
                json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hpa_is_defaulted_as_upstream() {
        let mut o = json!({"spec": {"maxReplicas": 3}});
        HORIZONTAL_POD_AUTOSCALER.default(&mut o);
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(o["spec"].get("behavior").is_none());
        let mut o = json!({"spec": {"maxReplicas": 3, "minReplicas": 2,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}});
        HORIZONTAL_POD_AUTOSCALER.default(&mut o);
        let b = &o["spec"]["behavior"];
        assert_eq!(o["spec"]["minReplicas"], 2);
        assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(b["scaleUp"]["policies"].as_array().unwrap().len(), 2);
        assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 30);
        assert_eq!(b["scaleDown"]["selectPolicy"], "Max");
    }
}
