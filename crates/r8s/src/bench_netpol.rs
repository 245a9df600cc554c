//! `r8s bench netpol`: NetworkPolicy enforcement at scale. In a network
//! namespace of its own, with two more namespaces as a client pod and a
//! server pod routed through it (so their packets take the forward hook
//! the policies filter), against a control-plane-only server. Measures a
//! policy change to the rule in place, a peer pod change to the set in
//! place, and TCP connects and bulk throughput from client to server with
//! no policies and then with 1,000 that all select the server (each new
//! connection walks every one of their rules before the one allowing it:
//! the worst case).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

use crate::bench::spawn_server;

/// Options of `r8s bench netpol`.
#[derive(clap::Args, Debug)]
pub struct NetpolBenchArgs {
    /// Policies selecting the server pod.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Policy and pod changes timed.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Seconds of each connect and throughput run.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
}

const SERVER_IP: &str = "10.244.0.2";
const CLIENT_IP: &str = "10.244.1.2";
const TABLE: &str = "r8s-bench-pol";

fn netns_names() -> (String, String) {
    let pid = std::process::id();
    (format!("r8snp-cli-{pid}"), format!("r8snp-srv-{pid}"))
}

fn sh(cmd: &str) -> anyhow::Result<()> {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()?;
    anyhow::ensure!(st.success(), "{cmd} failed");
    Ok(())
}

/// Enters a network namespace of its own and makes the client's and the
/// server's, routed through it. Before the async runtime exists, so that
/// every thread it makes is inside.
pub fn enter_netns() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("r8s bench netpol needs root (network namespaces of its own)")?;
    let (cli, srv) = netns_names();
    sh("ip link set lo up")?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    for (ns, dev, ip, gw) in [
        (&cli, "npc", CLIENT_IP, "10.244.1.1"),
        (&srv, "nps", SERVER_IP, "10.244.0.1"),
    ] {
        sh(&format!(
            "ip netns add {ns} && ip link add {dev}0 type veth peer name {dev}1 netns {ns} && \
             ip addr add {gw}/24 dev {dev}0 && ip link set {dev}0 up && \
             ip -n {ns} addr add {ip}/24 dev {dev}1 && ip -n {ns} link set {dev}1 up && \
             ip -n {ns} link set lo up && ip -n {ns} route add default via {gw}"
        ))?;
    }
    Ok(())
}

fn cleanup() {
    let (cli, srv) = netns_names();
    let _ = sh(&format!("ip netns del {cli}; ip netns del {srv}"));
}

/// Moves the calling thread into network namespace `ns`.
fn join_netns(ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
    Ok(())
}

/// The server pod's listeners: 5201 swallows what it is sent, 5202 and
/// 5203 close every connection at once (one port per connect run, so a
/// run never reuses the previous run's address and port pairs, whose
/// conntrack entries are still closing).
fn start_servers() -> anyhow::Result<()> {
    let (_, srv) = netns_names();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| -> anyhow::Result<(TcpListener, Vec<TcpListener>)> {
            join_netns(&srv)?;
            Ok((
                TcpListener::bind((SERVER_IP, 5201))?,
                vec![
                    TcpListener::bind((SERVER_IP, 5202))?,
                    TcpListener::bind((SERVER_IP, 5203))?,
                ],
            ))
        })();
        match r {
            Ok((sink, closers)) => {
                let _ = tx.send(Ok(()));
                for close in closers {
                    std::thread::spawn(move || {
                        for c in close.incoming() {
                            drop(c);
                        }
                    });
                }
                for c in sink.incoming().flatten() {
                    std::thread::spawn(move || {
                        let mut c = c;
                        let mut buf = vec![0u8; 1 << 20];
                        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                    });
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    rx.recv()?
}

/// The most connects of one run: fewer than the client's ephemeral ports,
/// so that no address and port pair repeats within a run.
const MAX_CONNECTS: usize = 5_000;

/// Connects per second to `port` and their latencies, and bulk
/// throughput, from the client pod.
fn measure(secs: u64, port: u16) -> anyhow::Result<(f64, Vec<Duration>, f64)> {
    let (cli, _) = netns_names();
    std::thread::spawn(move || -> anyhow::Result<(f64, Vec<Duration>, f64)> {
        join_netns(&cli)?;
        // Fresh veths drop packets until their carrier is up.
        let t = Instant::now();
        while TcpStream::connect_timeout(
            &format!("{SERVER_IP}:5201").parse()?,
            Duration::from_millis(200),
        )
        .is_err()
        {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(120),
                "the server pod is unreachable"
            );
        }
        let run = Duration::from_secs(secs);
        let mut lat = Vec::new();
        let t = Instant::now();
        while t.elapsed() < run && lat.len() < MAX_CONNECTS {
            let t0 = Instant::now();
            // A SYN lost to a full accept queue is retried after a second:
            // such connects count, with their latency.
            let c = TcpStream::connect_timeout(
                &format!("{SERVER_IP}:{port}").parse()?,
                Duration::from_secs(5),
            )
            .with_context(|| format!("connect to the server pod (after {} connects)", lat.len()))?;
            lat.push(t0.elapsed());
            // Wait for the server's close: the client never runs ahead of
            // its accepts (a full accept queue drops SYNs, and a dropped
            // SYN costs a one-second retransmit).
            let mut c = c;
            let _ = c.read(&mut [0u8; 1]);
            // Closed by a reset: thousands of TIME_WAIT sockets would make
            // the kernel's search for a free port the thing measured.
            let _ = nix::sys::socket::setsockopt(
                &c,
                nix::sys::socket::sockopt::Linger,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
            drop(c);
        }
        let rate = lat.len() as f64 / t.elapsed().as_secs_f64();
        let mut c = TcpStream::connect((SERVER_IP, 5201))?;
        let buf = vec![7u8; 1 << 20];
        let mut sent = 0u64;
        let t = Instant::now();
        while t.elapsed() < run {
            c.write_all(&buf)?;
            sent += buf.len() as u64;
        }
        let gbit = sent as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9;
        lat.sort();
        Ok((rate, lat, gbit))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
}

fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    crate::bench::pct(sorted, p)
}

/// A pod with an address in its status, as a node agent would report it.
async fn pod(
    pods: &Api<Pod>,
    name: &str,
    node: &str,
    labels: serde_json::Value,
    ip: &str,
) -> anyhow::Result<()> {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
    }))?;
    pods.create(&PostParams::default(), &p).await?;
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
    )
    .await?;
    Ok(())
}

fn filler(i: usize) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i:04}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": "srv"}},
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"role": format!("x{i}")}}}],
                "ports": [{"protocol": "TCP", "port": 10000 + i}],
            }],
        },
    }))
    .unwrap_or_default()
}

fn allow_client(extra_port: u16) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "zz-allow-client"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "srv"}},
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                "ports": [
                    {"protocol": "TCP", "port": 5201},
                    {"protocol": "TCP", "port": 5202},
                    {"protocol": "TCP", "port": 5203},
                    {"protocol": "TCP", "port": extra_port},
                ],
            }],
        },
    }))
    .unwrap_or_default()
}

/// The next applied change after `since`.
async fn next_sync(
    rx: &mut mpsc::UnboundedReceiver<network::policy::SyncReport>,
    since: Instant,
) -> anyhow::Result<network::policy::SyncReport> {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("no policy sync within 60 s")?
            .context("the policy agent ended")?;
        if r.at > since {
            return Ok(r);
        }
    }
}

pub async fn run(args: NetpolBenchArgs) -> anyhow::Result<()> {
    let r = run_inner(args).await;
    network::proxy::delete_table(TABLE).await;
    cleanup();
    r
}

async fn run_inner(args: NetpolBenchArgs) -> anyhow::Result<()> {
    start_servers()?;
    let server = spawn_server(&[
        "--datastore".into(),
        "memory://".into(),
        "--disable".into(),
        "controllers,scheduler".into(),
    ])?;
    let client = crate::bench::client(&server.kubeconfig).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pod(&pods, "srv", "bench", json!({"app": "srv"}), SERVER_IP).await?;
    pod(&pods, "cli", "other", json!({"role": "client"}), CLIENT_IP).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cfg = network::policy::PolicyConfig {
        node_name: "bench".into(),
        table: TABLE.into(),
        gate: None,
        observer: Some(tx),
    };
    let c = client.clone();
    tokio::spawn(async move {
        if let Err(e) = network::policy::run(c, cfg).await {
            eprintln!("policy agent stopped: {e}");
        }
    });
    println!(
        "r8s bench netpol: {} policies selecting one server pod, {} changes timed",
        args.policies, args.changes
    );
    // The table exists (empty) once the agent has synced.
    next_sync(&mut rx, Instant::now() - Duration::from_secs(3600)).await?;
    let (rate0, lat0, gbit0) = measure(args.seconds, 5202)?;
    println!(
        "no policies:        connects {rate0:>7.0}/s  p50 {:.3}ms p99 {:.3}ms  throughput {gbit0:.1} Gbit/s",
        pct_ms(&lat0, 0.5),
        pct_ms(&lat0, 0.99)
    );
    // Peers of the filler policies (one pod each), then the policies.
    let t = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.policies)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let ip = format!("10.245.{}.{}", i / 250, i % 250 + 1);
                pod(
                    &pods,
                    &format!("peer-{i}"),
                    "other",
                    json!({"role": format!("x{i}")}),
                    &ip,
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), "default");
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.policies)
        .map(|i| {
            let nps = nps.clone();
            async move {
                nps.create(&PostParams::default(), &filler(i)).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    let since = Instant::now();
    nps.create(&PostParams::default(), &allow_client(6000))
        .await?;
    next_sync(&mut rx, since).await?;
    // Syncs of the last fillers may still be queued: wait for quiet.
    while tokio::time::timeout(Duration::from_millis(500), rx.recv())
        .await
        .is_ok_and(|r| r.is_some())
    {}
    let filled = t.elapsed() - Duration::from_millis(500);
    // The server is now isolated: only the last rule lets the client in.
    let (rate1, lat1, gbit1) = measure(args.seconds, 5203)?;
    // Policy changes: write to rule in place.
    let mut pol_lat = Vec::new();
    let mut pol_took = Vec::new();
    let mut pol_compute = Vec::new();
    for j in 0..args.changes {
        let since = Instant::now();
        nps.replace("zz-allow-client", &PostParams::default(), &{
            let mut p = allow_client(6001 + j as u16);
            p.metadata.resource_version =
                nps.get("zz-allow-client").await?.metadata.resource_version;
            p
        })
        .await?;
        let r = next_sync(&mut rx, since).await?;
        pol_lat.push(r.at - since);
        pol_took.push(r.took);
        pol_compute.push(r.compute);
    }
    // Pod changes: a peer's new address to set element in place.
    let mut pod_lat = Vec::new();
    for j in 0..args.changes {
        let name = format!("peer-{}", j * 7 % args.policies.max(1));
        let ip = format!("10.246.{}.{}", j / 250, j % 250 + 1);
        let since = Instant::now();
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})),
        )
        .await?;
        let r = next_sync(&mut rx, since).await?;
        pod_lat.push(r.at - since);
    }
    pol_lat.sort();
    pol_took.sort();
    pol_compute.sort();
    pod_lat.sort();
    println!(
        "{} policies:      connects {rate1:>7.0}/s  p50 {:.3}ms p99 {:.3}ms  throughput {gbit1:.1} Gbit/s  (created with their peers and in force in {:.1}s)",
        args.policies,
        pct_ms(&lat1, 0.5),
        pct_ms(&lat1, 0.99),
        filled.as_secs_f64()
    );
    println!(
        "policy change → rule in place: p50 {:.1}ms p99 {:.1}ms (compute+nft p50 {:.1}ms p99 {:.1}ms, of which compute p50 {:.1}ms); peer pod change → set in place: p50 {:.1}ms p99 {:.1}ms",
        pct_ms(&pol_lat, 0.5),
        pct_ms(&pol_lat, 0.99),
        pct_ms(&pol_took, 0.5),
        pct_ms(&pol_took, 0.99),
        pct_ms(&pol_compute, 0.5),
        pct_ms(&pod_lat, 0.5),
        pct_ms(&pod_lat, 0.99),
    );
    // A port no policy allows is dropped, not refused (nothing listens
    // there: without the policies the server pod's kernel would reset).
    let (cli, _) = netns_names();
    let dropped = std::thread::spawn(move || -> anyhow::Result<bool> {
        join_netns(&cli)?;
        let r = TcpStream::connect_timeout(
            &format!("{SERVER_IP}:9").parse()?,
            Duration::from_millis(500),
        );
        Ok(matches!(r, Err(e) if e.kind() == std::io::ErrorKind::TimedOut))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the client thread panicked"))??;
    anyhow::ensure!(
        dropped,
        "a connection to a port no policy allows was not dropped"
    );
    drop(server);
    Ok(())
}
