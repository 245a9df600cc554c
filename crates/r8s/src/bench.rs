//! `r8s bench api`: API throughput and latency against a running server,
//! measured with kube-rs, the client a third-party controller would use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

/// Options of `r8s bench api`.
#[derive(clap::Args, Debug)]
pub struct ApiBenchArgs {
    /// Kubeconfig of the server to measure; without it a fresh `r8s server`
    /// is started in a temp dir (and its RSS reported).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Concurrency levels to run.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 128])]
    clients: Vec<usize>,
    /// Objects created per level.
    #[arg(long, default_value_t = 2000)]
    objects: usize,
    /// Also fill the server to this many objects and report RSS after.
    #[arg(long, default_value_t = 0)]
    fill: usize,
    /// Extra arguments for the server the benchmark starts (e.g.
    /// `--disable=controllers`).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
}

/// The `r8s server` child, killed (and its data removed) on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) kubeconfig: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `r8s server` on a free port in a temp dir and reads where it is.
pub(crate) fn spawn_server(extra: &[String]) -> anyhow::Result<Server> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["server", "--no-agent", "--https-port", "0"])
        .args([
            "--scheduler-secure-port",
            "0",
            "--controller-manager-secure-port",
            "0",
        ])
        .args(if extra.iter().any(|a| a == "--ingress-http-port") {
            &[][..]
        } else {
            &["--disable", "ingress"][..]
        })
        .arg("--data-dir")
        .arg(dir.path())
        .args(extra)
        .env("R8S_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting r8s server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let (mut url, mut kubeconfig) = (None, None);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(u) = line.strip_prefix("r8s API server listening on ") {
            url = Some(u.trim().to_string());
        } else if let Some(k) = line.strip_prefix("kubeconfig: ") {
            kubeconfig = Some(PathBuf::from(k.trim()));
            break;
        }
    }
    // Keep draining so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let kubeconfig = kubeconfig.context("server exited before printing its kubeconfig")?;
    Ok(Server {
        child,
        dir,
        url: url.unwrap_or_default(),
        kubeconfig,
    })
}

/// A `/proc/<pid>/status` value in MiB (`VmRSS`, `VmHWM`).
pub(crate) fn proc_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub(crate) async fn client(kubeconfig: &PathBuf) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn report(op: &str, clients: usize, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    let n = lat.len();
    println!(
        "{op:<8} clients={clients:<4} n={n:<6} {:>9.0}/s  p50={:>7.2}ms  p99={:>7.2}ms",
        n as f64 / wall.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
    );
}

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.to_string());
    c.data = Some([("key".to_string(), "x".repeat(256))].into_iter().collect());
    c
}

async fn run_level(
    client: kube::Client,
    ns: &str,
    clients: usize,
    objects: usize,
    level: usize,
) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    // A watcher counts how many events arrive while the creates run.
    let events = Arc::new(AtomicU64::new(0));
    let watch_api = api.clone();
    let ev = events.clone();
    let rv = api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let watcher = tokio::spawn(async move {
        let Ok(stream) = watch_api.watch(&WatchParams::default(), &rv).await else {
            return;
        };
        let mut stream = std::pin::pin!(stream);
        // Only the benchmark's objects: the controllers add
        // kube-root-ca.crt to the fresh namespace meanwhile.
        let prefix = format!("b{level}-");
        while let Some(Ok(e)) = stream.next().await {
            if let WatchEvent::Added(o) = e
                && o.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&prefix))
            {
                ev.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let per = objects.div_ceil(clients);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                api.create(&PostParams::default(), &cm(&format!("b{level}-{c}-{i}")))
                    .await?;
                lat.push(t.elapsed());
            }
            Ok::<_, kube::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = start.elapsed();
    let created = lat.len() as u64;
    report("create", clients, lat, wall);
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.load(Ordering::Relaxed) < created && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = events.load(Ordering::Relaxed);
    let watch_wall = start.elapsed();
    println!(
        "watch    clients={clients:<4} n={seen:<6} {:>9.0}/s  (events seen by one watcher during the creates; {} of {created})",
        seen as f64 / watch_wall.as_secs_f64(),
        if seen == created { "all" } else { "NOT all" },
    );
    watcher.abort();

    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                api.get(&format!("b{level}-{c}-{i}")).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, kube::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    report("get", clients, lat, start.elapsed());

    let lists = (clients * 4).max(8);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let api = api.clone();
        let n = lists / clients;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                api.list(&ListParams::default().limit(500)).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, kube::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    report("list500", clients, lat, start.elapsed());
    Ok(())
}

/// Runs `r8s bench api`.
pub async fn api(args: ApiBenchArgs) -> anyhow::Result<()> {
    let server = match &args.kubeconfig {
        Some(_) => None,
        None => Some(spawn_server(&args.server_arg)?),
    };
    let kubeconfig = match (&args.kubeconfig, &server) {
        (Some(k), _) => k.clone(),
        (None, Some(s)) => s.kubeconfig.clone(),
        _ => bail!("no server"),
    };
    let pid = server.as_ref().map(|s| s.child.id());
    let client = client(&kubeconfig).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(rss) = pid.and_then(|p| proc_mib(p, "VmRSS:")) {
        println!("server RSS idle: {rss:.1} MiB");
    }
    for (level, clients) in args.clients.iter().enumerate() {
        let ns = format!("bench-{level}");
        let nsapi: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let mut n = k8s_openapi::api::core::v1::Namespace::default();
        n.metadata.name = Some(ns.clone());
        let _ = nsapi.create(&PostParams::default(), &n).await;
        run_level(client.clone(), &ns, *clients, args.objects, level).await?;
    }
    if let Some(rss) = pid.and_then(|p| proc_mib(p, "VmRSS:")) {
        println!("server RSS after benchmark: {rss:.1} MiB");
    }
    if args.fill > 0 {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let start = Instant::now();
        let per = args.fill.div_ceil(64);
        let mut tasks = Vec::new();
        for c in 0..64 {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    api.create(&PostParams::default(), &cm(&format!("fill-{c}-{i}")))
                        .await?;
                }
                Ok::<_, kube::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        println!(
            "filled {} objects in {:.1}s",
            per * 64,
            start.elapsed().as_secs_f64()
        );
        if let Some(rss) = pid.and_then(|p| proc_mib(p, "VmRSS:")) {
            println!("server RSS with {} objects: {rss:.1} MiB", per * 64);
        }
    }
    Ok(())
}
