//! The `storage.k8s.io` group: StorageClasses delete their volumes and
//! bind at once by default.

use serde_json::{Value, json};

use super::Strategy;
use super::common::set_default;

/// The StorageClass strategy.
pub struct StorageClass;

/// The one [`StorageClass`] strategy.
pub static STORAGE_CLASS: StorageClass = StorageClass;

impl Strategy for StorageClass {
    fn name(&self) -> &'static str {
        "storageclasses"
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        set_default(o, "reclaimPolicy", json!("Delete"));
        set_default(o, "volumeBindingMode", json!("Immediate"));
    }
}
