//! Label selector matching (metav1.LabelSelector and node selector terms).

use std::collections::BTreeMap;

pub use controller_runtime::selector_matches as matches;
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm};

/// Labels of an object, empty when absent.
pub type Labels = BTreeMap<String, String>;

/// Whether one node selector requirement holds for `value` (None when the
/// label or field is missing).
fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let vals = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.contains(v)),
        "NotIn" => value.is_none_or(|v| !vals.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value, vals.first()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if r.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches the node; a term with no
/// requirements matches nothing, as upstream.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let empty = Labels::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    exprs
        .iter()
        .all(|r| requirement_holds(r, labels.get(&r.key)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_holds(r, node.metadata.name.as_ref()))
}

/// Whether any term matches (nodeSelectorTerms are ORed).
pub fn terms_match(terms: &[NodeSelectorTerm], node: &Node) -> bool {
    terms.iter().any(|t| term_matches(t, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}})).unwrap()
    }

    fn term(v: serde_json::Value) -> NodeSelectorTerm {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_selector_operators() {
        let n = node(json!({"zone": "a", "cores": "8"}));
        let t = |e: serde_json::Value| term_matches(&term(json!({"matchExpressions": [e]})), &n);
        assert!(t(
            json!({"key": "zone", "operator": "In", "values": ["a", "b"]})
        ));
        assert!(!t(
            json!({"key": "zone", "operator": "NotIn", "values": ["a"]})
        ));
        assert!(t(
            json!({"key": "disk", "operator": "NotIn", "values": ["ssd"]})
        ));
        assert!(t(json!({"key": "zone", "operator": "Exists"})));
        assert!(t(json!({"key": "disk", "operator": "DoesNotExist"})));
        assert!(t(
            json!({"key": "cores", "operator": "Gt", "values": ["4"]})
        ));
        assert!(!t(
            json!({"key": "cores", "operator": "Lt", "values": ["4"]})
        ));
        assert!(!t(
            json!({"key": "zone", "operator": "Gt", "values": ["4"]})
        ));
        let f = term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
        );
        assert!(term_matches(&f, &n));
        assert!(!term_matches(&term(json!({})), &n));
    }
}
