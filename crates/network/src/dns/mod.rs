//! The node's cluster DNS server: the Kubernetes DNS specification
//! (Services, headless endpoints, SRV, PTR, pod names, ExternalName, whose
//! CNAME target is resolved too, as CoreDNS does) answered from an in-memory
//! cache fed by watches, everything else
//! forwarded to the node's resolvers (as CoreDNS's default Corefile:
//! `kubernetes` with `pods insecure`, then `forward . /etc/resolv.conf`
//! with a `cache`).

mod forward;
mod objects;
mod publish;
mod records;
mod server;
mod watch;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, RwLock};

pub use records::{Answer, CLUSTER_TTL, MAX_CNAME_HOPS, RecordSet, Records, Resolution};
pub use server::{DnsServer, serve_records};

use crate::NetworkError;

/// Settings of the node's DNS server.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Addresses to answer on, UDP and TCP (the kube-dns Service IP, port 53).
    pub listen: Vec<SocketAddr>,
    /// Cluster domain, "cluster.local".
    pub domain: String,
    /// Upstream resolvers for everything outside the cluster domain (from the node's resolv.conf).
    pub upstreams: Vec<SocketAddr>,
}

/// Parses the nameservers of a resolv.conf text as port-53 socket addresses.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let word = words.next()?;
            // A link-local IPv6 server carries its interface: fe80::1%2 (numeric only, no name lookup here).
            let (ip, zone) = match word.split_once('%') {
                Some((ip, zone)) => (ip, Some(zone)),
                None => (word, None),
            };
            match (ip.parse::<IpAddr>().ok()?, zone) {
                (IpAddr::V4(ip), None) => Some(SocketAddr::from((ip, 53))),
                (IpAddr::V6(ip), None) => Some(SocketAddr::from((ip, 53))),
                (IpAddr::V6(ip), Some(zone)) => scoped(ip, zone),
                (IpAddr::V4(_), Some(_)) => None,
            }
        })
        .collect()
}

fn scoped(ip: Ipv6Addr, zone: &str) -> Option<SocketAddr> {
    match zone.parse::<u32>() {
        Ok(scope) => Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope))),
        Err(_) => {
            tracing::warn!(%ip, zone, "skipping a nameserver with a named interface zone");
            None
        }
    }
}

/// Binds the sockets (fails with NetworkError::Io naming the address when it can't), then watches Services and EndpointSlices through `client` and answers queries until the process ends.
pub async fn serve(client: kube::Client, cfg: DnsConfig) -> Result<(), NetworkError> {
    // Cluster names answer SERVFAIL until listed, rather than NXDOMAIN for Services that exist.
    let records = Arc::new(RwLock::new(Records::new(&cfg.domain)?.unsynced()));
    let server = serve_records(records.clone(), &cfg).await?;
    let run = server.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result,
        () = watch::run(client, records) => {
            tracing::error!("DNS watches ended; answering from the last known records");
        }
    }
    run.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\n; comment\nnameserver  2001:db8::1 \n\
                    nameserver fe80::1%2\nnameserver fe80::2%eth0\nnameserver bogus\noptions ndots:2\n";
        let got = upstreams_from_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[2001:db8::1]:53".parse().unwrap(),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
            ]
        );
    }
}
