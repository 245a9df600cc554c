//! `r8s bench store`: durable creates straight into a store (SQLite or
//! etcd), without the API server, at several concurrency levels: the floor
//! `r8s bench api` is compared against. On etcd each create is one
//! transaction (compare create revision = 0, put), the same request the
//! API server sends; values are the size of the API benchmark's ConfigMap.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::bench::pct;

/// Options of `r8s bench store`.
#[derive(clap::Args)]
pub struct StoreBenchArgs {
    /// `sqlite://PATH` or `etcd://HOST:PORT`.
    #[arg(long)]
    datastore: String,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 128])]
    clients: Vec<usize>,
    /// Creates per level.
    #[arg(long, default_value_t = 2000)]
    objects: usize,
    /// Value size in bytes (a serialized 256-byte ConfigMap is ~460).
    #[arg(long, default_value_t = 460)]
    size: usize,
    /// With an etcd datastore: plain puts through etcd-client instead of
    /// the store's create transactions (what etcd's own `benchmark put`
    /// measures), to show the store's overhead over raw etcd.
    #[arg(long)]
    raw: bool,
}

/// Runs the benchmark.
pub async fn run(args: StoreBenchArgs) -> anyhow::Result<()> {
    if args.raw {
        return raw_etcd(args).await;
    }
    let store: store::SharedStore = if let Some(path) = args.datastore.strip_prefix("sqlite://") {
        Arc::new(
            store::sqlite::SqliteStore::open(std::path::Path::new(path))
                .with_context(|| format!("opening {path}"))?,
        )
    } else {
        Arc::new(
            store::EtcdStore::connect_spec(&args.datastore)
                .await
                .with_context(|| format!("connecting to {}", args.datastore))?,
        )
    };
    println!(
        "r8s bench store: {} creates of {} bytes per level on {}",
        args.objects, args.size, args.datastore
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10}",
        "clients", "creates/s", "p50", "p99"
    );
    let value = vec![b'x'; args.size];
    let run_id = std::process::id();
    for (level, &clients) in args.clients.iter().enumerate() {
        let per = args.objects.div_ceil(clients);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let store = store.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let key = format!("/registry/bench/{run_id}-{level}-{c}-{i}");
                    let t = Instant::now();
                    store.create(&key, value.clone()).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, store::StoreError>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let secs = start.elapsed().as_secs_f64();
        all.sort();
        println!(
            "{:>8} {:>12.0} {:>8.2}ms {:>8.2}ms",
            clients,
            all.len() as f64 / secs,
            pct(&all, 0.5),
            pct(&all, 0.99)
        );
    }
    Ok(())
}

/// Plain etcd puts of the same keys and sizes, one client connection shared
/// by the tasks (as the store shares its connection).
async fn raw_etcd(args: StoreBenchArgs) -> anyhow::Result<()> {
    let endpoints: Vec<String> = args
        .datastore
        .strip_prefix("etcd://")
        .context("--raw needs an etcd://HOST:PORT datastore")?
        .split('?')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|h| format!("http://{h}"))
        .collect();
    let client = etcd_client::Client::connect(&endpoints, None)
        .await
        .with_context(|| format!("connecting to {endpoints:?}"))?;
    println!(
        "r8s bench store --raw: {} etcd puts of {} bytes per level on {}",
        args.objects, args.size, args.datastore
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10}",
        "clients", "puts/s", "p50", "p99"
    );
    let value = vec![b'x'; args.size];
    let run_id = std::process::id();
    for (level, &clients) in args.clients.iter().enumerate() {
        let per = args.objects.div_ceil(clients);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut kv = client.kv_client();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let key = format!("/registry/rawbench/{run_id}-{level}-{c}-{i}");
                    let t = Instant::now();
                    kv.put(key, value.clone(), None).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, etcd_client::Error>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let secs = start.elapsed().as_secs_f64();
        all.sort();
        println!(
            "{:>8} {:>12.0} {:>8.2}ms {:>8.2}ms",
            clients,
            all.len() as f64 / secs,
            pct(&all, 0.5),
            pct(&all, 0.99)
        );
    }
    Ok(())
}
