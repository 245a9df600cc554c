//! The `rbac.authorization.k8s.io` group: a binding's User and Group
//! subjects are in the RBAC API group by default.

use serde_json::{Value, json};

use super::Strategy;
use super::common::{for_each_in, set_default};

/// The RoleBinding and ClusterRoleBinding strategy.
pub struct Binding {
    name: &'static str,
}

/// The RoleBinding strategy.
pub static ROLE_BINDING: Binding = Binding {
    name: "rolebindings",
};

/// The ClusterRoleBinding strategy.
pub static CLUSTER_ROLE_BINDING: Binding = Binding {
    name: "clusterrolebindings",
};

impl Strategy for Binding {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        for_each_in(o, "subjects", |s| {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            if kind == "User" || kind == "Group" {
                set_default(s, "apiGroup", json!("rbac.authorization.k8s.io"));
            }
        });
    }
}
