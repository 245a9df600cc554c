//! ObjectMeta semantics shared by every kind: names, generateName, uid,
//! timestamps, labels and annotations, and what an update may not change.

use api::catalogue::ResourceInfo;
use serde_json::{Value, json};

use crate::error::{ApiError, Cause, cause};

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Upstream's generateName suffix: five characters from an alphabet without
/// vowels (so that no words are spelled).
pub fn random_suffix(n: usize) -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    (0..n)
        .map(|i| GENERATE_ALPHABET[bytes[i] as usize % GENERATE_ALPHABET.len()] as char)
        .collect()
}

/// Fills in the name from generateName when needed.
pub fn apply_generate_name(obj: &mut Value) {
    let meta = &mut obj["metadata"];
    let has_name = meta["name"].as_str().is_some_and(|s| !s.is_empty());
    if !has_name && let Some(prefix) = meta["generateName"].as_str().filter(|s| !s.is_empty()) {
        // Upstream trims the prefix so the whole name fits in 63 characters.
        let mut p = prefix.to_string();
        p.truncate(58);
        meta["name"] = json!(format!("{p}{}", random_suffix(5)));
    }
}

/// Resets server-owned metadata for a create.
pub fn prepare_create_meta(obj: &mut Value, ns: Option<&str>) {
    let meta = &mut obj["metadata"];
    if let Some(m) = meta.as_object_mut() {
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        match ns {
            Some(ns) => {
                m.insert("namespace".into(), json!(ns));
            }
            None => {
                m.remove("namespace");
            }
        }
        if m.get("generation").is_some_and(|g| g.as_i64() == Some(0)) {
            m.remove("generation");
        }
    }
}

/// Drops empty metadata lists and maps, as upstream's `omitempty` encoding
/// does (a GC that removes the last ownerReference leaves none, not `[]`).
pub fn tidy_meta(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in [
            "ownerReferences",
            "finalizers",
            "managedFields",
            "labels",
            "annotations",
        ] {
            let empty = match m.get(k) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                m.remove(k);
            }
        }
    }
}

/// Carries over what an update may not change.
pub fn carry_immutable_meta(new: &mut Value, old: &Value) {
    let om = &old["metadata"];
    let nm = &mut new["metadata"];
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "generation",
    ] {
        match om.get(k) {
            Some(v) => nm[k] = v.clone(),
            None => {
                if let Some(m) = nm.as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if let Some(m) = nm.as_object_mut() {
        m.remove("selfLink");
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns1123_label_part)
}

fn is_dns1123_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Kinds whose names must be DNS-1123 labels (they become DNS names).
fn name_is_label(info: &ResourceInfo) -> bool {
    matches!((info.group, info.plural), ("", "namespaces" | "services"))
}

/// Kinds whose names may be any path segment (RBAC roles hold colons).
fn name_is_path_segment(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.plural),
        ("rbac.authorization.k8s.io", _) | ("", "events") | ("events.k8s.io", "events")
    )
}

/// Validates ObjectMeta: name, labels and annotations.
pub fn validate_meta(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = &obj["metadata"];
    match meta["name"].as_str() {
        None | Some("") => causes.push(cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        )),
        Some(name) => {
            if name_is_path_segment(info) {
                if name == "." || name == ".." || name.contains('/') || name.contains('%') {
                    causes.push(cause(
                        "FieldValueInvalid",
                        "metadata.name",
                        format!("Invalid value: \"{name}\": may not be '.' or '..' and may not contain '/' or '%'"),
                    ));
                }
            } else if name_is_label(info) {
                if name.len() > 63 || !is_dns1123_label_part(name) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        "metadata.name",
                        format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
                    ));
                }
            } else if !is_dns1123_subdomain(name) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "metadata.name",
                    format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
                ));
            }
        }
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if let Some(msg) = qualified_name_error(k) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "metadata.labels",
                    format!("Invalid value: \"{k}\": {msg}"),
                ));
            }
            match v.as_str() {
                Some(s) if label_value_ok(s) => {}
                _ => causes.push(cause(
                    "FieldValueInvalid",
                    "metadata.labels",
                    format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
                )),
            }
        }
    }
    if let Some(ann) = meta["annotations"].as_object() {
        let mut total = 0usize;
        for (k, v) in ann {
            if let Some(msg) = qualified_name_error(&k.to_lowercase()) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "metadata.annotations",
                    format!("Invalid value: \"{k}\": {msg}"),
                ));
            }
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
        }
        if total > 256 * 1024 {
            causes.push(cause(
                "FieldValueTooLong",
                "metadata.annotations",
                format!("Too long: may not be more than 262144 bytes (got {total})"),
            ));
        }
    }
    causes
}

fn label_value_ok(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let b = s.as_bytes();
    b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Upstream's qualified-name check (`prefix/name`), returning its message.
fn qualified_name_error(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !label_value_ok(name) {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    None
}

/// Checks that the body's apiVersion and kind match the URL's resource.
pub fn check_type(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let av = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    if !av.is_empty() && av != info.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            info.api_version()
        )));
    }
    if !kind.is_empty() && kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::catalogue;

    #[test]
    fn names_and_labels() {
        let cm = catalogue::find("", "v1", "configmaps").unwrap();
        assert!(validate_meta(cm, &json!({"metadata": {"name": "a.b-c"}})).is_empty());
        let bad = validate_meta(
            cm,
            &json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "-x"}}}),
        );
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].field, "metadata.name");
        assert_eq!(bad[1].field, "metadata.labels");
        let svc = catalogue::find("", "v1", "services").unwrap();
        assert_eq!(
            validate_meta(svc, &json!({"metadata": {"name": "a.b"}})).len(),
            1
        );
        let role = catalogue::find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        assert!(validate_meta(role, &json!({"metadata": {"name": "system:foo"}})).is_empty());
    }

    #[test]
    fn generate_name() {
        let mut o = json!({"metadata": {"generateName": "web-"}});
        apply_generate_name(&mut o);
        let n = o["metadata"]["name"].as_str().unwrap();
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
    }
}
