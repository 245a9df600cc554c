//! Helpers every kind's strategy shares: upstream's `field.Error`
//! constructors, and the JSON defaulting primitives the `SetDefaults_*`
//! ports are written with.

use serde_json::{Map, Value, json};

/// A field error: upstream's `field.Error`, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Cause type as in metav1.StatusCause.reason, e.g. `FieldValueRequired`.
    pub reason: &'static str,
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// Message without the field path, e.g. `Required value`.
    pub message: String,
}

/// `field.Required` with upstream's bare message.
pub(crate) fn required(field: impl Into<String>) -> FieldError {
    FieldError {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

/// `field.Invalid`: the value, rendered as upstream prints it, and why.
pub(crate) fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {}: {detail}", render(value)),
    }
}

/// `field.NotSupported` with the list of allowed values.
pub(crate) fn not_supported(
    field: impl Into<String>,
    value: &Value,
    allowed: &[&str],
) -> FieldError {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    FieldError {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            render(value),
            list.join(", ")
        ),
    }
}

/// `field.Forbidden`.
pub(crate) fn forbidden(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {}", message.into()),
    }
}

/// `field.Duplicate`.
pub(crate) fn duplicate(field: impl Into<String>, name: &str) -> FieldError {
    FieldError {
        reason: "FieldValueDuplicate",
        field: field.into(),
        message: format!("Duplicate value: \"{name}\""),
    }
}

/// Upstream's `ValidateImmutableField` error.
pub(crate) fn immutable(field: impl Into<String>, value: &Value) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {}: field is immutable", render(value)),
    }
}

/// A value as Go's `%#v`-ish rendering in field errors shows it (strings
/// quoted, everything else as JSON).
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// Whether a value is unset or empty, as Go's zero-value checks see it.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A value without null fields (a patch may leave `"initContainers": null`
/// where the stored object has no key: the same object).
pub(crate) fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Sets `obj[key] = value` when the key is absent or null.
pub(crate) fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// Gets `obj[key]` as an object, creating it when absent.
pub(crate) fn child<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    set_default(obj, key, json!({}));
    obj.get_mut(key).and_then(Value::as_object_mut)
}

/// Calls `f` on every object in the array `obj[key]`, if any.
pub(crate) fn for_each_in(
    obj: &mut Map<String, Value>,
    key: &str,
    mut f: impl FnMut(&mut Map<String, Value>),
) {
    if let Some(Value::Array(items)) = obj.get_mut(key) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

/// The object's `spec`, created when absent (defaulting fills it in).
pub(crate) fn spec_of(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    child(obj.as_object_mut()?, "spec")
}
