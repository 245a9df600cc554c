//! Importing `docker save` and OCI-layout tarballs (plain, gzip or zstd).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::Deserialize;
use serde_json::json;

use crate::{ImageError, ImageStore, blobs, host_arch, reference};

/// Archive members kept in memory (JSON documents) are capped at this size.
const MAX_DOC: u64 = 16 << 20;
/// Nested indexes deeper than this are rejected.
const MAX_INDEX_DEPTH: usize = 4;

/// containerd's annotation carrying the full image name.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in an image layout.
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Compression detected from magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Detects gzip (`1f 8b`) or zstd (`28 b5 2f fd`) framing.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `r` in the decompressor its first bytes call for.
pub(crate) fn decompress<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ImageError> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let head = r
        .fill_buf()
        .map_err(ImageError::io("read archive header"))?;
    Ok(match sniff(head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::Decoder::with_buffer(r).map_err(ImageError::io("start zstd decoder"))?)
        }
        Compression::None => Box::new(r),
    })
}

/// An archive member after reading.
enum Member {
    /// Small document kept in memory.
    Doc(Vec<u8>),
    /// Streamed into the blob store.
    Blob { digest: String, size: u64 },
}

/// `manifest.json` entry of a docker-save archive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// Archive path normalised to a relative `a/b/c` form; `..` anywhere is refused.
pub(crate) fn clean_path(p: &Path) -> Result<String, ImageError> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::UnsafePath(p.display().to_string()));
            }
        }
    }
    Ok(parts.join("/"))
}

/// Reads the archive, storing every blob, and returns (references, manifest digest)
/// for each image found. The caller records them in the index.
pub(crate) fn import(
    store: &ImageStore,
    path: &Path,
    base_name: Option<&str>,
) -> Result<Vec<(Vec<String>, String)>, ImageError> {
    let file =
        std::fs::File::open(path).map_err(ImageError::io(format!("open {}", path.display())))?;
    let mut archive = tar::Archive::new(decompress(file)?);
    let mut members: HashMap<String, Member> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let entries = archive.entries().map_err(ImageError::io("read archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(ImageError::io("read archive entry"))?;
        let raw = entry
            .path()
            .map_err(ImageError::io("read entry path"))?
            .into_owned();
        let name = clean_path(&raw)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ImageError::io("read link name"))?
                    .ok_or_else(|| {
                        ImageError::InvalidArchive(format!("link {name} has no target"))
                    })?;
                let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                    clean_path(&parent.join(target))?
                } else {
                    clean_path(&target)?
                };
                links.insert(name, target);
                continue;
            }
            _ => continue,
        }
        let size = entry.size();
        let member = if let Some(rest) = name.strip_prefix("blobs/") {
            let expected = rest.replacen('/', ":", 1);
            let (digest, size) = blobs::write(store, &mut entry, Some(&expected))?;
            Member::Blob { digest, size }
        } else if size <= MAX_DOC
            && (name.ends_with(".json") || name == "oci-layout" || name == "repositories")
        {
            let mut buf = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(ImageError::io(format!("read {name}")))?;
            Member::Doc(buf)
        } else {
            let (digest, size) = blobs::write(store, &mut entry, None)?;
            Member::Blob { digest, size }
        };
        members.insert(name, member);
    }
    let archive = Archive {
        store,
        members,
        links,
        base_name,
    };
    if archive.get("index.json").is_some() {
        archive.import_oci()
    } else if archive.get("manifest.json").is_some() {
        archive.import_docker()
    } else {
        Err(ImageError::InvalidArchive(
            "neither index.json (OCI layout) nor manifest.json (docker save) found".into(),
        ))
    }
}

struct Archive<'a> {
    store: &'a ImageStore,
    /// Repository for layouts that name manifests by bare tag only.
    base_name: Option<&'a str>,
    members: HashMap<String, Member>,
    links: HashMap<String, String>,
}

impl Archive<'_> {
    /// Looks a member up, following (a bounded number of) links.
    fn get(&self, name: &str) -> Option<&Member> {
        let mut name = name.to_string();
        for _ in 0..8 {
            if let Some(m) = self.members.get(&name) {
                return Some(m);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        match self.get(name) {
            Some(Member::Doc(b)) => Ok(b.clone()),
            Some(Member::Blob { digest, .. }) => blobs::read(self.store, digest),
            None => Err(ImageError::InvalidArchive(format!("missing member {name}"))),
        }
    }

    /// (digest, size) of a member, storing in-memory documents as blobs.
    fn blob(&self, name: &str) -> Result<(String, u64), ImageError> {
        match self.get(name) {
            Some(Member::Doc(b)) => Ok((blobs::write_bytes(self.store, b)?, b.len() as u64)),
            Some(Member::Blob { digest, size }) => Ok((digest.clone(), *size)),
            None => Err(ImageError::InvalidArchive(format!("missing member {name}"))),
        }
    }

    fn docker_manifests(&self) -> Result<Vec<DockerManifest>, ImageError> {
        let b = self.bytes("manifest.json")?;
        serde_json::from_slice(&b)
            .map_err(|e| ImageError::InvalidArchive(format!("manifest.json: {e}")))
    }

    fn import_oci(&self) -> Result<Vec<(Vec<String>, String)>, ImageError> {
        let index = ImageIndex::from_reader(&self.bytes("index.json")?[..]).map_err(|source| {
            ImageError::Spec {
                what: "index.json".into(),
                source,
            }
        })?;
        // Newer `docker save` writes both files; manifest.json then names the images.
        let docker = if self.get("manifest.json").is_some() {
            self.docker_manifests()?
        } else {
            Vec::new()
        };
        let mut out: Vec<(Vec<String>, String)> = Vec::new();
        for desc in index.manifests() {
            let digest = self.select_manifest(desc, 0)?;
            let manifest = self.store.read_manifest(&digest)?;
            for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
                let d = d.digest().to_string();
                if !blobs::exists(self.store, &d) {
                    return Err(ImageError::InvalidArchive(format!(
                        "manifest {digest} references {d}, which the archive lacks"
                    )));
                }
            }
            let mut names = names_from_annotations(desc, self.base_name)?;
            if names.is_empty() {
                let config_path = format!(
                    "blobs/{}",
                    manifest.config().digest().to_string().replacen(':', "/", 1)
                );
                for dm in docker.iter().filter(|dm| dm.config == config_path) {
                    for t in dm.repo_tags.iter().flatten() {
                        names.push(reference::normalize(t)?);
                    }
                }
            }
            match out.iter_mut().find(|(_, d)| *d == digest) {
                Some((n, _)) => n.extend(names),
                None => out.push((names, digest)),
            }
        }
        Ok(out)
    }

    /// Follows indexes down to the manifest for this host's platform.
    fn select_manifest(&self, desc: &Descriptor, depth: usize) -> Result<String, ImageError> {
        let digest = desc.digest().to_string();
        if depth > MAX_INDEX_DEPTH {
            return Err(ImageError::InvalidArchive(
                "image indexes nest too deeply".into(),
            ));
        }
        let bytes = blobs::read(self.store, &digest)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::InvalidArchive(format!("{digest}: {e}")))?;
        if value.get("manifests").is_none() {
            return Ok(digest);
        }
        let index = ImageIndex::from_reader(&bytes[..]).map_err(|source| ImageError::Spec {
            what: format!("index {digest}"),
            source,
        })?;
        let arch = host_arch();
        let candidates: Vec<&Descriptor> = index
            .manifests()
            .iter()
            // Skip attestation manifests (buildx marks them unknown/unknown).
            .filter(|m| {
                m.platform()
                    .as_ref()
                    .is_none_or(|p| p.os().to_string() != "unknown")
            })
            .collect();
        let chosen = candidates
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == arch
                })
            })
            .or_else(|| {
                (candidates.len() == 1 && candidates[0].platform().is_none())
                    .then(|| &candidates[0])
            })
            .ok_or_else(|| {
                ImageError::InvalidArchive(format!(
                    "index {digest} has no manifest for linux/{arch}"
                ))
            })?;
        self.select_manifest(chosen, depth + 1)
    }

    fn import_docker(&self) -> Result<Vec<(Vec<String>, String)>, ImageError> {
        let mut out = Vec::new();
        for dm in self.docker_manifests()? {
            let (config_digest, config_size) = self.blob(&dm.config)?;
            let config: serde_json::Value =
                serde_json::from_slice(&blobs::read(self.store, &config_digest)?).map_err(|e| {
                    ImageError::InvalidArchive(format!("config {}: {e}", dm.config))
                })?;
            let diff_ids = config
                .pointer("/rootfs/diff_ids")
                .and_then(|v| v.as_array())
                .map_or(0, |a| a.len());
            if diff_ids != dm.layers.len() {
                return Err(ImageError::InvalidArchive(format!(
                    "{} lists {} layers but its config has {diff_ids} diff_ids",
                    dm.config,
                    dm.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for l in &dm.layers {
                let (digest, size) = self.blob(l)?;
                let mut head = [0u8; 4];
                let n = blobs::open(self.store, &digest)?
                    .read(&mut head)
                    .map_err(ImageError::io(format!("read layer {l}")))?;
                let media_type = match sniff(&head[..n]) {
                    Compression::Gzip => MediaType::ImageLayerGzip,
                    Compression::Zstd => MediaType::ImageLayerZstd,
                    Compression::None => MediaType::ImageLayer,
                };
                layers.push(
                    json!({"mediaType": media_type.to_string(), "digest": digest, "size": size}),
                );
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MediaType::ImageManifest.to_string(),
                "config": {
                    "mediaType": MediaType::ImageConfig.to_string(),
                    "digest": config_digest,
                    "size": config_size,
                },
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest)?;
            let digest = blobs::write_bytes(self.store, &bytes)?;
            let mut names = Vec::new();
            for t in dm.repo_tags.iter().flatten() {
                names.push(reference::normalize(t)?);
            }
            out.push((names, digest));
        }
        Ok(out)
    }
}

/// Image names a layout's index gives a manifest. A bare tag (`latest`) names no
/// repository: it counts only with a base name (`ctr import --base-name`).
fn names_from_annotations(
    desc: &Descriptor,
    base_name: Option<&str>,
) -> Result<Vec<String>, ImageError> {
    let Some(a) = desc.annotations() else {
        return Ok(Vec::new());
    };
    if let Some(n) = a.get(ANNOTATION_CONTAINERD_NAME) {
        return Ok(vec![reference::normalize(n)?]);
    }
    match a.get(ANNOTATION_REF_NAME) {
        Some(n) if n.contains('/') || n.contains(':') => Ok(vec![reference::normalize(n)?]),
        Some(tag) => match base_name {
            Some(base) => Ok(vec![reference::normalize(&format!("{base}:{tag}"))?]),
            None => Ok(Vec::new()),
        },
        None => Ok(Vec::new()),
    }
}
