//! The `apiregistration.k8s.io` group: an APIService is named
//! `<version>.<group>` and its priorities are positive, as upstream's
//! kube-aggregator validates them.

use serde_json::Value;

use super::common::{invalid, required};
use super::{FieldError, Strategy};

/// The APIService strategy.
pub struct ApiService;

/// The one [`ApiService`] strategy.
pub static API_SERVICE: ApiService = ApiService;

impl Strategy for ApiService {
    fn name(&self) -> &'static str {
        "apiservices"
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        let group = spec["group"].as_str().unwrap_or("");
        let version = spec["version"].as_str().unwrap_or("");
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let want = format!("{version}.{group}");
        if name != want {
            errs.push(invalid(
                "metadata.name",
                &obj["metadata"]["name"],
                &format!("must be {want}"),
            ));
        }
        if version.is_empty() {
            errs.push(required("spec.version"));
        }
        let local = spec["service"].is_null();
        for (field, max) in [
            ("groupPriorityMinimum", 20000),
            ("versionPriority", i64::MAX),
        ] {
            let v = spec[field].as_i64().unwrap_or(0);
            if !local && (v <= 0 || v > max) {
                let why = if v <= 0 {
                    "must be positive and less than 20000".to_string()
                } else {
                    format!("must be positive and less than {max}")
                };
                errs.push(invalid(format!("spec.{field}"), &spec[field], &why));
            }
        }
        if !local
            && spec["insecureSkipTLSVerify"].as_bool() == Some(true)
            && spec["caBundle"].as_str().is_some_and(|c| !c.is_empty())
        {
            errs.push(invalid(
                "spec.insecureSkipTLSVerify",
                &spec["insecureSkipTLSVerify"],
                "may not be true if caBundle is present",
            ));
        }
        errs
    }
}
