//! Blob storage: `blobs/sha256/<hex>`, written via a verified temp file and rename.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::{ImageError, ImageStore, reference::is_sha256_digest};

/// Path of a blob; rejects anything that is not a well-formed sha256 digest so a
/// digest from an archive can never name a path outside the store.
pub(crate) fn path(store: &ImageStore, digest: &str) -> Result<PathBuf, ImageError> {
    if !is_sha256_digest(digest) {
        return Err(ImageError::InvalidArchive(format!(
            "unsupported digest {digest:?}"
        )));
    }
    Ok(store.root.join("blobs/sha256").join(&digest[7..]))
}

/// True when the blob is present.
pub(crate) fn exists(store: &ImageStore, digest: &str) -> bool {
    path(store, digest).is_ok_and(|p| p.is_file())
}

/// Size of a stored blob.
pub(crate) fn size(store: &ImageStore, digest: &str) -> Result<u64, ImageError> {
    let p = path(store, digest)?;
    Ok(std::fs::metadata(&p)
        .map_err(ImageError::io(format!("stat blob {digest}")))?
        .len())
}

/// Reads a whole blob (for small JSON documents).
pub(crate) fn read(store: &ImageStore, digest: &str) -> Result<Vec<u8>, ImageError> {
    let p = path(store, digest)?;
    std::fs::read(&p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::NotFound(format!("blob {digest}"))
        } else {
            ImageError::io(format!("read blob {digest}"))(e)
        }
    })
}

/// Opens a blob for streaming.
pub(crate) fn open(store: &ImageStore, digest: &str) -> Result<std::fs::File, ImageError> {
    let p = path(store, digest)?;
    std::fs::File::open(&p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::NotFound(format!("blob {digest}"))
        } else {
            ImageError::io(format!("open blob {digest}"))(e)
        }
    })
}

/// Streams `r` into the store, verifying against `expected` when given.
/// Returns (digest, size).
pub(crate) fn write(
    store: &ImageStore,
    r: &mut dyn Read,
    expected: Option<&str>,
) -> Result<(String, u64), ImageError> {
    let mut tmp = tempfile::NamedTempFile::new_in(store.root.join("ingest"))
        .map_err(ImageError::io("create ingest file"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImageError::io("read archive")(e)),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(ImageError::io("write ingest file"))?;
        size += n as u64;
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(e) = expected
        && e != digest
    {
        return Err(ImageError::DigestMismatch {
            what: "blob".into(),
            expected: e.to_string(),
            actual: digest,
        });
    }
    let dest = path(store, &digest)?;
    if dest.is_file() {
        return Ok((digest, size));
    }
    tmp.as_file()
        .sync_all()
        .map_err(ImageError::io("sync ingest file"))?;
    set_mode(tmp.path(), 0o444)?;
    tmp.persist(&dest)
        .map_err(|e| ImageError::io(format!("store blob {digest}"))(e.error))?;
    Ok((digest, size))
}

/// Stores an in-memory blob.
pub(crate) fn write_bytes(store: &ImageStore, bytes: &[u8]) -> Result<String, ImageError> {
    Ok(write(store, &mut &bytes[..], None)?.0)
}

/// Writes a small file atomically (temp file in the same directory, then rename).
pub(crate) fn write_atomic(
    store: &ImageStore,
    dest: &Path,
    bytes: &[u8],
) -> Result<(), ImageError> {
    let mut tmp = tempfile::NamedTempFile::new_in(store.root.join("ingest"))
        .map_err(ImageError::io("create temp file"))?;
    tmp.write_all(bytes)
        .map_err(ImageError::io("write temp file"))?;
    tmp.as_file()
        .sync_all()
        .map_err(ImageError::io("sync temp file"))?;
    set_mode(tmp.path(), 0o644)?;
    tmp.persist(dest)
        .map_err(|e| ImageError::io(format!("replace {}", dest.display()))(e.error))?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(ImageError::io(format!("chmod {}", p.display())))
}

/// Every stored blob digest.
pub(crate) fn list(store: &ImageStore) -> Result<Vec<String>, ImageError> {
    let dir = store.root.join("blobs/sha256");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(ImageError::io("list blobs"))? {
        let e = e.map_err(ImageError::io("list blobs"))?;
        let d = format!("sha256:{}", e.file_name().to_string_lossy());
        if is_sha256_digest(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Deletes a blob (missing is fine).
pub(crate) fn remove(store: &ImageStore, digest: &str) -> Result<(), ImageError> {
    match std::fs::remove_file(path(store, digest)?) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ImageError::io(format!("remove blob {digest}"))(e))
        }
        _ => Ok(()),
    }
}

/// Removes temp files left by crashed writers. Imports cannot run under the gc lock,
/// but an index update may, so only files older than ten minutes go.
pub(crate) fn clean_ingest(store: &ImageStore) -> Result<(), ImageError> {
    let dir = store.root.join("ingest");
    let stale = std::time::Duration::from_secs(600);
    for e in std::fs::read_dir(&dir)
        .map_err(ImageError::io("list ingest"))?
        .flatten()
    {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > stale);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}
