//! `api::validation` from the outside: per-kind name rules and the 422
//! Status the server sends.

use api::validation::{FieldError, invalid_status, validate_object_meta};
use serde_json::json;

#[test]
fn service_names_are_dns1035_labels() {
    let errs = validate_object_meta(
        "",
        "services",
        true,
        &json!({"name": "1web", "namespace": "default"}),
    );
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    );
}

#[test]
fn namespace_names_are_dns1123_labels() {
    let errs = validate_object_meta("", "namespaces", false, &json!({"name": "a.b"}));
    assert_eq!(
        errs[0].to_string(),
        "metadata.name: Invalid value: \"a.b\": must not contain dots"
    );
}

#[test]
fn rbac_names_are_path_segments() {
    let meta = json!({"name": "system:controller:job-controller"});
    assert!(
        validate_object_meta("rbac.authorization.k8s.io", "clusterroles", false, &meta).is_empty()
    );
    let errs = validate_object_meta(
        "rbac.authorization.k8s.io",
        "clusterroles",
        false,
        &json!({"name": "a/b"}),
    );
    assert_eq!(
        errs[0].to_string(),
        "metadata.name: Invalid value: \"a/b\": may not contain '/'"
    );
}

#[test]
fn invalid_status_has_causes() {
    let errs: Vec<FieldError> =
        validate_object_meta("", "pods", true, &json!({"name": "Foo", "namespace": "d"}));
    let st = invalid_status("", "Pod", "Foo", &errs);
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["code"], 422);
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    let message = st["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Pod \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain"));
}
