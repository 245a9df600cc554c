//! Runs `api::validation` (name and metadata validation) on its own: the
//! module is self-contained, so it is mounted here by path until lib.rs
//! declares it; its unit tests run as part of this binary.

#[allow(dead_code)]
#[path = "../src/validation.rs"]
mod validation;

use serde_json::json;
use validation::{FieldError, invalid_status, validate_object_meta};

#[test]
fn service_names_are_dns1035_labels() {
    let errs = validate_object_meta("", "services", true, &json!({"name": "1web", "namespace": "default"}));
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    );
}

#[test]
fn namespace_names_are_dns1123_labels() {
    let errs = validate_object_meta("", "namespaces", false, &json!({"name": "a.b"}));
    assert_eq!(errs[0].to_string(), "metadata.name: Invalid value: \"a.b\": must not contain dots");
}

#[test]
fn invalid_status_has_causes() {
    let errs: Vec<FieldError> = validate_object_meta("", "pods", true, &json!({"name": "Foo", "namespace": "d"}));
    let st = invalid_status("", "Pod", "Foo", &errs);
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    assert!(st["message"].as_str().unwrap().starts_with("Pod \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain"));
}
