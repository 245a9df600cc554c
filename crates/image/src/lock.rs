//! flock(2)-based locks, so several processes (and threads) can share one store.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::ImageError;

/// A held lock; released when dropped (the file is closed).
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Shared lock: writers that only add content (import, unpack).
    pub(crate) fn shared(path: &Path) -> Result<Lock, ImageError> {
        Self::take(path, libc::LOCK_SH)
    }

    /// Exclusive lock: gc, index read-modify-write.
    pub(crate) fn exclusive(path: &Path) -> Result<Lock, ImageError> {
        Self::take(path, libc::LOCK_EX)
    }

    fn take(path: &Path, op: libc::c_int) -> Result<Lock, ImageError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(ImageError::io(format!("open lock {}", path.display())))?;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(ImageError::io(format!("lock {}", path.display()))(err));
            }
        }
    }
}
