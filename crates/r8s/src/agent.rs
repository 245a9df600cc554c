//! Command-line wiring of the node agent, the image store and the shims.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Settings of a node agent (built into `r8s server` or `r8s agent`).
#[derive(clap::Args, Clone)]
pub struct NodeArgs {
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's InternalIP (default: the address of the interface with
    /// the default route; loopback when there is none).
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// The node's pod network, a /24 (default: the one the server's node
    /// IPAM assigns out of --cluster-cidr).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// The cluster's pod range: node IPAM hands out /24s of it (server),
    /// and traffic from it leaving it is masqueraded (every node).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The cluster DNS address `ClusterFirst` pods use and this node's DNS
    /// server answers (default: the `kube-system/kube-dns` Service's).
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// How pod traffic reaches other nodes: `vxlan` (an overlay that works
    /// wherever nodes reach each other over UDP 8472, as flannel's default),
    /// `host-gw` (plain routes; nodes must share a link) or `none`.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw", "none"])]
    pod_network: String,
    /// The resolv.conf `Default` pods get and cluster DNS forwards other
    /// names to.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Registry mirrors, credentials and TLS in k3s's `registries.yaml`
    /// format (a missing file is no configuration).
    #[arg(long, default_value = "/etc/r8s/registries.yaml")]
    registries_config: PathBuf,
    /// Name of the pod bridge.
    #[arg(long, default_value = "r8s0")]
    bridge: String,
    /// Top-level cgroup of the pods.
    #[arg(long, default_value = "r8s")]
    cgroup_root: String,
    /// Port of the kubelet API (0: any free port).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Extra node labels, `key=value`.
    #[arg(long = "node-label", value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Image GC starts when the image disk is fuller than this (percent).
    #[arg(long, default_value_t = 85)]
    image_gc_high_threshold: u8,
    /// Image GC frees space down to this (percent).
    #[arg(long, default_value_t = 80)]
    image_gc_low_threshold: u8,
    /// How often image GC looks.
    #[arg(long, default_value = "5m", value_parser = crate::parse_duration)]
    image_gc_period: std::time::Duration,
    /// An image must have been unused this long to be collected.
    #[arg(long, default_value = "2m", value_parser = crate::parse_duration)]
    minimum_image_ttl_duration: std::time::Duration,
    /// Containers that name no seccomp profile get RuntimeDefault (as the
    /// kubelet's --seccomp-default); otherwise they run Unconfined.
    #[arg(long)]
    seccomp_default: bool,
    /// Hard eviction thresholds, upstream's syntax
    /// (`memory.available<100Mi,nodefs.available<10%`); crossing one sets
    /// the node's MemoryPressure, DiskPressure or PIDPressure condition.
    /// The disk defaults are absolute, not upstream's 10%/15%: a shared
    /// developer disk is rarely that empty.
    #[arg(long, default_value = kubelet::pressure::DEFAULT_EVICTION_HARD)]
    eviction_hard: String,
    /// Soft eviction thresholds (same syntax): pods are evicted only once
    /// one has held for its `--eviction-soft-grace-period`.
    #[arg(long, default_value = "")]
    eviction_soft: String,
    /// How long each soft threshold must hold: `memory.available=1m30s`.
    #[arg(long, default_value = "")]
    eviction_soft_grace_period: String,
    /// The most grace (seconds) a pod evicted for a soft threshold gets.
    #[arg(long, default_value_t = 0)]
    eviction_max_pod_grace_period: i64,
    /// Once a threshold drives evictions, they go on until the signal is
    /// this much above it: `nodefs.available=500Mi,memory.available=5%`.
    #[arg(long, default_value = "")]
    eviction_minimum_reclaim: String,
    /// How long a pressure condition stays after its signal clears.
    #[arg(long, default_value = "5m", value_parser = crate::parse_duration)]
    eviction_pressure_transition_period: std::time::Duration,
    /// Namespaced sysctls pods may set beyond the safe ones, as the
    /// kubelet's flag: `kernel.msg*,net.core.somaxconn`.
    #[arg(long, value_delimiter = ',')]
    allowed_unsafe_sysctls: Vec<String>,
    /// Resources kept for the system, off the node's allocatable, as the
    /// kubelet's flag: `cpu=100m,memory=256Mi,ephemeral-storage=1Gi`.
    #[arg(long, value_delimiter = ',')]
    system_reserved: Vec<String>,
    /// Resources kept for Kubernetes' own daemons (r8s), likewise.
    #[arg(long, value_delimiter = ',')]
    kube_reserved: Vec<String>,
}

/// `r8s agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// Kubeconfig of the cluster to join (or use --server and --token).
    #[arg(long, env = "KUBECONFIG", required_unless_present = "server")]
    kubeconfig: Option<PathBuf>,
    /// API server URLs, comma separated; the agent fails over between them.
    #[arg(long, env = "R8S_URL", value_delimiter = ',', requires = "token")]
    server: Vec<String>,
    /// The join token, as in the server's `<data-dir>/token`.
    #[arg(long, env = "R8S_TOKEN")]
    token: Option<String>,
    /// Where images, pods and logs live.
    #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

/// `r8s reset`.
#[derive(clap::Args)]
pub struct ResetArgs {
    /// The node's data dir (its mounts and pod network state go).
    #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
    data_dir: PathBuf,
    /// The node's pod bridge.
    #[arg(long, default_value = "r8s0")]
    bridge: String,
    /// The node's top-level pod cgroup.
    #[arg(long, default_value = "r8s")]
    cgroup_root: String,
}

/// `r8s reset`: idempotent; what is already gone is skipped.
pub fn reset(a: ResetArgs) -> anyhow::Result<()> {
    kubelet::check_host().context("r8s reset")?;
    let cgroup = a.cgroup_root.trim_matches('/');
    kubelet::cleanup_host(cgroup, &a.bridge, &a.data_dir);
    network::cleanup_host(&a.bridge);
    // Addresses and container state of pods that no longer run.
    for d in ["agent/ipam", "agent/state"] {
        let p = a.data_dir.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    println!(
        "r8s reset: pods of cgroup {cgroup} stopped; bridge {} and its namespaces, routes, nftables tables and mounts under {} removed",
        a.bridge,
        a.data_dir.display()
    );
    Ok(())
}

/// `r8s shim` (internal).
#[derive(clap::Args)]
pub struct ShimArgs {
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    id: String,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    exit_file: PathBuf,
    #[arg(long, default_value_t = 10 << 20)]
    max_log_bytes: u64,
    #[arg(long)]
    memory_cgroup: Option<PathBuf>,
    #[arg(long)]
    attach_socket: Option<PathBuf>,
    #[arg(long)]
    stdin: bool,
    #[arg(long)]
    stdin_once: bool,
    #[arg(long)]
    tty: bool,
}

/// `r8s shim-exec` (internal).
#[derive(clap::Args)]
pub struct ShimExecArgs {
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    id: String,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The default node name: the host name, lower-cased, made a valid DNS
/// subdomain (a kernel without a host name reports "(none)").
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    node_name_from(&raw)
}

fn node_name_from(raw: &str) -> String {
    let cleaned: String = raw
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '-' || c == '.');
    if cleaned.is_empty() || cleaned == "none" {
        "r8s-node".into()
    } else {
        cleaned.chars().take(253).collect()
    }
}

/// The node's name: `--node-name`, else the host name.
pub fn node_name(node: &NodeArgs) -> String {
    node.node_name.clone().unwrap_or_else(hostname)
}

fn options(data_dir: &Path, node: &NodeArgs) -> anyhow::Result<kubelet::Options> {
    let exe = std::env::current_exe().context("locating the r8s executable for the shims")?;
    let name = node_name(node);
    let mut o = kubelet::Options::new(&name, data_dir.to_path_buf(), exe);
    o.node_ip = node.node_ip();
    match &node.pod_cidr {
        Some(c) => o.net.net = kubelet::network::parse_cidr24(c)?,
        None => o.pod_cidr_from_node = true,
    }
    o.resolv_conf = node.resolv_conf.clone();
    o.registries = image::RegistriesConfig::load(&node.registries_config)
        .with_context(|| format!("--registries-config {}", node.registries_config.display()))?;
    if node.pod_network == "vxlan" {
        o.net.mtu = network::overlay::Executor::host().vxlan_pod_mtu(o.node_ip);
    }
    if let Some(ip) = node.cluster_dns {
        o.cluster_dns = Some(kubelet::podfiles::ClusterDns {
            ip,
            domain: node.cluster_domain.clone(),
        });
    }
    o.net.bridge = node.bridge.clone();
    if o.net.bridge.len() > 15 {
        anyhow::bail!(
            "--bridge {:?}: interface names have at most 15 bytes",
            node.bridge
        );
    }
    o.cgroup_root = node.cgroup_root.trim_matches('/').to_string();
    o.kubelet_port = i32::from(node.kubelet_port);
    if node.image_gc_low_threshold > node.image_gc_high_threshold {
        anyhow::bail!("--image-gc-low-threshold must not exceed --image-gc-high-threshold");
    }
    o.image_gc = kubelet::imagegc::GcPolicy {
        high_percent: node.image_gc_high_threshold,
        low_percent: node.image_gc_low_threshold,
        period: node.image_gc_period,
        min_age: node.minimum_image_ttl_duration,
    };
    o.seccomp_default = node.seccomp_default;
    o.eviction_hard = kubelet::pressure::parse_thresholds(&node.eviction_hard)
        .map_err(|e| anyhow::anyhow!("--eviction-hard: {e}"))?;
    o.eviction_pressure_transition_period = node.eviction_pressure_transition_period;
    o.eviction_soft =
        kubelet::pressure::soft_thresholds(&node.eviction_soft, &node.eviction_soft_grace_period)
            .map_err(|e| anyhow::anyhow!("--eviction-soft: {e}"))?;
    o.eviction_max_pod_grace_period = node.eviction_max_pod_grace_period;
    o.eviction_minimum_reclaim =
        kubelet::pressure::parse_minimum_reclaim(&node.eviction_minimum_reclaim)
            .map_err(|e| anyhow::anyhow!("--eviction-minimum-reclaim: {e}"))?;
    o.allowed_unsafe_sysctls = node.allowed_unsafe_sysctls.clone();
    for (flag, list) in [
        ("--system-reserved", &node.system_reserved),
        ("--kube-reserved", &node.kube_reserved),
    ] {
        for item in list {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{flag}: {item:?} is not resource=quantity"))?;
            let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string());
            let ok = match k {
                "cpu" => kubelet::resources::millicores(&q).is_some(),
                "memory" | "ephemeral-storage" | "pid" => kubelet::resources::bytes(&q).is_some(),
                _ => anyhow::bail!(
                    "{flag}: unknown resource {k:?} (cpu, memory, ephemeral-storage, pid)"
                ),
            };
            if !ok {
                anyhow::bail!("{flag}: {v:?} is not a quantity");
            }
            o.reserved.push((k.to_string(), v.to_string()));
        }
    }
    for l in &node.node_labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--node-label {l:?}: expected key=value"))?;
        o.node_labels.push((k.to_string(), v.to_string()));
    }
    Ok(o)
}

impl NodeArgs {
    /// The node's address: `--node-ip`, else the default route's.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
            .or_else(network::host::default_ipv4)
            .unwrap_or(Ipv4Addr::LOCALHOST)
    }
}

/// The node network's settings for a node agent.
fn network_options(opts: &kubelet::Options, node: &NodeArgs) -> network::Options {
    network::Options {
        node_name: opts.node_name.clone(),
        node_ip: opts.node_ip,
        bridge: opts.net.bridge.clone(),
        cluster_cidr: node.cluster_cidr.to_string(),
        cluster_dns: opts.cluster_dns.as_ref().map(|d| d.ip),
        cluster_domain: node.cluster_domain.clone(),
        resolv_conf: node.resolv_conf.clone(),
        overlay: node
            .pod_network
            .parse()
            .ok()
            .map(|mode| network::overlay::OverlayConfig {
                node_name: opts.node_name.clone(),
                node_ip: opts.node_ip,
                mode,
                device: network::overlay::device_for_bridge(&opts.net.bridge),
                vni: network::overlay::DEFAULT_VNI,
                port: network::overlay::DEFAULT_PORT,
            }),
        policy_gate: None,
    }
}

/// The kubelet's pod-address hook, answered by the node's NetworkPolicy
/// agent.
#[derive(Debug)]
struct PolicyGate(std::sync::Arc<network::policy::Gate>);

impl kubelet::PodAddressHook for PolicyGate {
    fn addressed<'a>(
        &'a self,
        pod: &'a k8s_openapi::api::core::v1::Pod,
        ip: Ipv4Addr,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.0.admit(pod, ip))
    }
}

/// Runs the kubelet and the node network side by side.
async fn run_node(
    client: kube::Client,
    opts: kubelet::Options,
    node: &NodeArgs,
) -> anyhow::Result<()> {
    let mut opts = opts;
    let mut net = network_options(&opts, node);
    let gate = network::policy::Gate::new();
    net.policy_gate = Some(gate.clone());
    opts.address_hook = Some(std::sync::Arc::new(PolicyGate(gate)));
    let c = client.clone();
    tokio::spawn(async move {
        if let Err(e) = network::run(c, net).await {
            tracing::error!(error = %e, "node network stopped");
        }
    });
    kubelet::run(client, opts).await?;
    Ok(())
}

/// The cluster DNS address from the `kube-system/kube-dns` Service.
async fn cluster_dns_from_api(client: &kube::Client) -> Option<Ipv4Addr> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), "kube-system");
    for _ in 0..20 {
        match api.get_opt("kube-dns").await {
            Ok(Some(s)) => return s.spec?.cluster_ip?.parse().ok(),
            Ok(None) => return None,
            Err(e) => tracing::warn!(error = %e, "looking up the kube-dns Service"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    None
}

/// Starts the server's own node agent in the background; `cluster_dns`
/// is the server's cluster DNS address unless `--cluster-dns` says
/// otherwise.
pub fn spawn_builtin(
    client: kube::Client,
    data_dir: &Path,
    node: &NodeArgs,
    ca_pem: &str,
    cluster_dns: Ipv4Addr,
) -> anyhow::Result<()> {
    let mut node = node.clone();
    node.cluster_dns.get_or_insert(cluster_dns);
    let mut opts = options(data_dir, &node)?;
    opts.client_ca_pem = Some(ca_pem.to_string());
    if let Err(e) = kubelet::check_host() {
        // The control plane is still useful (hollow nodes, remote agents).
        tracing::error!(error = %e, "not starting the node agent; use --no-agent to silence this");
        return Ok(());
    }
    tokio::spawn(async move {
        if let Err(e) = run_node(client, opts, &node).await {
            tracing::error!(error = %e, "node agent stopped");
        }
    });
    Ok(())
}

/// `r8s agent`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let (client, ca_pem) = match (&args.kubeconfig, &args.token) {
        (_, Some(token)) if !args.server.is_empty() => {
            let name = args.node.node_name.clone().unwrap_or_else(hostname);
            let (c, ca) = crate::join::client(&args.server, token, &name, &args.data_dir).await?;
            (c, Some(ca))
        }
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .context("loading the kubeconfig")?;
            let client = kube::Client::try_from(cfg).context("building the client")?;
            (client, kc_ca(path))
        }
        _ => anyhow::bail!("r8s agent needs --server and --token, or --kubeconfig"),
    };
    let mut node = args.node.clone();
    if node.cluster_dns.is_none() {
        node.cluster_dns = cluster_dns_from_api(&client).await;
    }
    let mut opts = options(&args.data_dir, &node)?;
    opts.client_ca_pem = ca_pem;
    tokio::select! {
        r = run_node(client, opts, &node) => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("agent interrupted; containers keep running"),
    }
    Ok(())
}

/// The cluster CA of a kubeconfig's current cluster, as PEM.
fn kc_ca(path: &Path) -> Option<String> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path).ok()?;
    let ctx_name = kc.current_context.clone()?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)?
        .context
        .clone()?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)?
        .cluster
        .clone()?;
    if let Some(data) = cluster.certificate_authority_data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    std::fs::read_to_string(cluster.certificate_authority?).ok()
}

/// `r8s shim`: returns the exit code.
pub fn shim(a: ShimArgs) -> i32 {
    kubelet::shim::run(kubelet::shim::ShimArgs {
        root: a.root,
        id: a.id,
        bundle: a.bundle,
        log: a.log,
        exit_file: a.exit_file,
        max_log_bytes: a.max_log_bytes,
        memory_cgroup: a.memory_cgroup,
        attach_socket: a.attach_socket,
        stdio: kubelet::attach::StdioOpts {
            stdin: a.stdin,
            stdin_once: a.stdin_once,
            tty: a.tty,
        },
    })
}

/// `r8s shim-exec`: returns the command's exit code.
pub fn shim_exec(a: ShimExecArgs) -> i32 {
    kubelet::shim::exec(kubelet::shim::ExecArgs {
        root: a.root,
        id: a.id,
        command: a.command,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names_from_odd_host_names() {
        assert_eq!(super::node_name_from("(none)\n"), "r8s-node");
        assert_eq!(super::node_name_from(""), "r8s-node");
        assert_eq!(
            super::node_name_from("My_Laptop.local\n"),
            "my-laptop.local"
        );
        assert_eq!(super::node_name_from("web-1"), "web-1");
    }
}
