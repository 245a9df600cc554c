//! The pod network of one node: a Linux bridge holding the node's podCIDR
//! gateway, a network namespace per pod (`ip netns`, so containers join it
//! by path) and a veth pair into it, with addresses from a file-backed
//! allocator that survives agent restarts.
//!
//! Driven through iproute2's `ip`, the tool every CNI bridge setup is
//! debugged with; the netlink calls are few and not on a hot path.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::KubeletError;

/// The node's pod network settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Bridge name (at most 15 bytes).
    pub bridge: String,
    /// First three octets of the node's /24 podCIDR.
    pub net: [u8; 3],
    /// Allocator state directory.
    pub ipam_dir: PathBuf,
    /// The pods' interface MTU (None: the kernel's default); an overlay
    /// between nodes needs room for its encapsulation.
    pub mtu: Option<u32>,
}

impl NetConfig {
    /// The bridge's (gateway) address: `.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The podCIDR, e.g. `10.42.0.0/24`.
    pub fn cidr(&self) -> String {
        let [a, b, c] = self.net;
        format!("{a}.{b}.{c}.0/24")
    }
}

/// Parses `a.b.c.0/24`.
pub fn parse_cidr24(s: &str) -> Result<[u8; 3], KubeletError> {
    let bad = || KubeletError::Config(format!("pod CIDR {s:?} must be a /24 like 10.42.0.0/24"));
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    if len != "24" {
        return Err(bad());
    }
    let ip: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let o = ip.octets();
    Ok([o[0], o[1], o[2]])
}

fn ip(args: &[&str]) -> Result<String, KubeletError> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        KubeletError::Network(format!("running ip {args:?}: {e} (is iproute2 installed?)"))
    })?;
    if !out.status.success() {
        return Err(KubeletError::Network(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs several `ip` commands in one process (`ip -batch`), in the
/// network namespace `netns` when given: a pod's network costs two
/// process starts instead of nine, which is most of its setup time.
/// `ip` stops at the first failing line and names it.
fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<(), KubeletError> {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            KubeletError::Network(format!("running ip -batch: {e} (is iproute2 installed?)"))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let script = lines.join("\n") + "\n";
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| KubeletError::Network(format!("waiting for ip -batch: {e}")))?;
    if !out.status.success() {
        return Err(KubeletError::Network(format!(
            "ip{} -batch [{}]: {}",
            netns.map(|n| format!(" -n {n}")).unwrap_or_default(),
            lines.join("; "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A fixed, locally administered MAC address for a bridge. A Linux bridge
/// whose address was never set takes the lowest of its ports' addresses,
/// so it changes as pods come and go, and every pod's ARP entry for the
/// gateway goes stale: their traffic to the node, cluster DNS and
/// everything routed stops for half a minute. A set address stays.
pub fn bridge_mac(bridge: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in bridge.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    format!("02:72:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// Creates the bridge with the gateway address if it is missing.
pub fn ensure_bridge(cfg: &NetConfig) -> Result<(), KubeletError> {
    if ip(&["link", "show", "dev", &cfg.bridge]).is_err() {
        ip(&["link", "add", &cfg.bridge, "type", "bridge"])?;
    }
    ip(&[
        "link",
        "set",
        "dev",
        &cfg.bridge,
        "address",
        &bridge_mac(&cfg.bridge),
    ])?;
    let gw = format!("{}/24", cfg.gateway());
    let addrs = ip(&["-4", "addr", "show", "dev", &cfg.bridge])?;
    if !addrs.contains(&format!("inet {gw}")) {
        ip(&["addr", "add", &gw, "dev", &cfg.bridge])?;
    }
    ip(&["link", "set", &cfg.bridge, "up"])?;
    std::fs::create_dir_all(&cfg.ipam_dir)
        .map_err(|e| KubeletError::Network(format!("creating {}: {e}", cfg.ipam_dir.display())))?;
    Ok(())
}

/// Removes the bridge (agent tear-down in tests).
pub fn delete_bridge(bridge: &str) {
    let _ = ip(&["link", "del", bridge]);
}

/// Reserves the lowest free address for `owner` (a pod uid); the same
/// owner gets its existing address back.
pub fn allocate(cfg: &NetConfig, owner: &str) -> Result<Ipv4Addr, KubeletError> {
    let [a, b, c] = cfg.net;
    for d in 2..=254u8 {
        let addr = Ipv4Addr::new(a, b, c, d);
        let f = cfg.ipam_dir.join(addr.to_string());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&f)
        {
            Ok(mut file) => {
                use std::io::Write;
                let _ = file.write_all(owner.as_bytes());
                return Ok(addr);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if std::fs::read_to_string(&f).is_ok_and(|o| o == owner) {
                    return Ok(addr);
                }
            }
            Err(e) => {
                return Err(KubeletError::Network(format!("ipam {}: {e}", f.display())));
            }
        }
    }
    Err(KubeletError::Network(format!(
        "no free address left in {}",
        cfg.cidr()
    )))
}

/// Returns `owner`'s address to the pool.
pub fn release(cfg: &NetConfig, owner: &str) {
    if let Ok(rd) = std::fs::read_dir(&cfg.ipam_dir) {
        for e in rd.flatten() {
            if std::fs::read_to_string(e.path()).is_ok_and(|o| o == owner) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Whether this process's network namespace has the interface. Asked of
/// the kernel rather than of /sys, which shows the namespace /sys was
/// mounted in: an agent started with `nsenter --net` sees another's.
pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Creates the pod's network namespace with `eth0` at `addr` on the
/// bridge and a default route through the gateway.
pub fn setup_pod(
    cfg: &NetConfig,
    ns: &str,
    host_veth: &str,
    addr: Ipv4Addr,
) -> Result<(), KubeletError> {
    let mut host = Vec::new();
    if !netns_path(ns).exists() {
        host.push(format!("netns add {ns}"));
    }
    if interface_exists(host_veth) {
        // Left over from an attempt that failed halfway.
        host.push(format!("link del {host_veth}"));
    }
    let mtu = cfg.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    host.push(format!(
        "link add {host_veth}{mtu} type veth peer name eth0{mtu} netns {ns}"
    ));
    host.push(format!("link set {host_veth} master {}", cfg.bridge));
    // A pod reaching itself through its Service: br_netfilter DNATs the
    // frame on the bridge and bridges it back out of the port it came in
    // on, which a bridge port only allows in hairpin mode (as kubenet and
    // the CNI bridge plugin set it).
    host.push(format!("link set {host_veth} type bridge_slave hairpin on"));
    host.push(format!("link set {host_veth} up"));
    ip_batch(None, &host)?;
    ip_batch(
        Some(ns),
        &[
            format!("addr add {addr}/24 dev eth0"),
            "link set eth0 up".into(),
            "link set lo up".into(),
            format!("route add default via {}", cfg.gateway()),
        ],
    )
}

/// Deletes the pod's namespace (and with it the veth pair).
pub fn teardown_pod(ns: &str) {
    if netns_path(ns).exists() {
        let _ = ip(&["netns", "del", ns]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_macs_are_fixed_and_locally_administered() {
        assert_eq!(bridge_mac("r8s0"), bridge_mac("r8s0"));
        assert_ne!(bridge_mac("r8s0"), bridge_mac("r8s1"));
        assert!(bridge_mac("r8s0").starts_with("02:72:"));
        assert_eq!(bridge_mac("r8s0").len(), 17);
    }

    #[test]
    fn interfaces_are_found_by_name() {
        assert!(interface_exists("lo"));
        assert!(!interface_exists("no-such-if0"));
        assert!(!interface_exists("bad\0name"));
    }

    #[test]
    fn parses_only_slash_24() {
        assert_eq!(parse_cidr24("10.42.3.0/24").unwrap(), [10, 42, 3]);
        assert!(parse_cidr24("10.42.0.0/16").is_err());
        assert!(parse_cidr24("banana").is_err());
    }

    #[test]
    fn allocates_lowest_free_and_is_idempotent_per_owner() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NetConfig {
            bridge: "unused".into(),
            net: [10, 99, 0],
            ipam_dir: dir.path().to_path_buf(),
            mtu: None,
        };
        let a = allocate(&cfg, "pod-a").unwrap();
        let b = allocate(&cfg, "pod-b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 99, 0, 3));
        assert_eq!(allocate(&cfg, "pod-a").unwrap(), a);
        release(&cfg, "pod-a");
        assert_eq!(allocate(&cfg, "pod-c").unwrap(), a);
    }
}
