//! Pushing an image from the store to a registry: each blob the registry
//! lacks, then the manifest bytes exactly as stored (so the digest is the
//! same on both sides).

use oci_client::RegistryOperation;
use oci_client::secrets::RegistryAuth;

use crate::pull::{Credentials, client_for, registry_error};
use crate::registries::RegistriesConfig;
use crate::{ImageError, ImageStore, blobs, normalize};

impl ImageStore {
    /// Pushes stored `image` as `target`; returns the manifest digest.
    pub async fn push(
        &self,
        image: &str,
        target: &str,
        creds: Option<&Credentials>,
        config: &RegistriesConfig,
    ) -> Result<String, ImageError> {
        let resolved = self.resolve(image)?;
        let name = normalize(target)?;
        let parsed = crate::Reference::parse(&name)?;
        let reference = oci_client::Reference::with_tag(
            parsed.domain.clone(),
            parsed.path.clone(),
            parsed.tag.clone().unwrap_or_else(|| "latest".into()),
        );
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Pushes go to the registry itself, never to a mirror.
        let endpoint = config
            .endpoints(&parsed.domain)
            .pop()
            .ok_or_else(|| ImageError::InvalidReference(name.clone()))?;
        let client = client_for(&endpoint, config.tls(&endpoint.host))?;
        let auth = match creds
            .cloned()
            .or_else(|| config.credentials(&parsed.domain))
        {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        client
            .auth(&reference, &auth, RegistryOperation::Push)
            .await
            .map_err(registry_error(&name))?;
        let m = &resolved.manifest;
        let wanted = std::iter::once(m.config().digest().to_string())
            .chain(m.layers().iter().map(|l| l.digest().to_string()));
        for digest in wanted {
            let there = client
                .blob_exists(&reference, &digest)
                .await
                .map_err(registry_error(&name))?;
            if !there {
                let bytes = blobs::read(self, &digest)?;
                client
                    .push_blob(&reference, bytes, &digest)
                    .await
                    .map_err(registry_error(&name))?;
            }
        }
        let bytes = blobs::read(self, &resolved.digest)?;
        let media = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_string());
        let content_type = http::HeaderValue::from_str(&media)
            .map_err(|_| ImageError::InvalidArchive(format!("bad media type {media:?}")))?;
        client
            .push_manifest_raw(&reference, bytes, content_type)
            .await
            .map_err(registry_error(&name))?;
        tracing::info!(image, target = %name, digest = %resolved.digest, "pushed image");
        Ok(resolved.digest)
    }
}
