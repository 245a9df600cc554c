//! The kubelet API over TLS: what the API server proxies `kubectl logs`
//! to. Only clients with a certificate from the cluster CA get in, and
//! only to what a SubjectAccessReview allows them (see [`super::authz`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};

use crate::KubeletError;
use crate::logs::{self, LogQuery};

type Body = BoxBody<Bytes, Infallible>;

pub use crate::registry::{CtrLogs, PodEntry, Registry};

fn text(code: StatusCode, s: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(s.into()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Serves the kubelet API on `addr`; returns the bound port.
pub async fn serve(
    addr: SocketAddr,
    client_ca_pem: &str,
    registry: Registry,
    exec: crate::exec::ExecCtx,
    authz: Arc<super::authz::Authorizer>,
) -> Result<u16, KubeletError> {
    let tls = server_config(addr, client_ca_pem)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| KubeletError::Config(format!("kubelet API on {addr}: {e}")))?;
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(addr.port());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let registry = registry.clone();
            let exec = exec.clone();
            let authz = authz.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let caller = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| super::authz::Caller::from_cert(c));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let registry = registry.clone();
                    let exec = exec.clone();
                    let authz = authz.clone();
                    let caller = caller.clone();
                    async move {
                        if req.uri().path() != "/healthz" {
                            let (verb, sub) =
                                super::authz::attributes(req.method(), req.uri().path());
                            if let Err(why) = authz.check(caller.as_ref(), verb, sub).await {
                                return Ok::<_, Infallible>(text(StatusCode::FORBIDDEN, why));
                            }
                        }
                        Ok::<_, Infallible>(route(req, registry, exec).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(port)
}

fn server_config(
    addr: SocketAddr,
    ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, KubeletError> {
    controller_runtime::secure::server_config(addr, ca_pem, false)
        .map_err(|e| KubeletError::Config(format!("kubelet {e}")))
}

async fn route(
    req: Request<Incoming>,
    registry: Registry,
    exec: crate::exec::ExecCtx,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["stats", "summary"] if req.method() == http::Method::GET => {
            let summary = exec.stats.summary(&registry);
            Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(summary.to_string())).boxed())
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""))
        }
        ["metrics", rest @ ..] if req.method() == http::Method::GET => {
            let body = match rest {
                [] => crate::node::metrics::agent(&exec.stats, &registry),
                ["resource"] => crate::node::metrics::resource(&exec.stats, &registry),
                ["cadvisor"] => crate::node::metrics::cadvisor(&exec.stats, &registry),
                _ => return text(StatusCode::NOT_FOUND, format!("no kubelet endpoint {path}")),
            };
            Response::builder()
                .header(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(Full::new(Bytes::from(body)).boxed())
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""))
        }
        ["containerLogs", ns, pod, container] if req.method() == http::Method::GET => {
            container_logs(ns, pod, container, &query, registry).await
        }
        ["exec", ns, pod, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec_session(req, &ns, &pod, &container, registry, exec)
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            attach_session(req, &ns, &pod, &container, registry)
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(req, &ns, &pod, registry)
        }
        ["healthz"] => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, format!("no kubelet endpoint {path}")),
    }
}

async fn container_logs(
    ns: &str,
    pod: &str,
    container: &str,
    q: &HashMap<String, String>,
    registry: Registry,
) -> Response<Body> {
    let lookup = |registry: &Registry| -> Option<CtrLogs> {
        let r = registry.lock().ok()?;
        r.get(&(ns.to_string(), pod.to_string()))?
            .containers
            .get(container)
            .cloned()
    };
    let Some(info) = lookup(&registry) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start or is unknown to this node"
            ),
        );
    };
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let previous = flag("previous");
    let index = if previous {
        info.current - 1
    } else {
        info.current
    };
    if index < 0 {
        return text(
            StatusCode::BAD_REQUEST,
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
        );
    }
    let file = info.dir.join(format!("{index}.log"));
    let mut lq = LogQuery {
        tail_lines: q.get("tailLines").and_then(|v| v.parse().ok()),
        timestamps: flag("timestamps"),
        since_time: q.get("sinceTime").cloned(),
        limit_bytes: q.get("limitBytes").and_then(|v| v.parse().ok()),
    };
    if let Some(secs) = q.get("sinceSeconds").and_then(|v| v.parse::<i64>().ok()) {
        let t = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_secs(secs);
        lq.since_time = Some(t.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string());
    }
    let initial = match tokio::task::spawn_blocking({
        let file = file.clone();
        let lq = lq.clone();
        move || logs::read(&file, &lq)
    })
    .await
    {
        Ok(Ok(s)) => s,
        _ => String::new(),
    };
    if !flag("follow") || previous {
        return text(StatusCode::OK, initial);
    }
    // Follow: send what is there, then new records as they are written,
    // until the container's run ends.
    let start = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
    let timestamps = lq.timestamps;
    let state = (Some(Bytes::from(initial)), start, String::new(), false);
    let stream = futures::stream::unfold(state, move |(first, mut pos, mut partial, done)| {
        let file = file.clone();
        let registry = registry.clone();
        let (ns, pod, container) = (ns.clone(), pod.clone(), container.clone());
        async move {
            if let Some(b) = first {
                return Some((
                    Ok::<_, Infallible>(Frame::data(b)),
                    (None, pos, partial, false),
                ));
            }
            if done {
                return None;
            }
            loop {
                let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                if len > pos {
                    let chunk = read_from(&file, pos, len);
                    pos = len;
                    partial.push_str(&chunk);
                    let mut out = String::new();
                    while let Some(nl) = partial.find('\n') {
                        let line: String = partial.drain(..=nl).collect();
                        if let Some(r) = logs::parse(line.trim_end_matches('\n')) {
                            out.push_str(&logs::render(&r, timestamps));
                        }
                    }
                    if !out.is_empty() {
                        return Some((
                            Ok(Frame::data(Bytes::from(out))),
                            (None, pos, partial, false),
                        ));
                    }
                }
                let still = {
                    let r = registry.lock().ok();
                    r.and_then(|r| {
                        r.get(&(ns.clone(), pod.clone()))
                            .and_then(|p| p.containers.get(&container))
                            .cloned()
                    })
                };
                match still {
                    Some(c) if c.running && c.dir.join(format!("{}.log", c.current)) == file => {}
                    _ => {
                        // One last look for records written at the end.
                        let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                        if len > pos {
                            continue;
                        }
                        return None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""))
}

fn read_from(file: &std::path::Path, from: u64, to: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(file) else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; (to - from) as usize];
    let n = f.read(&mut buf).unwrap_or(0);
    buf.truncate(n);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The runtime id of a running container, from the pod registry.
fn running_id(registry: &Registry, ns: &str, pod: &str, container: &str) -> Option<String> {
    registry
        .lock()
        .ok()
        .and_then(|r| {
            r.get(&(ns.to_string(), pod.to_string()))?
                .containers
                .get(container)
                .cloned()
        })
        .filter(|c| c.running)
        .and_then(|c| c.id)
}

/// The 101 answer to a WebSocket upgrade with the chosen sub-protocol.
fn websocket_accepted(key: &str, protocol: &str) -> Response<Body> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header("Sec-WebSocket-Accept", accept)
        .header("Sec-WebSocket-Protocol", protocol)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""))
}

/// Every value of a header, comma lists split.
fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Whether the request asks for a SPDY/3.1 upgrade.
fn wants_spdy(req: &Request<Incoming>) -> bool {
    header_values(req, "upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("spdy/3.1"))
}

/// What a SPDY upgrade gets when no stream protocol is shared (as
/// upstream's `httpstream.Handshake`).
fn spdy_refused(offered: &[String], supported: &[&str]) -> Response<Body> {
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header("X-Accepted-Stream-Protocol-Versions", supported.join(", "))
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(
            Full::new(Bytes::from(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            )))
            .boxed(),
        )
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""))
}

/// The 101 answer to a SPDY upgrade.
fn spdy_accepted(protocol: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""))
}

/// How an exec or attach session reaches its client.
enum Transport {
    /// A WebSocket with this channel protocol (and `Sec-WebSocket-Key`).
    WebSocket(&'static str, String),
    /// SPDY/3.1 with this stream protocol.
    Spdy(&'static str),
}

impl Transport {
    /// Picks the transport from the upgrade headers, or the refusal.
    fn negotiate(req: &Request<Incoming>, what: &str) -> Result<Transport, Box<Response<Body>>> {
        if wants_spdy(req) {
            let offered = header_values(req, "x-stream-protocol-version");
            return match crate::remotecommand::negotiate(&offered) {
                Some(p) => Ok(Transport::Spdy(p)),
                None => Err(Box::new(spdy_refused(
                    &offered,
                    crate::remotecommand::PROTOCOLS,
                ))),
            };
        }
        let upgrade = header_values(req, "upgrade");
        if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "{what} needs a WebSocket (v5.channel.k8s.io or v4.channel.k8s.io) or SPDY/3.1 upgrade"
                ),
            )));
        }
        let offer = header_values(req, "sec-websocket-protocol").join(",");
        let Some(protocol) = crate::exec::negotiate(&offer) else {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "no supported streaming protocol offered (supported: {})",
                    crate::exec::PROTOCOLS.join(", ")
                ),
            )));
        };
        let key = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok(Transport::WebSocket(protocol, key))
    }

    /// The 101 answer.
    fn accepted(&self) -> Response<Body> {
        match self {
            Transport::WebSocket(p, key) => websocket_accepted(key, p),
            Transport::Spdy(p) => spdy_accepted(p),
        }
    }
}

/// Upgrades `exec` requests to a WebSocket and runs the command.
fn exec_session(
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    registry: Registry,
    ctx: crate::exec::ExecCtx,
) -> Response<Body> {
    let transport = match Transport::negotiate(&req, "exec") {
        Ok(t) => t,
        Err(refused) => return *refused,
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let mut command = Vec::new();
    let mut stdin = false;
    let mut tty = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "command" => command.push(v.into_owned()),
            // `input` is what upstream's API server asks a kubelet for.
            "stdin" | "input" => stdin = v == "true" || v == "1",
            "tty" => tty = v == "true" || v == "1",
            _ => {}
        }
    }
    if command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        );
    }
    let id = running_id(&registry, ns, pod, container);
    let Some(id) = id else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not running in pod {pod}"),
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut request = crate::exec::ExecRequest {
        id,
        command,
        stdin,
        tty,
        protocol: String::new(),
    };
    let resp = transport.accepted();
    match transport {
        Transport::WebSocket(protocol, _) => {
            request.protocol = protocol.to_string();
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(up) => {
                        crate::exec::run(hyper_util::rt::TokioIo::new(up), ctx, request).await
                    }
                    Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
                }
            });
        }
        Transport::Spdy(protocol) => {
            // On SPDY the client closes stdin by closing its stream, which
            // the session turns into v5's close message.
            request.protocol = crate::exec::PROTOCOLS[0].to_string();
            let wanted = crate::remotecommand::Wanted::from_query(&query);
            tokio::spawn(async move {
                let up = match on_upgrade.await {
                    Ok(up) => up,
                    Err(e) => return tracing::debug!(error = %e, "exec upgrade failed"),
                };
                let io = hyper_util::rt::TokioIo::new(up);
                match crate::remotecommand::accept(io, protocol, wanted).await {
                    Ok((tx, rx)) => crate::exec::run_on(tx, rx, ctx, request).await,
                    Err(e) => tracing::debug!(error = %e, "exec over SPDY"),
                }
            });
        }
    }
    resp
}

/// Upgrades `attach` requests (WebSocket or SPDY) and joins them to the
/// container's stdio through its shim (see `attach.rs`).
fn attach_session(
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    registry: Registry,
) -> Response<Body> {
    let transport = match Transport::negotiate(&req, "attach") {
        Ok(t) => t,
        Err(refused) => return *refused,
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let stdin = url::form_urlencoded::parse(query.as_bytes())
        .any(|(k, v)| (k == "stdin" || k == "input") && (v == "true" || v == "1"));
    let id = running_id(&registry, ns, pod, container);
    let Some(id) = id else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not running in pod {pod}"),
        );
    };
    let socket = crate::attach::socket_path(&id);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let resp = transport.accepted();
    match transport {
        Transport::WebSocket(protocol, _) => {
            let proto = protocol.to_string();
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(up) => {
                        let io = hyper_util::rt::TokioIo::new(up);
                        crate::attach::run(io, socket, proto, stdin).await
                    }
                    Err(e) => tracing::debug!(error = %e, "attach upgrade failed"),
                }
            });
        }
        Transport::Spdy(protocol) => {
            let wanted = crate::remotecommand::Wanted::from_query(&query);
            let proto = crate::exec::PROTOCOLS[0].to_string();
            tokio::spawn(async move {
                let up = match on_upgrade.await {
                    Ok(up) => up,
                    Err(e) => return tracing::debug!(error = %e, "attach upgrade failed"),
                };
                let io = hyper_util::rt::TokioIo::new(up);
                match crate::remotecommand::accept(io, protocol, wanted).await {
                    Ok((tx, rx)) => crate::attach::run_on(tx, rx, socket, proto, stdin).await,
                    Err(e) => tracing::debug!(error = %e, "attach over SPDY"),
                }
            });
        }
    }
    resp
}

/// Upgrades `portForward` requests: SPDY/3.1, SPDY in a WebSocket, or v4
/// channel WebSocket (see `portforward.rs`).
fn port_forward(
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    registry: Registry,
) -> Response<Body> {
    use crate::portforward as pf;
    let all = |n: &str| header_values(&req, n);
    let upgrade = all("upgrade");
    let connection = all("connection");
    let websocket = upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"));
    let spdy = upgrade.iter().any(|u| u.eq_ignore_ascii_case("spdy/3.1"));
    let upgrading = connection.iter().any(|c| c.eq_ignore_ascii_case("upgrade"));
    if !upgrading || !(websocket || spdy) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to upgrade: missing upgrade headers in request: Connection: {connection:?}, Upgrade: {upgrade:?}"
            ),
        );
    }
    let entry = registry
        .lock()
        .ok()
        .and_then(|r| r.get(&(ns.to_string(), pod.to_string())).cloned());
    let Some((uid, Some(addr))) = entry.map(|e| (e.uid, e.addr)) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {pod} in namespace {ns} is not running on this node"),
        );
    };
    let target = pf::Target {
        addr,
        pod_full_name: format!("{pod}_{ns}"),
        uid,
    };
    let versions = all("x-stream-protocol-version");
    let offered = all("sec-websocket-protocol");
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let query: Vec<String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == "port")
            .map(|(_, v)| v.into_owned())
            .collect();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let io = |up: hyper::upgrade::Upgraded| hyper_util::rt::TokioIo::new(up);
    if websocket {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let mut resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::CONNECTION, "Upgrade")
            .header("Sec-WebSocket-Accept", accept);
        if offered.iter().any(|p| p == pf::SPDY_TUNNEL_PROTOCOL) {
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    pf::serve_spdy_tunnel(io(up), target).await;
                }
            });
            resp = resp.header("Sec-WebSocket-Protocol", pf::SPDY_TUNNEL_PROTOCOL);
        } else {
            let ports = match pf::parse_ports(&query) {
                Ok(p) => p,
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            };
            let Some(protocol) = pf::negotiate_channel(&offered.join(",")) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "no supported port-forward protocol offered (supported: {})",
                        pf::CHANNEL_PROTOCOLS.join(", ")
                    ),
                );
            };
            let base64 = protocol.contains("base64");
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    pf::serve_channels(io(up), target, ports, base64).await;
                }
            });
            if !protocol.is_empty() {
                resp = resp.header("Sec-WebSocket-Protocol", protocol);
            }
        }
        return resp
            .body(Full::new(Bytes::new()).boxed())
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""));
    }
    if !versions.iter().any(|v| v == pf::PORT_FORWARD_PROTOCOL) {
        return Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header("X-Accepted-Stream-Protocol-Versions", pf::PORT_FORWARD_PROTOCOL)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(
                Full::new(Bytes::from(format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {versions:?}, server accepts [\"{}\"]",
                    pf::PORT_FORWARD_PROTOCOL
                )))
                .boxed(),
            )
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""));
    }
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => pf::serve_spdy(io(up), target).await,
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", pf::PORT_FORWARD_PROTOCOL)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, ""))
}
