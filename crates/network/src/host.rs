//! The host side of the node network: the node's own address, kernel
//! switches (forwarding), and the routes and addresses the proxy and DNS
//! need. Driven through `/proc` and iproute2's `ip`, as the kubelet's pod
//! network is.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::NetworkError;

/// The IPv4 address of the interface holding the default route: what a
/// node reports as its InternalIP when not told otherwise (as upstream's
/// kubelet picks it).
pub fn default_ipv4() -> Option<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    })?;
    interface_ipv4(&iface)
}

/// The first IPv4 address of an interface.
pub fn interface_ipv4(iface: &str) -> Option<Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if a.interface_name != iface {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Some(sin.ip());
        }
    }
    None
}

/// Writes a sysctl under `/proc/sys`.
pub fn sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    let p = format!("/proc/sys/{}", path.replace('.', "/"));
    std::fs::write(&p, value).map_err(|source| NetworkError::Io {
        what: format!("setting {path}={value}"),
        source,
    })
}

fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetworkError::Io {
            what: "running ip (iproute2)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetworkError::Config(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Routes a service range onto the pod bridge: connections to a cluster IP
/// get a source address on the pod network before the proxy rewrites them,
/// and whatever the proxy does not rewrite stays on this node instead of
/// following the default route off it.
pub fn route_service_range(cidr: &str, bridge: &str) -> Result<(), NetworkError> {
    ip(&["route", "replace", cidr, "dev", bridge, "proto", "static"]).map(|_| ())
}

/// Adds `addr/32` to `dev` (the cluster DNS address on the pod bridge), so
/// that this node's own DNS server answers it.
pub fn add_local_address(dev: &str, addr: Ipv4Addr) -> Result<(), NetworkError> {
    let have = ip(&["-4", "-o", "addr", "show", "dev", dev])?;
    if have.contains(&format!("inet {addr}/32")) {
        return Ok(());
    }
    ip(&["addr", "add", &format!("{addr}/32"), "dev", dev]).map(|_| ())
}

/// Waits until `dev` exists in this process's network namespace (the
/// kubelet makes the bridge). Asked of the kernel, not of /sys, which
/// shows whichever namespace it was mounted in.
pub async fn wait_for_interface(dev: &str) {
    while nix::net::if_::if_nametoindex(dev).is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_an_address() {
        assert_eq!(
            super::interface_ipv4("lo"),
            Some(std::net::Ipv4Addr::LOCALHOST)
        );
    }
}
