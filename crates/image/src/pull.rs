//! Pulling images from registries over the OCI distribution API into the
//! store: manifests (OCI and Docker v2 schema 2, through image indexes and
//! manifest lists to the node's platform), then the config and layers,
//! downloaded concurrently and each verified against its digest before it
//! is stored. The protocol, token and basic authentication are the ORAS
//! project's `oci-client`.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::registries::{Endpoint, RegistriesConfig, TlsConfig};
use crate::{ImageError, ImageStore, blobs, host_arch, lock, normalize};

/// How many blobs of one image download at once.
const CONCURRENT_BLOBS: usize = 4;

/// Called as blobs arrive: (digest, bytes so far, size). A blob already
/// in the store reports its full size at once.
pub type Progress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// Counts what passes through to the ingest file, for [`Progress`].
struct Counting<W> {
    inner: W,
    done: u64,
    size: u64,
    digest: String,
    progress: Progress,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.done += *n as u64;
            (this.progress)(&this.digest, this.done, this.size);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Registry credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The normalized reference now in the index.
    pub reference: String,
    /// The manifest digest (the image's repo digest).
    pub digest: String,
    /// Bytes of the manifest, config and layers.
    pub size: u64,
}

/// The registry host of a normalized reference (`host[:port]`).
pub fn registry_of(reference: &str) -> &str {
    reference.split('/').next().unwrap_or("")
}

/// Whether a registry is on a loopback address, where plain HTTP is
/// accepted as Docker and containerd accept it for `localhost`.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn registry_error(
    image: &str,
) -> impl FnOnce(oci_client::errors::OciDistributionError) -> ImageError {
    let image = image.to_string();
    move |source| ImageError::Registry { image, source }
}

/// The lock of one image in one store, made on first use.
fn in_flight(key: &std::path::Path) -> Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static PULLS: OnceLock<Mutex<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let mut map = PULLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Locks nobody holds or waits for are dropped as the map grows.
    map.retain(|_, m| Arc::strong_count(m) > 1);
    map.entry(key.to_path_buf()).or_default().clone()
}

/// A registry client for one endpoint, with its TLS settings.
pub(crate) fn client_for(
    endpoint: &Endpoint,
    tls: Option<&TlsConfig>,
) -> Result<oci_client::Client, ImageError> {
    let protocol = if endpoint.plain_http {
        ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
    } else {
        ClientProtocol::Https
    };
    let mut extra_root_certificates = Vec::new();
    if let Some(ca) = tls.and_then(|t| t.ca_file.as_ref()) {
        let data =
            std::fs::read(ca).map_err(ImageError::io(format!("reading {}", ca.display())))?;
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(oci_client::Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        extra_root_certificates,
        accept_invalid_certificates: tls.is_some_and(|t| t.insecure_skip_verify),
        ..ClientConfig::default()
    }))
}

fn parse_manifest(name: &str, bytes: &[u8]) -> Result<Value, ImageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImageError::InvalidArchive(format!("{name}: the manifest is not JSON: {e}")))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl ImageStore {
    /// Pulls `image` from its registry (anonymously without credentials)
    /// and tags it in the store. Blobs already stored are not fetched
    /// again; nothing is tagged unless every blob arrived and verified.
    pub async fn pull(
        &self,
        image: &str,
        creds: Option<&Credentials>,
    ) -> Result<Pulled, ImageError> {
        self.pull_with(image, creds, &RegistriesConfig::default(), None)
            .await
    }

    /// [`ImageStore::pull`] through the node's registry configuration:
    /// the registry's mirrors in order, then the registry; `creds` (a
    /// pod's pull secret) are for the registry itself, before the node's
    /// configured ones, which serve every host they name.
    pub async fn pull_with(
        &self,
        image: &str,
        creds: Option<&Credentials>,
        config: &RegistriesConfig,
        progress: Option<Progress>,
    ) -> Result<Pulled, ImageError> {
        let name = normalize(image)?;
        let parsed = crate::Reference::parse(&name)?;
        // Pods that want the same image at the same time share one
        // transfer: the later ones wait, then find every blob stored and
        // fetch only the manifest.
        let gate = in_flight(&self.root.join(&name));
        let _one_at_a_time = gate.lock().await;
        // rustls needs a process-wide provider for reqwest; r8s uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut last = None;
        for endpoint in config.endpoints(&parsed.domain) {
            let reference = match &parsed.digest {
                Some(d) => oci_client::Reference::with_digest(
                    endpoint.host.clone(),
                    parsed.path.clone(),
                    d.clone(),
                ),
                None => oci_client::Reference::with_tag(
                    endpoint.host.clone(),
                    parsed.path.clone(),
                    parsed.tag.clone().unwrap_or_else(|| "latest".into()),
                ),
            };
            // A pod's pull secret speaks for the registry it names (as the
            // kubelet's credentials do in CRI); the node's configuration
            // for every host it lists.
            let auth = if endpoint.host == parsed.domain {
                creds
                    .cloned()
                    .or_else(|| config.credentials(&endpoint.host))
            } else {
                config.credentials(&endpoint.host)
            };
            let client = client_for(&endpoint, config.tls(&endpoint.host))?;
            match self
                .pull_from(&client, &name, &reference, auth.as_ref(), progress.clone())
                .await
            {
                Ok(p) => return Ok(p),
                Err(e) => {
                    tracing::warn!(image = %name, endpoint = %endpoint.host, error = %e, "pull attempt failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ImageError::NotFound(name)))
    }

    /// One attempt at one endpoint; the image is stored as `name`.
    async fn pull_from(
        &self,
        client: &oci_client::Client,
        name: &str,
        reference: &oci_client::Reference,
        creds: Option<&Credentials>,
        progress: Option<Progress>,
    ) -> Result<Pulled, ImageError> {
        let name = name.to_string();
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        // Blobs written meanwhile must survive a concurrent GC.
        let _gc = lock::Lock::shared(&self.root.join("lock"))?;
        let accepted = [
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
        ];
        let (mut bytes, mut digest) = client
            .pull_manifest_raw(reference, &auth, &accepted)
            .await
            .map_err(registry_error(&name))?;
        let mut doc = parse_manifest(&name, &bytes)?;
        if let Some(entries) = doc["manifests"].as_array() {
            let chosen = select_platform(entries).ok_or_else(|| {
                ImageError::InvalidArchive(format!(
                    "{name}: no manifest for linux/{} in the image index",
                    host_arch()
                ))
            })?;
            let by_digest = reference.clone_with_digest(chosen);
            (bytes, digest) = client
                .pull_manifest_raw(&by_digest, &auth, &accepted)
                .await
                .map_err(registry_error(&name))?;
            doc = parse_manifest(&name, &bytes)?;
        }
        let actual = sha256(&bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {name}"),
                expected: digest,
                actual,
            });
        }
        let mut wanted: Vec<(String, u64)> = Vec::new();
        for d in
            std::iter::once(&doc["config"]).chain(doc["layers"].as_array().into_iter().flatten())
        {
            let digest = d["digest"].as_str().ok_or_else(|| {
                ImageError::InvalidArchive(format!("{name}: manifest entry without a digest"))
            })?;
            wanted.push((digest.to_string(), d["size"].as_u64().unwrap_or(0)));
        }
        let size = futures::stream::iter(wanted.into_iter().map(|(d, size)| {
            let reference = reference.clone();
            let name = name.clone();
            let progress = progress.clone();
            async move {
                if blobs::exists(self, &d) {
                    if let Some(p) = &progress {
                        p(&d, size, size);
                    }
                } else {
                    self.fetch_blob(client, &reference, &name, (&d, size), progress)
                        .await?;
                }
                Ok::<_, ImageError>(size)
            }
        }))
        .buffer_unordered(CONCURRENT_BLOBS)
        .try_fold(bytes.len() as u64, |total, s| async move { Ok(total + s) })
        .await?;
        let stored = blobs::write_bytes(self, &bytes)?;
        debug_assert_eq!(stored, digest);
        self.tag(&name, &digest)?;
        tracing::info!(image = %name, %digest, size, "pulled image");
        Ok(Pulled {
            reference: name,
            digest,
            size,
        })
    }

    /// Downloads one blob into the ingest directory, then stores it if it
    /// hashes to `digest`; a failed or wrong download leaves nothing.
    async fn fetch_blob(
        &self,
        client: &oci_client::Client,
        reference: &oci_client::Reference,
        name: &str,
        (digest, size): (&str, u64),
        progress: Option<Progress>,
    ) -> Result<(), ImageError> {
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("ingest"))
            .map_err(ImageError::io("create ingest file"))?;
        let file =
            tokio::fs::File::from_std(tmp.reopen().map_err(ImageError::io("open ingest file"))?);
        let mut out = tokio::io::BufWriter::new(file);
        match progress {
            Some(progress) => {
                let mut counted = Counting {
                    inner: &mut out,
                    done: 0,
                    size,
                    digest: digest.to_string(),
                    progress,
                };
                client.pull_blob(reference, digest, &mut counted).await
            }
            None => client.pull_blob(reference, digest, &mut out).await,
        }
        .map_err(registry_error(name))?;
        tokio::io::AsyncWriteExt::flush(&mut out)
            .await
            .map_err(ImageError::io("write ingest file"))?;
        let store = self.clone();
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || {
            let mut f = tmp.reopen().map_err(ImageError::io("read ingest file"))?;
            blobs::write(&store, &mut f, Some(&digest)).map(|_| ())
        })
        .await
        .map_err(|e| ImageError::InvalidArchive(format!("blob writer failed: {e}")))?
    }
}

/// The digest of the index entry for this node's platform (linux and its
/// architecture; arm64 prefers the v8 variant, as containerd does).
fn select_platform(entries: &[Value]) -> Option<String> {
    let arch = host_arch();
    entries
        .iter()
        .filter(|e| e["platform"]["os"] == "linux" && e["platform"]["architecture"] == arch)
        .min_by_key(|e| match e["platform"]["variant"].as_str() {
            None | Some("v8") => 0,
            Some(_) => 1,
        })
        .and_then(|e| e["digest"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_and_platforms() {
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("127.0.0.1:41234"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("registry.example:5000"));
        assert!(!is_loopback_registry("10.0.0.1"));
        assert_eq!(registry_of("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        let arch = host_arch();
        let entries: Vec<Value> = serde_json::from_value(serde_json::json!([
            {"digest": "sha256:win", "platform": {"os": "windows", "architecture": arch}},
            {"digest": "sha256:other", "platform": {"os": "linux", "architecture": "s390x"}},
            {"digest": "sha256:mine", "platform": {"os": "linux", "architecture": arch}},
        ]))
        .unwrap();
        assert_eq!(select_platform(&entries).as_deref(), Some("sha256:mine"));
        assert_eq!(select_platform(&entries[..2]), None);
    }
}
