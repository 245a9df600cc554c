//! The Gateway half of `r8s bench ingress`: route-update propagation (an
//! HTTPRoute's backend changed through the API → the first request the
//! proxy answers from the new backend) and the server's memory with 1,000
//! and 5,000 HTTPRoutes attached to one Gateway, each with its own host.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

fn dynamic(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

/// GET `/` with `Host: host` on a kept-alive connection; the body.
fn get(conn: &mut Option<std::net::TcpStream>, port: u16, host: &str) -> Option<String> {
    if conn.is_none() {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.set_nodelay(true).ok()?;
        *conn = Some(s);
    }
    let s = conn.as_mut()?;
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        *conn = None;
        return None;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                *conn = None;
                return None;
            }
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Some(body[..len].trim().to_string());
            }
        }
    }
}

fn route(i: usize, service: &str) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("r{i}"), "namespace": "default"},
        "spec": {"parentRefs": [{"name": "bench"}], "hostnames": [format!("r{i}.bench")],
            "rules": [{"backendRefs": [{"name": service, "port": 80}]}]}})
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Creates the Gateway `bench` listening on `port` and an HTTPRoute for
/// `bench.local` to the Service `backend`.
pub async fn setup(client: &kube::Client, port: u16) -> anyhow::Result<()> {
    let gw: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"gatewayClassName": "r8s", "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}}))?;
    // The CRDs are installed by the server as it starts.
    let gateways = dynamic(client, "Gateway", "gateways");
    let mut tries = 0;
    while let Err(e) = gateways.create(&PostParams::default(), &gw).await {
        tries += 1;
        if tries > 100 {
            bail!("creating the Gateway: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut r = route(0, "backend");
    r["metadata"]["name"] = json!("rps");
    r["spec"]["hostnames"] = json!(["bench.local"]);
    let obj: DynamicObject = serde_json::from_value(r)?;
    dynamic(client, "HTTPRoute", "httproutes")
        .create(&PostParams::default(), &obj)
        .await?;
    Ok(())
}

/// Measures propagation and memory at each size in `sizes`; `port` is the
/// Gateway listener's, the Services `backend` (answers `ok`) and
/// `backend-new` (answers `new`) exist.
pub async fn run(
    client: &kube::Client,
    server_pid: u32,
    port: u16,
    sizes: &[usize],
) -> anyhow::Result<()> {
    let routes = dynamic(client, "HTTPRoute", "httproutes");
    let rss_before = crate::bench::proc_mib(server_pid, "VmRSS").unwrap_or(0.0);
    println!();
    println!(
        "{:>7} {:>14} {:>10} {:>10} {:>14}",
        "routes", "server RSS MiB", "update p50", "update p99", "attach all (s)"
    );
    println!("{:>7} {rss_before:>14.0}", 0);
    let mut made = 0;
    let mut flipped = std::collections::HashSet::new();
    for &n in sizes {
        let start = Instant::now();
        while made < n {
            let obj: DynamicObject = serde_json::from_value(route(made, "backend"))?;
            routes.create(&PostParams::default(), &obj).await?;
            made += 1;
        }
        // Every route served (the last one made answers).
        let mut conn = None;
        let last = format!("r{}.bench", n - 1);
        let deadline = Instant::now() + Duration::from_secs(300);
        while get(&mut conn, port, &last).as_deref() != Some("ok") {
            if Instant::now() > deadline {
                bail!("route {last} never served");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let attach = start.elapsed().as_secs_f64();
        // Let the status writes settle before measuring memory.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = crate::bench::proc_mib(server_pid, "VmRSS").unwrap_or(0.0);
        // Propagation: flip one route's backend and time the first
        // answer from the other.
        let mut times = Vec::new();
        for k in 0..30 {
            let i = (k * 7919) % n;
            let host = format!("r{i}.bench");
            // Move the route to the backend it is not on.
            let on_new = flipped.contains(&i);
            let (svc, want) = if on_new {
                ("backend", "ok")
            } else {
                ("backend-new", "new")
            };
            let p = json!({"spec": {"rules": [{"backendRefs": [{"name": svc, "port": 80}]}]}});
            let t = Instant::now();
            routes
                .patch(&format!("r{i}"), &PatchParams::default(), &Patch::Merge(&p))
                .await
                .context("patching a route")?;
            while get(&mut conn, port, &host).as_deref() != Some(want) {
                if t.elapsed() > Duration::from_secs(30) {
                    bail!("{host} never served by {svc}");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if on_new {
                flipped.remove(&i);
            } else {
                flipped.insert(i);
            }
        }
        println!(
            "{n:>7} {rss:>14.0} {:>8.1}ms {:>8.1}ms {attach:>14.1}",
            pct(&mut times, 0.5),
            pct(&mut times, 0.99)
        );
    }
    println!(
        "update = HTTPRoute patched through the API -> first request answered by the new backend; RSS is the whole server (API server, store, controllers, proxy)"
    );
    Ok(())
}
