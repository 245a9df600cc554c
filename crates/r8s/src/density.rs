//! `r8s bench density`: scheduler and controller density on hollow nodes.
//!
//! Starts its own `r8s server` (or uses `--kubeconfig`), runs hollow nodes
//! in this process, creates pods (directly or through a Deployment) and
//! measures, from one pod watch with client-side timestamps (creation
//! timestamps have one-second granularity): scheduler throughput (bindings
//! per second, first to last), pod startup latency (create response, or
//! first sighting for Deployment pods, to Running seen), the bench's own API
//! call latency, the server's `apiserver_request_duration_seconds`, and the
//! server's memory (VmRSS now, VmHWM peak).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::bench::{client, pct, proc_mib, spawn_server};

/// How pods come to be.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The bench creates bare pods itself.
    Pods,
    /// The bench creates one Deployment; the controllers create the pods.
    Deployment,
    /// Bare pods with `spec.nodeName` already set (round-robin over the
    /// hollow nodes): bypasses the scheduler to measure the API server and
    /// the hollow nodes alone.
    Bound,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pods => "pods",
            Mode::Deployment => "deployment",
            Mode::Bound => "bound",
        }
    }
}

/// Density benchmark arguments.
#[derive(clap::Args)]
pub struct DensityArgs {
    /// Hollow nodes to register.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to create.
    #[arg(long, default_value_t = 30000)]
    pods: usize,
    /// Bare pods, or one Deployment with `--pods` replicas.
    #[arg(long, value_enum, default_value_t = Mode::Pods)]
    mode: Mode,
    /// Pod creations per second in `pods` mode (0: as fast as the clients go).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Concurrent creating clients in `pods` mode.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Give up waiting for bindings and Running pods after this long.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Hollow nodes' delay between binding and Running.
    #[arg(long, default_value = "0ms", value_parser = crate::parse_duration)]
    pod_start_delay: Duration,
    /// Pod capacity of each hollow node.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Zones to spread the hollow nodes over.
    #[arg(long, value_delimiter = ',', default_value = "zone-a,zone-b,zone-c")]
    zones: Vec<String>,
    /// Namespace of the pods.
    #[arg(long, default_value = "density")]
    namespace: String,
    /// Use this cluster instead of starting a server (no RSS then).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Extra arguments for the server the benchmark starts.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
}

/// When the bench saw each step of one pod.
#[derive(Default, Clone, Copy)]
struct Seen {
    created: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
}

type Timeline = Arc<Mutex<HashMap<String, Seen>>>;

fn timeline_update(t: &Timeline, name: &str, f: impl FnOnce(&mut Seen)) {
    if let Ok(mut m) = t.lock() {
        f(m.entry(name.to_string()).or_default());
    }
}

/// Watches the namespace's pods, noting first sighting, binding, Running.
async fn watch_pods(api: Api<Pod>, timeline: Timeline) {
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(ev) = stream.next().await {
        let pod = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "density pod watch failed; retrying");
                continue;
            }
        };
        let now = Instant::now();
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        timeline_update(&timeline, name, |s| {
            s.created.get_or_insert(now);
            if bound {
                s.bound.get_or_insert(now);
            }
            if running {
                s.running.get_or_insert(now);
            }
        });
    }
}

/// The pod (or Deployment template) the bench runs.
fn pod_template() -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": "density"}},
        "spec": {
            "containers": [{
                "name": "pause",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }],
        },
    })
}

/// Creates `n` bare pods with `clients` workers, paced at `rate` per second
/// if positive; returns the create latencies and the wall time.
async fn create_pods(
    api: Api<Pod>,
    n: usize,
    clients: usize,
    rate: f64,
    timeline: Timeline,
    bind_to: Option<usize>,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (api, next, timeline) = (api.clone(), next.clone(), timeline.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if rate > 0.0 {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate))
                        .await;
                }
                let mut pod = pod_template();
                pod["metadata"]["name"] = json!(format!("density-{i}"));
                if let Some(nodes) = bind_to {
                    pod["spec"]["nodeName"] = json!(hollow::node_name("hollow", i % nodes));
                }
                let pod: Pod = serde_json::from_value(pod)?;
                let t = Instant::now();
                api.create(&PostParams::default(), &pod).await?;
                let done = Instant::now();
                lat.push(done - t);
                // The create response is the startup clock's zero.
                timeline_update(&timeline, &format!("density-{i}"), |s| {
                    s.created = Some(done)
                });
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok((lat, start.elapsed()))
}

/// Creates the Deployment of `replicas` pods.
async fn create_deployment(client: &kube::Client, ns: &str, replicas: usize) -> anyhow::Result<()> {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "density"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "density"}},
            "template": pod_template(),
        },
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await?;
    Ok(())
}

/// Waits until `n` hollow nodes are Ready; returns how many were.
async fn wait_nodes_ready(client: &kube::Client, n: usize, timeout: Duration) -> usize {
    let api: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default().labels("node.kubernetes.io/instance-type=hollow");
    let deadline = Instant::now() + timeout;
    loop {
        let ready = match api.list(&lp).await {
            Ok(l) => l
                .items
                .iter()
                .filter(|node| controller_runtime::node_ready(node))
                .count(),
            Err(_) => 0,
        };
        if ready >= n || Instant::now() >= deadline {
            return ready;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Counts of (seen, bound, running) pods.
fn counts(t: &Timeline) -> (usize, usize, usize) {
    let Ok(m) = t.lock() else {
        return (0, 0, 0);
    };
    m.values().fold((0, 0, 0), |(s, b, r), x| {
        (
            s + 1,
            b + usize::from(x.bound.is_some()),
            r + usize::from(x.running.is_some()),
        )
    })
}

/// One row of the server's request latency histogram.
struct ServerLatency {
    verb: String,
    resource: String,
    count: u64,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Estimates a quantile from cumulative buckets by linear interpolation
/// within the bucket (as Prometheus's histogram_quantile); `None` when it
/// falls in +Inf.
fn bucket_quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return Some(0.0);
    }
    let rank = q * total as f64;
    let (mut lo, mut below) = (0.0, 0u64);
    for &(le, cum) in buckets {
        if cum as f64 >= rank {
            if le.is_infinite() {
                return None;
            }
            let inside = (cum - below) as f64;
            let frac = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lo + (le - lo) * frac);
        }
        lo = le;
        below = cum;
    }
    None
}

/// Parses `apiserver_request_duration_seconds_bucket` lines.
fn parse_server_latency(text: &str) -> Vec<ServerLatency> {
    let mut by: HashMap<(String, String), Vec<(f64, u64)>> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let (mut verb, mut resource, mut le) = (String::new(), String::new(), None);
        for kv in labels.split(',') {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"');
            match k {
                "verb" => verb = v.to_string(),
                "resource" => resource = v.to_string(),
                "le" => {
                    le = Some(if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse().unwrap_or(f64::NAN)
                    })
                }
                _ => {}
            }
        }
        let (Some(le), Ok(n)) = (le, value.trim().parse::<f64>()) else {
            continue;
        };
        by.entry((verb, resource)).or_default().push((le, n as u64));
    }
    let mut rows: Vec<ServerLatency> = by
        .into_iter()
        .map(|((verb, resource), mut b)| {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            ServerLatency {
                count: b.last().map(|x| x.1).unwrap_or(0),
                p50: bucket_quantile(&b, 0.50),
                p99: bucket_quantile(&b, 0.99),
                verb,
                resource,
            }
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.count));
    rows
}

/// Fetches the server's `/metrics`.
async fn scrape_metrics(client: &kube::Client) -> anyhow::Result<String> {
    let req = kube::core::Request::new("/metrics").list(&ListParams::default())?;
    Ok(client.request_text(req).await?)
}

fn ms(d: Option<f64>) -> String {
    match d {
        Some(s) => format!("{:.1}ms", s * 1000.0),
        None => "n/a".into(),
    }
}

/// Runs the density benchmark.
pub async fn run(args: DensityArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.pods == 0 {
        bail!("--nodes and --pods must be at least 1");
    }
    if args.pods > args.nodes * args.max_pods as usize {
        println!(
            "warning: {} pods exceed the capacity of {} nodes x {} pods; some stay Pending",
            args.pods, args.nodes, args.max_pods
        );
    }
    let server = match &args.kubeconfig {
        Some(_) => None,
        None => Some(spawn_server(&args.server_arg)?),
    };
    let kubeconfig = match (&args.kubeconfig, &server) {
        (Some(k), _) => k.clone(),
        (None, Some(s)) => s.kubeconfig.clone(),
        (None, None) => bail!("no server"),
    };
    if let Some(s) = &server {
        println!("server: {} (pid {})", s.url, s.child.id());
    }
    let client = client(&kubeconfig).await?;
    let pid = server.as_ref().map(|s| s.child.id());

    // Hollow nodes in this process, stopped when this function returns.
    let started = Instant::now();
    let hopts = hollow::Options {
        nodes: args.nodes,
        zones: args.zones.clone(),
        name_prefix: "hollow".into(),
        pod_start_delay: args.pod_start_delay,
        cpu: "4".into(),
        memory: "16Gi".into(),
        max_pods: args.max_pods,
        ..Default::default()
    };
    let hollow_task = AbortOnDrop(tokio::spawn({
        let c = client.clone();
        async move {
            if let Err(e) = hollow::run(c, hopts).await {
                eprintln!("hollow nodes failed: {e}");
            }
        }
    }));
    let ready = wait_nodes_ready(&client, args.nodes, args.timeout).await;
    let nodes_took = started.elapsed();
    if ready < args.nodes {
        bail!(
            "only {ready} of {} hollow nodes Ready after {:.0?}",
            args.nodes,
            args.timeout
        );
    }

    let ns = args.namespace.clone();
    let mut nso = Namespace::default();
    nso.metadata.name = Some(ns.clone());
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &nso)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("creating the namespace"),
    }

    let timeline: Timeline = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let _watch = AbortOnDrop(tokio::spawn(watch_pods(pods.clone(), timeline.clone())));
    // Let the watch establish before the first create.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let begin = Instant::now();
    let (create_lat, create_wall) = match args.mode {
        Mode::Pods | Mode::Bound => {
            let bind_to = (args.mode == Mode::Bound).then_some(args.nodes);
            create_pods(
                pods.clone(),
                args.pods,
                args.clients,
                args.rate,
                timeline.clone(),
                bind_to,
            )
            .await?
        }
        Mode::Deployment => {
            let t = Instant::now();
            create_deployment(&client, &ns, args.pods).await?;
            let l = t.elapsed();
            (vec![l], l)
        }
    };

    // Wait for every pod Running (or the timeout), with progress.
    let deadline = begin + args.timeout;
    let mut last_print = Instant::now();
    let timed_out = loop {
        let (seen, bound, running) = counts(&timeline);
        if running >= args.pods {
            break false;
        }
        if Instant::now() >= deadline {
            break true;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            println!(
                "  t={:>5.1}s  pods seen {seen}  bound {bound}  running {running}",
                begin.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total = begin.elapsed();

    // Gather the numbers.
    let snapshot: Vec<Seen> = timeline
        .lock()
        .map(|m| m.values().copied().collect())
        .unwrap_or_default();
    let mut binds: Vec<Instant> = snapshot.iter().filter_map(|s| s.bound).collect();
    binds.sort();
    let mut startup: Vec<Duration> = snapshot
        .iter()
        .filter_map(|s| Some(s.running?.saturating_duration_since(s.created?)))
        .collect();
    startup.sort();
    let mut create_lat = create_lat;
    create_lat.sort();
    let metrics = scrape_metrics(&client).await;
    let rss = pid.and_then(|p| proc_mib(p, "VmRSS:"));
    let hwm = pid.and_then(|p| proc_mib(p, "VmHWM:"));
    // Stop the hollow nodes and let their last requests finish before the
    // server goes away.
    drop(hollow_task);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Report.
    let line = "-".repeat(78);
    println!("{line}");
    println!(
        "r8s bench density: {} hollow nodes, {} pods, mode {}, clients {}, rate {}, start delay {:?}",
        args.nodes,
        args.pods,
        args.mode.name(),
        args.clients,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "max".into()
        },
        args.pod_start_delay
    );
    println!("{line}");
    println!(
        "{:<36} {} Ready in {:.2}s",
        "hollow nodes",
        args.nodes,
        nodes_took.as_secs_f64()
    );
    match args.mode {
        Mode::Pods | Mode::Bound => println!(
            "{:<36} {} in {:.2}s ({:.0}/s)",
            "pods created",
            create_lat.len(),
            create_wall.as_secs_f64(),
            create_lat.len() as f64 / create_wall.as_secs_f64().max(1e-9)
        ),
        Mode::Deployment => println!("{:<36} 1 Deployment of {} replicas", "created", args.pods),
    }
    let (seen, bound, running) = counts(&timeline);
    let sched = match (binds.first(), binds.last()) {
        (Some(a), Some(b)) if binds.len() > 1 && b > a => format!(
            "{:.0} pods/s (first to last binding {:.2}s)",
            (binds.len() - 1) as f64 / (*b - *a).as_secs_f64(),
            (*b - *a).as_secs_f64()
        ),
        _ => "n/a (fewer than two bindings seen)".into(),
    };
    let sched = if args.mode == Mode::Bound {
        "n/a (pods created with spec.nodeName)".to_string()
    } else {
        sched
    };
    println!("{:<36} {seen}", "pods seen by the watch");
    println!("{:<36} {bound} of {}", "pods bound", args.pods);
    println!("{:<36} {sched}", "scheduler throughput");
    println!("{:<36} {running} of {}", "pods running", args.pods);
    if timed_out {
        println!(
            "{:<36} TIMED OUT after {:.0}s (bound {bound}, running {running})",
            "result",
            total.as_secs_f64()
        );
    } else {
        println!(
            "{:<36} all {} Running after {:.2}s",
            "result",
            args.pods,
            total.as_secs_f64()
        );
    }
    let zero = if args.mode != Mode::Deployment {
        "create response"
    } else {
        "first seen"
    };
    println!(
        "{:<36} p50 {:.1}ms  p90 {:.1}ms  p99 {:.1}ms  (n={}, {zero} -> Running seen)",
        "pod startup latency",
        pct(&startup, 0.50),
        pct(&startup, 0.90),
        pct(&startup, 0.99),
        startup.len()
    );
    println!(
        "{:<36} p50 {:.1}ms  p99 {:.1}ms  (n={})",
        "bench API latency POST",
        pct(&create_lat, 0.50),
        pct(&create_lat, 0.99),
        create_lat.len()
    );
    match metrics {
        Ok(text) => {
            let rows = parse_server_latency(&text);
            println!("server apiserver_request_duration_seconds (whole run, top by count):");
            println!(
                "  {:<8} {:<28} {:>9} {:>10} {:>10}",
                "VERB", "RESOURCE", "COUNT", "P50", "P99"
            );
            for r in rows.iter().take(12) {
                println!(
                    "  {:<8} {:<28} {:>9} {:>10} {:>10}",
                    r.verb,
                    r.resource,
                    r.count,
                    ms(r.p50),
                    ms(r.p99)
                );
            }
        }
        Err(e) => println!("server metrics: not available ({e})"),
    }
    match (rss, hwm) {
        (Some(r), Some(h)) => println!(
            "{:<36} RSS {r:.1} MiB, peak (VmHWM) {h:.1} MiB",
            "server memory"
        ),
        _ => println!("{:<36} n/a (external server)", "server memory"),
    }
    println!("{line}");
    Ok(())
}

/// A task aborted when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let b = [(0.005, 50), (0.025, 90), (0.05, 100), (f64::INFINITY, 100)];
        let p50 = bucket_quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.005).abs() < 1e-9, "{p50}");
        let p99 = bucket_quantile(&b, 0.99).unwrap();
        assert!(p99 > 0.025 && p99 <= 0.05, "{p99}");
        let slow = [(0.005, 0), (f64::INFINITY, 10)];
        assert_eq!(bucket_quantile(&slow, 0.99), None);
    }

    #[test]
    fn parses_the_servers_histogram() {
        let text = "\
apiserver_request_duration_seconds_bucket{group=\"\",resource=\"pods\",verb=\"POST\",le=\"0.005\"} 8
apiserver_request_duration_seconds_bucket{group=\"\",resource=\"pods\",verb=\"POST\",le=\"0.025\"} 10
apiserver_request_duration_seconds_bucket{group=\"\",resource=\"pods\",verb=\"POST\",le=\"+Inf\"} 10
apiserver_request_duration_seconds_count{group=\"\",resource=\"pods\",verb=\"POST\"} 10
";
        let rows = parse_server_latency(text);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].verb.as_str(),
                rows[0].resource.as_str(),
                rows[0].count
            ),
            ("POST", "pods", 10)
        );
        assert!(rows[0].p99.unwrap() > 0.005);
    }
}
