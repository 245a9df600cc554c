//! Questions every controller asks of objects: does a selector match,
//! is a pod ready or done, who controls an object. One answer each, as
//! upstream's `controller_utils` and `podutil`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

/// Whether `labels` satisfy a metav1.LabelSelector (`{}` matches all; an
/// unknown operator matches nothing).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let have = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// Whether a selector has no requirements (it would select everything).
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// Whether a pod reached Succeeded or Failed.
pub fn pod_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a pod is pending or running and not being deleted.
pub fn pod_active(p: &Pod) -> bool {
    !pod_terminal(p) && p.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became True: `None` when it is not
/// ready, `Some(None)` when ready without a transition time.
pub fn pod_ready_since(p: &Pod) -> Option<Option<Timestamp>> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    pod_ready_since(p).is_some()
}

/// Whether the node's Ready condition is True.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The controller ownerReference of an object, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A controller ownerReference pointing at `owner` (blocking its owner's
/// foreground deletion, as upstream's controllers set it).
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
        }
    }

    #[test]
    fn selectors_match_as_upstream() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(selector_matches(&LabelSelector::default(), &l));
        assert!(selector_is_empty(&LabelSelector::default()));
        let ml = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: None,
        };
        assert!(selector_matches(&ml, &l));
        assert!(!selector_matches(&ml, &labels(&[("app", "db")])));
        assert!(selector_matches(&expr("tier", "In", &["front", "x"]), &l));
        assert!(!selector_matches(&expr("tier", "NotIn", &["front"]), &l));
        assert!(selector_matches(&expr("gone", "NotIn", &["front"]), &l));
        assert!(selector_matches(&expr("app", "Exists", &[]), &l));
        assert!(!selector_matches(&expr("app", "DoesNotExist", &[]), &l));
        assert!(!selector_matches(&expr("app", "Bogus", &[]), &l));
    }

    #[test]
    fn pod_readiness_and_phases() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        assert!(pod_ready(&pod) && pod_active(&pod) && !pod_terminal(&pod));
        assert!(pod_ready_since(&pod).unwrap().is_some());
        let done: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d"}, "status": {"phase": "Succeeded"}}))
        .unwrap();
        assert!(!pod_ready(&done) && pod_terminal(&done) && !pod_active(&done));
    }
}
