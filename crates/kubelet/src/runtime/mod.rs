//! The agent's side of the container runtime: an overlay rootfs over the
//! image's unpacked layers, an OCI bundle, and a shim process per
//! container (see `shim.rs`) that creates it with libcontainer.
//!
//! Behind the [`Runtime`] trait so another OCI runtime (runc driven with
//! bundles) could stand in.

pub mod shim;
pub mod stdio;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcontainer::oci_spec::runtime::Spec;

use crate::KubeletError;
use crate::shim::ExitRecord;

/// A started container.
#[derive(Debug, Clone)]
pub struct Started {
    /// Host pid of its init process.
    pub pid: i32,
}

/// What the pod worker needs from a container runtime.
pub trait Runtime: Send + Sync {
    /// Mounts the rootfs for `id` from image layers (bottom first) and
    /// returns its path.
    fn prepare_rootfs(&self, id: &str, layers: &[PathBuf]) -> Result<PathBuf, KubeletError>;
    /// Writes the spec and starts the container; `log` is its CRI log.
    fn start(
        &self,
        id: &str,
        spec: &Spec,
        log: &Path,
        memory_cgroup: Option<PathBuf>,
        stdio: crate::runtime::stdio::StdioOpts,
    ) -> Result<Started, KubeletError>;
    /// How the container ended, once it has.
    fn exit(&self, id: &str) -> Option<ExitRecord>;
    /// Sends a signal to the container's init.
    fn signal(&self, pid: i32, sig: i32);
    /// Unmounts and deletes everything of a finished container.
    fn remove(&self, id: &str);
}

/// Shims waiting to be reaped, and the thread that reaps them.
fn reap_later(child: std::process::Child) {
    use std::sync::{Mutex, OnceLock};
    static SHIMS: OnceLock<Mutex<Vec<std::process::Child>>> = OnceLock::new();
    let shims = SHIMS.get_or_init(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if let Some(m) = SHIMS.get()
                    && let Ok(mut list) = m.lock()
                {
                    list.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                }
            }
        });
        Mutex::new(Vec::new())
    });
    if let Ok(mut list) = shims.lock() {
        list.push(child);
    }
}

/// The libcontainer runtime driven through `r8s shim` processes.
pub struct ShimRuntime {
    /// The executable that has the `shim` subcommand (r8s itself).
    pub shim_exe: PathBuf,
    /// `<data>/agent/containers`.
    pub dir: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// Log rotation size.
    pub max_log_bytes: u64,
}

impl ShimRuntime {
    fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> KubeletError {
    move |source| KubeletError::Io {
        context: what.to_string(),
        source,
    }
}

use crate::mounts::is_mount_point as is_mounted;

impl Runtime for ShimRuntime {
    fn prepare_rootfs(&self, id: &str, layers: &[PathBuf]) -> Result<PathBuf, KubeletError> {
        let c = self.cdir(id);
        let (upper, work, rootfs) = (c.join("upper"), c.join("work"), c.join("bundle/rootfs"));
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        if is_mounted(&rootfs) {
            return Ok(rootfs);
        }
        if layers.is_empty() {
            return Err(KubeletError::Runtime(format!(
                "image for {id} has no layers"
            )));
        }
        // overlayfs lists lower layers top first.
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|source| KubeletError::Sys {
            context: format!("mounting the overlay rootfs of {id}"),
            source,
        })?;
        Ok(rootfs)
    }

    fn start(
        &self,
        id: &str,
        spec: &Spec,
        log: &Path,
        memory_cgroup: Option<PathBuf>,
        stdio: crate::runtime::stdio::StdioOpts,
    ) -> Result<Started, KubeletError> {
        let c = self.cdir(id);
        let bundle = c.join("bundle");
        spec.save(bundle.join("config.json"))
            .map_err(|e| KubeletError::Runtime(format!("writing the spec of {id}: {e}")))?;
        let _ = std::fs::remove_file(c.join("exit.json"));
        // A leftover state dir from a crashed attempt blocks the id.
        let _ = std::fs::remove_dir_all(self.state_root.join(id));
        std::fs::create_dir_all(&self.state_root)
            .map_err(io_err(format!("creating {}", self.state_root.display())))?;
        let mut cmd = Command::new(&self.shim_exe);
        cmd.env(crate::HELPER_ENV.0, crate::HELPER_ENV.1);
        cmd.arg("shim")
            .arg("--root")
            .arg(&self.state_root)
            .arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(&bundle)
            .arg("--log")
            .arg(log)
            .arg("--exit-file")
            .arg(c.join("exit.json"))
            .arg("--max-log-bytes")
            .arg(self.max_log_bytes.to_string());
        if let Some(m) = memory_cgroup {
            cmd.arg("--memory-cgroup").arg(m);
        }
        cmd.arg("--attach-socket")
            .arg(crate::runtime::stdio::socket_path(id));
        for (on, flag) in [
            (stdio.stdin, "--stdin"),
            (stdio.stdin_once, "--stdin-once"),
            (stdio.tty, "--tty"),
        ] {
            if on {
                cmd.arg(flag);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(c.join("shim.log"))
                    .map_err(io_err("opening shim.log"))?,
            ))
            // The shim logs into shim.log; R8S_SHIM_LOG raises its level.
            .env(
                "R8S_LOG",
                std::env::var("R8S_SHIM_LOG").unwrap_or_else(|_| "warn".into()),
            );
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("starting {}", self.shim_exe.display())))?;
        let mut out = String::new();
        if let Some(mut so) = child.stdout.take() {
            use std::io::Read;
            let _ = so.read_to_string(&mut out);
        }
        // The shim lives on as the container's parent; one shared thread
        // reaps the shims as they end (a thread each cost ~1 MiB per pod).
        reap_later(child);
        let line = out.lines().next().unwrap_or("").trim();
        if let Some(pid) = line.strip_prefix("started ") {
            let pid: i32 = pid
                .parse()
                .map_err(|_| KubeletError::Runtime(format!("shim said {line:?}")))?;
            return Ok(Started { pid });
        }
        let why = line.strip_prefix("error: ").unwrap_or(line);
        let why = if why.is_empty() { "the shim died" } else { why };
        // The shim's log says which step failed inside the new process.
        let log = std::fs::read_to_string(c.join("shim.log")).unwrap_or_default();
        let detail: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        let tail = detail[detail.len().saturating_sub(3)..].join("; ");
        if tail.is_empty() {
            Err(KubeletError::Runtime(why.to_string()))
        } else {
            Err(KubeletError::Runtime(format!("{why} ({tail})")))
        }
    }

    fn exit(&self, id: &str) -> Option<ExitRecord> {
        let bytes = std::fs::read(self.cdir(id).join("exit.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn signal(&self, pid: i32, sig: i32) {
        // SAFETY: kill(2) with a pid the shim reported.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    fn remove(&self, id: &str) {
        let c = self.cdir(id);
        let rootfs = c.join("bundle/rootfs");
        if is_mounted(&rootfs) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&c);
        let _ = std::fs::remove_dir_all(self.state_root.join(id));
    }
}
