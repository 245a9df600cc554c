//! ObjectMeta semantics shared by every kind: names, generateName, uid,
//! timestamps, labels and annotations, and what an update may not change.

use api::catalogue::ResourceInfo;
use serde_json::{Value, json};

use crate::error::{ApiError, Cause, cause};

pub use crate::objects::now_rfc3339;

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

/// Validates ObjectMeta (name or generateName, labels, annotations,
/// finalizers, ownerReferences) with upstream's rules and messages.
pub fn validate_meta(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    api::validation::validate_object_meta(
        info.group,
        info.plural,
        info.namespaced,
        &obj["metadata"],
    )
    .into_iter()
    .map(|e| cause(e.kind.reason(), &e.field, e.body()))
    .collect()
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
        assert_eq!(
            validate_meta(
                cm,
                &json!({"metadata": {"name": "a.b-c", "namespace": "d"}})
            ),
            vec![]
        );
        let bad = validate_meta(
            cm,
            &json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "-x"}}}),
        );
        assert!(bad.iter().any(|c| c.field == "metadata.name"), "{bad:?}");
        assert!(
            bad.iter().any(|c| c.field.starts_with("metadata.labels")),
            "{bad:?}"
        );
        let svc = catalogue::find("", "v1", "services").unwrap();
        let dotted = validate_meta(svc, &json!({"metadata": {"name": "a.b", "namespace": "d"}}));
        assert_eq!(dotted.len(), 1, "{dotted:?}");
        assert_eq!(dotted[0].field, "metadata.name");
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
