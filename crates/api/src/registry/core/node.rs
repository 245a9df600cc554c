//! Nodes: a node registers with its status, and its pod ranges are set
//! once (upstream's `ValidateNodeUpdate`).

use serde_json::Value;

use crate::registry::Strategy;
use crate::registry::common::{FieldError, forbidden};

/// The Node strategy.
pub struct Node;

/// The one [`Node`] strategy.
pub static NODE: Node = Node;

impl Strategy for Node {
    fn name(&self) -> &'static str {
        "nodes"
    }

    /// The kubelet registers its node with the status it observed.
    fn keeps_status_on_create(&self) -> bool {
        true
    }

    /// A node's pod ranges are set once, by its agent or the node IPAM
    /// controller: moving them would strand the pods already addressed
    /// from them.
    fn validate_update(&self, new: &Value, old: &Value, sub: Option<&str>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if sub.is_some() {
            return errs;
        }
        let (new, old) = (&new["spec"], &old["spec"]);
        const MSG: &str = "node updates may not change podCIDR except from \"\" to valid";
        let set = |v: &Value| v.as_str().filter(|s| !s.is_empty()).is_some();
        if set(&old["podCIDR"]) && new["podCIDR"] != old["podCIDR"] {
            errs.push(forbidden("spec.podCIDR", MSG));
        }
        let old_list = old["podCIDRs"].as_array().filter(|a| !a.is_empty());
        if old_list.is_some() && new["podCIDRs"].as_array() != old_list {
            errs.push(forbidden("spec.podCIDRs", MSG));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_pod_range_is_set_once() {
        let validate_update = |n: &Value, o: &Value| NODE.validate_update(n, o, None);
        let empty = json!({"spec": {}});
        let set = json!({"spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}});
        assert!(validate_update(&set, &empty).is_empty());
        assert!(validate_update(&set, &set).is_empty());
        let moved = json!({"spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}});
        let errs = validate_update(&moved, &set);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.podCIDR", "spec.podCIDRs"]);
        assert!(
            errs[0]
                .message
                .contains("may not change podCIDR except from \"\" to valid")
        );
    }
}
