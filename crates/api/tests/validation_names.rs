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

#[test]
fn cronjob_names_leave_room_for_job_suffixes() {
    let long = "a".repeat(53);
    let errs = validate_object_meta(
        "batch",
        "cronjobs",
        true,
        &json!({"name": long, "namespace": "d"}),
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .to_string()
            .ends_with(": must be no more than 52 characters")
    );
    assert!(
        validate_object_meta(
            "batch",
            "cronjobs",
            true,
            &json!({"name": "a".repeat(52), "namespace": "d"})
        )
        .is_empty()
    );
}

#[test]
fn metadata_updates() {
    use api::validation::validate_object_meta_update;
    let old = json!({"name": "a", "namespace": "d", "uid": "1", "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
        "deletionTimestamp": "2026-01-01T01:00:00Z", "finalizers": ["example.com/x"]});
    assert!(validate_object_meta_update(&old, &old).is_empty());
    let mut new = old.clone();
    new["uid"] = json!("2");
    new["generation"] = json!(2);
    new["finalizers"] = json!(["example.com/x", "example.com/y"]);
    let text: Vec<String> = validate_object_meta_update(&new, &old)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        text,
        [
            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/y\"}",
            "metadata.generation: Invalid value: 2: must not be decremented",
            "metadata.uid: Invalid value: \"2\": field is immutable",
        ]
    );
}
