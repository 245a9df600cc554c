//! `r8s bench network`: the service proxy at scale. In a network namespace
//! of its own (so the host's rules are untouched), against a fresh
//! control-plane-only server, it fills the cluster with Services (each
//! with a hand-made EndpointSlice of two endpoints) and measures, at each
//! size: how long the proxy takes from an EndpointSlice change to the rule
//! being in place (upstream's network programming latency), the CPU per
//! change, a cold full sync, and the TCP connect latency through a
//! cluster IP against the endpoint directly.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

use crate::bench::spawn_server;

/// Options of `r8s bench network`.
#[derive(clap::Args, Debug)]
pub struct NetworkBenchArgs {
    /// Service counts to measure at (cumulative).
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10000, 30000])]
    services: Vec<usize>,
    /// Endpoint changes timed at each count.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Concurrent API clients while filling.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// TCP connects timed per path (cluster IP, direct).
    #[arg(long, default_value_t = 2000)]
    connects: usize,
    /// Also measure cluster DNS against Debian's unbound serving the same
    /// records, each on one core, with dnsperf on the other (needs the
    /// `dnsperf` and `unbound` packages).
    #[arg(long)]
    dns: bool,
    /// Seconds of each dnsperf run.
    #[arg(long, default_value_t = 5)]
    dns_seconds: u32,
}

/// Where unbound answers inside the benchmark's namespace; r8s's DNS, one
/// fresh server per step (its memory is measured as it loads), answers on
/// 127.0.1.<step>.
const UNBOUND_DNS: &str = "127.0.0.54";

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Pins the calling thread to one CPU.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// r8s's cluster DNS on a runtime and thread of its own, pinned to CPU 1
/// (what unbound gets too).
fn start_r8s_dns(kubeconfig: std::path::PathBuf, listen: String) {
    std::thread::spawn(move || {
        pin(1);
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return eprintln!("DNS runtime: {e}"),
        };
        rt.block_on(async move {
            let client = match crate::bench::client(&kubeconfig).await {
                Ok(c) => c,
                Err(e) => return eprintln!("DNS client: {e}"),
            };
            let cfg = network::dns::DnsConfig {
                listen: match format!("{listen}:53").parse() {
                    Ok(a) => vec![a],
                    Err(e) => return eprintln!("DNS address {listen}: {e}"),
                },
                domain: "cluster.local".into(),
                upstreams: Vec::new(),
            };
            if let Err(e) = network::dns::serve(client, cfg).await {
                eprintln!("r8s DNS stopped: {e}");
            }
        });
    });
}

/// Writes unbound's configuration with the same A records r8s serves.
fn unbound_conf(
    dir: &std::path::Path,
    ips: &[(usize, String)],
) -> anyhow::Result<std::path::PathBuf> {
    use std::fmt::Write as _;
    let mut c = format!(
        "server:\n  interface: {UNBOUND_DNS}\n  port: 53\n  num-threads: 1\n  do-daemonize: no\n  chroot: \"\"\n  \
         username: \"\"\n  directory: \"{}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  \
         access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: yes\n  local-zone: \"cluster.local.\" static\n",
        dir.display()
    );
    for (i, ip) in ips {
        let _ = writeln!(
            c,
            "  local-data: \"s{i}.default.svc.cluster.local. 5 IN A {ip}\""
        );
    }
    c.push_str("remote-control:\n  control-enable: no\n");
    let p = dir.join("unbound.conf");
    std::fs::write(&p, c)?;
    Ok(p)
}

/// One dnsperf run: (queries per second, average latency).
fn dnsperf_qps(server: &str, queries: &std::path::Path, secs: u32) -> anyhow::Result<(f64, f64)> {
    let out = std::process::Command::new("taskset")
        .args([
            "-c",
            "0",
            "dnsperf",
            "-s",
            server,
            "-l",
            &secs.to_string(),
            "-c",
            "8",
            "-q",
            "256",
            "-d",
        ])
        .arg(queries)
        .output()
        .context("running dnsperf (Debian: dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    let qps = field("Queries per second:").context("dnsperf printed no rate")?;
    let lost = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries lost:"))
        .unwrap_or("")
        .trim()
        .to_string();
    if !lost.starts_with("0 ") {
        eprintln!("dnsperf against {server}: lost {lost}");
    }
    Ok((qps, field("Average Latency (s):").unwrap_or(0.0)))
}

/// Latency percentiles at a fixed rate, from dnsperf's per-query lines.
fn dnsperf_latency(
    server: &str,
    queries: &std::path::Path,
    rate: u32,
) -> anyhow::Result<Vec<Duration>> {
    let out = std::process::Command::new("taskset")
        .args([
            "-c",
            "0",
            "dnsperf",
            "-s",
            server,
            "-l",
            "3",
            "-Q",
            &rate.to_string(),
            "-v",
            "-d",
        ])
        .arg(queries)
        .output()
        .context("running dnsperf (Debian: dnsperf)")?;
    let mut lat: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect();
    lat.sort();
    Ok(lat)
}

/// Waits until `server` answers `name`.
async fn dns_answers(server: &str, name: &str) -> bool {
    for _ in 0..600 {
        let out = tokio::process::Command::new("busybox")
            .args(["nslookup", name, server])
            .output()
            .await;
        if out.is_ok_and(|o| o.status.success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The endpoint every Service's first address points at: local to the
/// benchmark's namespace, on a veth pair (no dummy interfaces needed).
const ENDPOINT: &str = "10.244.255.2";
const SERVICE_CIDR: &str = "10.96.0.0/12";

/// Moves the process into a new network namespace with loopback up; runs
/// before any thread exists so that every thread (and child) is in it.
pub fn enter_netns() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("r8s bench network needs root (a network namespace of its own)")?;
    let sh = |cmd: &str| -> anyhow::Result<()> {
        let st = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()?;
        anyhow::ensure!(st.success(), "{cmd} failed");
        Ok(())
    };
    sh("ip link set lo up")?;
    sh(&format!(
        "ip link add r8sbench0 type veth peer name r8sbench1 && ip link set r8sbench0 up && \
         ip link set r8sbench1 up && ip addr add {ENDPOINT}/32 dev r8sbench1 && \
         ip route add {SERVICE_CIDR} dev r8sbench0"
    ))
}

fn cpu_seconds() -> f64 {
    let f = |who| {
        // SAFETY: getrusage writes into the zeroed struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage struct.
        unsafe { libc::getrusage(who, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    f(libc::RUSAGE_SELF) + f(libc::RUSAGE_CHILDREN)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn slice(i: usize, ip: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("s{i}-1"), "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": true}},
            {"addresses": [format!("10.244.{}.{}", (i / 250) % 250, i % 250 + 1)], "conditions": {"ready": true}},
        ],
    }))
    .unwrap_or_default()
}

async fn fill(client: &kube::Client, from: usize, to: usize, clients: usize) -> anyhow::Result<()> {
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(from..to)
        .map(|i| {
            let (svcs, slices, pp) = (svcs.clone(), slices.clone(), pp.clone());
            async move {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("s{i}")},
                    "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
                }))?;
                svcs.create(&pp, &svc).await?;
                // Only the first Service's endpoint is real (for connects);
                // the others point at addresses nothing answers.
                let ip = if i == 0 {
                    ENDPOINT.to_string()
                } else {
                    "10.244.254.1".into()
                };
                slices.create(&pp, &slice(i, &ip)).await?;
                Ok(())
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits for a report saying `want` Services have rules.
async fn caught_up(
    rx: &mut mpsc::UnboundedReceiver<network::proxy::SyncReport>,
    want: usize,
) -> anyhow::Result<()> {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(600), rx.recv())
            .await
            .context("the proxy stopped programming")?
            .context("the proxy ended")?;
        if r.total >= want {
            return Ok(());
        }
    }
}

async fn connect_latency(addr: std::net::SocketAddr, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

/// Cluster DNS against unbound at `n` Services.
async fn dns_step(
    client: &kube::Client,
    args: &NetworkBenchArgs,
    n: usize,
    dir: &std::path::Path,
    rss_before: u64,
    r8s_dns: &str,
) -> anyhow::Result<()> {
    let last = format!("s{}.default.svc.cluster.local", n - 1);
    anyhow::ensure!(
        dns_answers(r8s_dns, &last).await,
        "r8s DNS never answered {last}"
    );
    let dns_kib = rss_kib().saturating_sub(rss_before);
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let list = svcs.list(&Default::default()).await?;
    let ips: Vec<(usize, String)> = list
        .items
        .iter()
        .filter_map(|s| {
            let i = s
                .metadata
                .name
                .as_deref()?
                .strip_prefix('s')?
                .parse()
                .ok()?;
            Some((i, s.spec.as_ref()?.cluster_ip.clone()?))
        })
        .collect();
    let conf = unbound_conf(dir, &ips)?;
    let mut unbound = std::process::Command::new("taskset")
        .args(["-c", "1", "unbound", "-d", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting unbound (Debian: unbound)")?;
    let ready = dns_answers(UNBOUND_DNS, &last).await;
    let queries = dir.join("queries.txt");
    let mut q = String::new();
    for j in 0..10_000usize {
        q.push_str(&format!(
            "s{}.default.svc.cluster.local A\n",
            (j * 7919) % n
        ));
    }
    std::fs::write(&queries, q)?;
    let result = (|| -> anyhow::Result<String> {
        anyhow::ensure!(ready, "unbound never answered");
        let (r8s_qps, r8s_avg) = dnsperf_qps(r8s_dns, &queries, args.dns_seconds)?;
        let (ub_qps, ub_avg) = dnsperf_qps(UNBOUND_DNS, &queries, args.dns_seconds)?;
        let r8s_lat = dnsperf_latency(r8s_dns, &queries, 5000)?;
        let ub_lat = dnsperf_latency(UNBOUND_DNS, &queries, 5000)?;
        Ok(format!(
            "services={n:>6}  DNS (one core each): r8s {r8s_qps:.0} qps avg {} | unbound {ub_qps:.0} qps avg {}; \
             at 5000 qps p50/p99: r8s {}/{} unbound {}/{}; r8s DNS memory {:.1} MiB ({:.2} KiB per Service)",
            ms(Duration::from_secs_f64(r8s_avg)),
            ms(Duration::from_secs_f64(ub_avg)),
            ms(pct(&r8s_lat, 0.5)),
            ms(pct(&r8s_lat, 0.99)),
            ms(pct(&ub_lat, 0.5)),
            ms(pct(&ub_lat, 0.99)),
            dns_kib as f64 / 1024.0,
            dns_kib as f64 / n as f64,
        ))
    })();
    let _ = unbound.kill();
    let _ = unbound.wait();
    println!("{}", result?);
    Ok(())
}

/// Runs the benchmark (after [`enter_netns`]).
pub async fn run(args: NetworkBenchArgs) -> anyhow::Result<()> {
    let server = spawn_server(&[
        "--datastore".into(),
        "memory://".into(),
        "--disable".into(),
        "controllers,scheduler".into(),
        "--service-cidr".into(),
        SERVICE_CIDR.into(),
    ])?;
    let client = crate::bench::client(&server.kubeconfig).await?;
    let table = |name: &str| network::proxy::render::TableConfig {
        table: name.to_string(),
        cluster_cidrs: vec!["10.244.0.0/16".into()],
        service_cidrs: Vec::new(),
        node_ips: Vec::new(),
        local_ips: Vec::new(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cfg = network::proxy::ProxyConfig {
        node_name: "bench".into(),
        table: table("r8s-bench"),
        bridge: None,
        observer: Some(tx),
    };
    let c = client.clone();
    tokio::spawn(async move {
        if let Err(e) = network::proxy::run(c, cfg).await {
            eprintln!("proxy stopped: {e}");
        }
    });
    let listener = tokio::net::TcpListener::bind((ENDPOINT, 8080)).await?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    println!(
        "r8s bench network: proxy on nftables ({} Services per step, {} endpoint changes timed per step)",
        args.services.len(),
        args.changes
    );
    let dns_dir = tempfile::tempdir()?;
    let mut have = 0;
    for &n in &args.services {
        let added = n.saturating_sub(have);
        let t = Instant::now();
        fill(&client, have, n, args.clients).await?;
        let filled = t.elapsed();
        // The kubernetes Service has rules too.
        caught_up(&mut rx, n + 1).await?;
        let programmed = t.elapsed();
        have = n;
        while rx.try_recv().is_ok() {}
        // Endpoint changes, one at a time: API write to rule in place.
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let mut lat = Vec::new();
        let mut nft = Vec::new();
        let cpu0 = cpu_seconds();
        for j in 0..args.changes {
            let i = 1 + (j * 7919) % (n - 1).max(1);
            let ip = format!("10.244.253.{}", j % 250 + 1);
            let mut s = slices.get(&format!("s{i}-1")).await?;
            s.endpoints[0].addresses = vec![ip];
            let t0 = Instant::now();
            slices
                .replace(&format!("s{i}-1"), &PostParams::default(), &s)
                .await?;
            let r = loop {
                let r = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .context("no rule change within 30 s")?
                    .context("the proxy ended")?;
                if r.services > 0 && !r.full {
                    break r;
                }
            };
            lat.push(r.at.saturating_duration_since(t0));
            nft.push(r.took);
        }
        let cpu = (cpu_seconds() - cpu0) / args.changes.max(1) as f64;
        lat.sort();
        nft.sort();
        // A cold proxy's first full sync at this size.
        let (ctx, mut crx) = mpsc::unbounded_channel();
        let cold_cfg = network::proxy::ProxyConfig {
            node_name: "bench".into(),
            table: table("r8s-bench-cold"),
            bridge: None,
            observer: Some(ctx),
        };
        let c = client.clone();
        let t = Instant::now();
        let cold = tokio::spawn(async move { network::proxy::run(c, cold_cfg).await });
        caught_up(&mut crx, n + 1).await?;
        let cold_full = t.elapsed();
        cold.abort();
        network::proxy::delete_table("r8s-bench-cold").await;
        // Connects through the first Service's cluster IP and directly.
        let svc_ip: std::net::IpAddr = Api::<Service>::namespaced(client.clone(), "default")
            .get("s0")
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .context("s0 has no cluster IP")?
            .parse()?;
        // Only the first endpoint listens: point s0 at it alone.
        let mut s0 = slices.get("s0-1").await?;
        s0.endpoints.truncate(1);
        slices.replace("s0-1", &PostParams::default(), &s0).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let via = connect_latency((svc_ip, 80).into(), args.connects).await;
        let direct = connect_latency(
            (ENDPOINT.parse::<std::net::IpAddr>()?, 8080).into(),
            args.connects,
        )
        .await;
        println!(
            "services={n:>6}  fill {:.1}s ({:.0} svc/s, rules in place after {:.1}s)  \
             change→rule p50 {} p99 {} max {} (nft+render p50 {} p99 {})  cpu/change {:.2}ms  \
             cold full sync {:.2}s  connect via cluster IP p50 {} p99 {} / direct p50 {} p99 {} ({} / {} ok)",
            filled.as_secs_f64(),
            added as f64 / filled.as_secs_f64().max(1e-9),
            programmed.as_secs_f64(),
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
            ms(pct(&nft, 0.5)),
            ms(pct(&nft, 0.99)),
            cpu * 1e3,
            cold_full.as_secs_f64(),
            ms(pct(&via, 0.5)),
            ms(pct(&via, 0.99)),
            ms(pct(&direct, 0.5)),
            ms(pct(&direct, 0.99)),
            via.len(),
            direct.len(),
        );
        if args.dns {
            let step = args.services.iter().position(|&x| x == n).unwrap_or(0) + 1;
            let listen = format!("127.0.1.{step}");
            let rss0 = rss_kib();
            start_r8s_dns(server.kubeconfig.clone(), listen.clone());
            dns_step(&client, &args, n, dns_dir.path(), rss0, &listen).await?;
        }
    }
    drop(server);
    network::proxy::delete_table("r8s-bench").await;
    Ok(())
}
