//! The r8s node network, run by every node agent: the service proxy
//! (nftables, as kube-proxy's nftables mode), NetworkPolicy enforcement
//! (nftables), the pod overlay and the node's cluster DNS server. Like
//! every other component it talks to the API server only through the
//! public API (kube-rs watches).

pub mod dns;
pub mod gateway;
pub mod host;
pub mod ingress;
pub mod overlay;
pub mod policy;
pub mod proxy;

/// Errors of the node network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Talking to the API server failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// A socket or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused a ruleset change.
    #[error("nft: {0}")]
    Nft(String),
}

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Node;

/// Settings of the node network.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Node's name.
    pub node_name: String,
    /// The node's InternalIP: node ports answer on it.
    pub node_ip: Ipv4Addr,
    /// The pod bridge the kubelet makes.
    pub bridge: String,
    /// The cluster's pod range (`--cluster-cidr`); the node's own podCIDR
    /// is added when it lies outside.
    pub cluster_cidr: String,
    /// The cluster DNS address this node answers (None: no DNS server).
    pub cluster_dns: Option<Ipv4Addr>,
    /// The cluster domain.
    pub cluster_domain: String,
    /// The node's resolv.conf: where names outside the cluster are asked.
    pub resolv_conf: PathBuf,
    /// How pod traffic crosses nodes (None: it does not).
    pub overlay: Option<overlay::OverlayConfig>,
    /// Where the node agent announces new pods to the NetworkPolicy agent
    /// (None: policies are enforced once pods report their address).
    pub policy_gate: Option<std::sync::Arc<policy::Gate>>,
}

/// The proxy's nftables table for a node bridge (unique per node, so that
/// several nodes can share a host in tests).
pub fn table_name(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("r8s-svc-{safe}")
}

/// Removes what the node network put on the host that outlives the bridge
/// (the nftables table, the VXLAN device and routes to other nodes): host
/// clean-up after a node is gone.
pub fn cleanup_host(bridge: &str) {
    overlay::cleanup(&overlay::device_for_bridge(bridge));
    for table in [table_name(bridge), policy::table_name(bridge)] {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &table])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The Node's podCIDR, once it has one.
async fn node_pod_cidr(client: &kube::Client, name: &str) -> String {
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    loop {
        if let Ok(n) = api.get(name).await
            && let Some(c) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty())
        {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Runs the node network (forwarding, cluster DNS, service proxy) until
/// the process ends.
pub async fn run(client: kube::Client, opts: Options) -> Result<(), NetworkError> {
    host::sysctl("net.ipv4.ip_forward", "1")?;
    if let Some(ov) = opts.overlay.clone() {
        let c = client.clone();
        tokio::spawn(async move {
            if let Err(e) = overlay::run(c, ov).await {
                tracing::error!(error = %e, "pod network overlay stopped");
            }
        });
    }
    // Replies of a pod to a pod on the same bridge must pass conntrack to
    // be un-NATed; the kernel here may have it built in and on already.
    if std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        host::sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    } else {
        tracing::warn!(
            "br_netfilter is not loaded (modprobe br_netfilter): a pod reaching a Service \
             backed by a pod on the same node may not get its replies"
        );
    }
    let pcfg = policy::PolicyConfig {
        node_name: opts.node_name.clone(),
        table: policy::table_name(&opts.bridge),
        gate: opts.policy_gate.clone(),
        observer: None,
    };
    let c = client.clone();
    tokio::spawn(async move {
        if let Err(e) = policy::run(c, pcfg).await {
            tracing::error!(error = %e, "network policy agent stopped");
        }
    });
    let pod_cidr = node_pod_cidr(&client, &opts.node_name).await;
    host::wait_for_interface(&opts.bridge).await;
    let mut cluster_cidrs = vec![opts.cluster_cidr.clone()];
    let inside = match (
        opts.cluster_cidr.parse::<ipnet::Ipv4Net>(),
        pod_cidr.parse::<ipnet::Ipv4Net>(),
    ) {
        (Ok(c), Ok(p)) => c.contains(&p),
        _ => false,
    };
    if !inside && pod_cidr.parse::<ipnet::Ipv4Net>().is_ok() {
        cluster_cidrs.push(pod_cidr);
    }
    let mut local_ips = Vec::new();
    if let Some(dns_ip) = opts.cluster_dns {
        host::add_local_address(&opts.bridge, dns_ip)?;
        local_ips.push(dns_ip);
        let resolv = std::fs::read_to_string(&opts.resolv_conf).unwrap_or_default();
        let cfg = dns::DnsConfig {
            listen: vec![std::net::SocketAddr::from((dns_ip, 53))],
            domain: opts.cluster_domain.clone(),
            upstreams: dns::upstreams_from_resolv_conf(&resolv),
        };
        let c = client.clone();
        tokio::spawn(async move {
            if let Err(e) = dns::serve(c, cfg).await {
                tracing::error!(error = %e, "cluster DNS stopped");
            }
        });
    }
    let cfg = proxy::ProxyConfig {
        node_name: opts.node_name.clone(),
        table: proxy::render::TableConfig {
            table: table_name(&opts.bridge),
            cluster_cidrs,
            service_cidrs: Vec::new(),
            node_ips: vec![opts.node_ip],
            local_ips,
        },
        bridge: Some(opts.bridge.clone()),
        observer: None,
    };
    proxy::run(client, cfg).await
}
