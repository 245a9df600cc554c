//! Encryption at rest: a [`Store`] that encrypts the values under chosen
//! key prefixes (Secrets by default) before they reach the backend and
//! decrypts them on the way back, in kube-apiserver's formats, so the raw
//! bytes in SQLite or etcd are never the plaintext.
//!
//! Values are written as `k8s:enc:<provider>:v1:<key name>:<data>` with
//! upstream's providers: `aescbc` (AES-CBC, PKCS#7, random IV), `aesgcm`
//! (AES-GCM, random nonce, the storage key as additional data) and
//! `secretbox` (XSalsa20-Poly1305, random nonce); `identity` stores the
//! plaintext. The first key of the first provider encrypts; any listed key
//! decrypts, which is how keys are rotated.

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use async_trait::async_trait;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use futures::StreamExt;

use crate::{
    Deleted, Event, KeyValue, RangeResult, Revision, SharedStore, Store, StoreError, WatchStream,
};

/// An encryption provider kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// AES-CBC with PKCS#7 padding.
    AesCbc,
    /// AES-GCM.
    AesGcm,
    /// XSalsa20-Poly1305.
    Secretbox,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AesCbc => "aescbc",
            Kind::AesGcm => "aesgcm",
            Kind::Secretbox => "secretbox",
        }
    }
}

/// One named key of a provider.
#[derive(Clone)]
pub struct Key {
    /// The provider.
    pub kind: Kind,
    /// The key's name (part of every value it encrypts).
    pub name: String,
    /// The key bytes (16, 24 or 32 for AES; 32 for secretbox).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.name)
    }
}

/// Why a key or a value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key of the wrong length for its provider.
    #[error("key {name:?}: {kind} needs a {want}-byte secret, got {got} bytes")]
    KeyLength {
        /// The key's name.
        name: String,
        /// The provider.
        kind: &'static str,
        /// Acceptable lengths.
        want: &'static str,
        /// The length given.
        got: usize,
    },
}

impl Key {
    /// Checks the key's length for its provider.
    pub fn new(kind: Kind, name: &str, secret: Vec<u8>) -> Result<Key, CryptoError> {
        let ok = match kind {
            Kind::AesCbc | Kind::AesGcm => matches!(secret.len(), 16 | 24 | 32),
            Kind::Secretbox => secret.len() == 32,
        };
        if !ok {
            return Err(CryptoError::KeyLength {
                name: name.to_string(),
                kind: kind.name(),
                want: if kind == Kind::Secretbox {
                    "32"
                } else {
                    "16, 24 or 32"
                },
                got: secret.len(),
            });
        }
        Ok(Key {
            kind,
            name: name.to_string(),
            secret,
        })
    }

    fn prefix(&self) -> String {
        format!("k8s:enc:{}:v1:{}:", self.kind.name(), self.name)
    }

    fn encrypt(&self, storage_key: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let fail = |e: String| StoreError::Backend(format!("encrypting {storage_key}: {e}"));
        let mut out = self.prefix().into_bytes();
        match self.kind {
            Kind::AesCbc => {
                let iv = random::<16>().map_err(fail)?;
                let sealed = cbc_encrypt(&self.secret, &iv, plain).map_err(fail)?;
                out.extend_from_slice(&iv);
                out.extend_from_slice(&sealed);
            }
            Kind::AesGcm => {
                let nonce = random::<12>().map_err(fail)?;
                let payload = Payload {
                    msg: plain,
                    aad: storage_key.as_bytes(),
                };
                let sealed = gcm(&self.secret, &nonce, payload, true).map_err(fail)?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
            Kind::Secretbox => {
                let nonce = random::<24>().map_err(fail)?;
                let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&self.secret)
                    .map_err(|e| fail(e.to_string()))?;
                let sealed = cipher
                    .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plain)
                    .map_err(|e| fail(e.to_string()))?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
        }
        Ok(out)
    }

    fn decrypt(&self, storage_key: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        match self.kind {
            Kind::AesCbc => {
                if data.len() < 16 {
                    return Err("the data is shorter than an IV".into());
                }
                let (iv, sealed) = data.split_at(16);
                cbc_decrypt(&self.secret, iv, sealed)
            }
            Kind::AesGcm => {
                if data.len() < 12 {
                    return Err("the data is shorter than a nonce".into());
                }
                let (nonce, sealed) = data.split_at(12);
                let payload = Payload {
                    msg: sealed,
                    aad: storage_key.as_bytes(),
                };
                gcm(&self.secret, nonce, payload, false)
            }
            Kind::Secretbox => {
                if data.len() < 24 {
                    return Err("the data is shorter than a nonce".into());
                }
                let (nonce, sealed) = data.split_at(24);
                let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&self.secret)
                    .map_err(|e| e.to_string())?;
                cipher
                    .decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
                    .map_err(|_| "the data does not authenticate".to_string())
            }
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(b)
}

/// A fresh random key for a provider.
pub fn generate_secret() -> Result<Vec<u8>, String> {
    Ok(random::<32>()?.to_vec())
}

fn cbc_encrypt(key: &[u8], iv: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
    let e = |e: cbc::cipher::InvalidLength| e.to_string();
    Ok(match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(e)?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(e)?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(e)?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
    })
}

fn cbc_decrypt(key: &[u8], iv: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
    let e = |e: cbc::cipher::InvalidLength| e.to_string();
    let pad = |_| "the padding is invalid (wrong key?)".to_string();
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(e)?
            .decrypt_padded_vec_mut::<Pkcs7>(sealed)
            .map_err(pad),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(e)?
            .decrypt_padded_vec_mut::<Pkcs7>(sealed)
            .map_err(pad),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(e)?
            .decrypt_padded_vec_mut::<Pkcs7>(sealed)
            .map_err(pad),
    }
}

fn gcm(key: &[u8], nonce: &[u8], payload: Payload<'_, '_>, seal: bool) -> Result<Vec<u8>, String> {
    use aes_gcm::aead::generic_array::GenericArray;
    let nonce = GenericArray::from_slice(nonce);
    let run = |r: Result<Vec<u8>, aes_gcm::Error>| {
        r.map_err(|_| "the data does not authenticate".to_string())
    };
    match key.len() {
        16 => {
            let c = aes_gcm::Aes128Gcm::new_from_slice(key).map_err(|e| e.to_string())?;
            run(if seal {
                c.encrypt(nonce, payload)
            } else {
                c.decrypt(nonce, payload)
            })
        }
        24 => {
            type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;
            let c = Aes192Gcm::new_from_slice(key).map_err(|e| e.to_string())?;
            run(if seal {
                c.encrypt(nonce, payload)
            } else {
                c.decrypt(nonce, payload)
            })
        }
        _ => {
            let c = aes_gcm::Aes256Gcm::new_from_slice(key).map_err(|e| e.to_string())?;
            run(if seal {
                c.encrypt(nonce, payload)
            } else {
                c.decrypt(nonce, payload)
            })
        }
    }
}

/// How the values under one key prefix are stored.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The storage key prefix, e.g. `/registry/secrets/`.
    pub prefix: String,
    /// The keys, in order: the first encrypts (none: identity first, so
    /// new values are stored in plaintext).
    pub keys: Vec<Key>,
    /// Whether `identity` comes first (new values are written in
    /// plaintext; the keys only decrypt).
    pub identity_first: bool,
}

/// A store that encrypts values under its rules' prefixes.
pub struct EncryptedStore {
    inner: SharedStore,
    rules: Arc<Vec<Rule>>,
}

impl EncryptedStore {
    /// Wraps `inner`; the first rule whose prefix matches a key decides.
    pub fn new(inner: SharedStore, rules: Vec<Rule>) -> EncryptedStore {
        EncryptedStore {
            inner,
            rules: Arc::new(rules),
        }
    }
}

fn rule_for<'a>(rules: &'a [Rule], key: &str) -> Option<&'a Rule> {
    rules.iter().find(|r| key.starts_with(&r.prefix))
}

fn encode(rules: &[Rule], key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    match rule_for(rules, key) {
        Some(r) if !r.identity_first && !r.keys.is_empty() => r.keys[0].encrypt(key, &value),
        _ => Ok(value),
    }
}

fn decode(rules: &[Rule], mut kv: KeyValue) -> Result<KeyValue, StoreError> {
    if !kv.value.starts_with(b"k8s:enc:") {
        // Written before encryption was on (or by identity).
        return Ok(kv);
    }
    let keys = rule_for(rules, &kv.key)
        .map(|r| r.keys.as_slice())
        .unwrap_or(&[]);
    // Any rule's key may have written it (the resource may have moved
    // between rules); the value names its key.
    let all = keys.iter().chain(rules.iter().flat_map(|r| r.keys.iter()));
    for k in all {
        let prefix = k.prefix();
        if let Some(data) = kv.value.strip_prefix(prefix.as_bytes()) {
            return match k.decrypt(&kv.key, data) {
                Ok(plain) => {
                    kv.value = plain;
                    Ok(kv)
                }
                Err(e) => Err(StoreError::Backend(format!(
                    "decrypting {} with {}:{}: {e}",
                    kv.key,
                    k.kind.name(),
                    k.name
                ))),
            };
        }
    }
    let head: String = String::from_utf8_lossy(&kv.value[..kv.value.len().min(40)])
        .split(':')
        .take(5)
        .collect::<Vec<_>>()
        .join(":");
    Err(StoreError::Backend(format!(
        "decrypting {}: no configured key matches {head}",
        kv.key
    )))
}

fn decode_err(rules: &[Rule], e: StoreError) -> StoreError {
    match e {
        StoreError::Conflict {
            key,
            expected,
            current,
        } => match decode(rules, *current) {
            Ok(current) => StoreError::Conflict {
                key,
                expected,
                current: Box::new(current),
            },
            Err(e) => e,
        },
        e => e,
    }
}

#[async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match self.inner.get(key).await? {
            Some(kv) => decode(&self.rules, kv).map(Some),
            None => Ok(None),
        }
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: i64,
        revision: Revision,
    ) -> Result<RangeResult, StoreError> {
        let mut res = self
            .inner
            .range(prefix, start_after, limit, revision)
            .await?;
        res.kvs = res
            .kvs
            .into_iter()
            .map(|kv| decode(&self.rules, kv))
            .collect::<Result<_, _>>()?;
        Ok(res)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let sealed = encode(&self.rules, key, value.clone())?;
        let mut kv = self.inner.create(key, sealed).await?;
        kv.value = value;
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let sealed = encode(&self.rules, key, value.clone())?;
        let mut kv = self
            .inner
            .update(key, sealed, expected)
            .await
            .map_err(|e| decode_err(&self.rules, e))?;
        kv.value = value;
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Deleted, StoreError> {
        let mut d = self
            .inner
            .delete(key, expected)
            .await
            .map_err(|e| decode_err(&self.rules, e))?;
        d.prev = decode(&self.rules, d.prev)?;
        Ok(d)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let rules = self.rules.clone();
        let stream = self.inner.watch(prefix, after).await?;
        Ok(stream
            .map(move |ev| {
                let ev = ev?;
                Ok(Event {
                    kind: ev.kind,
                    kv: decode(&rules, ev.kv)?,
                    prev: ev.prev.map(|p| decode(&rules, p)).transpose()?,
                })
            })
            .boxed())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }

    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compact_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn key(kind: Kind, name: &str, len: usize, fill: u8) -> Key {
        Key::new(kind, name, vec![fill; len]).unwrap()
    }

    fn store(inner: &SharedStore, keys: Vec<Key>) -> EncryptedStore {
        EncryptedStore::new(
            inner.clone(),
            vec![Rule {
                prefix: "/registry/secrets/".into(),
                keys,
                identity_first: false,
            }],
        )
    }

    #[tokio::test]
    async fn every_provider_round_trips_and_the_raw_bytes_are_not_plaintext() {
        for k in [
            key(Kind::AesCbc, "k", 32, 1),
            key(Kind::AesCbc, "k", 16, 1),
            key(Kind::AesGcm, "k", 32, 2),
            key(Kind::AesGcm, "k", 24, 2),
            key(Kind::Secretbox, "k", 32, 3),
        ] {
            let inner: SharedStore = Arc::new(MemoryStore::new());
            let s = store(&inner, vec![k.clone()]);
            s.create("/registry/secrets/ns/a", b"top secret".to_vec())
                .await
                .unwrap();
            s.create("/registry/configmaps/ns/a", b"plain".to_vec())
                .await
                .unwrap();
            let raw = inner.get("/registry/secrets/ns/a").await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&raw.value);
            assert!(text.starts_with(&k.prefix()), "{k:?}: {text}");
            assert!(!text.contains("top secret"), "{k:?}");
            let raw_cm = inner
                .get("/registry/configmaps/ns/a")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(raw_cm.value, b"plain");
            let got = s.get("/registry/secrets/ns/a").await.unwrap().unwrap();
            assert_eq!(got.value, b"top secret");
            let listed = s.range("/registry/secrets/", None, 0, 0).await.unwrap();
            assert_eq!(listed.kvs[0].value, b"top secret");
        }
    }

    #[tokio::test]
    async fn rotation_reads_old_values_and_a_wrong_key_fails_cleanly() {
        let inner: SharedStore = Arc::new(MemoryStore::new());
        let old = key(Kind::AesCbc, "old", 32, 1);
        store(&inner, vec![old.clone()])
            .create("/registry/secrets/ns/a", b"one".to_vec())
            .await
            .unwrap();
        // Plaintext from before encryption was on still reads.
        inner
            .create("/registry/secrets/ns/legacy", b"zero".to_vec())
            .await
            .unwrap();
        let new = key(Kind::Secretbox, "new", 32, 9);
        let rotated = store(&inner, vec![new.clone(), old]);
        rotated
            .create("/registry/secrets/ns/b", b"two".to_vec())
            .await
            .unwrap();
        let all = rotated
            .range("/registry/secrets/", None, 0, 0)
            .await
            .unwrap();
        let values: Vec<&[u8]> = all.kvs.iter().map(|kv| kv.value.as_slice()).collect();
        assert_eq!(values, [b"one".as_slice(), b"two", b"zero"]);
        let raw = inner.get("/registry/secrets/ns/b").await.unwrap().unwrap();
        assert!(raw.value.starts_with(new.prefix().as_bytes()));

        let wrong = store(&inner, vec![key(Kind::AesCbc, "old", 32, 7)]);
        let err = wrong.get("/registry/secrets/ns/a").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("decrypting /registry/secrets/ns/a"),
            "{err}"
        );
        let missing = store(&inner, vec![]);
        let err = missing.get("/registry/secrets/ns/b").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("no configured key matches k8s:enc:secretbox:v1:new"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn watches_and_conflicts_carry_plaintext() {
        let inner: SharedStore = Arc::new(MemoryStore::new());
        let s = store(&inner, vec![key(Kind::AesGcm, "k", 32, 4)]);
        let mut w = s.watch("/registry/secrets/", 0).await.unwrap();
        let kv = s
            .create("/registry/secrets/ns/a", b"v1".to_vec())
            .await
            .unwrap();
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.kv.value, b"v1");
        let err = s
            .update(
                "/registry/secrets/ns/a",
                b"v2".to_vec(),
                kv.mod_revision + 5,
            )
            .await
            .unwrap_err();
        match err {
            StoreError::Conflict { current, .. } => assert_eq!(current.value, b"v1"),
            e => panic!("{e}"),
        }
        // GCM binds the value to its key: moved elsewhere, it fails.
        let raw = inner.get("/registry/secrets/ns/a").await.unwrap().unwrap();
        inner
            .create("/registry/secrets/ns/moved", raw.value)
            .await
            .unwrap();
        assert!(s.get("/registry/secrets/ns/moved").await.is_err());
    }
}
