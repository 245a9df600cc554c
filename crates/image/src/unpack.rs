//! Layer unpacking into `layers/<diff-id hex>/` in overlayfs form.
//!
//! Extraction never follows a symlink: every parent of an entry must be a real
//! directory created inside the layer dir, `..` is refused, and absolute entry paths
//! are taken relative to the layer root. Each layer is extracted into a private temp
//! directory, its diff-id verified, and only then renamed into place, so concurrent
//! callers either see a complete layer or none.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::import::{clean_path, decompress};
use crate::{ImageError, ImageStore, blobs, reference::is_sha256_digest};

/// OCI whiteout prefix.
const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI marker making its directory opaque.
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// Prefix of aufs metadata entries (hard-link store etc.) that carry no content.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// The in-process lock of one layer's unpacking.
fn layer_lock(diff_id: &str) -> std::sync::Arc<std::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, Weak};
    static LOCKS: Mutex<Option<HashMap<String, Weak<Mutex<()>>>>> = Mutex::new(None);
    let mut map = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(l) = map.get(diff_id).and_then(Weak::upgrade) {
        return l;
    }
    let l = Arc::new(Mutex::new(()));
    map.insert(diff_id.to_string(), Arc::downgrade(&l));
    l
}

/// Returns the directory of an unpacked layer, unpacking blob `blob` on first use.
pub(crate) fn unpack_layer(
    store: &ImageStore,
    blob: &str,
    diff_id: &str,
) -> Result<PathBuf, ImageError> {
    if !is_sha256_digest(diff_id) {
        return Err(ImageError::InvalidArchive(format!(
            "unsupported diff_id {diff_id:?}"
        )));
    }
    let layers = store.root.join("layers");
    let dest = layers.join(&diff_id[7..]);
    if dest.is_dir() {
        return Ok(dest);
    }
    // One unpack per layer at a time in this process: when a Deployment's
    // replicas land on a node together, every pod worker would otherwise
    // unpack the same layer at once and all but one throw the work away
    // (a third of the node's CPU while starting 100 busybox pods).
    let lock = layer_lock(diff_id);
    let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&layers)
        .map_err(ImageError::io("create layer temp dir"))?;
    let mut hashing = HashingReader {
        inner: decompress(blobs::open(store, blob)?)?,
        hasher: Sha256::new(),
    };
    let mut ex = Extractor::new(tmp.path());
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(ImageError::io(format!("read layer {blob}")))?;
        for entry in entries {
            let entry = entry.map_err(ImageError::io(format!("read layer {blob}")))?;
            ex.entry(entry)?;
        }
    }
    // The diff-id covers the whole tar stream, including the end-of-archive padding.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(ImageError::io(format!("read layer {blob}")))?;
    let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    if actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("layer {blob}"),
            expected: diff_id.to_string(),
            actual,
        });
    }
    ex.finish()?;
    let tmp_path = tmp.keep();
    match std::fs::rename(&tmp_path, &dest) {
        Ok(()) => {
            tracing::debug!(layer = diff_id, dir = %dest.display(), "unpacked layer");
            Ok(dest)
        }
        // Another caller finished first; theirs is identical.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp_path);
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp_path);
            Err(ImageError::io(format!(
                "rename layer into {}",
                dest.display()
            ))(e))
        }
    }
}

/// Deletes unpacked layers not in `keep` (diff-ids) and leftover temp dirs.
/// Runs under the exclusive gc lock, so no unpack is in flight.
pub(crate) fn gc_layers(
    store: &ImageStore,
    keep: &HashSet<String>,
) -> Result<Vec<String>, ImageError> {
    let layers = store.root.join("layers");
    let mut removed = Vec::new();
    for e in std::fs::read_dir(&layers).map_err(ImageError::io("list layers"))? {
        let e = e.map_err(ImageError::io("list layers"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let diff_id = format!("sha256:{name}");
        let stale = name.starts_with(".tmp-") || name.starts_with(".gc-");
        if !stale && (!is_sha256_digest(&diff_id) || keep.contains(&diff_id)) {
            continue;
        }
        let path = e.path();
        // Rename first so a half-deleted layer is never mistaken for a complete one.
        let doomed = if stale {
            path
        } else {
            layers.join(format!(".gc-{name}"))
        };
        if !stale {
            std::fs::rename(e.path(), &doomed)
                .map_err(ImageError::io(format!("retire layer {name}")))?;
            removed.push(diff_id);
        }
        std::fs::remove_dir_all(&doomed)
            .map_err(ImageError::io(format!("remove {}", doomed.display())))?;
    }
    Ok(removed)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Extracts entries of one layer under `root`.
struct Extractor {
    root: PathBuf,
    privileged: bool,
    /// Directory metadata applied last, so read-only dirs can still be filled.
    dirs: Vec<(PathBuf, u32, u64)>,
}

impl Extractor {
    fn new(root: &Path) -> Extractor {
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        Extractor {
            root: root.to_path_buf(),
            privileged,
            dirs: Vec::new(),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry
            .path()
            .map_err(ImageError::io("read entry path"))?
            .into_owned();
        let rel = clean_path(&raw)?;
        let header = entry.header();
        let kind = header.entry_type();
        // Link entries often leave the mode blank; it is unused for them.
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        if rel.is_empty() {
            // The layer root ("./") itself: its mode/owner apply to the root dir.
            if kind.is_dir() {
                self.dirs.push((self.root.clone(), mode, mtime));
                self.chown(&self.root, uid, gid)?;
            }
            return Ok(());
        }
        let rel_path = Path::new(&rel);
        let name = rel_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent_rel = rel_path.parent().unwrap_or(Path::new(""));
        let parent = self.ensure_dir(parent_rel)?;

        if name == WHITEOUT_OPAQUE {
            return self.opaque(&parent);
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let target = parent.join(hidden);
            self.clear(&target, false)?;
            return self.whiteout(&target);
        }

        let path = parent.join(&name);
        let xattrs = self.xattrs(&mut entry)?;
        self.clear(&path, kind.is_dir())?;
        match kind {
            tar::EntryType::Directory => {
                if !path.is_dir() {
                    std::fs::create_dir(&path).map_err(ImageError::io(format!("mkdir {rel}")))?;
                }
                self.chown(&path, uid, gid)?;
                self.dirs.push((path.clone(), mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(ImageError::io(format!("create {rel}")))?;
                io::copy(&mut entry, &mut f).map_err(ImageError::io(format!("write {rel}")))?;
                drop(f);
                // chown before chmod: chown clears setuid/setgid bits.
                self.chown(&path, uid, gid)?;
                chmod(&path, mode)?;
                set_mtime(&path, mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ImageError::io(format!("link target of {rel}")))?
                    .ok_or_else(|| {
                        ImageError::InvalidArchive(format!("symlink {rel} has no target"))
                    })?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(ImageError::io(format!("symlink {rel}")))?;
                self.chown(&path, uid, gid)?;
                set_mtime(&path, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ImageError::io(format!("link target of {rel}")))?
                    .ok_or_else(|| {
                        ImageError::InvalidArchive(format!("hardlink {rel} has no target"))
                    })?;
                let target_rel = clean_path(&target)?;
                let tparent =
                    self.existing_dir(Path::new(&target_rel).parent().unwrap_or(Path::new("")))?;
                let tname = Path::new(&target_rel).file_name().ok_or_else(|| {
                    ImageError::UnsafePath(format!("{rel} links to {target_rel}"))
                })?;
                let tpath = tparent.join(tname);
                let meta = std::fs::symlink_metadata(&tpath)
                    .map_err(ImageError::io(format!("hardlink {rel} -> {target_rel}")))?;
                if meta.is_dir() {
                    return Err(ImageError::InvalidArchive(format!(
                        "hardlink {rel} to directory {target_rel}"
                    )));
                }
                std::fs::hard_link(&tpath, &path)
                    .map_err(ImageError::io(format!("hardlink {rel}")))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let fmt = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if fmt != libc::S_IFIFO && !self.privileged {
                    tracing::debug!(path = rel, "skipping device node: not running as root");
                    return Ok(());
                }
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                mknod(&path, fmt | mode, libc::makedev(major, minor))?;
                self.chown(&path, uid, gid)?;
                chmod(&path, mode)?;
                set_mtime(&path, mtime)?;
            }
            other => {
                tracing::debug!(path = rel, kind = ?other, "skipping unsupported tar entry");
                return Ok(());
            }
        }
        for (k, v) in xattrs {
            if let Err(e) = xattr::set(&path, &k, &v) {
                tracing::debug!(path = rel, xattr = k, error = %e, "could not set xattr");
            }
        }
        Ok(())
    }

    /// Applies deferred directory modes and times, deepest first.
    fn finish(&mut self) -> Result<(), ImageError> {
        let mut root_mode = 0o755;
        for (p, mode, mtime) in self.dirs.iter().rev() {
            if *p == self.root {
                root_mode = *mode;
                continue;
            }
            chmod(p, *mode)?;
            set_mtime(p, *mtime)?;
        }
        // The temp dir was created 0700; a lower dir must be traversable.
        chmod(&self.root, root_mode | 0o555)
    }

    /// PAX `SCHILY.xattr.*` records; only user.* when unprivileged.
    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
        let mut out = Vec::new();
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(ImageError::io("read pax headers"))?
        {
            for ext in exts.flatten() {
                if let Ok(k) = ext.key()
                    && let Some(name) = k.strip_prefix("SCHILY.xattr.")
                    && (self.privileged || name.starts_with("user."))
                {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// Creates `rel` (relative dir) as real directories, refusing to pass through
    /// anything that is not one (a symlink planted by an earlier entry, a file).
    fn ensure_dir(&self, rel: &Path) -> Result<PathBuf, ImageError> {
        let mut cur = self.root.clone();
        for c in rel.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(ImageError::UnsafePath(format!(
                        "{} passes through a non-directory",
                        rel.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&cur)
                        .map_err(ImageError::io(format!("mkdir {}", cur.display())))?;
                    chmod(&cur, 0o755)?;
                }
                Err(e) => return Err(ImageError::io(format!("stat {}", cur.display()))(e)),
            }
        }
        Ok(cur)
    }

    /// Like `ensure_dir` but the directories must already exist.
    fn existing_dir(&self, rel: &Path) -> Result<PathBuf, ImageError> {
        let mut cur = self.root.clone();
        for c in rel.components() {
            cur.push(c);
            let m = std::fs::symlink_metadata(&cur)
                .map_err(ImageError::io(format!("stat {}", cur.display())))?;
            if !m.is_dir() {
                return Err(ImageError::UnsafePath(format!(
                    "{} passes through a non-directory",
                    rel.display()
                )));
            }
        }
        Ok(cur)
    }

    /// Removes whatever is at `path`, keeping an existing directory when a directory
    /// entry replaces it (tar semantics: later entries win).
    fn clear(&self, path: &Path, keep_dir: bool) -> Result<(), ImageError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                if !keep_dir {
                    std::fs::remove_dir_all(path)
                        .map_err(ImageError::io(format!("replace {}", path.display())))?;
                }
            }
            Ok(_) => std::fs::remove_file(path)
                .map_err(ImageError::io(format!("replace {}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io(format!("stat {}", path.display()))(e)),
        }
        Ok(())
    }

    /// overlayfs whiteout: a 0/0 character device.
    fn whiteout(&self, path: &Path) -> Result<(), ImageError> {
        if !self.privileged {
            tracing::warn!(path = %path.display(), "cannot create whiteout device without root; skipped");
            return Ok(());
        }
        mknod(path, libc::S_IFCHR, libc::makedev(0, 0))
    }

    /// overlayfs opaque directory marker.
    fn opaque(&self, dir: &Path) -> Result<(), ImageError> {
        let key = if self.privileged {
            "trusted.overlay.opaque"
        } else {
            "user.overlay.opaque"
        };
        xattr::set(dir, key, b"y")
            .map_err(ImageError::io(format!("set {key} on {}", dir.display())))
    }

    fn chown(&self, path: &Path, uid: u64, gid: u64) -> Result<(), ImageError> {
        if !self.privileged {
            return Ok(());
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(ImageError::InvalidArchive(format!(
                "owner {uid}:{gid} of {} out of range",
                path.display()
            )));
        };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(ImageError::io(format!("chown {}", path.display())))
    }
}

fn chmod(path: &Path, mode: u32) -> Result<(), ImageError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(ImageError::io(format!("chmod {}", path.display())))
}

fn cpath(path: &Path) -> Result<CString, ImageError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::UnsafePath(format!("NUL in {}", path.display())))
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> Result<(), ImageError> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if rc != 0 {
        return Err(ImageError::io(format!("mknod {}", path.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Sets atime and mtime without following a symlink.
fn set_mtime(path: &Path, mtime: u64) -> Result<(), ImageError> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: libc::time_t::try_from(mtime).unwrap_or(0),
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(ImageError::io(format!("set mtime of {}", path.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}
