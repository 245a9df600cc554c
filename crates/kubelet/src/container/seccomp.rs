//! Seccomp for containers: a pod's or container's `seccompProfile` to the
//! OCI `linux.seccomp` filter libcontainer loads before exec, as
//! containerd's CRI plugin does.
//!
//! - `Unconfined` (upstream's default unless the kubelet runs with
//!   `--seccomp-default`), and every privileged container: no filter.
//! - `RuntimeDefault`: [`runtime_default`].
//! - `Localhost`: a profile file under `<data-dir>/agent/seccomp/`, the
//!   kubelet's `<root>/seccomp` directory, in Docker's JSON format (what
//!   containerd reads): `defaultAction`, `defaultErrnoRet`,
//!   `architectures`/`archMap`, `flags`, and `syscalls` entries with
//!   `names`, `action`, `errnoRet`, `args`, `includes`/`excludes` by
//!   capability and architecture.

use std::collections::HashSet;
use std::path::Path;

use k8s_openapi::api::core::v1::SeccompProfile;
use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use crate::KubeletError;

/// What decides a container's filter.
pub struct Input<'a> {
    /// The pod's `securityContext.seccompProfile`.
    pub pod: Option<&'a SeccompProfile>,
    /// The container's, which wins over the pod's.
    pub container: Option<&'a SeccompProfile>,
    /// Privileged containers are never filtered (as containerd).
    pub privileged: bool,
    /// The container's bounding capabilities: they lift some restrictions
    /// of the default profile, and select `includes.caps` entries.
    pub caps: &'a HashSet<Capability>,
    /// `--seccomp-default`: RuntimeDefault when no profile is named.
    pub default_runtime: bool,
    /// Where `Localhost` profiles live.
    pub profile_dir: &'a Path,
}

/// The filter for one container, or None for unconfined.
pub fn for_container(i: &Input) -> Result<Option<LinuxSeccomp>, KubeletError> {
    if i.privileged {
        return Ok(None);
    }
    let chosen = i.container.or(i.pod);
    let ty = chosen.map(|p| p.type_.as_str());
    match ty {
        Some("Unconfined") => Ok(None),
        Some("RuntimeDefault") => runtime_default(i.caps).map(Some),
        None if i.default_runtime => runtime_default(i.caps).map(Some),
        None => Ok(None),
        Some("Localhost") => {
            let rel = chosen
                .and_then(|p| p.localhost_profile.as_deref())
                .unwrap_or_default();
            if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
                return Err(KubeletError::Spec(format!(
                    "seccomp profile {rel:?}: localhostProfile must be a relative path without '..'"
                )));
            }
            let path = i.profile_dir.join(rel);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                KubeletError::Spec(format!(
                    "cannot load seccomp profile {:?}: {e}",
                    path.display().to_string()
                ))
            })?;
            let profile: DockerProfile = serde_json::from_str(&text).map_err(|e| {
                KubeletError::Spec(format!(
                    "decoding seccomp profile {:?}: {e}",
                    path.display().to_string()
                ))
            })?;
            profile.to_oci(i.caps).map(Some)
        }
        Some(other) => Err(KubeletError::Spec(format!(
            "unknown seccomp profile type {other:?}"
        ))),
    }
}

/// The architectures a filter for this host covers: the native one and
/// the compat ABIs the kernel also accepts syscalls from, so that a 32-bit
/// call cannot slip past a rule (and 32-bit programs keep working).
fn host_arches() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// Syscalls the default profile refuses with EPERM, and the capability
/// that lifts the refusal (None: always refused). The set is the one
/// Docker documents as blocked by its default profile ("Significant
/// syscalls blocked by the default profile"), gated the way it gates them.
///
/// Why a deny-list: Docker's and containerd's profiles are allow-lists
/// of about 370 syscalls that must track every kernel release; a syscall
/// missing from such a list breaks programs with a confusing EPERM. The
/// deny-list refuses exactly the calls that reach kernel state a
/// container must not touch (modules, clocks, keyrings, mounts,
/// namespaces, kexec, NUMA policy, raw I/O) and allows the rest.
const DENIED: &[(&str, Option<Capability>)] = &[
    // Kernel modules.
    ("init_module", Some(Capability::SysModule)),
    ("finit_module", Some(Capability::SysModule)),
    ("delete_module", Some(Capability::SysModule)),
    ("create_module", None),
    ("get_kernel_syms", None),
    ("query_module", None),
    // Rebooting and replacing the kernel.
    ("reboot", Some(Capability::SysBoot)),
    ("kexec_load", Some(Capability::SysBoot)),
    ("kexec_file_load", Some(Capability::SysBoot)),
    // Clocks are not namespaced.
    ("settimeofday", Some(Capability::SysTime)),
    ("stime", Some(Capability::SysTime)),
    ("clock_settime", Some(Capability::SysTime)),
    ("clock_adjtime", Some(Capability::SysTime)),
    // The kernel keyring is not namespaced.
    ("keyctl", None),
    ("add_key", None),
    ("request_key", None),
    // Mounts and namespaces.
    ("mount", Some(Capability::SysAdmin)),
    ("umount", Some(Capability::SysAdmin)),
    ("umount2", Some(Capability::SysAdmin)),
    ("pivot_root", Some(Capability::SysAdmin)),
    ("move_mount", Some(Capability::SysAdmin)),
    ("open_tree", Some(Capability::SysAdmin)),
    ("fsopen", Some(Capability::SysAdmin)),
    ("fsconfig", Some(Capability::SysAdmin)),
    ("fsmount", Some(Capability::SysAdmin)),
    ("fspick", Some(Capability::SysAdmin)),
    ("mount_setattr", Some(Capability::SysAdmin)),
    ("setns", Some(Capability::SysAdmin)),
    ("unshare", Some(Capability::SysAdmin)),
    ("swapon", Some(Capability::SysAdmin)),
    ("swapoff", Some(Capability::SysAdmin)),
    ("quotactl", Some(Capability::SysAdmin)),
    ("quotactl_fd", Some(Capability::SysAdmin)),
    ("name_to_handle_at", Some(Capability::SysAdmin)),
    ("lookup_dcookie", Some(Capability::SysAdmin)),
    ("fanotify_init", Some(Capability::SysAdmin)),
    ("bpf", Some(Capability::SysAdmin)),
    ("perf_event_open", Some(Capability::SysAdmin)),
    ("userfaultfd", Some(Capability::SysPtrace)),
    ("open_by_handle_at", Some(Capability::DacReadSearch)),
    ("syslog", Some(Capability::Syslog)),
    ("acct", Some(Capability::SysPacct)),
    // Raw port I/O.
    ("iopl", Some(Capability::SysRawio)),
    ("ioperm", Some(Capability::SysRawio)),
    // NUMA memory policy.
    ("mbind", Some(Capability::SysNice)),
    ("set_mempolicy", Some(Capability::SysNice)),
    ("get_mempolicy", Some(Capability::SysNice)),
    ("move_pages", Some(Capability::SysNice)),
    // Obsolete interfaces.
    ("nfsservctl", None),
    ("uselib", None),
    ("ustat", None),
    ("sysfs", None),
    ("_sysctl", None),
    ("vm86", None),
    ("vm86old", None),
];

/// clone(2) flags that make new namespaces: refused without CAP_SYS_ADMIN,
/// as Docker's profile does.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn syscall(
    names: &[&str],
    action: LinuxSeccompAction,
    errno: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall, KubeletError> {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    if !args.is_empty() {
        b = b.args(args);
    }
    b.build().map_err(spec_err)
}

fn spec_err(e: impl std::fmt::Display) -> KubeletError {
    KubeletError::Spec(format!("seccomp: {e}"))
}

/// The `RuntimeDefault` profile for a container with these capabilities.
pub fn runtime_default(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, KubeletError> {
    let eperm = Some(libc::EPERM as u32);
    let lifted = |c: &Option<Capability>| c.as_ref().is_some_and(|c| caps.contains(c));
    let denied: Vec<&str> = DENIED
        .iter()
        .filter(|(_, cap)| !lifted(cap))
        .map(|(n, _)| *n)
        .collect();
    let mut rules = vec![syscall(
        &denied,
        LinuxSeccompAction::ScmpActErrno,
        eperm,
        vec![],
    )?];
    if !caps.contains(&Capability::SysAdmin) {
        // One rule per flag: seccomp rules on one syscall are alternatives.
        for flag in CLONE_NAMESPACE_FLAGS {
            let arg = libcontainer::oci_spec::runtime::LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(*flag)
                .value_two(*flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .map_err(spec_err)?;
            rules.push(syscall(
                &["clone"],
                LinuxSeccompAction::ScmpActErrno,
                eperm,
                vec![arg],
            )?);
        }
        // clone3 passes its flags in memory a filter cannot read: ENOSYS
        // makes glibc and others fall back to clone(2), which is checked.
        rules.push(syscall(
            &["clone3"],
            LinuxSeccompAction::ScmpActErrno,
            Some(libc::ENOSYS as u32),
            vec![],
        )?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(host_arches())
        .syscalls(rules)
        .build()
        .map_err(spec_err)
}

/// A profile in Docker's JSON format.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    syscalls: Vec<DockerSyscall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerSyscall {
    #[serde(default)]
    names: Vec<String>,
    /// The older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

/// Docker's architecture names in `includes`/`excludes` for this host.
fn host_arch_name() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        std::env::consts::ARCH
    }
}

fn has_cap(caps: &HashSet<Capability>, name: &str) -> bool {
    crate::spec::parse_cap(name).is_some_and(|c| caps.contains(&c))
}

impl DockerProfile {
    fn to_oci(&self, caps: &HashSet<Capability>) -> Result<LinuxSeccomp, KubeletError> {
        let arch = host_arch_name();
        let mut arches: Vec<Arch> = self.architectures.clone();
        if arches.is_empty() {
            // archMap: the entry for the native architecture and its
            // sub-architectures, as Docker picks them.
            let native = host_arches()[0];
            for m in &self.arch_map {
                if m.architecture == native {
                    arches.push(m.architecture);
                    arches.extend(m.sub_architectures.iter().copied());
                }
            }
        }
        let mut rules = Vec::new();
        for s in &self.syscalls {
            let inc = &s.includes;
            let exc = &s.excludes;
            if !inc.caps.iter().all(|c| has_cap(caps, c))
                || (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch))
                || exc.caps.iter().any(|c| has_cap(caps, c))
                || exc.arches.iter().any(|a| a == arch)
            {
                continue;
            }
            let mut names: Vec<&str> = s.names.iter().map(String::as_str).collect();
            names.extend(s.name.as_deref());
            if names.is_empty() {
                continue;
            }
            rules.push(syscall(&names, s.action, s.errno_ret, s.args.clone())?);
        }
        let mut b = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .architectures(arches)
            .syscalls(rules);
        if let Some(e) = self.default_errno_ret {
            b = b.default_errno_ret(e);
        }
        if !self.flags.is_empty() {
            b = b.flags(self.flags.clone());
        }
        b.build().map_err(spec_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[Capability]) -> HashSet<Capability> {
        list.iter().copied().collect()
    }

    fn denied_names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_refuses_mount_unless_sys_admin() {
        let p = runtime_default(&caps(&[Capability::Chown])).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        let names = denied_names(&p);
        assert!(names.iter().any(|n| n == "mount"));
        assert!(names.iter().any(|n| n == "keyctl"));
        assert!(names.iter().any(|n| n == "clone3"));
        let admin = runtime_default(&caps(&[Capability::SysAdmin])).unwrap();
        let names = denied_names(&admin);
        assert!(!names.iter().any(|n| n == "mount"));
        assert!(!names.iter().any(|n| n == "clone3"));
        // The keyring stays closed even to CAP_SYS_ADMIN.
        assert!(names.iter().any(|n| n == "keyctl"));
    }

    #[test]
    fn profile_choice_follows_upstream_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let none = HashSet::new();
        let rd = SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        };
        let unconf = SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        };
        let input = |pod, container, privileged, default_runtime| Input {
            pod,
            container,
            privileged,
            caps: &none,
            default_runtime,
            profile_dir: dir.path(),
        };
        assert!(
            for_container(&input(None, None, false, false))
                .unwrap()
                .is_none()
        );
        assert!(
            for_container(&input(None, None, false, true))
                .unwrap()
                .is_some()
        );
        assert!(
            for_container(&input(Some(&rd), None, false, false))
                .unwrap()
                .is_some()
        );
        // The container's profile wins over the pod's.
        assert!(
            for_container(&input(Some(&rd), Some(&unconf), false, false))
                .unwrap()
                .is_none()
        );
        // Privileged containers are never filtered.
        assert!(
            for_container(&input(Some(&rd), None, true, true))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn localhost_profiles_in_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        std::fs::write(
            dir.path().join("profiles/deny-mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
                "syscalls": [
                  {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                  {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_FOWNER"]}},
                  {"name": "sethostname", "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}}
                ]}"#,
        )
        .unwrap();
        let with_fowner = caps(&[Capability::Fowner]);
        let p = SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some("profiles/deny-mkdir.json".into()),
        };
        let got = for_container(&Input {
            pod: Some(&p),
            container: None,
            privileged: false,
            caps: &with_fowner,
            default_runtime: false,
            profile_dir: dir.path(),
        })
        .unwrap()
        .unwrap();
        let names = denied_names(&got);
        assert_eq!(names, vec!["mkdir".to_string(), "mkdirat".into()]);
        assert_eq!(got.architectures().as_ref().unwrap().len(), 3);
        let missing = SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some("nope.json".into()),
        };
        let err = for_container(&Input {
            pod: None,
            container: Some(&missing),
            privileged: false,
            caps: &with_fowner,
            default_runtime: false,
            profile_dir: dir.path(),
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot load seccomp profile"),
            "{err}"
        );
    }
}
