//! Namespaces: the `kubernetes` finalizer and Active phase by default, the
//! name label, and a deletion that waits for `spec.finalizers` while the
//! namespace is Terminating (upstream's namespace REST storage).

use serde_json::{Value, json};

use crate::catalogue::ResourceInfo;
use crate::registry::common::{child, set_default};
use crate::registry::{Strategy, base_prepare_for_update};

/// The Namespace strategy.
pub struct Namespace;

/// The one [`Namespace`] strategy.
pub static NAMESPACE: Namespace = Namespace;

impl Strategy for Namespace {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        if let Some(spec) = child(o, "spec") {
            set_default(spec, "finalizers", json!(["kubernetes"]));
        }
        if let Some(status) = child(o, "status") {
            set_default(status, "phase", json!("Active"));
        }
        let name = o
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let (Some(name), Some(meta)) = (name, child(o, "metadata"))
            && let Some(labels) = child(meta, "labels")
        {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }

    /// `spec.finalizers` only changes through the `finalize` subresource,
    /// and a Terminating namespace keeps its status.
    fn prepare_for_update(
        &self,
        info: &ResourceInfo,
        new: &mut Value,
        old: &Value,
        sub: Option<&str>,
    ) {
        base_prepare_for_update(self, info, new, old);
        if sub != Some("finalize") {
            new["spec"]["finalizers"] = old["spec"]["finalizers"].clone();
        }
        if old["status"]["phase"] == "Terminating" {
            new["status"] = old["status"].clone();
        }
    }

    fn finalizers_pending(&self, obj: &Value) -> bool {
        obj["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    }

    fn prepare_for_delete(&self, obj: &mut Value) {
        obj["status"]["phase"] = json!("Terminating");
    }
}
