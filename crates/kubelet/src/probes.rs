//! Container probes: exec, httpGet and tcpSocket checks with upstream's
//! timing (initial delay, period, timeout, success and failure
//! thresholds).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where and how to probe one container.
pub struct Target<'a> {
    /// The pod's IP (probes connect to it).
    pub pod_ip: &'a str,
    /// The container (for named ports).
    pub container: &'a Container,
    /// Runtime id (exec probes).
    pub id: &'a str,
    /// The `shim-exec` executable.
    pub shim_exe: &'a Path,
    /// The libcontainer state root.
    pub state_root: &'a Path,
}

/// One probe's running tally.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Consecutive successes.
    pub successes: i32,
    /// Consecutive failures.
    pub failures: i32,
    /// When it may run next.
    pub next: Option<Instant>,
    /// The last verdict after thresholds (None: not decided yet).
    pub verdict: Option<bool>,
}

impl Tally {
    /// Whether the probe is due, given the container's start.
    pub fn due(&self, p: &Probe, started: Instant) -> bool {
        match self.next {
            Some(t) => Instant::now() >= t,
            None => {
                started.elapsed()
                    >= Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
            }
        }
    }

    /// Records a result and returns the verdict after thresholds.
    pub fn record(&mut self, p: &Probe, ok: bool) -> Option<bool> {
        let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        self.next = Some(Instant::now() + period);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= p.success_threshold.unwrap_or(1).max(1) {
                self.verdict = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= p.failure_threshold.unwrap_or(3).max(1) {
                self.verdict = Some(false);
            }
        }
        self.verdict
    }
}

fn port_of(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// Runs the probe once; true on success.
/// Runs a probe once. `Err` carries why it failed, worded as upstream's
/// prober words it (the text of the `Unhealthy` event).
pub async fn run(p: &Probe, t: &Target<'_>) -> Result<(), String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let refused = |host: &str, port: u16, e: &std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
            _ => e.to_string(),
        };
        format!("dial tcp {host}:{port}: {why}")
    };
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Err("exec probe has no command".into());
        }
        let child = tokio::process::Command::new(t.shim_exe)
            .env(crate::HELPER_ENV.0, crate::HELPER_ENV.1)
            .arg("shim-exec")
            .arg("--root")
            .arg(t.state_root)
            .arg("--id")
            .arg(t.id)
            .arg("--")
            .args(&cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .env("R8S_LOG", "error")
            .kill_on_drop(true)
            .output();
        return match tokio::time::timeout(timeout, child).await {
            Err(_) => Err(format!("command {:?} timed out", cmd.join(" "))),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                // Upstream reports what the command printed, capped.
                let mut text = out.stdout;
                text.extend_from_slice(&out.stderr);
                text.truncate(10 * 1024);
                Err(String::from_utf8_lossy(&text).into_owned())
            }
        };
    }
    if let Some(h) = &p.http_get {
        let Some(port) = port_of(&h.port, t.container) else {
            return Err(format!("unknown port {:?}", h.port));
        };
        let host = h.host.clone().unwrap_or_else(|| t.pod_ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let scheme = if h.scheme.as_deref() == Some("HTTPS") {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{host}:{port}{path}");
        let fut = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("Get {url:?}: {}", refused(&host, port, &e)))?;
            if scheme == "https" {
                // TLS probes skip verification upstream; r8s only checks
                // the port answers until it speaks TLS here.
                return Ok(());
            }
            let mut req = format!(
                "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n"
            );
            for hd in h.http_headers.iter().flatten() {
                req.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
            }
            req.push_str("\r\n");
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            let mut buf = vec![0u8; 64];
            let mut got = Vec::new();
            while !got.contains(&b'\n') && got.len() < 1024 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&got);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if (200..400).contains(&code) {
                Ok(())
            } else if code == 0 {
                Err(format!("Get {url:?}: EOF"))
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        };
        return tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| {
            Err(format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        });
    }
    if let Some(ts) = &p.tcp_socket {
        let Some(port) = port_of(&ts.port, t.container) else {
            return Err(format!("unknown port {:?}", ts.port));
        };
        let host = ts.host.clone().unwrap_or_else(|| t.pod_ip.to_string());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(refused(&host, port, &e)),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(g) = &p.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return Err(format!("invalid port {}", g.port));
        };
        let service = g.service.as_deref().unwrap_or("");
        let ok = tokio::time::timeout(timeout, grpc_serving(t.pod_ip, port, service))
            .await
            .unwrap_or(false);
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "service unhealthy or unreachable: no SERVING answer from {}:{port} within {}s",
                t.pod_ip,
                timeout.as_secs()
            ))
        };
    }
    Err("probe has no action".into())
}

/// The gRPC health checking protocol (grpc.health.v1.Health/Check) over
/// plaintext HTTP/2, as upstream's gRPC probe: healthy only when the
/// server answers SERVING with grpc-status 0.
pub async fn grpc_serving(host: &str, port: u16, service: &str) -> bool {
    use http_body_util::BodyExt;
    let Ok(tcp) = tokio::net::TcpStream::connect((host, port)).await else {
        return false;
    };
    let Ok((mut send, conn)) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    else {
        return false;
    };
    tokio::spawn(conn);
    // HealthCheckRequest { string service = 1 }, in a gRPC frame.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let Ok(req) = http::Request::post(format!("http://{host}:{port}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
    else {
        return false;
    };
    let Ok(resp) = send.send_request(req).await else {
        return false;
    };
    if resp.status() != 200 {
        return false;
    }
    // A trailers-only error answer carries grpc-status in the headers.
    if resp
        .headers()
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() != b"0")
    {
        return false;
    }
    let Ok(collected) = resp.into_body().collect().await else {
        return false;
    };
    let ok_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .is_none_or(|s| s.as_bytes() == b"0");
    let body = collected.to_bytes();
    // HealthCheckResponse { ServingStatus status = 1 }: SERVING is 1.
    ok_status && body.len() >= 5 && serving_status(&body[5..]) == Some(1)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field 1 (varint) of a HealthCheckResponse.
fn serving_status(msg: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < msg.len() {
        let key = msg[i];
        i += 1;
        let mut v = 0u64;
        let mut shift = 0;
        if key & 7 == 0 {
            loop {
                let b = *msg.get(i)?;
                i += 1;
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            if key >> 3 == 1 {
                return Some(v);
            }
        } else {
            return None; // HealthCheckResponse has only the varint field
        }
    }
    // proto3 omits a zero (UNKNOWN) field.
    Some(0)
}

/// Runs a postStart or preStop handler (exec, httpGet, tcpSocket or
/// sleep) to completion within `limit`; returns why it failed.
pub async fn run_hook(
    h: &k8s_openapi::api::core::v1::LifecycleHandler,
    t: &Target<'_>,
    limit: Duration,
) -> Result<(), String> {
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(limit)).await;
        return Ok(());
    }
    // The probe machinery runs the same three actions.
    let as_probe = Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        tcp_socket: h.tcp_socket.clone(),
        timeout_seconds: Some(limit.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    if as_probe.exec.is_none() && as_probe.http_get.is_none() && as_probe.tcp_socket.is_none() {
        return Err("the handler has no action".into());
    }
    run(&as_probe, t).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_the_verdict() {
        let p = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(2),
            period_seconds: Some(1),
            ..Default::default()
        };
        let mut t = Tally::default();
        assert_eq!(t.record(&p, true), None);
        assert_eq!(t.record(&p, true), Some(true));
        assert_eq!(t.record(&p, false), Some(true), "one failure is not enough");
        assert_eq!(t.record(&p, false), Some(false));
        assert!(!t.due(&p, Instant::now()), "the next run waits a period");
    }

    /// A gRPC health server: "" is SERVING, anything else NOT_SERVING.
    async fn health_server() -> u16 {
        use http_body_util::BodyExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status: u8 = if body.len() > 5 { 2 } else { 1 };
                            let frame = bytes::Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let frames = futures::stream::iter(vec![
                                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(frame)),
                                Ok(hyper::body::Frame::trailers(trailers)),
                            ]);
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(http_body_util::StreamBody::new(frames))
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn grpc_probes_speak_the_health_protocol() {
        let port = health_server().await;
        assert!(grpc_serving("127.0.0.1", port, "").await);
        assert!(!grpc_serving("127.0.0.1", port, "down").await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(!grpc_serving("127.0.0.1", closed_port, "").await);
        assert_eq!(serving_status(&[]), Some(0));
        assert_eq!(serving_status(&[0x08, 0x01]), Some(1));
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c = Container {
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(port_of(&IntOrString::String("http".into()), &c), Some(8080));
        assert_eq!(port_of(&IntOrString::Int(9), &c), Some(9));
        assert_eq!(port_of(&IntOrString::String("nope".into()), &c), None);
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_a_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 512];
                    let n = s.read(&mut b).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&b[..n]).into_owned();
                    let code = if req.starts_with("GET /ok ") {
                        200
                    } else {
                        500
                    };
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        let c = Container::default();
        let t = Target {
            pod_ip: "127.0.0.1",
            container: &c,
            id: "x",
            shim_exe: Path::new("/nonexistent"),
            state_root: Path::new("/nonexistent"),
        };
        let http = |path: &str| Probe {
            http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(port)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run(&http("/ok"), &t).await, Ok(()));
        assert_eq!(
            run(&http("/bad"), &t).await,
            Err("HTTP probe failed with statuscode: 500".to_string())
        );
        let tcp = |port: u16| Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(i32::from(port)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run(&tcp(port), &t).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cport = closed.local_addr().unwrap().port();
        drop(closed);
        assert_eq!(
            run(&tcp(cport), &t).await,
            Err(format!(
                "dial tcp 127.0.0.1:{cport}: connect: connection refused"
            ))
        );
    }
}
