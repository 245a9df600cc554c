//! Label and field selectors, parsed and matched as upstream's
//! `k8s.io/apimachinery/pkg/labels` and `pkg/fields` do, so that error
//! messages and matching edge cases are the ones clients already know.

mod field;
mod label;
mod validation;

pub use field::{FieldRequirement, FieldSelector, field_value, selectable_field};
pub use label::{LabelSelector, Labels, Operator, Requirement};

/// A selector that could not be parsed, built or is not supported; the
/// message is upstream's, word for word where upstream has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);
