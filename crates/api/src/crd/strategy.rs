//! The strategy of a custom resource: upstream's `customResourceStrategy`,
//! with its rules read from the definition's schema rather than compiled.

use std::sync::Arc;

use serde_json::Value;

use super::{Definition, Version, cel, schema};
use crate::registry::{FieldError, Strategy};

/// The rules of one served version of a custom resource.
#[derive(Debug, Clone)]
pub struct CustomStrategy {
    /// The definition.
    pub definition: Arc<Definition>,
    /// The version requests address.
    pub version: Version,
}

impl CustomStrategy {
    /// The version's structural schema, if it has one.
    pub fn schema(&self) -> Option<&Value> {
        self.version.schema.as_ref()
    }

    /// Prunes what the schema does not specify; returns the dropped paths.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        match self.schema() {
            Some(s) => schema::prune(s, obj),
            None => Vec::new(),
        }
    }
}

impl Strategy for CustomStrategy {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn default(&self, obj: &mut Value) {
        if let Some(s) = self.schema() {
            schema::default(s, obj);
        }
    }

    // Upstream bumps a custom object's generation on any change outside
    // metadata (and status, when the status subresource owns it).
    fn tracks_generation(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let Some(s) = self.schema() else {
            return Vec::new();
        };
        let mut errs = schema::validate(s, obj);
        if errs.is_empty() {
            errs.extend(cel::validate(s, obj, None));
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value, _sub: Option<&str>) -> Vec<FieldError> {
        let Some(s) = self.schema() else {
            return Vec::new();
        };
        // `validate` has checked the schema and the plain rules already.
        if schema::validate(s, new).is_empty() {
            cel::validate(s, new, Some(old))
        } else {
            Vec::new()
        }
    }
}

/// The rules of the CustomResourceDefinition kind itself.
pub struct DefinitionStrategy;

/// The one [`DefinitionStrategy`].
pub static CUSTOM_RESOURCE_DEFINITION: DefinitionStrategy = DefinitionStrategy;

impl Strategy for DefinitionStrategy {
    fn name(&self) -> &'static str {
        "customresourcedefinitions"
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        let conv = spec
            .entry("conversion")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(c) = conv.as_object_mut() {
            c.entry("strategy").or_insert_with(|| "None".into());
        }
        if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
            let kind = names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !kind.is_empty() {
                names
                    .entry("singular")
                    .or_insert_with(|| kind.to_lowercase().into());
                names
                    .entry("listKind")
                    .or_insert_with(|| format!("{kind}List").into());
            }
        }
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    // Deleting a definition deletes its objects first.
    fn prepare_for_create(&self, info: &crate::catalogue::ResourceInfo, obj: &mut Value) {
        crate::registry::base_prepare_for_create(self, info, obj);
        let fins = obj["metadata"].as_object_mut().map(|m| {
            m.entry("finalizers")
                .or_insert_with(|| serde_json::json!([]))
        });
        if let Some(Value::Array(f)) = fins
            && !f.iter().any(|x| x == super::CLEANUP_FINALIZER)
        {
            f.push(super::CLEANUP_FINALIZER.into());
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        super::validation::validate(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value, sub: Option<&str>) -> Vec<FieldError> {
        if sub == Some("status") {
            return Vec::new();
        }
        super::validation::validate_update(new, old)
    }
}
