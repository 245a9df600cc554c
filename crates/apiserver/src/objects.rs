//! Where objects live in the store and how they are read back, shared by
//! the REST handlers and the admission plugins (which read other objects:
//! namespaces, priority classes, service accounts).

use api::catalogue::ResourceInfo;
use serde_json::Value;
use store::{KeyValue, SharedStore};

use crate::error::ApiError;
use crate::watch::decode_object;

/// The store key of an object.
pub fn object_key(info: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) if info.namespaced => format!("{}{ns}/{name}", info.storage_prefix()),
        _ => format!("{}{name}", info.storage_prefix()),
    }
}

/// The store prefix of a collection (all namespaces when `ns` is None).
pub fn collection_prefix(info: &ResourceInfo, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if info.namespaced => format!("{}{ns}/", info.storage_prefix()),
        _ => info.storage_prefix(),
    }
}

/// Decodes a stored object for `info`'s version.
pub fn decode_kv(info: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v = decode_object(&kv.value, kv.mod_revision).ok_or_else(|| {
        ApiError::internal(format!("stored object at {} is not valid JSON", kv.key))
    })?;
    crate::convert::to_version(info, &mut v);
    Ok(v)
}

/// Reads an object, 404 if absent.
pub async fn load(
    store: &SharedStore,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
) -> Result<(Value, KeyValue), ApiError> {
    let key = object_key(info, ns, name);
    match store.get(&key).await? {
        Some(kv) => Ok((decode_kv(info, &kv)?, kv)),
        None => Err(ApiError::not_found(info.group, info.plural, name)),
    }
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
