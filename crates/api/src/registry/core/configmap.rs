//! ConfigMaps: their keys are config keys (upstream's `IsConfigMapKey`).

use serde_json::Value;

use crate::registry::Strategy;
use crate::registry::common::{FieldError, invalid};

/// The ConfigMap strategy.
pub struct ConfigMap;

/// The one [`ConfigMap`] strategy.
pub static CONFIG_MAP: ConfigMap = ConfigMap;

impl Strategy for ConfigMap {
    fn name(&self) -> &'static str {
        "configmaps"
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_data_keys(obj)
    }
}

/// The keys of `data`, `binaryData` and `stringData` are config keys
/// (ConfigMaps and Secrets share the rule).
pub(crate) fn validate_data_keys(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for key in ["data", "binaryData", "stringData"] {
        if let Some(m) = obj[key].as_object() {
            for k in m.keys() {
                if !config_key_ok(k) {
                    errs.push(invalid(
                        format!("{key}[{k}]"),
                        &Value::String(k.clone()),
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
    }
    errs
}

fn config_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
