//! The per-container shim (`r8s shim`), containerd-shim's role: a small
//! single-threaded process that creates and starts one container with
//! youki's libcontainer, is the parent of its init process, copies its
//! stdout/stderr into a CRI-format log file, and records how it ended.
//!
//! Why a process and not a thread of the agent: libcontainer forks with a
//! raw `clone3`, which skips libc's fork bookkeeping, so forking from the
//! multi-threaded agent could deadlock the child on a lock another thread
//! held; it also changes the calling process (cwd, dumpable, oom score).
//! And a shim outlives an agent restart, so containers and their logs keep
//! running while the agent is away.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::logs::LogWriter;

/// Arguments of `r8s shim`.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    /// libcontainer's state root.
    pub root: PathBuf,
    /// Container id.
    pub id: String,
    /// OCI bundle (config.json + rootfs).
    pub bundle: PathBuf,
    /// CRI log file.
    pub log: PathBuf,
    /// Where the exit record is written.
    pub exit_file: PathBuf,
    /// Rotate the log when it grows past this many bytes.
    pub max_log_bytes: u64,
    /// Cgroup directories (one per v1 controller, or the v2 leaf) to read
    /// the OOM-kill counter from.
    pub memory_cgroup: Option<PathBuf>,
    /// The container's stdio: stdin kept open, closed after the first
    /// attach, a terminal; and the socket attach sessions connect to.
    pub stdio: crate::runtime::stdio::StdioOpts,
    /// Where the shim listens for attach sessions.
    pub attach_socket: Option<PathBuf>,
}

/// How a container ended, as the shim records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Exit code (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error` or `OOMKilled`, as upstream reports.
    pub reason: String,
    /// RFC 3339 time of the exit.
    pub finished_at: String,
}

/// Resets what the shim (a Rust program) changed and a payload must not
/// inherit: Rust ignores SIGPIPE, and a blocked signal mask would leak.
///
/// For a process exec'd into a container with a seccomp filter it also
/// loads that filter: libcontainer 0.7.0's tenant builder leaves
/// `linux.seccomp` out of an exec'd process's spec, while runc (and so
/// upstream Kubernetes) confines exec'd processes like the container's own.
/// Loading a filter without no_new_privs needs CAP_SYS_ADMIN, so such a
/// process is started with CAP_SYS_ADMIN and CAP_SETPCAP added, loads the
/// filter here, and drops those two again before execve, the order runc
/// follows (filter first, then the final capability sets).
#[derive(Clone, Default)]
struct PodExecutor {
    seccomp: Option<libcontainer::oci_spec::runtime::LinuxSeccomp>,
    /// Capabilities added only to load the filter.
    drop_caps: Vec<caps::Capability>,
}

impl PodExecutor {
    fn confine(&self) -> Result<(), ExecutorError> {
        let Some(filter) = &self.seccomp else {
            return Ok(());
        };
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            ExecutorError::Other(format!("exec: {what}: {e}"))
        };
        // The bounding set first, while CAP_SETPCAP is still effective.
        for c in &self.drop_caps {
            caps::drop(None, caps::CapSet::Bounding, *c)
                .map_err(|e| fail("dropping a bounding capability", &e))?;
        }
        libcontainer::seccomp::initialize_seccomp(filter)
            .map_err(|e| fail("loading the container's seccomp filter", &e))?;
        for set in [
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
            caps::CapSet::Inheritable,
        ] {
            for c in &self.drop_caps {
                caps::drop(None, set, *c).map_err(|e| fail("dropping a capability", &e))?;
            }
        }
        Ok(())
    }
}

impl Executor for PodExecutor {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // SAFETY: resetting a signal disposition in the single-threaded
        // container init right before execve.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
        self.confine()?;
        DefaultExecutor {}.exec(spec)
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Runs the shim; returns the process exit code. Prints `started <pid>` or
/// `error: <why>` on stdout, then closes stdout, so the agent learns the
/// outcome of the start without waiting for the container to end.
pub fn run(args: ShimArgs) -> i32 {
    // Own session: a Ctrl-C to the agent's terminal must not reach the
    // shim or its container.
    let _ = nix::unistd::setsid();
    let mut out = std::io::stdout();
    let (init, io) = match create_and_start(&args) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            let _ = out.flush();
            return 1;
        }
    };
    let _ = writeln!(out, "started {init}");
    let _ = out.flush();
    // Close fd 1 for real so the agent's read sees EOF; point it at
    // /dev/null so nothing later writes into a reused descriptor.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
    let status = pump_until_exit(&args, init, io);
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, c) => (c, None),
        WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
        _ => (255, None),
    };
    let oom = args.memory_cgroup.as_deref().is_some_and(oom_killed);
    let reason = if oom {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let rec = ExitRecord {
        exit_code,
        signal,
        reason: reason.into(),
        finished_at: now_rfc3339(),
    };
    write_exit(&args.exit_file, &rec);
    // Removes the cgroup and libcontainer's state directory.
    if let Ok(mut c) = libcontainer::container::Container::load(args.root.join(&args.id)) {
        let _ = c.delete(true);
    }
    0
}

fn write_exit(path: &Path, rec: &ExitRecord) {
    let tmp = path.with_extension("tmp");
    if let Ok(bytes) = serde_json::to_vec(rec)
        && std::fs::write(&tmp, bytes).is_ok()
    {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Whether the kernel OOM-killed something in the container's cgroup.
fn oom_killed(dir: &Path) -> bool {
    // v2: memory.events "oom_kill N"; v1: memory.oom_control "oom_kill N".
    for f in ["memory.events", "memory.oom_control"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
            return text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            });
        }
    }
    false
}

/// The container's end of its stdio, as the shim holds it.
struct ContainerIo {
    /// Output streams: stdout and stderr pipes, or the terminal.
    outputs: Vec<(OwnedFd, &'static str)>,
    /// Where stdin goes: a pipe, or (a duplicate of) the terminal.
    stdin: Option<OwnedFd>,
    /// The terminal master, for resizes.
    master: Option<OwnedFd>,
}

fn create_and_start(args: &ShimArgs) -> Result<(Pid, ContainerIo), String> {
    let opts = args.stdio;
    let (out_r, out_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (stdin_r, stdin_w): (OwnedFd, Option<OwnedFd>) = if opts.stdin && !opts.tty {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        (r, Some(w))
    } else {
        (
            File::open("/dev/null")
                .map_err(|e| format!("/dev/null: {e}"))?
                .into(),
            None,
        )
    };
    // With a terminal, libcontainer opens the pty inside the container and
    // sends its master over this socket. The connection waits in the
    // listen backlog until build() returns (the shim is single-threaded).
    let console = if opts.tty {
        // Short: Unix socket paths are limited to 108 bytes.
        let path = PathBuf::from(format!("/run/r8s/console-{}.sock", std::process::id()));
        let _ = std::fs::create_dir_all("/run/r8s");
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| format!("console socket {}: {e}", path.display()))?;
        Some((l, path))
    } else {
        None
    };
    let mut container = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.root)
        .map_err(|e| e.to_string())?
        .with_executor(PodExecutor::default())
        .with_console_socket(console.as_ref().map(|(_, p)| p.clone()))
        .with_stdin(stdin_r)
        .with_stdout(out_w)
        .with_stderr(err_w)
        .validate_id()
        .map_err(|e| e.to_string())?
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string())?;
    let pid = container
        .pid()
        .ok_or_else(|| "the container has no init pid".to_string())?;
    let mut io = ContainerIo {
        outputs: vec![(out_r, "stdout"), (err_r, "stderr")],
        stdin: stdin_w,
        master: None,
    };
    if let Some((l, path)) = console {
        let master = l
            .accept()
            .map_err(|e| e.to_string())
            .and_then(|(s, _)| crate::runtime::stdio::recv_fd(&s).map_err(|e| e.to_string()));
        let _ = std::fs::remove_file(&path);
        let master = match master {
            Ok(m) => m,
            Err(e) => {
                let _ = container.delete(true);
                return Err(format!("receiving the container's terminal: {e}"));
            }
        };
        // On a terminal stdout and stderr are one stream.
        let read_end = master.try_clone().map_err(|e| e.to_string())?;
        io.outputs = vec![(read_end, "stdout")];
        if opts.stdin {
            io.stdin = Some(master.try_clone().map_err(|e| e.to_string())?);
        }
        io.master = Some(master);
    }
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(e.to_string());
    }
    Ok((pid, io))
}

/// Copies the container's output into the log (and to attached clients)
/// until it exits, feeding attached clients' input to its stdin; returns
/// its wait status.
fn pump_until_exit(args: &ShimArgs, init: Pid, io: ContainerIo) -> WaitStatus {
    let mut log = LogWriter::open(&args.log, args.max_log_bytes);
    let mut open: Vec<(OwnedFd, &'static str)> = io.outputs;
    let mut attach = crate::runtime::stdio::Sessions::new(
        args.attach_socket.as_deref(),
        io.stdin,
        io.master,
        args.stdio,
    );
    let mut partial: HashMap<&'static str, Vec<u8>> = HashMap::new();
    let mut status: Option<WaitStatus> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_none() {
            match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(s) => status = Some(s),
                Err(_) => status = Some(WaitStatus::Exited(init, 255)),
            }
        }
        if open.is_empty() {
            break;
        }
        // After the exit, drain what is buffered without waiting long: a
        // descendant outside the pid namespace could keep a pipe open.
        let timeout = if status.is_some() { 200u16 } else { 1000u16 };
        let (ready, attach_ready) = {
            let mut fds: Vec<PollFd> = open
                .iter()
                .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            let n = fds.len();
            fds.extend(attach.poll_fds());
            match poll(&mut fds, PollTimeout::from(timeout)) {
                Ok(0) if status.is_some() => break,
                Ok(_) => {
                    let r: Vec<bool> = fds
                        .iter()
                        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                        .collect();
                    (r[..n].to_vec(), r[n..].to_vec())
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        };
        attach.service(&attach_ready);
        let mut closed = Vec::new();
        for (i, is_ready) in ready.into_iter().enumerate() {
            if !is_ready {
                continue;
            }
            let (fd, stream) = &open[i];
            match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut buf) {
                // EIO: the terminal's last user is gone.
                Ok(0) | Err(_) => closed.push(i),
                Ok(n) => {
                    attach.broadcast(stream, &buf[..n]);
                    let pending = partial.entry(stream).or_default();
                    pending.extend_from_slice(&buf[..n]);
                    log.write_complete_lines(stream, pending);
                }
            }
        }
        for i in closed.into_iter().rev() {
            let (_, stream) = open.remove(i);
            if let Some(rest) = partial.remove(stream)
                && !rest.is_empty()
            {
                log.write_partial(stream, &rest);
            }
        }
    }
    for (stream, rest) in partial {
        if !rest.is_empty() {
            log.write_partial(stream, &rest);
        }
    }
    attach.close();
    match status {
        Some(s) => s,
        None => waitpid(init, None).unwrap_or(WaitStatus::Exited(init, 255)),
    }
}

/// Arguments of `r8s shim exec`: a process in a running container.
#[derive(Debug, Clone)]
pub struct ExecArgs {
    /// libcontainer's state root.
    pub root: PathBuf,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    pub command: Vec<String>,
}

/// With this variable set to a Unix socket path, `shim-exec` runs the
/// command on a terminal: libcontainer opens a pty inside the container
/// (its own devpts), makes it the process's controlling terminal and sends
/// the pty master over that socket to whoever listens there (the agent).
pub const CONSOLE_SOCKET_ENV: &str = "R8S_EXEC_CONSOLE_SOCKET";

/// Runs a command inside a running container with this process's stdio
/// (or a terminal, see [`CONSOLE_SOCKET_ENV`]); returns its exit code
/// (128 + signal when signalled). The command runs with the container's
/// own process settings (user, groups, environment, working directory,
/// capabilities, rlimits, no_new_privs) and seccomp filter, as `runc exec`
/// runs it.
pub fn exec(args: ExecArgs) -> i32 {
    let socket = std::env::var_os(CONSOLE_SOCKET_ENV).map(PathBuf::from);
    let fail = |what: String| {
        eprintln!("exec {:?} in {}: {what}", args.command, args.id);
        126
    };
    let (process_file, executor) = match exec_process(&args, socket.is_some()) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let fd = |n: i32| -> Option<OwnedFd> {
        // SAFETY: fds 0-2 are open in a process started with piped stdio;
        // dup gives an owned copy for libcontainer to pass on.
        let d = unsafe { libc::dup(n) };
        // SAFETY: `d` was just returned by dup and nothing else owns it.
        (d >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(d) })
    };
    let built = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.root)
        .map(|mut b| {
            b = b.with_executor(executor);
            match &socket {
                Some(s) => b = b.with_console_socket(Some(s)),
                None => {
                    if let Some(f) = fd(0) {
                        b = b.with_stdin(f);
                    }
                    if let Some(f) = fd(1) {
                        b = b.with_stdout(f);
                    }
                    if let Some(f) = fd(2) {
                        b = b.with_stderr(f);
                    }
                }
            }
            b.as_tenant()
                .with_detach(socket.is_some())
                .with_process(Some(&process_file))
                .build()
        });
    let _ = std::fs::remove_file(&process_file);
    let pid = match built {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) | Err(e) => return fail(e.to_string()),
    };
    match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, c)) => c,
        Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
        _ => 255,
    }
}

/// Writes the process an exec runs, the container's own with `command`
/// and `terminal` swapped in, to a file for libcontainer's tenant builder;
/// returns it with the executor that applies the container's seccomp
/// filter.
fn exec_process(args: &ExecArgs, terminal: bool) -> Result<(PathBuf, PodExecutor), String> {
    use libcontainer::oci_spec::runtime::Capability as Cap;
    let container = libcontainer::container::Container::load(args.root.join(&args.id))
        .map_err(|e| e.to_string())?;
    let config = container.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or("the container has no process settings")?;
    process.set_terminal(Some(terminal));
    process.set_args(Some(args.command.clone()));
    let mut executor = PodExecutor::default();
    if let Some(filter) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let bounding = caps.bounding().clone().unwrap_or_default();
        for (cap, host) in [
            (Cap::SysAdmin, caps::Capability::CAP_SYS_ADMIN),
            (Cap::Setpcap, caps::Capability::CAP_SETPCAP),
        ] {
            if !bounding.contains(&cap) {
                executor.drop_caps.push(host);
                let mut b = caps.bounding().clone().unwrap_or_default();
                b.insert(cap);
                caps.set_bounding(Some(b));
                let mut e = caps.effective().clone().unwrap_or_default();
                e.insert(cap);
                caps.set_effective(Some(e));
                let mut p = caps.permitted().clone().unwrap_or_default();
                p.insert(cap);
                caps.set_permitted(Some(p));
            }
        }
        process.set_capabilities(Some(caps));
        executor.seccomp = Some(filter);
    }
    let file = args
        .root
        .join(&args.id)
        .join(format!("exec-{}.process.json", std::process::id()));
    let json = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    std::fs::write(&file, json).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((file, executor))
}
