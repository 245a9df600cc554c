//! Encryption at rest configured as kube-apiserver's
//! `--encryption-provider-config` (an `apiserver.config.k8s.io/v1`
//! EncryptionConfiguration naming resources and their providers), turned
//! into [`store::encrypted`] rules over the resources' storage prefixes.
//!
//! Without a configuration file r8s encrypts Secrets by default, as k3s's
//! `--secrets-encryption`: `<data-dir>/encryption-config.yaml` is written
//! once with `aescbc` (the cluster's key, shared through the bootstrap
//! record so every server on a store uses it) followed by `identity` (so
//! Secrets written before encryption still read). Rotating keys is
//! editing that file as upstream documents: add the new key second,
//! restart, move it first, restart, rewrite the Secrets, drop the old key.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use store::SharedStore;
use store::encrypted::{EncryptedStore, Key, Kind, Rule};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid EncryptionConfiguration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> EncryptionError {
    EncryptionError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The storage prefixes a configuration's resource name covers.
fn prefixes(resource: &str) -> Vec<String> {
    use api::catalogue::RESOURCES;
    if resource == "*.*" {
        return vec!["/registry/".to_string()];
    }
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let mut out: Vec<String> = RESOURCES
        .iter()
        .filter(|r| r.group == group && (plural == "*" || r.plural == plural))
        .map(|r| r.storage_prefix())
        .collect();
    if out.is_empty() && plural != "*" && !group.is_empty() {
        // A custom resource: stored under its group.
        out.push(format!("/registry/{group}/{plural}/"));
    }
    out.sort();
    out.dedup();
    out
}

fn provider_keys(
    path: &Path,
    at: &str,
    kind: Kind,
    p: &Value,
) -> Result<Vec<Key>, EncryptionError> {
    let keys = p["keys"]
        .as_array()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid(path, format!("{at}.keys: Required value")))?;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let name = k["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid(path, format!("{at}.keys[{i}].name: Required value")))?;
            let secret = base64::engine::general_purpose::STANDARD
                .decode(k["secret"].as_str().unwrap_or(""))
                .map_err(|e| invalid(path, format!("{at}.keys[{i}].secret: {e}")))?;
            Key::new(kind, name, secret)
                .map_err(|e| invalid(path, format!("{at}.keys[{i}].secret: {e}")))
        })
        .collect()
}

/// The rules of an EncryptionConfiguration document.
pub fn rules(path: &Path, doc: &Value) -> Result<Vec<Rule>, EncryptionError> {
    if doc["kind"] != "EncryptionConfiguration" {
        return Err(invalid(path, "kind: must be EncryptionConfiguration"));
    }
    let mut out = Vec::new();
    let entries = doc["resources"]
        .as_array()
        .ok_or_else(|| invalid(path, "resources: Required value"))?;
    for (i, entry) in entries.iter().enumerate() {
        let mut keys = Vec::new();
        let mut identity_first = false;
        let providers = entry["providers"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid(path, format!("resources[{i}].providers: Required value")))?;
        for (j, p) in providers.iter().enumerate() {
            let at = format!("resources[{i}].providers[{j}]");
            let Some((name, body)) = p.as_object().and_then(|o| o.iter().next()) else {
                return Err(invalid(path, format!("{at}: a provider is required")));
            };
            let kind = match name.as_str() {
                "identity" => {
                    identity_first |= j == 0;
                    continue;
                }
                "aescbc" => Kind::AesCbc,
                "aesgcm" => Kind::AesGcm,
                "secretbox" => Kind::Secretbox,
                other => {
                    return Err(invalid(
                        path,
                        format!(
                            "{at}.{other}: not supported (supported: aescbc, aesgcm, secretbox, identity)"
                        ),
                    ));
                }
            };
            keys.extend(provider_keys(path, &format!("{at}.{name}"), kind, body)?);
        }
        let names = entry["resources"]
            .as_array()
            .ok_or_else(|| invalid(path, format!("resources[{i}].resources: Required value")))?;
        for n in names.iter().filter_map(Value::as_str) {
            for prefix in prefixes(n) {
                out.push(Rule {
                    prefix,
                    keys: keys.clone(),
                    identity_first,
                });
            }
        }
    }
    // Longer prefixes first, so that `secrets` wins over `*.*`.
    out.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok(out)
}

/// The default configuration: Secrets with `aescbc` under `secret`,
/// `identity` after it.
pub fn default_config(secret: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n  - aescbc:\n      keys:\n      - name: r8s-default\n        secret: {b64}\n  - identity: {{}}\n"
    )
}

/// Reads a configuration file.
pub fn load(path: &Path) -> Result<Vec<Rule>, EncryptionError> {
    let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
    rules(path, &doc)
}

/// `store` wrapped with the configured encryption: the file given, else
/// the data dir's default one (written from `default_key` when absent).
pub fn wrap(
    store: SharedStore,
    config: Option<&Path>,
    data_dir: &Path,
    default_key: &[u8],
) -> Result<SharedStore, EncryptionError> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => {
            let p = data_dir.join("encryption-config.yaml");
            if !p.exists() {
                crate::tls::write_private(&p, &default_config(default_key)).map_err(|e| {
                    EncryptionError::Io {
                        path: p.display().to_string(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
            }
            p
        }
    };
    let rules = load(&path)?;
    tracing::info!(config = %path.display(), rules = rules.len(), "encryption at rest");
    Ok(Arc::new(EncryptedStore::new(store, rules)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resources_map_to_their_storage_prefixes() {
        assert_eq!(prefixes("secrets"), ["/registry/secrets/"]);
        assert_eq!(prefixes("deployments.apps"), ["/registry/deployments/"]);
        assert_eq!(
            prefixes("crontabs.stable.example.com"),
            ["/registry/stable.example.com/crontabs/"]
        );
        assert_eq!(prefixes("*.*"), ["/registry/"]);
        assert!(prefixes("*.apps").contains(&"/registry/statefulsets/".to_string()));
    }

    #[test]
    fn the_default_config_parses_and_bad_ones_name_the_field() {
        let p = Path::new("enc.yaml");
        let doc: Value = serde_yaml_ng::from_str(&default_config(&[7; 32])).unwrap();
        let r = rules(p, &doc).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].prefix, "/registry/secrets/");
        assert!(!r[0].identity_first);
        let bad = json!({"kind": "EncryptionConfiguration", "resources": [{"resources": ["secrets"],
            "providers": [{"aesgcm": {"keys": [{"name": "k", "secret": "c2hvcnQ="}]}}]}]});
        let err = rules(p, &bad).unwrap_err().to_string();
        assert!(
            err.contains("resources[0].providers[0].aesgcm.keys[0].secret"),
            "{err}"
        );
        let kms = json!({"kind": "EncryptionConfiguration", "resources": [{"resources": ["secrets"],
            "providers": [{"kms": {}}]}]});
        assert!(
            rules(p, &kms)
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }
}
