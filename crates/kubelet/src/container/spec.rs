//! From a pod's container to an OCI runtime spec (`config.json`), the
//! translation containerd's CRI plugin does: command and args over the
//! image's entrypoint and cmd, environment, user, mounts, namespaces,
//! cgroup and resources, capabilities.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use libcontainer::oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_mounts,
};

use crate::KubeletError;
use crate::resources;

/// The image's defaults, as its config declares them.
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// CMD.
    pub cmd: Vec<String>,
    /// ENV (`NAME=value`).
    pub env: Vec<String>,
    /// WORKDIR.
    pub working_dir: Option<String>,
    /// USER.
    pub user: Option<String>,
}

/// Everything besides the pod needed to write one container's spec.
pub struct SpecInput<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container.
    pub container: &'a Container,
    /// Its image's defaults.
    pub image: &'a ImageDefaults,
    /// Resolved environment, in order.
    pub env: Vec<(String, String)>,
    /// The mounted rootfs.
    pub rootfs: &'a Path,
    /// Pod-level files: `hosts`, `hostname`, `resolv.conf`.
    pub pod_dir: &'a Path,
    /// Prepared volume directories by volume name.
    pub volumes: &'a HashMap<String, PathBuf>,
    /// The pod's network namespace (None: host network).
    pub netns: Option<PathBuf>,
    /// The pod's shared IPC, UTS and PID namespaces.
    pub sandbox: crate::sandbox::Namespaces,
    /// Absolute cgroup path of the container.
    pub cgroup: String,
    /// `--seccomp-default`.
    pub seccomp_default: bool,
    /// Where `Localhost` seccomp profiles live.
    pub seccomp_dir: &'a Path,
    /// The host file mounted at the container's terminationMessagePath.
    pub termination_log: Option<&'a Path>,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities a container gets by default (containerd's and Docker's set).
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Replaces `$(VAR)` with earlier-defined values, `$$(VAR)` with a literal
/// `$(VAR)`, and leaves unknown references alone, as upstream expands
/// command, args and env values.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&s[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The process's argv: command/args over the image's entrypoint/cmd.
pub fn argv(c: &Container, image: &ImageDefaults, vars: &HashMap<String, String>) -> Vec<String> {
    let x = |v: &Vec<String>| v.iter().map(|s| expand(s, vars)).collect::<Vec<_>>();
    match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            let mut v = x(cmd);
            v.extend(args.as_ref().map(x).unwrap_or_default());
            v
        }
        (_, Some(args)) if !args.is_empty() => {
            let mut v = image.entrypoint.clone();
            v.extend(x(args));
            v
        }
        _ => {
            let mut v = image.entrypoint.clone();
            v.extend(image.cmd.iter().cloned());
            v
        }
    }
}

/// Numeric uid/gid for a USER string, looked up in the rootfs when named.
fn user_ids(user: &str, rootfs: &Path) -> (u32, u32) {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| {
                (
                    f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                    f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0),
                )
            })
        })
    };
    let (uid, pgid) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => lookup("etc/passwd", u).unwrap_or((0, 0)),
    };
    let gid = if g.is_empty() {
        pgid
    } else {
        g.parse::<u32>()
            .ok()
            .or_else(|| lookup("etc/group", g).map(|x| x.0))
            .unwrap_or(0)
    };
    (uid, gid)
}

fn bind(dest: &str, src: &Path, ro: bool) -> Result<Mount, KubeletError> {
    let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
    if ro {
        opts.push("ro".into());
    }
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(src)
        .options(opts)
        .build()
        .map_err(spec_err)
}

fn spec_err(e: impl std::fmt::Display) -> KubeletError {
    KubeletError::Spec(e.to_string())
}

fn ns(t: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, KubeletError> {
    let b = LinuxNamespaceBuilder::default().typ(t);
    match path {
        Some(p) => b.path(p).build(),
        None => b.build(),
    }
    .map_err(spec_err)
}

/// Builds the runtime spec.
pub fn build(input: &SpecInput) -> Result<Spec, KubeletError> {
    let c = input.container;
    let pod_spec = input.pod.spec.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod_spec.security_context.clone().unwrap_or_default();
    let vars: HashMap<String, String> = input.env.iter().cloned().collect();

    // Environment: the image's, then the pod's (later wins), PATH assured.
    let mut env: Vec<String> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k));
        env.push(format!("{k}={v}"));
    };
    for e in &input.image.env {
        if let Some((k, v)) = e.split_once('=') {
            set(k, v);
        }
    }
    if let Some(name) = input.pod.metadata.name.as_deref() {
        set("HOSTNAME", name);
    }
    for (k, v) in &input.env {
        set(k, v);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }

    let args = argv(c, input.image, &vars);
    if args.is_empty() {
        return Err(KubeletError::Spec(
            "no command specified: the container has no command and its image no entrypoint or cmd"
                .into(),
        ));
    }
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| input.image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());

    let (mut uid, mut gid) = input
        .image
        .user
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| user_ids(u, input.rootfs))
        .unwrap_or((0, 0));
    if let Some(u) = sc.run_as_user.or(psc.run_as_user) {
        uid = u as u32;
    }
    if let Some(g) = sc.run_as_group.or(psc.run_as_group) {
        gid = g as u32;
    }
    if sc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && uid == 0 {
        return Err(KubeletError::Spec(
            "container has runAsNonRoot and image will run as root".into(),
        ));
    }
    let mut additional: Vec<u32> = psc
        .supplemental_groups
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g as u32)
        .collect();
    if let Some(fs) = psc.fs_group {
        additional.push(fs as u32);
    }
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(additional)
        .build()
        .map_err(spec_err)?;

    // Capabilities.
    let privileged = sc.privileged == Some(true);
    let mut caps: Vec<Capability> = if privileged {
        all_caps()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    if let Some(cs) = &sc.capabilities {
        // Drops first, then adds: `drop: [ALL]` with `add: [X]` leaves X,
        // as containerd applies them.
        for d in cs.drop.iter().flatten() {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else if let Some(cap) = parse_cap(d) {
                caps.retain(|c| *c != cap);
            }
        }
        for a in cs.add.iter().flatten() {
            if a.eq_ignore_ascii_case("ALL") {
                caps = all_caps();
            } else if let Some(cap) = parse_cap(a) {
                caps.push(cap);
            }
        }
    }
    let capset: std::collections::HashSet<Capability> = caps.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capset.clone())
        .effective(capset.clone())
        .permitted(capset.clone())
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(spec_err)?;

    // containerd's 1048576 open files, but never above what this process
    // may raise to (a host without CAP_SYS_RESOURCE refuses with EPERM).
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(1_048_576))
        .unwrap_or(1024);
    let mut process = ProcessBuilder::default()
        .terminal(c.tty == Some(true))
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(user)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(nofile)
                .soft(nofile)
                .build()
                .map_err(spec_err)?,
        ])
        .build()
        .map_err(spec_err)?;
    // Unset, not false, unless the pod forbids escalation: libcontainer
    // loads a seccomp filter while still privileged only when the field
    // is absent (runc's rule), and the filter needs that with NNP off.
    process.set_no_new_privileges((sc.allow_privilege_escalation == Some(false)).then_some(true));
    let seccomp = crate::seccomp::for_container(&crate::seccomp::Input {
        pod: psc.seccomp_profile.as_ref(),
        container: sc.seccomp_profile.as_ref(),
        privileged,
        caps: &capset,
        default_runtime: input.seccomp_default,
        profile_dir: input.seccomp_dir,
    })?;

    // Mounts: the standard set, the pod's files, then volumes.
    let mut mounts: Vec<Mount> = get_default_mounts()
        .into_iter()
        .filter(|m| {
            // /sys read-only unless privileged, as runc's default.
            !(privileged && m.destination() == Path::new("/sys"))
        })
        .collect();
    if privileged {
        mounts.push(
            MountBuilder::default()
                .destination("/sys")
                .typ("sysfs")
                .source("sysfs")
                .options(vec!["nosuid".into(), "noexec".into(), "nodev".into()])
                .build()
                .map_err(spec_err)?,
        );
    }
    let mut user_dests: Vec<String> = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let Some(src) = input.volumes.get(&vm.name) else {
            return Err(KubeletError::Spec(format!(
                "volumeMount {:?}: no volume of that name in the pod",
                vm.name
            )));
        };
        let mut src = src.clone();
        // subPathExpr expands the container's $(VAR)s (upstream).
        let sub = match (vm.sub_path.as_deref(), vm.sub_path_expr.as_deref()) {
            (Some(s), _) if !s.is_empty() => Some(s.to_string()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, &vars)),
            _ => None,
        };
        if let Some(sub) = sub {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(KubeletError::Spec(format!(
                    "volumeMount {:?}: subPath {sub:?} must be a relative path without '..'",
                    vm.name
                )));
            }
            src = src.join(&sub);
            // A container may have planted a symlink in the volume: the
            // bind must not leave it (upstream's subPath safety), and
            // nothing may be created outside it on the way.
            let root = input.volumes[&vm.name]
                .canonicalize()
                .unwrap_or_else(|_| input.volumes[&vm.name].clone());
            let existing = src.ancestors().find(|a| a.exists()).map(Path::to_path_buf);
            if existing
                .and_then(|e| e.canonicalize().ok())
                .is_none_or(|real| !real.starts_with(&root))
            {
                return Err(KubeletError::Spec(format!(
                    "volumeMount {:?}: subPath {sub:?} resolves outside of the volume",
                    vm.name
                )));
            }
            if !src.exists() {
                let _ = std::fs::create_dir_all(&src);
            }
            match src.canonicalize() {
                Ok(real) if real.starts_with(&root) => src = real,
                _ => {
                    return Err(KubeletError::Spec(format!(
                        "volumeMount {:?}: subPath {sub:?} resolves outside of the volume",
                        vm.name
                    )));
                }
            }
        }
        mounts.push(bind(&vm.mount_path, &src, vm.read_only == Some(true))?);
        user_dests.push(vm.mount_path.clone());
    }
    if let (Some(file), Some(dest)) = (
        input.termination_log,
        c.termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty()),
    ) && !user_dests.iter().any(|d| d == dest)
    {
        mounts.push(bind(dest, file, false)?);
    }
    for (dest, file) in [
        ("/etc/hosts", "hosts"),
        ("/etc/hostname", "hostname"),
        ("/etc/resolv.conf", "resolv.conf"),
    ] {
        if !user_dests.iter().any(|d| d == dest) {
            mounts.push(bind(dest, &input.pod_dir.join(file), false)?);
        }
    }

    // Namespaces: own pid, mount, ipc, cgroup; the pod's network (and a
    // UTS namespace carrying the pod's hostname), or the host's network.
    // The pod's IPC and UTS namespaces are shared by its containers; so is
    // its PID namespace with shareProcessNamespace. hostPID and hostIPC
    // (no entry) share the host's.
    let sb = &input.sandbox;
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Mount, None)?,
        ns(LinuxNamespaceType::Cgroup, None)?,
    ];
    if pod_spec.host_pid != Some(true) {
        namespaces.push(ns(LinuxNamespaceType::Pid, sb.pid.as_deref())?);
    }
    if pod_spec.host_ipc != Some(true) {
        namespaces.push(ns(LinuxNamespaceType::Ipc, sb.ipc.as_deref())?);
    }
    let host_network = pod_spec.host_network == Some(true);
    if !host_network {
        namespaces.push(ns(LinuxNamespaceType::Uts, sb.uts.as_deref())?);
        namespaces.push(ns(LinuxNamespaceType::Network, input.netns.as_deref())?);
    }

    let res = resources::of(c);
    let mut rb = LinuxResourcesBuilder::default();
    rb = rb.cpu(
        LinuxCpuBuilder::default()
            .shares(res.cpu_shares)
            .quota(res.cpu_quota.unwrap_or(-1))
            .period(100_000u64)
            .build()
            .map_err(spec_err)?,
    );
    if let Some(limit) = res.memory_limit {
        rb = rb.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(spec_err)?,
        );
    }
    rb = rb.pids(
        LinuxPidsBuilder::default()
            .limit(-1i64)
            .build()
            .map_err(spec_err)?,
    );
    let mut lb = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&input.cgroup))
        .resources(rb.build().map_err(spec_err)?);
    if let Some(filter) = seccomp {
        lb = lb.seccomp(filter);
    }
    // Admission refused the pod unless these are allowed.
    let sysctls = crate::sysctls::of(input.pod);
    if !sysctls.is_empty() {
        lb = lb.sysctl(sysctls);
    }
    if privileged {
        lb = lb
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        let d = libcontainer::oci_spec::runtime::Linux::default();
        lb = lb
            .masked_paths(d.masked_paths().clone().unwrap_or_default())
            .readonly_paths(d.readonly_paths().clone().unwrap_or_default());
    }
    let linux = lb.build().map_err(spec_err)?;

    // A joined UTS namespace already carries the hostname.
    let hostname = if host_network || input.sandbox.uts.is_some() {
        None
    } else {
        Some(crate::podfiles::pod_hostname(input.pod))
    };
    let hostname_unset = hostname.is_none();
    let mut sb = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(sc.read_only_root_filesystem == Some(true))
                .build()
                .map_err(spec_err)?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux);
    if let Some(h) = hostname {
        sb = sb.hostname(h);
    }
    let mut spec = sb.build().map_err(spec_err)?;
    if spec.hostname().is_some() && hostname_unset {
        // The builder fills unset fields from `Spec::default()`, whose
        // hostname is "youki": a container without a UTS namespace of its
        // own (hostNetwork) or joining the pod's must not set one.
        spec.set_hostname(None);
    }
    Ok(spec)
}

fn all_caps() -> Vec<Capability> {
    use std::str::FromStr;
    (0..64)
        .filter_map(|i| Capability::from_str(cap_name(i)?).ok())
        .collect()
}

/// Kernel capability names by number (for "ALL" and privileged).
fn cap_name(i: u32) -> Option<&'static str> {
    const NAMES: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES.get(i as usize).copied()
}

/// `NET_ADMIN` or `CAP_NET_ADMIN` to a capability (oci-spec parses the
/// bare upper-case name).
pub(crate) fn parse_cap(s: &str) -> Option<Capability> {
    use std::str::FromStr;
    let name = s.trim().to_ascii_uppercase();
    Capability::from_str(name.strip_prefix("CAP_").unwrap_or(&name)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn expands_references_like_upstream() {
        let v = vars(&[("A", "x"), ("B", "y")]);
        assert_eq!(expand("$(A)-$(B)", &v), "x-y");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("$(NOPE)", &v), "$(NOPE)");
        assert_eq!(expand("cost $5", &v), "cost $5");
    }

    #[test]
    fn command_and_args_override_entrypoint_and_cmd() {
        let img = ImageDefaults {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            ..Default::default()
        };
        let v = HashMap::new();
        let c = |cmd: Option<Vec<&str>>, args: Option<Vec<&str>>| Container {
            command: cmd.map(|c| c.into_iter().map(String::from).collect()),
            args: args.map(|c| c.into_iter().map(String::from).collect()),
            ..Default::default()
        };
        assert_eq!(argv(&c(None, None), &img, &v), ["/entry", "default"]);
        assert_eq!(argv(&c(None, Some(vec!["a"])), &img, &v), ["/entry", "a"]);
        assert_eq!(argv(&c(Some(vec!["sh"]), None), &img, &v), ["sh"]);
        assert_eq!(
            argv(&c(Some(vec!["sh"]), Some(vec!["-c", "x"])), &img, &v),
            ["sh", "-c", "x"]
        );
    }

    #[test]
    fn capabilities_parse_with_or_without_prefix() {
        assert_eq!(parse_cap("NET_ADMIN"), Some(Capability::NetAdmin));
        assert_eq!(parse_cap("CAP_SYS_TIME"), Some(Capability::SysTime));
        assert!(all_caps().contains(&Capability::SysAdmin));
        assert_eq!(
            all_caps().len(),
            41,
            "every capability the kernel defines up to CHECKPOINT_RESTORE"
        );
    }
}
