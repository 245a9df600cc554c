//! r8s: Kubernetes, rebuilt in Rust, in one binary. This file only wires
//! the crates together behind a command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod bench;

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
    Server(ServerArgs),
    /// Built-in benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// API throughput and latency (creates, gets, lists, watch events).
    Api(bench::ApiBenchArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where state, certificates and the kubeconfig live.
    #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
    data_dir: PathBuf,
    /// HTTPS port of the API server (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Extra subject alternative names for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Components not to run, comma separated (`controllers`).
    #[arg(long, value_delimiter = ',')]
    disable: Vec<String>,
    /// Storage: `sqlite://PATH` (default: state.db in the data dir) or
    /// `memory://` (nothing survives a restart).
    #[arg(long)]
    datastore: Option<String>,
}

fn open_store(args: &ServerArgs) -> anyhow::Result<store::SharedStore> {
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
    anyhow::bail!("unsupported --datastore {spec:?}: use sqlite://PATH or memory://")
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let store = open_store(&args)?;
    // Keep about five minutes of history, as upstream compacts etcd.
    store::spawn_compactor(store.clone(), std::time::Duration::from_secs(300));
    let cfg = apiserver::Config {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        https_port: args.https_port,
        tls_sans: args.tls_san.clone(),
    };
    let running = apiserver::start(cfg, store)
        .await
        .context("starting the API server")?;
    let kc = kube::config::Kubeconfig::read_from(&running.kubeconfig)
        .context("reading the admin kubeconfig")?;
    let client_cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the admin kubeconfig")?;
    let client = kube::Client::try_from(client_cfg).context("building the controllers' client")?;
    if let Some(unknown) = args.disable.iter().find(|d| d.as_str() != "controllers") {
        anyhow::bail!("--disable: unknown component {unknown:?} (known: controllers)");
    }
    if !args.disable.iter().any(|d| d == "controllers") {
        tokio::spawn(controllers::run(client, controllers::Options::default()));
    }
    println!("r8s API server listening on {}", running.url);
    println!("kubeconfig: {}", running.kubeconfig.display());
    println!("  export KUBECONFIG={}", running.kubeconfig.display());
    tokio::select! {
        r = running.task => { r.context("API server task")?; }
        _ = tokio::signal::ctrl_c() => { tracing::info!("shutting down"); }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("R8S_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Server(args) => rt.block_on(server(args)),
        Command::Bench(BenchCommand::Api(args)) => rt.block_on(bench::api(args)),
    }
}
