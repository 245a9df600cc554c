//! Secrets: `Opaque` by default, `stringData` folded into base64 `data`
//! (upstream does it when converting from v1, so defaulting, validation
//! and field ownership all see `data`), and config keys.

use base64::Engine;
use serde_json::{Value, json};

use super::configmap::validate_data_keys;
use crate::registry::Strategy;
use crate::registry::common::{FieldError, set_default};

/// The Secret strategy.
pub struct Secret;

/// The one [`Secret`] strategy.
pub static SECRET: Secret = Secret;

impl Strategy for Secret {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "type", json!("Opaque"));
        }
        string_data(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_data_keys(obj)
    }
}

/// Folds Secret `stringData` into base64 `data`, as upstream does on write.
pub fn string_data(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    let Some(Value::Object(sd)) = o.remove("stringData") else {
        return;
    };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let s = v.as_str().unwrap_or_default();
            d.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_encoded() {
        let mut s = json!({"stringData": {"a": "hello"}, "data": {"b": "eA=="}});
        string_data(&mut s);
        assert_eq!(s["data"]["a"], "aGVsbG8=");
        assert_eq!(s["data"]["b"], "eA==");
        assert!(s.get("stringData").is_none());
    }
}
