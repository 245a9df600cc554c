//! Helpers for `r8s bench runtime`: a minimal OCI bundle and one container
//! lifecycle through libcontainer, driven the way the shim drives it, so
//! the benchmark measures the runtime the agent really uses.

use std::fs::File;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::wait::{WaitStatus, waitpid};

/// Writes `<bundle>/config.json`: runc's default spec (youki's copy of
/// it) running `args` in `rootfs` (read-only), without network or cgroup
/// namespace, in the absolute cgroup `cgroups_path`.
pub fn write_bundle(
    bundle: &Path,
    rootfs: &Path,
    args: &[&str],
    cgroups_path: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(bundle).map_err(|e| format!("creating {}: {e}", bundle.display()))?;
    let mut spec = Spec::default();
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        p.set_terminal(Some(false));
    }
    if let Some(r) = spec.root_mut() {
        r.set_path(rootfs.to_path_buf());
        r.set_readonly(Some(true));
    }
    spec.set_hostname(Some("bench".into()));
    if let Some(l) = spec.linux_mut() {
        // A pod's container joins the sandbox's network namespace, which
        // the runtime does not create, so none is made here either.
        let ns = l.namespaces().clone().unwrap_or_default();
        l.set_namespaces(Some(
            ns.into_iter()
                .filter(|n| {
                    !matches!(
                        n.typ(),
                        LinuxNamespaceType::Network | LinuxNamespaceType::Cgroup
                    )
                })
                .collect(),
        ));
        l.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    }
    spec.save(bundle.join("config.json"))
        .map_err(|e| format!("writing {}/config.json: {e}", bundle.display()))
}

/// Creates, starts, waits for and deletes one container with libcontainer,
/// with the builder calls of the shim (`shim::create_and_start`) and its
/// clean-up; returns the exit code. Must run in a single-threaded process:
/// libcontainer forks with a raw clone3.
pub fn libcontainer_run(root: &Path, id: &str, bundle: &Path) -> Result<i32, String> {
    let null = |w: bool| {
        File::options()
            .read(!w)
            .write(w)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))
    };
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| e.to_string())?
        .with_executor(DefaultExecutor {})
        .with_stdin(null(false)?)
        .with_stdout(null(true)?)
        .with_stderr(null(true)?)
        .validate_id()
        .map_err(|e| e.to_string())?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string())?;
    let pid = container
        .pid()
        .ok_or_else(|| "the container has no init pid".to_string())?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(e.to_string());
    }
    let code = match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, c)) => c,
        Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
        Ok(other) => return Err(format!("unexpected wait status {other:?}")),
        Err(e) => return Err(format!("waitpid: {e}")),
    };
    // As the shim: reload the state (now stopped), then remove the cgroup
    // and the state directory.
    let mut c = Container::load(root.join(id)).map_err(|e| e.to_string())?;
    c.delete(true).map_err(|e| e.to_string())?;
    Ok(code)
}
