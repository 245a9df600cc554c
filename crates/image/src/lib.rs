//! Content-addressed OCI image store for the r8s node agent, in the spirit of
//! containerd's content store plus image index:
//!
//! ```text
//! <root>/blobs/sha256/<hex>   immutable blobs (manifests, configs, layers)
//! <root>/ingest/              temp files, renamed into blobs/ once verified
//! <root>/index.json           image reference -> manifest digest
//! <root>/layers/<diff-hex>/   each layer unpacked once, overlayfs whiteout form
//! <root>/lock, index.lock     flock(2) locks (gc vs writers, index updates)
//! ```

mod blobs;
pub mod build;
mod import;
mod lock;
pub mod pull;
mod push;
pub mod reference;
pub mod registries;
pub mod registry;
mod unpack;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

pub use oci_spec::image as oci;
pub use pull::{Credentials, Pulled};
pub use reference::{Reference, normalize};
pub use registries::RegistriesConfig;

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Filesystem failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The reference does not follow docker's reference grammar.
    #[error("invalid image reference {0}")]
    InvalidReference(String),
    /// No image (or blob) matches the reference or digest.
    #[error("image not found: {0}")]
    NotFound(String),
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob or layer.
        what: String,
        /// Digest it should have had.
        expected: String,
        /// Digest it actually had.
        actual: String,
    },
    /// The archive or a document inside it is malformed or unsupported.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    /// A layer entry would escape the layer directory.
    #[error("unsafe path in layer: {0}")]
    UnsafePath(String),
    /// An OCI document could not be parsed.
    #[error("invalid OCI document {what}: {source}")]
    Spec {
        /// Which document.
        what: String,
        /// Parser error.
        source: oci_spec::OciSpecError,
    },
    /// The registry refused or failed a request (its message included).
    #[error("pulling {image}: {source}")]
    Registry {
        /// The image being pulled.
        image: String,
        /// What the registry client reported.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The store's own index file is corrupt.
    #[error("corrupt image index: {0}")]
    Index(#[from] serde_json::Error),
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }
}

/// One image as `crictl images` / node status would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Fully-qualified tags pointing at this image, e.g. `docker.io/library/busybox:latest`.
    pub references: Vec<String>,
    /// `repository@manifest-digest` forms (kubelet reports these alongside tags).
    pub repo_digests: Vec<String>,
    /// Manifest digest.
    pub digest: String,
    /// Config digest, i.e. the image ID.
    pub id: String,
    /// Manifest + config + (compressed) layer sizes in bytes.
    pub size: u64,
}

/// An image resolved to its manifest.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Manifest digest.
    pub digest: String,
    /// The parsed manifest.
    pub manifest: ImageManifest,
}

/// Outcome of a garbage collection pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcStats {
    /// Blob digests deleted.
    pub blobs_removed: Vec<String>,
    /// Unpacked layer diff-ids deleted.
    pub layers_removed: Vec<String>,
}

/// Persistent reference index (`index.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Normalised reference -> manifest digest.
    images: BTreeMap<String, String>,
}

/// A content-addressed image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        for d in ["blobs/sha256", "ingest", "layers"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p)
                .map_err(ImageError::io(format!("create {}", p.display())))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports an OCI-layout or `docker save` tarball (plain, gzip or zstd) and returns
    /// the fully-qualified references it now holds (a digest reference for unnamed images).
    pub fn import(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        self.import_with_base_name(path, None)
    }

    /// Like [`ImageStore::import`], naming OCI-layout manifests annotated with a bare
    /// tag (`latest`) as `base_name:tag`, as `ctr images import --base-name` does.
    pub fn import_with_base_name(
        &self,
        path: &Path,
        base_name: Option<&str>,
    ) -> Result<Vec<String>, ImageError> {
        if let Some(b) = base_name {
            Reference::parse(b)?;
        }
        let _gc = lock::Lock::shared(&self.root.join("lock"))?;
        let found = import::import(self, path, base_name)?;
        let mut out = Vec::new();
        self.update_index(|idx| {
            for (refs, digest) in &found {
                if refs.is_empty() {
                    out.push(digest.clone());
                }
                for r in refs {
                    idx.images.insert(r.clone(), digest.clone());
                    out.push(r.clone());
                }
            }
        })?;
        tracing::info!(path = %path.display(), images = ?out, "imported image archive");
        Ok(out)
    }

    /// Tags manifest `digest` (which must be stored) as `reference`.
    pub fn tag(&self, reference: &str, digest: &str) -> Result<String, ImageError> {
        let r = normalize(reference)?;
        self.read_manifest(digest)?;
        self.update_index(|idx| {
            idx.images.insert(r.clone(), digest.to_string());
        })?;
        Ok(r)
    }

    /// Lists every image in the index, grouped by manifest digest.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let idx = self.read_index()?;
        let mut by_digest: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (r, d) in &idx.images {
            by_digest.entry(d).or_default().push(r);
        }
        let mut out = Vec::new();
        for (digest, refs) in by_digest {
            let manifest = match self.read_manifest(digest) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(digest, error = %e, "image in index has unreadable manifest");
                    continue;
                }
            };
            out.push(self.info(digest, &manifest, &refs));
        }
        Ok(out)
    }

    fn info(&self, digest: &str, manifest: &ImageManifest, refs: &[&str]) -> ImageInfo {
        let manifest_size = blobs::size(self, digest).unwrap_or(0);
        let size = manifest_size
            + manifest.config().size()
            + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
        let mut references = Vec::new();
        let mut repo_digests = Vec::new();
        for r in refs {
            if let Ok(p) = Reference::parse(r) {
                if p.tag.is_some() && p.digest.is_none() {
                    references.push(p.to_string());
                }
                let rd = format!("{}@{digest}", p.repository());
                if !repo_digests.contains(&rd) {
                    repo_digests.push(rd);
                }
            }
        }
        ImageInfo {
            references,
            repo_digests,
            digest: digest.to_string(),
            id: manifest.config().digest().to_string(),
            size,
        }
    }

    /// Finds an image by reference (`busybox`, `docker.io/library/busybox:latest`,
    /// `name@sha256:..`), manifest digest, or image ID (config digest, also as bare hex).
    pub fn resolve(&self, image: &str) -> Result<ResolvedImage, ImageError> {
        let digest = self.resolve_digest(image)?;
        let manifest = self.read_manifest(&digest)?;
        Ok(ResolvedImage { digest, manifest })
    }

    /// `resolve` plus an `ImageInfo` for the kubelet's status reporting.
    pub fn inspect(&self, image: &str) -> Result<ImageInfo, ImageError> {
        let digest = self.resolve_digest(image)?;
        let manifest = self.read_manifest(&digest)?;
        let idx = self.read_index()?;
        let refs: Vec<&str> = idx
            .images
            .iter()
            .filter(|(_, d)| **d == digest)
            .map(|(r, _)| r.as_str())
            .collect();
        Ok(self.info(&digest, &manifest, &refs))
    }

    fn resolve_digest(&self, image: &str) -> Result<String, ImageError> {
        let idx = self.read_index()?;
        let as_digest = if reference::is_sha256_digest(image) {
            Some(image.to_string())
        } else if image.len() == 64 && reference::is_sha256_digest(&format!("sha256:{image}")) {
            Some(format!("sha256:{image}"))
        } else {
            None
        };
        if let Some(d) = as_digest {
            for m in idx.images.values() {
                if *m == d {
                    return Ok(d);
                }
            }
            for m in idx.images.values() {
                if self.read_manifest(m)?.config().digest().to_string() == d {
                    return Ok(m.clone());
                }
            }
            return Err(ImageError::NotFound(image.to_string()));
        }
        let r = Reference::parse(image)?;
        if let Some(d) = &r.digest {
            // Pinned by digest: any stored manifest with that digest will do.
            if blobs::exists(self, d) {
                return Ok(d.clone());
            }
            return Err(ImageError::NotFound(image.to_string()));
        }
        idx.images
            .get(&r.to_string())
            .cloned()
            .ok_or_else(|| ImageError::NotFound(image.to_string()))
    }

    /// The image's OCI configuration (entrypoint, cmd, env, working dir, user).
    pub fn config(&self, image: &str) -> Result<ImageConfiguration, ImageError> {
        let m = self.resolve(image)?.manifest;
        let digest = m.config().digest().to_string();
        let bytes = blobs::read(self, &digest)?;
        ImageConfiguration::from_reader(&bytes[..]).map_err(|source| ImageError::Spec {
            what: format!("config {digest}"),
            source,
        })
    }

    /// Removes a reference, or every reference to a manifest digest / image ID.
    /// Blobs stay until [`ImageStore::gc`]. Returns the references removed.
    pub fn remove(&self, image: &str) -> Result<Vec<String>, ImageError> {
        let digest = self.resolve_digest(image)?;
        let exact = Reference::parse(image)
            .ok()
            .filter(|r| r.digest.is_none() && !reference::is_sha256_digest(image))
            .map(|r| r.to_string());
        let mut removed = Vec::new();
        self.update_index(|idx| {
            idx.images.retain(|r, d| {
                let hit = match &exact {
                    Some(e) => r == e,
                    None => *d == digest,
                };
                if hit {
                    removed.push(r.clone());
                }
                !hit
            });
        })?;
        if removed.is_empty() {
            return Err(ImageError::NotFound(image.to_string()));
        }
        tracing::info!(image, removed = ?removed, "removed image references");
        Ok(removed)
    }

    /// Unpacks the image's layers (each once, shared between images) and returns their
    /// directories bottom layer first; overlayfs wants them reversed in `lowerdir=`.
    pub fn unpack(&self, image: &str) -> Result<Vec<PathBuf>, ImageError> {
        let _gc = lock::Lock::shared(&self.root.join("lock"))?;
        let m = self.resolve(image)?.manifest;
        let config = self.config_of(&m)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != m.layers().len() {
            return Err(ImageError::InvalidArchive(format!(
                "manifest has {} layers but config lists {} diff_ids",
                m.layers().len(),
                diff_ids.len()
            )));
        }
        let mut dirs = Vec::new();
        for (layer, diff_id) in m.layers().iter().zip(diff_ids) {
            dirs.push(unpack::unpack_layer(
                self,
                layer.digest().as_ref(),
                diff_id,
            )?);
        }
        Ok(dirs)
    }

    fn config_of(&self, m: &ImageManifest) -> Result<ImageConfiguration, ImageError> {
        let digest = m.config().digest().to_string();
        let bytes = blobs::read(self, &digest)?;
        ImageConfiguration::from_reader(&bytes[..]).map_err(|source| ImageError::Spec {
            what: format!("config {digest}"),
            source,
        })
    }

    /// Deletes blobs and unpacked layers reachable from neither the index nor `in_use`
    /// (manifest digests or image IDs of images running containers still need).
    pub fn gc(&self, in_use: &HashSet<String>) -> Result<GcStats, ImageError> {
        let _gc = lock::Lock::exclusive(&self.root.join("lock"))?;
        let idx = self.read_index()?;
        let mut roots: HashSet<String> = idx.images.values().cloned().collect();
        for d in in_use {
            if blobs::exists(self, d) {
                roots.insert(d.clone());
            }
            // An image ID (config digest) keeps the manifests that use it.
            for m in blobs::list(self)? {
                if let Ok(man) = self.read_manifest(&m)
                    && man.config().digest().to_string() == *d
                {
                    roots.insert(m);
                }
            }
        }
        let mut keep_blobs = HashSet::new();
        let mut keep_layers = HashSet::new();
        for m in &roots {
            let Ok(man) = self.read_manifest(m) else {
                continue;
            };
            keep_blobs.insert(m.clone());
            keep_blobs.insert(man.config().digest().to_string());
            for l in man.layers() {
                keep_blobs.insert(l.digest().to_string());
            }
            if let Ok(cfg) = self.config_of(&man) {
                keep_layers.extend(cfg.rootfs().diff_ids().iter().cloned());
            }
        }
        let mut stats = GcStats::default();
        for b in blobs::list(self)? {
            if !keep_blobs.contains(&b) {
                blobs::remove(self, &b)?;
                stats.blobs_removed.push(b);
            }
        }
        stats.layers_removed = unpack::gc_layers(self, &keep_layers)?;
        blobs::clean_ingest(self)?;
        tracing::info!(
            blobs = stats.blobs_removed.len(),
            layers = stats.layers_removed.len(),
            "image gc"
        );
        Ok(stats)
    }

    pub(crate) fn read_manifest(&self, digest: &str) -> Result<ImageManifest, ImageError> {
        let bytes = blobs::read(self, digest)?;
        ImageManifest::from_reader(&bytes[..]).map_err(|source| ImageError::Spec {
            what: format!("manifest {digest}"),
            source,
        })
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<Index, ImageError> {
        match std::fs::read(self.index_path()) {
            Ok(b) => Ok(serde_json::from_slice(&b)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(ImageError::io("read image index")(e)),
        }
    }

    /// Read-modify-write of the index under its lock, persisted by rename.
    fn update_index(&self, f: impl FnOnce(&mut Index)) -> Result<(), ImageError> {
        let _l = lock::Lock::exclusive(&self.root.join("index.lock"))?;
        let mut idx = self.read_index()?;
        f(&mut idx);
        let bytes = serde_json::to_vec_pretty(&idx)?;
        blobs::write_atomic(self, &self.index_path(), &bytes)
    }
}

/// The OCI architecture name of this host (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}
