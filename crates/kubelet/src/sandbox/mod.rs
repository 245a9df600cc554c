//! The pod sandbox's namespaces besides the network: one IPC and one UTS
//! namespace shared by all the pod's containers (as the pause container
//! holds them upstream), and, with `shareProcessNamespace`, one PID
//! namespace whose init is `r8s pause`.
//!
//! IPC and UTS namespaces are kept alive by bind mounts under the pod's
//! directory (as `ip netns` keeps network namespaces), made with util-linux
//! `unshare`, which also sets the pod's hostname inside the new UTS
//! namespace. A PID namespace dies with its init, so it needs a process:
//! `unshare --pid --fork r8s pause`, in its own session so that it outlives
//! an agent restart like the containers do.

pub mod hostport;
pub mod network;
pub mod podfiles;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::KubeletError;

/// Namespaces the pod's containers join (None: the container gets a new
/// one, or shares the host's when the pod asks for that).
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// The pod's IPC namespace (None with `hostIPC`).
    pub ipc: Option<PathBuf>,
    /// The pod's UTS namespace (None with `hostNetwork`, which shares the
    /// host's hostname).
    pub uts: Option<PathBuf>,
    /// The pod's PID namespace with `shareProcessNamespace`.
    pub pid: Option<PathBuf>,
}

fn ns_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("ns")
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> KubeletError {
    move |source| KubeletError::Io {
        context: what.to_string(),
        source,
    }
}

/// The pid of the pod's `r8s pause`, when it runs.
fn pause_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("pause.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // Not some other process that reused the pid.
    cmdline
        .split(|b| *b == 0)
        .any(|a| a == b"pause")
        .then_some(pid)
}

/// Creates (or finds, after an agent restart) the pod's namespaces.
pub fn ensure(pod_dir: &Path, pod: &Pod, exe: &Path) -> Result<Namespaces, KubeletError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let host_ipc = spec.host_ipc == Some(true);
    let share_pid = spec.share_process_namespace == Some(true) && spec.host_pid != Some(true);
    let dir = ns_dir(pod_dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut out = Namespaces::default();
    let mut ipc = None;
    if !host_ipc {
        let p = dir.join("ipc");
        if !crate::mounts::is_mount_point(&p) {
            std::fs::write(&p, b"").map_err(io(format!("creating {}", p.display())))?;
            ipc = Some(p.clone());
        }
        out.ipc = Some(p);
    }
    let mut uts = None;
    if !host_network {
        let p = dir.join("uts");
        if !crate::mounts::is_mount_point(&p) {
            std::fs::write(&p, b"").map_err(io(format!("creating {}", p.display())))?;
            let hostname = crate::podfiles::pod_hostname(pod);
            uts = Some((p.clone(), hostname));
        }
        out.uts = Some(p);
    }
    if ipc.is_some() || uts.is_some() {
        pin_namespaces(ipc, uts)?;
    }
    if share_pid {
        let pid = match pause_pid(&dir) {
            Some(p) => p,
            None => start_pause(&dir, exe)?,
        };
        out.pid = Some(PathBuf::from(format!("/proc/{pid}/ns/pid")));
    }
    Ok(out)
}

/// Makes new IPC and/or UTS namespaces (the latter with the pod's
/// hostname) and pins them by bind-mounting them onto the given files.
/// A short-lived thread does it: a thread may unshare these two for itself
/// alone, which spares the fork and exec of a helper per pod.
fn pin_namespaces(
    ipc: Option<PathBuf>,
    uts: Option<(PathBuf, String)>,
) -> Result<(), KubeletError> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::CloneFlags;
    let work = move || -> Result<(), String> {
        let mut flags = CloneFlags::empty();
        if ipc.is_some() {
            flags |= CloneFlags::CLONE_NEWIPC;
        }
        if uts.is_some() {
            flags |= CloneFlags::CLONE_NEWUTS;
        }
        nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
        let pin = |kind: &str, target: &Path| {
            let src = format!("/proc/thread-self/ns/{kind}");
            mount(
                Some(src.as_str()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("pinning the {kind} namespace at {}: {e}", target.display()))
        };
        if let Some((p, hostname)) = &uts {
            nix::unistd::sethostname(hostname)
                .map_err(|e| format!("setting hostname {hostname:?}: {e}"))?;
            pin("uts", p)?;
        }
        if let Some(p) = &ipc {
            pin("ipc", p)?;
        }
        Ok(())
    };
    // The thread ends in the namespaces it made; nothing else runs on it.
    std::thread::Builder::new()
        .name("r8s-sandbox-ns".into())
        .spawn(work)
        .map_err(io("starting the namespace thread".into()))?
        .join()
        .map_err(|_| KubeletError::Runtime("the namespace thread panicked".into()))?
        .map_err(KubeletError::Runtime)
}

/// Starts `r8s pause` as the init of a new PID namespace; returns its pid.
fn start_pause(dir: &Path, exe: &Path) -> Result<i32, KubeletError> {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"])
        .arg(exe)
        .arg("pause")
        .env(crate::HELPER_ENV.0, crate::HELPER_ENV.1)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the holder from the
    // agent's session so that it survives the agent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(io("starting the pod's pause process".into()))?;
    let parent = child.id();
    // unshare forks pause; its pid is unshare's only child.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"pause"))
        {
            std::fs::write(dir.join("pause.pid"), pid.to_string())
                .map_err(io("writing pause.pid".into()))?;
            // unshare waits for pause, so it lives exactly as long; the
            // agent reaps it like its other children.
            drop(child);
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(KubeletError::Runtime(
                "the pod's pause process did not start".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the pause process and releases the namespaces.
pub fn teardown(pod_dir: &Path) {
    let dir = ns_dir(pod_dir);
    if let Some(pid) = pause_pid(&dir) {
        // SAFETY: kill(2) on the pod's own pause process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    for f in ["ipc", "uts"] {
        let p = dir.join(f);
        if crate::mounts::is_mount_point(&p) {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

extern "C" fn on_term(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

extern "C" fn on_child(_: libc::c_int) {}

/// `r8s pause`: the init of a pod's shared PID namespace. It reaps the
/// orphans that are reparented to it and exits on SIGTERM or SIGINT (as
/// PID 1 it would otherwise ignore them).
pub fn pause() -> i32 {
    // SAFETY: installing handlers that only call async-signal-safe
    // functions; waitpid and pause are plain syscalls.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGCHLD, on_child as *const () as libc::sighandler_t);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::pause();
        }
    }
}
