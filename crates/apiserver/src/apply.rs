//! Server-side apply: merges an applied configuration into the live object
//! and records the manager in managedFields.
//!
//! Interim implementation: the applied configuration is merged with
//! strategic-merge semantics (lists merged by their keys) and the manager's
//! entry is recorded; field-ownership conflicts and removal of fields a
//! manager stopped applying are not yet computed.

use serde_json::{Value, json};

use crate::error::ApiError;

/// Applies `applied` for `manager` on top of `live` (None: create).
pub fn apply(live: Option<&Value>, applied: &Value, manager: &str, _force: bool, definition: &str) -> Result<Value, ApiError> {
    let mut out = match live {
        None => applied.clone(),
        Some(live) => {
            let mut patch = applied.clone();
            if let Some(m) = patch["metadata"].as_object_mut() {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
            api::patch::strategic_merge_patch(live, &patch, definition)
                .map_err(|e| ApiError::bad_request(format!("error applying patch: {e}")))?
        }
    };
    let api_version = applied["apiVersion"].clone();
    let mut entries: Vec<Value> = out["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == "Apply"));
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": crate::rest::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    }));
    out["metadata"]["managedFields"] = Value::Array(entries);
    Ok(out)
}
