//! `hostPort`: a container port reachable on the node's addresses, as the
//! CNI portmap plugin provides upstream.
//!
//! One nftables table per node bridge (`r8s_<bridge>`) holds a map from
//! (protocol, host port) to (pod IP, container port) and DNATs traffic for
//! a local address through it, both arriving (prerouting) and from the
//! node itself (output). Connections from 127.0.0.1 are masqueraded to the
//! bridge address, which needs `route_localnet` on the bridge (kube-proxy
//! sets it for node ports on localhost the same way). Like upstream's
//! kube-proxy nftables mode, this drives the `nft` tool.

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Pod;

use crate::KubeletError;
use crate::network::NetConfig;

/// One mapping: protocol (`tcp`/`udp`/`sctp`), host port, container port.
pub type Mapping = (String, i32, i32);

/// The table of a node bridge.
pub fn table(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("r8s_{safe}")
}

/// The pod's hostPort mappings.
pub fn mappings(pod: &Pod) -> Vec<Mapping> {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.host_network == Some(true) {
        return Vec::new(); // the ports are the host's already
    }
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|h| *h > 0)?;
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            Some((proto, hp, p.container_port))
        })
        .collect()
}

fn nft(script: &str) -> Result<(), KubeletError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KubeletError::Network(format!("running nft (Debian: nftables): {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| KubeletError::Network(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(KubeletError::Network(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Creates the node's table once (it survives agent restarts with the
/// mappings of running pods).
fn ensure_table(cfg: &NetConfig) -> Result<(), KubeletError> {
    let t = table(&cfg.bridge);
    let exists = Command::new("nft")
        .args(["list", "table", "ip", &t])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Ok(());
    }
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{}/route_localnet", cfg.bridge),
        "1",
    );
    let bridge = &cfg.bridge;
    nft(&format!(
        "table ip {t} {{
  map hostports {{ type inet_proto . inet_service : ipv4_addr . inet_service ; }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; fib daddr type local dnat ip addr . port to meta l4proto . th dport map @hostports; }}
  chain output {{ type nat hook output priority -100; policy accept; fib daddr type local dnat ip addr . port to meta l4proto . th dport map @hostports; }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade; }}
}}\n"
    ))
}

/// Maps the pod's host ports to `pod_ip`.
pub fn add(cfg: &NetConfig, pod_ip: &str, maps: &[Mapping]) -> Result<(), KubeletError> {
    if maps.is_empty() {
        return Ok(());
    }
    ensure_table(cfg)?;
    let t = table(&cfg.bridge);
    let mut script = String::new();
    for (proto, hp, _) in maps {
        // Replace a stale entry (an earlier attempt of the same pod).
        script.push_str(&format!(
            "delete element ip {t} hostports {{ {proto} . {hp} }}\n"
        ));
    }
    let _ = nft(&script);
    let mut script = String::new();
    for (proto, hp, cp) in maps {
        script.push_str(&format!(
            "add element ip {t} hostports {{ {proto} . {hp} : {pod_ip} . {cp} }}\n"
        ));
    }
    nft(&script)
}

/// Removes the pod's host port mappings.
pub fn remove(cfg: &NetConfig, maps: &[Mapping]) {
    if maps.is_empty() {
        return;
    }
    let t = table(&cfg.bridge);
    for (proto, hp, _) in maps {
        let _ = nft(&format!(
            "delete element ip {t} hostports {{ {proto} . {hp} }}\n"
        ));
    }
}

/// Deletes the node's table (host cleanup).
pub fn delete_table(bridge: &str) {
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", &table(bridge)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_come_from_every_container_and_default_to_tcp() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [
                {"name": "a", "ports": [
                    {"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
                    {"containerPort": 9000},
                ]},
            ]},
        }))
        .unwrap();
        assert_eq!(
            mappings(&pod),
            vec![("tcp".into(), 8080, 80), ("udp".into(), 5353, 53)]
        );
        assert_eq!(table("r8s0"), "r8s_r8s0");
        assert_eq!(table("br-x.1"), "r8s_br_x_1");
    }
}
