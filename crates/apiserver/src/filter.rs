//! Label and field selectors from a request's query, applied to objects.

use api::catalogue::ResourceInfo;
use api::selector::{FieldSelector, LabelSelector};
use serde_json::Value;

use crate::error::ApiError;
use crate::http::Query;

/// The selectors of one list or watch.
pub struct Filter {
    info: &'static ResourceInfo,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    name: Option<String>,
    /// A custom kind's selectable fields (JSONPaths without the dot).
    custom_fields: Option<Vec<String>>,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector`; bad ones are a 400.
    pub fn from_query(
        info: &'static ResourceInfo,
        custom: Option<&crate::crd::Served>,
        q: &Query,
    ) -> Result<Filter, ApiError> {
        let custom_fields: Option<Vec<String>> = custom.map(|c| {
            c.version()
                .selectable_fields
                .iter()
                .map(|f| f.trim_start_matches('.').to_string())
                .collect()
        });
        let labels = match q.get("labelSelector") {
            Some(s) => {
                Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        let fields = match q.get("fieldSelector") {
            Some(s) => {
                let f =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                // Reject unsupported fields up front, as upstream does.
                match &custom_fields {
                    Some(cf) => f
                        .check_supported_with(|field| {
                            matches!(field, "metadata.name" | "metadata.namespace")
                                || cf.iter().any(|c| c == field)
                        })
                        .map_err(|e| ApiError::bad_request(e.to_string()))?,
                    None => f
                        .check_supported(info.group, info.plural)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?,
                }
                Some(f)
            }
            None => None,
        };
        Ok(Filter {
            info,
            labels,
            fields,
            name: None,
            custom_fields,
        })
    }

    /// Restricts to one object name (single-object watches).
    pub fn require_name(&mut self, name: &str) {
        self.name = Some(name.to_string());
    }

    /// Whether no selector is set.
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none() && self.name.is_none()
    }

    /// Whether `obj` passes every selector.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(n) = &self.name
            && obj["metadata"]["name"].as_str() != Some(n.as_str())
        {
            return false;
        }
        if let Some(l) = &self.labels {
            let empty = serde_json::Map::new();
            let labels = obj["metadata"]["labels"].as_object().unwrap_or(&empty);
            if !l.matches(labels) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            let ok = match &self.custom_fields {
                Some(_) => f.matches_with(|field| custom_field(obj, field)),
                None => f.matches(self.info.group, self.info.plural, obj),
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// A custom object's field as a field selector compares it: scalars as
/// their text, absent as empty.
fn custom_field(obj: &Value, field: &str) -> String {
    let found = api::crd::columns::parse_path(&format!(".{field}"))
        .ok()
        .and_then(|p| p.query(obj).all().first().map(|v| (*v).clone()));
    match found {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}
