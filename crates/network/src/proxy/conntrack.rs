//! Clearing the conntrack entries of UDP flows whose endpoint went away,
//! as kube-proxy does: UDP has no connection to reset, so without this a
//! client that keeps its source port (a DNS resolver, a game server's
//! client) keeps being translated to the dead endpoint until the entry
//! times out. Done with the conntrack tool (Debian's `conntrack`), as
//! kube-proxy long did.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};

/// (service address, service port, endpoint address).
pub type Flow = (Ipv4Addr, u16, Ipv4Addr);

/// Deletes the entries of each flow (best effort: a missing tool is
/// reported once).
pub async fn clear(flows: Vec<Flow>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    for (ip, port, endpoint) in flows {
        let out = tokio::process::Command::new("conntrack")
            .args(["-D", "-p", "udp", "--orig-dst"])
            .arg(ip.to_string())
            .arg("--orig-port-dst")
            .arg(port.to_string())
            .arg("--dst-nat")
            .arg(endpoint.to_string())
            .output()
            .await;
        match out {
            Ok(o) => tracing::debug!(
                %ip, port, %endpoint,
                result = %String::from_utf8_lossy(&o.stderr).trim(),
                "cleared stale UDP conntrack entries"
            ),
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "conntrack is not available: UDP flows to removed endpoints stay until their entries time out (Debian: conntrack)");
                }
                return;
            }
        }
    }
}
