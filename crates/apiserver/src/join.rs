//! One cluster identity shared by every server on a store, and nodes that
//! join with a token.
//!
//! Servers on one etcd must trust each other's clients, so the cluster CA
//! and the node-join secret live in the store (as k3s keeps its bootstrap
//! data in the datastore): the first server writes them, the others adopt
//! them, re-issuing their own serving and admin certificates under the
//! shared CA. A kubeconfig from any server then works against all of them.
//!
//! Joining mirrors k3s: the token is `R8S<sha256 of the CA PEM>::<secret>`.
//! The agent fetches `/cacerts` without trusting the connection, checks the
//! CA against the token's hash (so a man in the middle cannot substitute
//! its own CA), and then asks `/r8s/v1/join` over verified TLS, with the
//! secret as a bearer token, for a `system:node:<name>` client certificate.
//!
//! The record holds the CA key unencrypted, like the CA key file in the
//! data dir; whoever can read the store already holds every Secret.

use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};
use store::{SharedStore, StoreError};

use crate::error::ApiError;
use crate::tls::{Pki, TlsError};

/// Where the shared bootstrap record lives: outside `/registry/`, so the
/// watch cache and list calls never see it.
pub const BOOTSTRAP_KEY: &str = "/r8s/bootstrap";

/// Bootstrap failures.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The store failed.
    #[error("bootstrap record: {0}")]
    Store(#[from] StoreError),
    /// The record or a PEM file could not be read or written.
    #[error("bootstrap PKI: {0}")]
    Tls(#[from] TlsError),
    /// The stored record is not what this version writes.
    #[error("bootstrap record {BOOTSTRAP_KEY} is malformed: {0}")]
    Malformed(String),
    /// A file in the data dir.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    ca_cert: String,
    ca_key: String,
    join_secret: String,
    /// The service-account token signing key (P-256, PKCS#8, base64);
    /// empty in records written before tokens existed.
    #[serde(default)]
    sa_key: String,
    /// The default key Secrets are encrypted at rest with (32 bytes,
    /// base64); empty in records written before encryption existed.
    #[serde(default)]
    encryption_key: String,
}

/// The cluster identity a server runs with.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The PKI under the shared CA.
    pub pki: Pki,
    /// The node-join secret (the part of the token after `::`).
    pub join_secret: String,
    /// The service-account token signing key, PKCS#8.
    pub sa_key: Vec<u8>,
    /// The default encryption-at-rest key (see [`crate::encryption`]).
    pub encryption_key: Vec<u8>,
}

impl Identity {
    /// The token agents join with.
    pub fn token(&self) -> String {
        format!(
            "R8S{}::{}",
            ca_hash(&self.pki.ca_cert_pem),
            self.join_secret
        )
    }
}

/// The hex SHA-256 of a CA PEM, as the token carries it.
pub fn ca_hash(ca_pem: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits a token into (CA hash, secret).
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix("R8S")?;
    let (hash, secret) = rest.split_once("::")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((hash, secret))
}

fn random_secret() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// Loads the PKI in `tls_dir` under the CA shared through `store`, creating
/// the shared record from this server's CA when it is the first.
pub async fn shared_identity(
    store: &SharedStore,
    tls_dir: &Path,
    sans: &[String],
) -> Result<Identity, JoinError> {
    let record = match store.get(BOOTSTRAP_KEY).await? {
        Some(kv) => parse(&kv.value)?,
        None => {
            let local = Pki::load_or_create(tls_dir, sans)?;
            let mine = Record {
                ca_cert: local.ca_cert_pem.clone(),
                ca_key: local.ca_key_pem.clone(),
                join_secret: random_secret(),
                sa_key: new_sa_key()?,
                encryption_key: new_encryption_key()?,
            };
            let bytes =
                serde_json::to_vec(&mine).map_err(|e| JoinError::Malformed(e.to_string()))?;
            match store.create(BOOTSTRAP_KEY, bytes).await {
                Ok(_) => mine,
                // Another server won the race: adopt its record.
                Err(StoreError::AlreadyExists(_)) => match store.get(BOOTSTRAP_KEY).await? {
                    Some(kv) => parse(&kv.value)?,
                    None => return Err(JoinError::Malformed("vanished after a conflict".into())),
                },
                Err(e) => return Err(e.into()),
            }
        }
    };
    let record = with_sa_key(store, record).await?;
    adopt_ca(tls_dir, &record)?;
    let pki = Pki::load_or_create(tls_dir, sans)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sa_key = b64
        .decode(&record.sa_key)
        .map_err(|e| JoinError::Malformed(format!("saKey: {e}")))?;
    let encryption_key = b64
        .decode(&record.encryption_key)
        .map_err(|e| JoinError::Malformed(format!("encryptionKey: {e}")))?;
    Ok(Identity {
        pki,
        join_secret: record.join_secret,
        sa_key,
        encryption_key,
    })
}

fn new_sa_key() -> Result<String, JoinError> {
    let key = crate::satoken::generate_key().map_err(JoinError::Malformed)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

fn new_encryption_key() -> Result<String, JoinError> {
    let key = store::encrypted::generate_secret().map_err(JoinError::Malformed)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// Adds the keys a record written by an older version lacks (once, with a
/// compare-and-swap so that servers agree on one key).
async fn with_sa_key(store: &SharedStore, record: Record) -> Result<Record, JoinError> {
    if !record.sa_key.is_empty() && !record.encryption_key.is_empty() {
        return Ok(record);
    }
    for _ in 0..5 {
        let Some(kv) = store.get(BOOTSTRAP_KEY).await? else {
            break;
        };
        let mut r = parse(&kv.value)?;
        if !r.sa_key.is_empty() && !r.encryption_key.is_empty() {
            return Ok(r);
        }
        if r.sa_key.is_empty() {
            r.sa_key = new_sa_key()?;
        }
        if r.encryption_key.is_empty() {
            r.encryption_key = new_encryption_key()?;
        }
        let bytes = serde_json::to_vec(&r).map_err(|e| JoinError::Malformed(e.to_string()))?;
        match store.update(BOOTSTRAP_KEY, bytes, kv.mod_revision).await {
            Ok(_) => return Ok(r),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(JoinError::Malformed("could not add a signing key".into()))
}

fn parse(bytes: &[u8]) -> Result<Record, JoinError> {
    serde_json::from_slice(bytes).map_err(|e| JoinError::Malformed(e.to_string()))
}

/// Makes `tls_dir` hold the record's CA; when it held another one, the
/// certificates issued under it are removed so that they are re-issued.
fn adopt_ca(tls_dir: &Path, record: &Record) -> Result<(), JoinError> {
    std::fs::create_dir_all(tls_dir)?;
    let current = std::fs::read_to_string(tls_dir.join("ca.crt")).unwrap_or_default();
    if current == record.ca_cert {
        return Ok(());
    }
    if !current.is_empty() {
        tracing::info!("adopting the cluster CA shared through the store");
    }
    for f in [
        "serving.crt",
        "serving.key",
        "serving.sans",
        "admin.crt",
        "admin.key",
    ] {
        match std::fs::remove_file(tls_dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    crate::tls::write_private(&tls_dir.join("ca.key"), &record.ca_key)?;
    crate::tls::write_private(&tls_dir.join("ca.crt"), &record.ca_cert)?;
    Ok(())
}

/// A join request's body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The joining node's name.
    pub node_name: String,
}

/// A join response: what the agent needs to talk to the cluster.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The cluster CA, PEM.
    pub ca_cert: String,
    /// The node's client certificate (`system:node:<name>`, group
    /// `system:nodes`), PEM.
    pub cert: String,
    /// Its key, PEM.
    pub key: String,
}

/// Checks the bearer secret and issues the node's certificate.
pub fn join(
    identity: &Identity,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<JoinResponse, ApiError> {
    let presented = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    // The secret, or the whole token (agents may send either).
    let presented = parse_token(presented).map_or(presented, |(_, s)| s);
    if !constant_time_eq(presented.as_bytes(), identity.join_secret.as_bytes()) {
        return Err(ApiError::unauthorized());
    }
    let req: JoinRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("join request: {e}")))?;
    if !api::validation::is_dns1123_subdomain(&req.node_name).is_empty() {
        return Err(ApiError::bad_request(format!(
            "nodeName {:?}: must be a lowercase RFC 1123 subdomain",
            req.node_name
        )));
    }
    let (cert, key) = identity
        .pki
        .issue_client_cert(&format!("system:node:{}", req.node_name), &["system:nodes"])
        .map_err(|e| ApiError::internal(format!("issuing the node certificate: {e}")))?;
    Ok(JoinResponse {
        ca_cert: identity.pki.ca_cert_pem.clone(),
        cert,
        key,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let hash = "ab".repeat(32);
        let token = format!("R8S{hash}::s3cret");
        assert_eq!(parse_token(&token), Some((hash.as_str(), "s3cret")));
        assert_eq!(parse_token("s3cret"), None);
        assert_eq!(parse_token(&format!("R8S{hash}::")), None);
        assert_eq!(parse_token("R8Sabc::x"), None);
    }

    #[tokio::test]
    async fn servers_on_one_store_share_one_ca_and_secret() {
        let store: SharedStore = std::sync::Arc::new(store::memory::MemoryStore::new());
        let sans = vec!["127.0.0.1".to_string()];
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        // b had a CA of its own before it joined the store.
        let old_b = Pki::load_or_create(b.path(), &sans).unwrap();
        let ia = shared_identity(&store, a.path(), &sans).await.unwrap();
        let ib = shared_identity(&store, b.path(), &sans).await.unwrap();
        assert_eq!(ia.pki.ca_cert_pem, ib.pki.ca_cert_pem);
        assert_ne!(ib.pki.ca_cert_pem, old_b.ca_cert_pem);
        assert_ne!(ib.pki.admin_cert_pem, old_b.admin_cert_pem, "re-issued");
        assert_eq!(ia.token(), ib.token());

        let ok = join(
            &ib,
            Some(&format!("Bearer {}", ia.join_secret)),
            br#"{"nodeName":"n1"}"#,
        )
        .unwrap();
        assert_eq!(ok.ca_cert, ia.pki.ca_cert_pem);
        let der = rustls_pemfile::certs(&mut ok.cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (user, groups) = crate::tls::user_from_cert(&der).unwrap();
        assert_eq!(user, "system:node:n1");
        assert_eq!(groups, ["system:nodes"]);

        let bad = join(&ib, Some("Bearer nope"), br#"{"nodeName":"n1"}"#);
        assert_eq!(bad.err().map(|e| e.code), Some(401));
        let bad = join(
            &ib,
            Some(&format!("Bearer {}", ia.join_secret)),
            br#"{"nodeName":"Bad_Name"}"#,
        );
        assert_eq!(bad.err().map(|e| e.code), Some(400));
    }
}
