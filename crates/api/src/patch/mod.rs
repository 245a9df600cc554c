//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! Kubernetes strategic merge patch ([`strategic`]).

use serde_json::Value;

mod strategic;
#[cfg(test)]
mod upstream_tests;

pub use strategic::strategic_merge_patch;

/// A patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The JSON patch document is malformed.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// A JSON patch operation failed (missing path, failed test); the
    /// message names the operation's path.
    #[error("{0}")]
    JsonPatchFailed(String),
    /// A strategic merge patch cannot be applied at `path`.
    #[error("{path}: {message}")]
    Strategic {
        /// Where in the object, e.g. `.spec.template.spec.containers`.
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let p: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| PatchError::InvalidJsonPatch(e.to_string()))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &p).map_err(|e| PatchError::JsonPatchFailed(e.to_string()))?;
    Ok(doc)
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut doc = target.clone();
    json_patch::merge(&mut doc, patch);
    doc
}
