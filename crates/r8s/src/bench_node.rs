//! `r8s bench node`: the node agent with real containers. Starts
//! `r8s server --no-agent` and a separate `r8s agent` (so the agent's RSS
//! is its own), runs busybox `sleep` pods on it and reports, from a pod
//! watch with client-side timestamps, the time from each pod's create
//! response to it being Running and Ready, plus the memory of the agent
//! and of the per-container shims at a few pod counts.
//!
//! Pods are created in waves (up to 50, then up to `--pods`), each waited
//! for before memory is read, so the RSS is that of a node holding those
//! pods rather than one in the middle of starting them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::bench::{Server, client, pct, proc_mib, spawn_server};

/// Options of `r8s bench node`.
#[derive(clap::Args, Debug)]
pub struct NodeBenchArgs {
    /// Pods to run (the agent takes at most 110).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Create the pods at this steady rate (pods per second) rather than
    /// all at once, as upstream's density tests do to measure startup
    /// latency apart from queueing; 0 is as fast as the clients go.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The busybox image tarball (default: built with
    /// tools/build-busybox-image.sh from Debian's busybox-static).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Give up waiting for the node or the pods after this long.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

const NODE: &str = "r8s-bench-node";
const LABEL: &str = "r8s-bench=node";

/// Where the busybox image tarball is: `given`, or built into `dir` with
/// the repository's script (which installs busybox-static if needed).
pub(crate) fn busybox_tarball(dir: &Path, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let out = dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/build-busybox-image.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdout(Stdio::null())
        .output()
        .context("running bash")?;
    if !o.status.success() {
        bail!(
            "building the busybox image with {} failed (pass --image TARBALL): {}",
            script.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(out)
}

/// The server, the agent and what the agent made on the host; all of it
/// goes on drop, also when the benchmark fails half-way.
struct Host {
    agent: Option<Child>,
    server: Option<Server>,
    cgroup: String,
    bridge: String,
    cidr: String,
    agent_dir: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> anyhow::Result<Host> {
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix("r8s-bench-node")
            .tempdir()?;
        Ok(Host {
            agent: None,
            server: None,
            cgroup: format!("r8s-benchnode-{pid}"),
            bridge: format!("r8sbn{}", pid % 1_000_000),
            cidr: format!("10.77.{}.0/24", pid % 200 + 20),
            agent_dir: dir.path().join("agent"),
            log: dir.path().join("agent.log"),
            dir,
        })
    }

    fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// The last lines of the agent's log, for an error report.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Agent first (so nothing restarts containers), then its
        // containers, bridge and mounts, then the server.
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        kubelet::cleanup_host(&self.cgroup, &self.bridge, &self.agent_dir);
        network::cleanup_host(&self.bridge);
        // The shims end once their containers have; give them a moment so
        // removing the temp dir does not race their last writes.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !shims(&self.agent_dir).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.server.take();
    }
}

/// Pids of the shims of the agent whose data dir is `agent_dir`.
fn shims(agent_dir: &Path) -> Vec<u32> {
    let needle = agent_dir.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.get(1).is_some_and(|a| a == "shim") && args.iter().any(|a| a.contains(&needle))
        })
        .collect()
}

/// A process's memory in MiB: resident, of it anonymous (its own heap and
/// stacks, not the shared pages of the r8s executable), and proportional
/// set size (shared pages divided among their users).
#[derive(Default, Clone, Copy)]
struct Mem {
    rss: f64,
    anon: f64,
    pss: f64,
}

impl std::ops::Add for Mem {
    type Output = Mem;
    fn add(self, o: Mem) -> Mem {
        Mem {
            rss: self.rss + o.rss,
            anon: self.anon + o.anon,
            pss: self.pss + o.pss,
        }
    }
}

fn mem(pid: u32) -> Mem {
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            let l = t.lines().find(|l| l.starts_with("Pss:"))?;
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0);
    Mem {
        rss: proc_mib(pid, "VmRSS:").unwrap_or(0.0),
        anon: proc_mib(pid, "RssAnon:").unwrap_or(0.0),
        pss,
    }
}

/// One line of memory figures: the agent alone, the shims summed.
fn memory_line(host: &Host, label: &str) {
    let agent = host.agent_pid().map(mem).unwrap_or_default();
    let pids = shims(&host.agent_dir);
    let shim = pids
        .iter()
        .map(|p| mem(*p))
        .fold(Mem::default(), |a, b| a + b);
    let server = host
        .server
        .as_ref()
        .map(|s| mem(s.child.id()))
        .unwrap_or_default();
    let each = if pids.is_empty() {
        String::new()
    } else {
        let n = pids.len() as f64;
        format!(
            "; each: RSS {:.2}, anon {:.2}, PSS {:.2}",
            shim.rss / n,
            shim.anon / n,
            shim.pss / n
        )
    };
    println!(
        "{label:<13} agent: RSS {:>6.1} anon {:>6.1} MiB | {:>3} shims: RSS {:>7.1} anon {:>5.1} PSS {:>5.1} MiB{each} | server RSS {:.1} MiB",
        agent.rss,
        agent.anon,
        pids.len(),
        shim.rss,
        shim.anon,
        shim.pss,
        server.rss
    );
}

/// When the bench saw each pod: create response, Running and Ready.
#[derive(Default, Clone, Copy)]
struct Seen {
    created: Option<Instant>,
    running: Option<Instant>,
}

type Timeline = Arc<Mutex<HashMap<String, Seen>>>;

fn running_and_ready(p: &Pod) -> bool {
    let Some(s) = p.status.as_ref() else {
        return false;
    };
    s.phase.as_deref() == Some("Running") && controller_runtime::pod_ready(p)
}

async fn watch_pods(api: Api<Pod>, timeline: Timeline) {
    let cfg = watcher::Config::default().labels(LABEL);
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    while let Some(ev) = stream.next().await {
        let pod = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "bench pod watch failed; retrying");
                continue;
            }
        };
        let now = Instant::now();
        if let (Some(name), true) = (pod.metadata.name.as_deref(), running_and_ready(&pod))
            && let Ok(mut m) = timeline.lock()
        {
            m.entry(name.to_string())
                .or_default()
                .running
                .get_or_insert(now);
        }
    }
}

fn pod(i: usize) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"r8s-bench": "node"}},
        "spec": {
            // sleep is pid 1 and ignores SIGTERM: keep the deletion short.
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep",
                "image": "busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    }))?)
}

/// Creates pods `from..to` with `clients` workers, noting each create
/// response (the startup clock's zero).
async fn create_pods(
    api: &Api<Pod>,
    from: usize,
    to: usize,
    clients: usize,
    rate: f64,
    timeline: &Timeline,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(from));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (api, next, timeline) = (api.clone(), next.clone(), timeline.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    break;
                }
                if rate > 0.0 {
                    let at = Duration::from_secs_f64((i - from) as f64 / rate);
                    tokio::time::sleep_until(start + at).await;
                }
                api.create(&PostParams::default(), &pod(i)?)
                    .await
                    .with_context(|| format!("creating pod bench-{i}"))?;
                let done = Instant::now();
                if let Ok(mut m) = timeline.lock() {
                    m.entry(format!("bench-{i}")).or_default().created = Some(done);
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn running_count(t: &Timeline) -> usize {
    t.lock()
        .map(|m| m.values().filter(|s| s.running.is_some()).count())
        .unwrap_or(0)
}

async fn wait_node_ready(
    client: &kube::Client,
    host: &mut Host,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(n) = api.get(NODE).await {
            let st = n.status.unwrap_or_default();
            let ready = st
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let has_busybox = st
                .images
                .unwrap_or_default()
                .iter()
                .any(|i| i.names.iter().flatten().any(|n| n.contains("busybox")));
            if ready && has_busybox {
                return Ok(());
            }
        }
        if let Some(Ok(Some(st))) = host.agent.as_mut().map(Child::try_wait) {
            bail!("the agent exited ({st}) before its node was Ready");
        }
        if Instant::now() >= deadline {
            bail!("node {NODE} not Ready with busybox after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `r8s bench node`.
pub async fn run(args: NodeBenchArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("r8s bench node needs root (namespaces, cgroups, mounts, a bridge)");
    }
    if args.pods == 0 || args.pods > 110 {
        bail!("--pods must be 1..=110 (the agent's pod capacity)");
    }
    let mut host = Host::new()?;
    // Ctrl-C ends the benchmark through the guard's clean-up.
    let r = tokio::select! {
        r = bench(&args, &mut host) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if r.is_err() {
        eprintln!("agent log (last lines):\n{}", host.log_tail());
    }
    r
}

async fn bench(args: &NodeBenchArgs, host: &mut Host) -> anyhow::Result<()> {
    let tar = busybox_tarball(host.dir.path(), args.image.as_deref())?;
    let images = image::ImageStore::open(&host.agent_dir.join("agent/images"))?;
    images
        .import(&tar)
        .with_context(|| format!("importing {}", tar.display()))?;

    let server = spawn_server(&[])?;
    let token_file = server
        .kubeconfig
        .parent()
        .context("server data dir")?
        .join("token");
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading {}", token_file.display()))?;
    let url = server.url.clone();
    let kubeconfig = server.kubeconfig.clone();
    host.server = Some(server);

    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(&host.log)?;
    let agent = Command::new(exe)
        .args(["agent", "--server", &url, "--token", token.trim()])
        .arg("--data-dir")
        .arg(&host.agent_dir)
        .args(["--node-name", NODE, "--bridge", &host.bridge])
        .args(["--pod-cidr", &host.cidr, "--cgroup-root", &host.cgroup])
        .args(["--kubelet-port", "0"])
        .env("R8S_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting r8s agent")?;
    host.agent = Some(agent);

    let client = client(&kubeconfig).await?;
    let t = Instant::now();
    wait_node_ready(&client, host, Duration::from_secs(60).min(args.timeout)).await?;
    println!(
        "r8s bench node: node Ready in {:.2}s; {} busybox `sleep 3600` pods, {} creators, {}",
        t.elapsed().as_secs_f64(),
        args.pods,
        args.clients,
        if args.rate > 0.0 {
            format!("{} pods/s", args.rate)
        } else {
            "all at once".to_string()
        }
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    memory_line(host, "0 pods:");

    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let timeline: Timeline = Arc::default();
    let watch = tokio::spawn(watch_pods(api.clone(), timeline.clone()));
    // Let the watch's initial list finish before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut waves = vec![args.pods.min(50), args.pods];
    waves.dedup();
    let mut from = 0;
    let mut busy = Duration::ZERO;
    for to in waves {
        let start = Instant::now();
        create_pods(&api, from, to, args.clients, args.rate, &timeline).await?;
        let deadline = start + args.timeout;
        while running_count(&timeline) < to {
            if Instant::now() >= deadline {
                bail!(
                    "only {} of {to} pods Running and Ready after {:?}",
                    running_count(&timeline),
                    args.timeout
                );
            }
            if let Some(Ok(Some(st))) = host.agent.as_mut().map(Child::try_wait) {
                bail!("the agent exited ({st})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wave = start.elapsed();
        busy += wave;
        println!(
            "pods {from}..{to}: all Running and Ready {:.2}s after the first create",
            wave.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        memory_line(host, &format!("{to} pods:"));
        from = to;
    }
    watch.abort();

    let mut lat: Vec<Duration> = timeline
        .lock()
        .map_err(|_| anyhow::anyhow!("timeline lock poisoned"))?
        .values()
        .filter_map(|s| Some(s.running?.saturating_duration_since(s.created?)))
        .collect();
    lat.sort();
    println!(
        "create response -> Running and Ready (n={}): p50 {:.0}ms  p90 {:.0}ms  p99 {:.0}ms  max {:.0}ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
    );
    println!(
        "total: {} pods Running and Ready in {:.2}s ({:.1} pods/s)",
        args.pods,
        busy.as_secs_f64(),
        args.pods as f64 / busy.as_secs_f64()
    );

    // Delete them all and wait until the API no longer has them (the agent
    // stopped their containers and confirmed).
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.clients.max(1) {
        let (api, next, n) = (api.clone(), next.clone(), args.pods);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                api.delete(&format!("bench-{i}"), &DeleteParams::default())
                    .await?;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let left = api
            .list_metadata(&ListParams::default().labels(LABEL))
            .await?;
        if left.items.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{} pods still there after {:?}",
                left.items.len(),
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "deleted: all {} pods gone from the API in {:.2}s",
        args.pods,
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    memory_line(host, "after delete:");
    Ok(())
}
