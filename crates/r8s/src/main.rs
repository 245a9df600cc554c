//! r8s: Kubernetes, rebuilt in Rust, in one binary. This file only wires
//! the crates together behind a command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod agent;
mod autoscaling;
mod bench;
mod bench_authz;
mod bench_churn;
mod bench_crd;
mod bench_gateway;
mod bench_ingress;
mod bench_netpol;
mod bench_network;
mod bench_node;
mod bench_runtime;
mod bench_store;
mod density;
mod image_cmd;
mod join;

// glibc malloc spent a quarter of the API server's CPU in the density
// benchmark and fragmented across its per-thread arenas (2.2 GiB RSS for
// 30,000 pods); mimalloc is faster and returns memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// On Linux mimalloc commits its 1 GiB arenas eagerly, and memory in an
/// eagerly committed arena is never purged: freed pages stay resident. The
/// node agent grew by 2.4 MiB per pod and kept it after the pods were gone
/// (267 MiB with 100 pods, against 56 MiB without eager commit; the API
/// server 139 against 95 MiB). mimalloc reads its options from the
/// environment in its own constructor, so this runs first (lower
/// `.init_array` priorities run earlier; mimalloc's has none) and sets the
/// option unless the user chose otherwise. Child processes (shims, exec
/// helpers) inherit it.
#[used]
#[unsafe(link_section = ".init_array.00101")]
static MIMALLOC_OPTIONS: extern "C" fn() = mimalloc_options;

extern "C" fn mimalloc_options() {
    // SAFETY: runs single-threaded before main; setenv copies both strings.
    unsafe {
        libc::setenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr(), c"0".as_ptr(), 0);
    }
}

#[derive(Parser)]
#[command(
    name = "r8s",
    version,
    about = "Kubernetes, rebuilt in Rust, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (API server with its embedded store).
    Server(Box<ServerArgs>),
    /// Simulated nodes (like kwok/kubemark) for scale tests.
    Hollow(HollowArgs),
    /// A node: the agent that runs pods as containers on this host.
    Agent(Box<agent::AgentArgs>),
    /// OCI images in the node's store.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// An OCI distribution (v2) registry to push images to and pull from.
    Registry(RegistryArgs),
    /// Stops every pod of this node and removes what r8s made on the host
    /// (as k3s-killall.sh): pod namespaces, interfaces, routes, nftables
    /// tables, cgroups and mounts. Cluster data stays.
    Reset(agent::ResetArgs),
    /// Prints a kubeconfig for a new user (a client certificate signed by
    /// the cluster CA), as kubeadm's `kubeconfig user`: bind the user or
    /// group to roles with RoleBindings to give them access.
    Kubeconfig(KubeconfigArgs),
    /// Built-in benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The per-container shim the agent starts (not for direct use).
    #[command(hide = true)]
    Shim(agent::ShimArgs),
    /// Runs a command in a running container (used by the agent).
    #[command(hide = true)]
    ShimExec(agent::ShimExecArgs),
    /// The init of a pod's shared PID namespace (started by the agent).
    #[command(hide = true)]
    Pause,
}

#[derive(clap::Args)]
struct KubeconfigArgs {
    /// The user name (the certificate's CN).
    #[arg(long)]
    user: String,
    /// A group the user is in (the certificate's O); repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The server's data directory (where the cluster CA is).
    #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
    data_dir: PathBuf,
    /// The API server URL (default: the one in the admin kubeconfig).
    #[arg(long)]
    server: Option<String>,
    /// Write the kubeconfig here instead of to standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// `r8s kubeconfig`.
fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<()> {
    let server = match args.server {
        Some(s) => s,
        None => {
            let admin = args.data_dir.join("kubeconfig.yaml");
            let kc = kube::config::Kubeconfig::read_from(&admin)
                .with_context(|| format!("reading {} (or pass --server)", admin.display()))?;
            kc.clusters
                .iter()
                .find_map(|c| c.cluster.as_ref().and_then(|c| c.server.clone()))
                .with_context(|| format!("no server in {}", admin.display()))?
        }
    };
    let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
    let text =
        apiserver::tls::user_kubeconfig(&args.data_dir.join("tls"), &server, &args.user, &groups)
            .with_context(|| {
            format!(
                "issuing a certificate from {}",
                args.data_dir.join("tls").display()
            )
        })?;
    match args.output {
        Some(path) => apiserver::tls::write_private(&path, &text)
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

#[derive(clap::Args)]
struct RegistryArgs {
    /// Address to listen on (plain HTTP; clients treat a loopback
    /// registry as trusted).
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: std::net::SocketAddr,
    /// Where blobs, manifests and tags are kept.
    #[arg(long, default_value = "/var/lib/r8s/registry")]
    data_dir: PathBuf,
}

/// `r8s registry`: serves until stopped.
async fn registry(args: RegistryArgs) -> anyhow::Result<()> {
    let reg = image::registry::Registry::open(&args.data_dir)
        .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let (addr, task) = image::registry::serve(reg, args.addr)
        .await
        .with_context(|| format!("{}", args.addr))?;
    println!("r8s registry listening on http://{addr}");
    task.await.context("the registry stopped")?;
    Ok(())
}

#[derive(clap::Args)]
struct HollowArgs {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Zones to spread the nodes over (`topology.kubernetes.io/zone`).
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// Node name prefix (names are PREFIX-0, PREFIX-1, ...).
    #[arg(long, default_value = "hollow")]
    name_prefix: String,
    /// How long a bound pod takes to become Running (e.g. 200ms, 2s).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pod_start_delay: std::time::Duration,
    /// CPU capacity of each node.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Most API requests in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
}

/// Parses `200ms`, `2s`, `1m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Subcommand)]
enum BenchCommand {
    /// API throughput and latency (creates, gets, lists, watch events).
    Api(bench::ApiBenchArgs),
    /// Custom resource creates (50-field schema, 5 CEL rules) against
    /// ConfigMap creates.
    Crd(bench_crd::CrdBenchArgs),
    /// Requests per second and latency through the ingress against nginx
    /// and haproxy (needs wrk, nginx, haproxy).
    Ingress(bench_ingress::IngressBenchArgs),
    /// Create and get throughput with RBAC (10,000 RoleBindings) and
    /// quota admission against AlwaysAllow.
    Authz(bench_authz::AuthzBenchArgs),
    /// Scheduler and controller density on hollow nodes.
    Density(density::DensityArgs),
    /// Durable creates straight into a store (SQLite or etcd), without the
    /// API server.
    Store(bench_store::StoreBenchArgs),
    /// SQLite size under steady churn with compaction and checkpoints.
    Churn(bench_churn::ChurnBenchArgs),
    /// The node agent with real containers: pod startup latency and the
    /// agent's and shims' memory (root).
    Node(bench_node::NodeBenchArgs),
    /// The service proxy at 1k/10k/30k Services: EndpointSlice change to
    /// rule latency, CPU per change, cold sync, connects through a cluster
    /// IP (root; runs in a network namespace of its own).
    Network(bench_network::NetworkBenchArgs),
    /// NetworkPolicy enforcement with 1,000 policies: change to rule
    /// latency, connects and throughput against none (root; runs in
    /// network namespaces of its own).
    Netpol(bench_netpol::NetpolBenchArgs),
    /// One container's create+start+wait+delete in libcontainer, runc and
    /// crun (root).
    Runtime(bench_runtime::RuntimeBenchArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where state, certificates and the kubeconfig live.
    #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
    data_dir: PathBuf,
    /// Also run an image registry on this address (e.g. `127.0.0.1:5000`),
    /// keeping its content in `<data-dir>/registry`, so a single-node user
    /// has somewhere to push without other software.
    #[arg(long)]
    registry: Option<std::net::SocketAddr>,
    /// HTTPS port of the API server (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Address the API server listens on (all by default, as upstream:
    /// pods reach it through the `kubernetes` Service).
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The address the `kubernetes` Service sends pods to (default: the
    /// bind address if it is a specific one, else the node's address).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// How requests are authorized: `Node,RBAC` (upstream's default for a
    /// secured cluster) or `AlwaysAllow` (every authenticated caller may
    /// do anything; for measuring what authorization costs).
    #[arg(long, default_value = "Node,RBAC", value_parser = parse_authorization_mode)]
    authorization_mode: apiserver::authz::Mode,
    /// An EncryptionConfiguration (apiserver.config.k8s.io/v1) saying which
    /// resources are encrypted at rest with which keys, as kube-apiserver's.
    /// Default: `<data-dir>/encryption-config.yaml`, made at first start
    /// to encrypt Secrets with aescbc.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Encrypt Secrets at rest when no --encryption-provider-config is
    /// given (`--secrets-encryption=false` stores them in plaintext).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    secrets_encryption: bool,
    /// An audit.k8s.io/v1 Policy: which requests are audited at which
    /// level (needs --audit-log-path).
    #[arg(long, requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// Where audit events are written as JSON lines (`-`: standard output).
    #[arg(long, requires = "audit_policy_file")]
    audit_log_path: Option<PathBuf>,
    /// Rotate the audit log when it passes this many megabytes (0: never).
    #[arg(long, default_value_t = 100)]
    audit_log_maxsize: u64,
    /// Rotated audit logs to keep (0: all).
    #[arg(long, default_value_t = 10)]
    audit_log_maxbackup: usize,
    /// The range Service cluster IPs come from; its first address is the
    /// `kubernetes` Service and its tenth cluster DNS.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: ipnet::Ipv4Net,
    /// The built-in ingress controller's HTTP port.
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// The built-in ingress controller's HTTPS port.
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
    /// The address the ingress ports listen on.
    #[arg(long, default_value = "0.0.0.0")]
    ingress_bind_address: IpAddr,
    /// Extra subject alternative names for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Components not to run, comma separated: `scheduler`, `controllers`
    /// (all of them), `ingress` (and with it the Gateway API), `gateway`
    /// (the Gateway API only), or single controllers by name
    /// (`deployment`, `job`, ...).
    #[arg(long, value_delimiter = ',')]
    disable: Vec<String>,
    /// Run the control plane only, without a node agent on this host.
    #[arg(long)]
    no_agent: bool,
    /// The built-in node agent's settings.
    #[command(flatten)]
    node: agent::NodeArgs,
    /// The metrics API's and the HPA controller's settings.
    #[command(flatten)]
    autoscaling: autoscaling::AutoscalingArgs,
    /// Storage: `sqlite://PATH` (default: state.db in the data dir),
    /// `etcd://HOST:PORT[,HOST:PORT…][?ca=F&cert=F&key=F]` (etcd v3, keys
    /// under `/registry/` as upstream) or `memory://` (nothing survives a
    /// restart).
    #[arg(long)]
    datastore: Option<String>,
    /// How often old revisions are compacted away, keeping about one
    /// interval of history (as kube-apiserver's flag of the same name;
    /// 0 turns compaction off).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: std::time::Duration,
}

async fn open_store(args: &ServerArgs) -> anyhow::Result<store::SharedStore> {
    let spec = args.datastore.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            args.data_dir.join("db").join("state.db").display()
        )
    });
    if let Some(path) = spec.strip_prefix("sqlite://") {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let s = store::sqlite::SqliteStore::open(&path)
            .with_context(|| format!("opening SQLite store {}", path.display()))?;
        return Ok(Arc::new(s));
    }
    if spec == "memory://" {
        return Ok(Arc::new(store::memory::MemoryStore::new()));
    }
    if spec.starts_with("etcd://") {
        let s = store::EtcdStore::connect_spec(&spec)
            .await
            .with_context(|| format!("connecting to {spec}"))?;
        return Ok(Arc::new(s));
    }
    anyhow::bail!(
        "unsupported --datastore {spec:?}: use sqlite://PATH, etcd://HOST:PORT or memory://"
    )
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    if !args.etcd_compaction_interval.is_zero() {
        store::spawn_compactor(store.clone(), args.etcd_compaction_interval);
    }
    let cfg = apiserver::Config {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        https_port: args.https_port,
        tls_sans: args.tls_san.clone(),
        service_cidr: args.service_cidr,
        advertise_address: Some(args.advertise_address.unwrap_or_else(|| {
            if args.bind_address.is_unspecified() {
                IpAddr::V4(args.node.node_ip())
            } else {
                args.bind_address
            }
        })),
        authorization_mode: args.authorization_mode,
        encryption_provider_config: args.encryption_provider_config.clone(),
        secrets_encryption: args.secrets_encryption,
        audit: match (&args.audit_policy_file, &args.audit_log_path) {
            (Some(policy), Some(log)) => Some(apiserver::audit::Options {
                policy_file: policy.clone(),
                log_path: log.clone(),
                max_size_mb: args.audit_log_maxsize,
                max_backups: args.audit_log_maxbackup,
            }),
            _ => None,
        },
        metric_resolution: args.autoscaling.metric_resolution,
    };
    let cluster_dns = cfg.cluster_dns_ip();
    let advertise = cfg.advertise_address;
    let running = apiserver::start(cfg, store)
        .await
        .context("starting the API server")?;
    let kc = kube::config::Kubeconfig::read_from(&running.kubeconfig)
        .context("reading the admin kubeconfig")?;
    let client_cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the admin kubeconfig")?;
    // Evictions must see a budget's 429 at once, not after kube-rs's
    // retries.
    let eviction_client = {
        let mut cfg = client_cfg.clone();
        cfg.default_retry = false;
        kube::Client::try_from(cfg).ok()
    };
    let client = kube::Client::try_from(client_cfg).context("building the controllers' client")?;
    // The scheduler and the built-in node agent run as their own
    // least-privileged identities, as upstream's components do; the
    // controllers still run as the admin (see the security issue).
    let tls_dir = args.data_dir.join("tls");
    let scheduler = identity_client(&tls_dir, &running.url, "system:kube-scheduler", &[]).await?;
    start_control_loops(
        client.clone(),
        scheduler,
        &args.disable,
        &running.pki.ca_cert_pem,
        args.node.cluster_cidr,
        &args.autoscaling,
        (&running.url, &running.token, eviction_client),
    )?;
    if !args.disable.iter().any(|d| d == "ingress") {
        let opts = network::ingress::Options {
            http: std::net::SocketAddr::new(args.ingress_bind_address, args.ingress_http_port),
            https: std::net::SocketAddr::new(args.ingress_bind_address, args.ingress_https_port),
            address: advertise
                .map(|a| a.to_string())
                .unwrap_or_else(|| "127.0.0.1".into()),
            gateway: !args.disable.iter().any(|d| d == "gateway"),
        };
        let c = client.clone();
        tokio::spawn(async move {
            if let Err(e) = network::ingress::run(c, opts).await {
                tracing::error!(error = %e, "ingress controller stopped");
            }
        });
    }
    if !args.no_agent {
        let node = format!("system:node:{}", agent::node_name(&args.node));
        let node_client = identity_client(&tls_dir, &running.url, &node, &["system:nodes"]).await?;
        agent::spawn_builtin(
            node_client,
            &args.data_dir,
            &args.node,
            &running.pki.ca_cert_pem,
            cluster_dns,
        )?;
    }
    let _registry = match args.registry {
        Some(addr) => {
            let dir = args.data_dir.join("registry");
            let reg = image::registry::Registry::open(&dir)
                .with_context(|| format!("opening {}", dir.display()))?;
            let (bound, task) = image::registry::serve(reg, addr)
                .await
                .with_context(|| format!("--registry {addr}"))?;
            println!("r8s registry listening on http://{bound}");
            Some(task)
        }
        None => None,
    };
    println!("r8s API server listening on {}", running.url);
    println!("kubeconfig: {}", running.kubeconfig.display());
    println!(
        "node token: {} (r8s agent --server {} --token …)",
        args.data_dir.join("token").display(),
        running.url
    );
    println!("  export KUBECONFIG={}", running.kubeconfig.display());
    println!("web console: {}", running.console_link);
    println!(
        "  (a one-time sign-in link as the admin; later, sign in with a token or a kubeconfig)"
    );
    tokio::select! {
        r = running.task => { r.context("API server task")?; }
        _ = tokio::signal::ctrl_c() => { tracing::info!("shutting down"); }
    }
    Ok(())
}

fn parse_authorization_mode(s: &str) -> Result<apiserver::authz::Mode, String> {
    let mut modes: Vec<&str> = s.split(',').map(str::trim).collect();
    modes.sort_unstable();
    match modes.as_slice() {
        ["Node", "RBAC"] | ["RBAC"] => Ok(apiserver::authz::Mode::NodeRbac),
        ["AlwaysAllow"] => Ok(apiserver::authz::Mode::AlwaysAllow),
        _ => Err(format!(
            "unsupported authorization mode {s:?} (supported: Node,RBAC and AlwaysAllow)"
        )),
    }
}

/// Starts the scheduler and the controllers, each under its own leader
/// election, so that of several servers only one runs each at a time.
/// A client with a fresh certificate for `user` in `groups` from the CA in
/// `tls_dir`.
async fn identity_client(
    tls_dir: &std::path::Path,
    url: &str,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<kube::Client> {
    let text = apiserver::tls::user_kubeconfig(tls_dir, url, user, groups)
        .with_context(|| format!("issuing a certificate for {user}"))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text).context("a component kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading a component kubeconfig")?;
    kube::Client::try_from(cfg).with_context(|| format!("building {user}'s client"))
}

fn start_control_loops(
    client: kube::Client,
    scheduler_client: kube::Client,
    disable: &[String],
    ca_pem: &str,
    cluster_cidr: ipnet::Ipv4Net,
    autoscaling: &autoscaling::AutoscalingArgs,
    (server, token, eviction_client): (&str, &str, Option<kube::Client>),
) -> anyhow::Result<()> {
    let known = |d: &str| {
        matches!(d, "scheduler" | "controllers" | "ingress" | "gateway")
            || controllers::CONTROLLERS.contains(&d)
    };
    if let Some(unknown) = disable.iter().find(|d| !known(d)) {
        anyhow::bail!(
            "--disable: unknown component {unknown:?} (known: scheduler, controllers, ingress, gateway, {})",
            controllers::CONTROLLERS.join(", ")
        );
    }
    let identity = format!(
        "{}_{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        uuid_suffix()
    );
    if !disable.iter().any(|d| d == "scheduler") {
        autoscaling::serve_metrics(
            autoscaling,
            autoscaling.scheduler_secure_port,
            "kube-scheduler",
            ca_pem,
            scheduler_client.clone(),
            scheduler::metrics::render,
        );
        let c = scheduler_client.clone();
        tokio::spawn(controller_runtime::leader::run(
            scheduler_client,
            controller_runtime::leader::Election::new("kube-scheduler", &identity),
            move || scheduler::run(c.clone(), scheduler::Options::default()),
        ));
    }
    if !disable.iter().any(|d| d == "controllers") {
        let opts = controllers::Options {
            disabled: disable.to_vec(),
            root_ca_pem: Some(ca_pem.to_string()),
            cluster_cidr: Some(cluster_cidr),
            hpa: autoscaling.hpa(),
            autoscaler: autoscaling.cluster_autoscaler(
                client.clone(),
                eviction_client,
                server,
                token,
            ),
            ..Default::default()
        };
        autoscaling::serve_metrics(
            autoscaling,
            autoscaling.controller_manager_secure_port,
            "kube-controller-manager",
            ca_pem,
            client.clone(),
            controllers::render_metrics,
        );
        let c = client.clone();
        tokio::spawn(controller_runtime::leader::run(
            client,
            controller_runtime::leader::Election::new("kube-controller-manager", &identity),
            move || controllers::run(c.clone(), opts.clone()),
        ));
    }
    Ok(())
}

/// A per-process suffix that tells candidates on one host apart: the pid
/// (so an operator can tell which process leads) and a nonce.
fn uuid_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}_{:x}", std::process::id(), t.subsec_nanos())
}

async fn hollow(args: HollowArgs) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    let client = kube::Client::try_from(cfg).context("building the client")?;
    let opts = hollow::Options {
        nodes: args.nodes,
        zones: args.zones,
        name_prefix: args.name_prefix,
        pod_start_delay: args.pod_start_delay,
        cpu: args.cpu,
        memory: args.memory,
        max_pods: args.max_pods,
        concurrency: args.concurrency,
        ..Default::default()
    };
    tokio::select! {
        res = hollow::run(client, opts) => res?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; hollow nodes stop heartbeating"),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("R8S_LOG")
        // hickory's server logs every DNS query at info: far too much for
        // a cluster's DNS.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    if matches!(cli.command, Command::Shim(_) | Command::ShimExec(_)) {
        // A shim's fd 2 becomes the container's stderr inside the forked
        // container process, so its log goes to a private close-on-exec
        // copy of the original stderr (the shim log) instead.
        // SAFETY: F_DUPFD_CLOEXEC on fd 2, which every process has open.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        if fd >= 0 {
            // SAFETY: fd is a fresh descriptor owned by nothing else.
            let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Colour codes only for a person at a terminal, not in files.
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }
    // The shims stay single-threaded: libcontainer forks with a raw clone3
    // (see kubelet::shim), so no runtime threads may exist.
    let cli = match cli.command {
        Command::Shim(args) => std::process::exit(agent::shim(args)),
        Command::ShimExec(args) => std::process::exit(agent::shim_exec(args)),
        Command::Pause => std::process::exit(kubelet::sandbox::pause()),
        Command::Image(cmd) => return image_cmd::image(cmd),
        Command::Reset(args) => return agent::reset(args),
        Command::Kubeconfig(args) => return kubeconfig(args),
        // Before the runtime's threads exist, for the same reason.
        Command::Bench(BenchCommand::Runtime(args)) => return bench_runtime::run(args),
        Command::Bench(BenchCommand::Network(args)) => {
            // Every thread the runtime makes must be in the bench's namespace.
            bench_network::enter_netns()?;
            Command::Bench(BenchCommand::Network(args))
        }
        Command::Bench(BenchCommand::Netpol(args)) => {
            bench_netpol::enter_netns()?;
            Command::Bench(BenchCommand::Netpol(args))
        }
        other => other,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli {
        Command::Server(args) => rt.block_on(server(*args)),
        Command::Hollow(args) => rt.block_on(hollow(args)),
        Command::Agent(args) => rt.block_on(agent::run(*args)),
        Command::Registry(args) => rt.block_on(registry(args)),
        Command::Shim(_)
        | Command::ShimExec(_)
        | Command::Pause
        | Command::Image(_)
        | Command::Reset(_)
        | Command::Kubeconfig(_)
        | Command::Bench(BenchCommand::Runtime(_)) => {
            unreachable!("handled above")
        }
        Command::Bench(BenchCommand::Api(args)) => rt.block_on(bench::api(args)),
        Command::Bench(BenchCommand::Crd(args)) => rt.block_on(bench_crd::run(args)),
        Command::Bench(BenchCommand::Ingress(args)) => rt.block_on(bench_ingress::run(args)),
        Command::Bench(BenchCommand::Authz(args)) => rt.block_on(bench_authz::run(args)),
        Command::Bench(BenchCommand::Density(args)) => rt.block_on(density::run(args)),
        Command::Bench(BenchCommand::Store(args)) => rt.block_on(bench_store::run(args)),
        Command::Bench(BenchCommand::Churn(args)) => rt.block_on(bench_churn::run(args)),
        Command::Bench(BenchCommand::Node(args)) => rt.block_on(bench_node::run(args)),
        Command::Bench(BenchCommand::Network(args)) => rt.block_on(bench_network::run(args)),
        Command::Bench(BenchCommand::Netpol(args)) => rt.block_on(bench_netpol::run(args)),
    }
}
