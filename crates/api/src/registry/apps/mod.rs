//! The `apps` group: Deployments, ReplicaSets, StatefulSets and
//! DaemonSets share their validation (a selector that matches the pod
//! template, a valid template, no negative replicas) and an immutable
//! selector; each has its own defaults.

pub mod daemonset;
pub mod deployment;
pub mod replicaset;
pub mod statefulset;

use serde_json::{Map, Value};

use crate::registry::Strategy;
use crate::registry::common::{FieldError, immutable, invalid, is_empty, required, spec_of};
use crate::registry::core::podspec::{default_template_in, validate_pod_template};

/// An apps/v1 workload's strategy: the rules all four share, with the
/// kind's own spec defaults.
pub struct Workload {
    name: &'static str,
    defaults: fn(&mut Map<String, Value>),
    default_scale_replicas: i64,
}

impl Strategy for Workload {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = spec_of(obj) else { return };
        (self.defaults)(spec);
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
        self.default_scale_replicas
    }
}

/// What every apps/v1 workload must satisfy.
pub(crate) fn validate_workload(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    selector_matches_template(obj, &mut errs);
    validate_pod_template(&obj["spec"]["template"], "spec.template", &mut errs);
    if let Some(r) = obj["spec"]["replicas"].as_i64()
        && r < 0
    {
        errs.push(invalid(
            "spec.replicas",
            &obj["spec"]["replicas"],
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// A workload's selector is immutable (apps/v1), on main-resource updates.
pub(crate) fn validate_workload_update(
    new: &Value,
    old: &Value,
    sub: Option<&str>,
) -> Vec<FieldError> {
    if sub.is_none() && new["spec"]["selector"] != old["spec"]["selector"] {
        vec![immutable("spec.selector", &new["spec"]["selector"])]
    } else {
        Vec::new()
    }
}

fn selector_matches_template(obj: &Value, errs: &mut Vec<FieldError>) {
    let selector = &obj["spec"]["selector"];
    if is_empty(selector) {
        errs.push(required("spec.selector"));
        return;
    }
    let labels = obj["spec"]["template"]["metadata"]["labels"].as_object();
    let matches = match selector["matchLabels"].as_object() {
        Some(ml) => ml
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)),
        None => true,
    };
    let expressions_ok = selector["matchExpressions"]
        .as_array()
        .map(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or("");
                let val = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap_or("") {
                    "In" => val.is_some_and(|v| values.contains(&v)),
                    "NotIn" => !val.is_some_and(|v| values.contains(&v)),
                    "Exists" => val.is_some(),
                    "DoesNotExist" => val.is_none(),
                    _ => false,
                }
            })
        })
        .unwrap_or(true);
    if !matches || !expressions_ok {
        let l = obj["spec"]["template"]["metadata"]["labels"].clone();
        errs.push(invalid(
            "spec.template.metadata.labels",
            &Value::String(render_labels(&l)),
            "`selector` does not match template `labels`",
        ));
    }
}

fn render_labels(l: &Value) -> String {
    let mut parts: Vec<String> = l
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    format!("map[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use crate::catalogue;
    use crate::registry::strategy;
    use serde_json::json;

    #[test]
    fn deployment_selector_must_match() {
        let info = catalogue::find("apps", "v1", "deployments").unwrap();
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let errs = strategy(info).validate(&d);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        assert!(
            errs[0]
                .message
                .contains("`selector` does not match template `labels`")
        );
    }
}
