//! `r8s bench churn`: does the SQLite database stay bounded under steady
//! churn? A fixed set of keys is updated over and over, as a busy cluster
//! rewrites pod and lease status; history is compacted and the WAL is
//! checkpointed on the server's schedule (compaction every 5 minutes,
//! keeping one interval of history; a checkpoint every minute), with time
//! compressed: a simulated minute is `rate × 60` writes. The database and
//! WAL sizes are printed after every simulated compaction, so growth
//! (the kine/k3s "state.db keeps growing" complaint) would show.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

/// Options of `r8s bench churn`.
#[derive(clap::Args)]
pub struct ChurnBenchArgs {
    /// The SQLite database to create (must not exist).
    #[arg(long)]
    db: PathBuf,
    /// Keys rewritten over and over.
    #[arg(long, default_value_t = 2000)]
    keys: usize,
    /// Value size in bytes (a pod with status is ~2–4 KiB).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Simulated write rate (writes per second of simulated time).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Simulated duration in minutes.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    clients: usize,
}

fn size_of(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Runs the benchmark.
pub async fn run(args: ChurnBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.db.exists(),
        "{} exists; give a new path",
        args.db.display()
    );
    anyhow::ensure!(
        args.keys > 0 && args.clients > 0,
        "--keys and --clients must be > 0"
    );
    let opts = store::sqlite::SqliteOptions {
        // Driven below, on the simulated clock.
        checkpoint_interval: None,
        compact_interval: None,
        ..Default::default()
    };
    let s = Arc::new(
        store::sqlite::SqliteStore::open_with(&args.db, opts)
            .with_context(|| format!("opening {}", args.db.display()))?,
    );
    let wal = PathBuf::from(format!("{}-wal", args.db.display()));
    let value = vec![b'x'; args.size];
    for k in 0..args.keys {
        store::Store::create(&*s, &format!("/registry/churn/k{k}"), value.clone()).await?;
    }
    let live = (args.keys * args.size) as u64;
    println!(
        "r8s bench churn: {} keys × {} B ({:.1} MiB live), {} writes/s simulated for {} min, {} writers",
        args.keys,
        args.size,
        mib(live),
        args.rate,
        args.minutes,
        args.clients
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>10}",
        "minute", "revision", "db MiB", "wal MiB", "writes/s"
    );
    let per_minute = args.rate * 60;
    let mut previous_compact_target: Option<i64> = None;
    let started = Instant::now();
    let mut writes = 0u64;
    for minute in 1..=args.minutes {
        let t = Instant::now();
        let per_client = per_minute.div_ceil(args.clients as u64);
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            let s = s.clone();
            let value = value.clone();
            let keys = args.keys;
            tasks.push(tokio::spawn(async move {
                for i in 0..per_client {
                    let k = (c as u64 * 7919 + i * 31 + minute * 13) as usize % keys;
                    let key = format!("/registry/churn/k{k}");
                    // Unconditional update (revision 0: no precondition).
                    store::Store::update(&*s, &key, value.clone(), 0).await?;
                }
                Ok::<_, store::StoreError>(per_client)
            }));
        }
        for t in tasks {
            writes += t.await??;
        }
        let rate = per_minute as f64 / t.elapsed().as_secs_f64();
        s.checkpoint().await?;
        if minute % 5 == 0 {
            // As the server's compactor: compact to the revision seen at
            // the previous tick, keeping one interval of history.
            if let Some(target) = previous_compact_target {
                store::Store::compact(&*s, target).await?;
            }
            previous_compact_target = Some(store::Store::current_revision(&*s).await?);
            s.checkpoint().await?;
            println!(
                "{:>8} {:>12} {:>10.1} {:>10.1} {:>10.0}",
                minute,
                store::Store::current_revision(&*s).await?,
                mib(size_of(&args.db)),
                mib(size_of(&wal)),
                rate
            );
        }
    }
    println!(
        "{writes} updates in {:.1} s; final database {:.1} MiB for {:.1} MiB of live values",
        started.elapsed().as_secs_f64(),
        mib(size_of(&args.db)),
        mib(live)
    );
    Ok(())
}
