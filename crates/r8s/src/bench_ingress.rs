//! `r8s bench ingress`: requests per second and p50/p99 latency through
//! the r8s ingress against Debian's nginx and haproxy configured as the
//! same reverse proxy to the same backend, with `wrk`, with the proxy on
//! one core (pinned with `taskset`; wrk on the other) and on both. The
//! backend is a tiny hyper server in this process answering `ok`.
//! Needs `wrk`, `nginx` and `haproxy` (Debian packages). Then the
//! Gateway API: route-update propagation and memory at 1k and 5k
//! HTTPRoutes ([`crate::bench_gateway`]).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, PostParams};

/// Options of `r8s bench ingress`.
#[derive(clap::Args, Debug)]
pub struct IngressBenchArgs {
    /// How long each wrk run lasts.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// HTTPRoute counts for the Gateway part (propagation, memory); empty
    /// to skip it.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    routes: Vec<usize>,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // TERM, so that nginx's master takes its workers with it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A backend answering every request with `body`, on its own threads.
fn backend(body: &'static [u8]) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(body)),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    });
    Ok(port)
}

/// One wrk run: (requests/s, p50 ms, p99 ms).
fn wrk(
    url: &str,
    host: Option<&str>,
    conns: usize,
    d: Duration,
    cpu: Option<&str>,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut cmd = match cpu {
        Some(c) => {
            let mut k = Command::new("taskset");
            k.args(["-c", c, "wrk"]);
            k
        }
        None => Command::new("wrk"),
    };
    cmd.args([
        "-t",
        "1",
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{}s", d.as_secs()),
        "--latency",
    ]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let out = cmd.arg(url).output().context("running wrk (Debian: wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    if text.contains("Non-2xx") {
        bail!("wrk saw errors: {text}");
    }
    let ms = |label: &str| -> f64 {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .map(str::trim)
            .map(|v| {
                if let Some(us) = v.strip_suffix("us") {
                    us.parse::<f64>().unwrap_or(0.0) / 1000.0
                } else if let Some(m) = v.strip_suffix("ms") {
                    m.parse().unwrap_or(0.0)
                } else if let Some(s) = v.strip_suffix('s') {
                    s.parse::<f64>().unwrap_or(0.0) * 1000.0
                } else {
                    0.0
                }
            })
            .unwrap_or(0.0)
    };
    Ok((rps, ms("50%"), ms("99%")))
}

fn pin(pid: u32, cpus: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status();
}

fn wait_ok(url: &str, host: Option<&str>) -> anyhow::Result<()> {
    for _ in 0..100 {
        let mut c = Command::new("curl");
        c.args(["-s", "--max-time", "1"]);
        if let Some(h) = host {
            c.args(["-H", &format!("Host: {h}")]);
        }
        if let Ok(o) = c.arg(url).output()
            && String::from_utf8_lossy(&o.stdout).trim() == "ok"
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{url} never answered through the proxy")
}

/// Runs the comparison.
pub async fn run(args: IngressBenchArgs) -> anyhow::Result<()> {
    let back = backend(b"ok\n")?;
    let back_new = backend(b"new\n")?;
    let gw_port = free_port()?;
    let (http, https) = (free_port()?, free_port()?);
    let server = crate::bench::spawn_server(&[
        "--ingress-http-port".into(),
        http.to_string(),
        "--ingress-https-port".into(),
        https.to_string(),
        "--ingress-bind-address".into(),
        "127.0.0.1".into(),
    ])?;
    let client = crate::bench::client(&server.kubeconfig).await?;
    let objects: Vec<serde_json::Value> = serde_json::from_str(&format!(
        r#"[
        {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "backend", "namespace": "default"}},
          "spec": {{"ports": [{{"name": "http", "port": 80, "targetPort": {back}}}]}}}},
        {{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {{"name": "backend-1", "namespace": "default",
            "labels": {{"kubernetes.io/service-name": "backend", "endpointslice.kubernetes.io/managed-by": "bench"}}}},
          "addressType": "IPv4", "ports": [{{"name": "http", "port": {back}}}],
          "endpoints": [{{"addresses": ["127.0.0.1"], "conditions": {{"ready": true}}}}]}},
        {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "backend-new", "namespace": "default"}},
          "spec": {{"ports": [{{"name": "http", "port": 80, "targetPort": {back_new}}}]}}}},
        {{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {{"name": "backend-new-1", "namespace": "default",
            "labels": {{"kubernetes.io/service-name": "backend-new", "endpointslice.kubernetes.io/managed-by": "bench"}}}},
          "addressType": "IPv4", "ports": [{{"name": "http", "port": {back_new}}}],
          "endpoints": [{{"addresses": ["127.0.0.1"], "conditions": {{"ready": true}}}}]}},
        {{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {{"name": "bench", "namespace": "default"}},
          "spec": {{"rules": [{{"host": "bench.local", "http": {{"paths": [{{"path": "/", "pathType": "Prefix",
            "backend": {{"service": {{"name": "backend", "port": {{"number": 80}}}}}}}}]}}}}]}}}}
    ]"#
    ))?;
    for o in objects {
        let obj: DynamicObject = serde_json::from_value(o.clone())?;
        let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().context("types")?)?;
        let (ar, _) = kube::discovery::pinned_kind(&client, &gvk).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        api.create(&PostParams::default(), &obj).await?;
    }
    let r8s_url = format!("http://127.0.0.1:{http}/");
    wait_ok(&r8s_url, Some("bench.local"))?;
    crate::bench_gateway::setup(&client, gw_port).await?;
    let gw_url = format!("http://127.0.0.1:{gw_port}/");
    wait_ok(&gw_url, Some("bench.local"))?;

    let dir = tempfile::tempdir()?;
    let nginx_port = free_port()?;
    let haproxy_port = free_port()?;
    let nginx_conf = |workers: usize| {
        format!(
            "worker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\n\
             http {{ access_log off; upstream b {{ server 127.0.0.1:{back}; keepalive 128; }}\n\
             server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; \
             proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }} }}\n",
            d = dir.path().display()
        )
    };
    let haproxy_conf = |threads: usize| {
        format!(
            "global\n  nbthread {threads}\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option forwardfor\n  http-reuse always\n\
             frontend f\n  bind 127.0.0.1:{haproxy_port}\n  default_backend b\nbackend b\n  server s1 127.0.0.1:{back}\n"
        )
    };
    println!(
        "{:<10} {:>5} {:>12} {:>9} {:>9}",
        "proxy", "cores", "requests/s", "p50 ms", "p99 ms"
    );
    let d = args.duration;
    let c = args.connections;
    for cores in [1usize, 2] {
        // One core: the proxy on CPU 1, wrk on CPU 0. Two: both shared.
        let (proxy_cpus, wrk_cpu) = if cores == 1 {
            ("1", Some("0"))
        } else {
            ("0,1", None)
        };
        pin(server.child.id(), proxy_cpus);
        let (rps, p50, p99) = wrk(&r8s_url, Some("bench.local"), c, d, wrk_cpu)?;
        println!("{:<10} {cores:>5} {rps:>12.0} {p50:>9.2} {p99:>9.2}", "r8s");
        let (rps, p50, p99) = wrk(&gw_url, Some("bench.local"), c, d, wrk_cpu)?;
        println!(
            "{:<10} {cores:>5} {rps:>12.0} {p50:>9.2} {p99:>9.2}",
            "r8s-gw"
        );

        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(cores))?;
        let n = Command::new("nginx")
            .args(["-c"])
            .arg(&conf)
            .args(["-p"])
            .arg(dir.path())
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (Debian: nginx-light)")?;
        let n = Killed(n);
        let url = format!("http://127.0.0.1:{nginx_port}/");
        wait_ok(&url, None)?;
        pin(n.0.id(), proxy_cpus);
        let (rps, p50, p99) = wrk(&url, None, c, d, wrk_cpu)?;
        println!(
            "{:<10} {cores:>5} {rps:>12.0} {p50:>9.2} {p99:>9.2}",
            "nginx"
        );
        drop(n);

        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(&conf, haproxy_conf(cores))?;
        let h = Command::new("haproxy")
            .arg("-f")
            .arg(&conf)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting haproxy (Debian: haproxy)")?;
        let h = Killed(h);
        let url = format!("http://127.0.0.1:{haproxy_port}/");
        wait_ok(&url, None)?;
        pin(h.0.id(), proxy_cpus);
        let (rps, p50, p99) = wrk(&url, None, c, d, wrk_cpu)?;
        println!(
            "{:<10} {cores:>5} {rps:>12.0} {p50:>9.2} {p99:>9.2}",
            "haproxy"
        );
        drop(h);
    }
    if let Some(rss) = crate::bench::proc_mib(server.child.id(), "VmRSS") {
        println!("r8s server RSS after the runs: {rss:.0} MiB (API server, controllers and proxy)");
    }
    if !args.routes.is_empty() {
        crate::bench_gateway::run(&client, server.child.id(), gw_port, &args.routes).await?;
    }
    Ok(())
}
