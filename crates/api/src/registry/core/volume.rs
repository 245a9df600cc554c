//! PersistentVolumes and PersistentVolumeClaims: upstream's defaults (a
//! Filesystem volume, Pending until bound, Retain for volumes).

use serde_json::{Value, json};

use crate::registry::Strategy;
use crate::registry::common::{child, set_default};

/// The PersistentVolumeClaim strategy.
pub struct PersistentVolumeClaim;

/// The one [`PersistentVolumeClaim`] strategy.
pub static PERSISTENT_VOLUME_CLAIM: PersistentVolumeClaim = PersistentVolumeClaim;

impl Strategy for PersistentVolumeClaim {
    fn name(&self) -> &'static str {
        "persistentvolumeclaims"
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        if let Some(spec) = child(o, "spec") {
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
        if let Some(status) = child(o, "status") {
            set_default(status, "phase", json!("Pending"));
        }
    }
}

/// The PersistentVolume strategy.
pub struct PersistentVolume;

/// The one [`PersistentVolume`] strategy.
pub static PERSISTENT_VOLUME: PersistentVolume = PersistentVolume;

impl Strategy for PersistentVolume {
    fn name(&self) -> &'static str {
        "persistentvolumes"
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        if let Some(spec) = child(o, "spec") {
            set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
        if let Some(status) = child(o, "status") {
            set_default(status, "phase", json!("Pending"));
        }
    }
}
