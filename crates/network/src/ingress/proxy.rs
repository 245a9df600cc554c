//! The ingress proxy: HTTP/1.1 and HTTP/2 (ALPN on TLS) on hyper, TLS
//! terminated with rustls and the certificate chosen by SNI, requests sent
//! straight to a ready endpoint (round robin; the next endpoint on a
//! connection failure), `X-Forwarded-For`/`-Proto`/`-Host` set, upgrades
//! (WebSocket) spliced through. Built on hyper directly rather than a
//! proxy framework: it is already the stack of the API server, and the
//! proxy needs little beyond routing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::routes::Table;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// The table the proxy routes by, swapped whole on every change.
pub type Shared = Arc<RwLock<Arc<Table>>>;

/// Hop-by-hop headers a proxy must not forward.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Most bytes of a request body buffered (for retries).
const MAX_BODY: usize = 64 << 20;

/// The proxy's state.
pub struct Proxy {
    table: Shared,
    /// The Gateway routes, by listening port.
    pub(crate) gateway: GatewayShared,
    /// The ports of the Ingress listeners (HTTP, HTTPS): Ingress rules
    /// apply there only.
    ingress_ports: (u16, u16),
    client: Client<HttpConnector, Full<Bytes>>,
    /// HTTP/2 without TLS (h2c), for gRPC backends; bodies stream.
    pub(crate) h2: Client<HttpConnector, Incoming>,
    next: AtomicUsize,
}

/// The Gateway table the proxy routes by, swapped whole on every change.
pub type GatewayShared = Arc<RwLock<Arc<crate::gateway::table::Table>>>;

/// A plain-text answer.
pub(crate) fn text(code: StatusCode, s: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from_static(s.as_bytes()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed()))
}

/// How a request is changed on its way to a backend (Gateway filters).
#[derive(Default)]
pub(crate) struct Edits<'a> {
    /// Request headers.
    pub request_headers: Option<&'a crate::gateway::table::HeaderEdit>,
    /// Response headers.
    pub response_headers: Option<&'a crate::gateway::table::HeaderEdit>,
    /// A new Host.
    pub host: Option<&'a str>,
    /// A new path (the query is kept).
    pub path: Option<String>,
    /// Copies of the request go here too.
    pub mirrors: &'a [Arc<super::routes::Backend>],
    /// Whole request.
    pub timeout: Option<Duration>,
    /// Each try.
    pub try_timeout: Option<Duration>,
}

/// The request's host (Host header, else the URI's authority).
pub(crate) fn request_host<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// The host without its port, lowercase.
pub(crate) fn bare_host(host: &str) -> String {
    let h = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    h.to_lowercase()
}

impl Proxy {
    /// A proxy over `table` (Ingress) and `gateway` (Gateway routes), with
    /// the Ingress listeners on `ingress_ports` (HTTP, HTTPS).
    pub fn new(table: Shared, gateway: GatewayShared, ingress_ports: (u16, u16)) -> Arc<Proxy> {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_secs(5)));
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(conn.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_only(true)
            .build(conn);
        Arc::new(Proxy {
            table,
            gateway,
            ingress_ports,
            client,
            h2,
            next: AtomicUsize::new(0),
        })
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
        port: u16,
    ) -> Response<Body> {
        let host = request_host(&req);
        let gateway = self.gateway.read().map(|t| t.clone()).unwrap_or_default();
        if let Some(pt) = gateway.ports.get(&port) {
            let bare = bare_host(&host);
            let view = crate::gateway::table::Request {
                host: &bare,
                path: req.uri().path(),
                query: req.uri().query(),
                method: req.method(),
                headers: req.headers(),
            };
            if let Some(r) = pt.route(&view) {
                let (action, prefix) = (r.action.clone(), r.prefix.map(str::to_string));
                return self
                    .gateway_request(req, &action, prefix.as_deref(), peer, tls, port, &host)
                    .await;
            }
        }
        if port != self.ingress_ports.0 && port != self.ingress_ports.1 {
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        }
        let path = req.uri().path().to_string();
        let table = self.table.read().map(|t| t.clone()).unwrap_or_default();
        let Some(backend) = table.route(&host, &path) else {
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        if backend.endpoints.is_empty() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no available server\n");
        }
        self.forward(req, &backend, peer, tls, &host, Edits::default())
            .await
    }

    /// Sends `req` to one of `backend`'s endpoints (round robin; up to
    /// three on connection failures), with `edits`.
    pub(crate) async fn forward(
        &self,
        mut req: Request<Incoming>,
        backend: &super::routes::Backend,
        peer: SocketAddr,
        tls: bool,
        host: &str,
        edits: Edits<'_>,
    ) -> Response<Body> {
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let body = if upgrade {
            Bytes::new()
        } else {
            match http_body_util::Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
            }
        };
        forwarded_headers(&mut parts, peer, tls, host);
        if let Some(e) = edits.request_headers {
            e.apply(&mut parts.headers);
        }
        if let Some(h) = edits.host
            && let Ok(v) = HeaderValue::from_str(h)
        {
            parts.headers.insert(header::HOST, v);
        }
        parts.version = http::Version::HTTP_11;
        let pq = match (&edits.path, parts.uri.query()) {
            (Some(p), Some(q)) => format!("{p}?{q}"),
            (Some(p), None) => p.clone(),
            (None, _) => parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
        };
        for m in edits.mirrors {
            self.mirror(m, &parts, &pq, body.clone());
        }
        let n = backend.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let deadline = edits.timeout.map(|t| tokio::time::Instant::now() + t);
        // Up to three endpoints: a refused connection moves on to the
        // next, anything after the request was sent is the answer.
        for i in 0..n.min(3) {
            let ep = backend.endpoints[(start + i) % n];
            let Ok(uri) = format!("http://{ep}{pq}").parse::<http::Uri>() else {
                return text(StatusCode::BAD_REQUEST, "bad request path\n");
            };
            let mut out = Request::from_parts(parts.clone(), Full::new(body.clone()));
            *out.uri_mut() = uri;
            let mut limit = edits.try_timeout.unwrap_or(Duration::from_secs(60));
            if let Some(d) = deadline {
                limit = limit.min(d.saturating_duration_since(tokio::time::Instant::now()));
            }
            let resp = tokio::time::timeout(limit, self.client.request(out)).await;
            match resp {
                Ok(Ok(mut resp)) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client_upgrade) = client_upgrade
                    {
                        let backend_upgrade = hyper::upgrade::on(&mut resp);
                        tokio::spawn(async move {
                            if let (Ok(a), Ok(b)) = (client_upgrade.await, backend_upgrade.await) {
                                let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                            }
                        });
                        let (p, _) = resp.into_parts();
                        return Response::from_parts(
                            p,
                            Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
                        );
                    }
                    let (mut p, b) = resp.into_parts();
                    for h in HOP {
                        p.headers.remove(*h);
                    }
                    if let Some(e) = edits.response_headers {
                        e.apply(&mut p.headers);
                    }
                    return Response::from_parts(p, b.boxed());
                }
                Ok(Err(e)) if e.is_connect() => {
                    tracing::debug!(backend = %backend.name, endpoint = %ep, error = %e, "ingress: connect failed; next endpoint");
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(backend = %backend.name, endpoint = %ep, error = %e, "ingress: backend failed");
                    return text(StatusCode::BAD_GATEWAY, "bad gateway\n");
                }
                Err(_) => return text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n"),
            }
        }
        text(StatusCode::BAD_GATEWAY, "bad gateway\n")
    }

    /// Sends a copy of a request to `backend` and forgets the answer.
    fn mirror(
        &self,
        backend: &super::routes::Backend,
        parts: &http::request::Parts,
        pq: &str,
        body: Bytes,
    ) {
        if backend.endpoints.is_empty() {
            return;
        }
        let ep =
            backend.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % backend.endpoints.len()];
        let Ok(uri) = format!("http://{ep}{pq}").parse::<http::Uri>() else {
            return;
        };
        let mut out = Request::from_parts(parts.clone(), Full::new(body));
        *out.uri_mut() = uri;
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(30), client.request(out)).await
            {
                let _ = resp.into_body().collect().await;
            }
        });
    }

    /// Serves plain HTTP (h1 and h2c) on `listener`.
    pub async fn serve_http(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move { me.connection(TokioIo::new(tcp), peer, false, port).await });
        }
    }

    /// Serves HTTPS on `listener` with `tls` (certificates by SNI).
    pub async fn serve_https(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (me, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    me.connection(TokioIo::new(stream), peer, true, port).await;
                }
            });
        }
    }

    async fn connection<I>(self: Arc<Self>, io: I, peer: SocketAddr, tls: bool, port: u16)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let me = self.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req, peer, tls, port).await) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(io, svc)
            .await;
    }
}

/// Drops hop-by-hop headers (keeping an upgrade) and sets
/// `X-Forwarded-For`/`-Proto`/`-Host`.
pub(crate) fn forwarded_headers(
    parts: &mut http::request::Parts,
    peer: SocketAddr,
    tls: bool,
    host: &str,
) {
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    for h in HOP {
        parts.headers.remove(*h);
    }
    if let Some(u) = upgrade_value {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u);
    }
    let xff = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts.headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Ok(v) = HeaderValue::from_str(host) {
        parts.headers.insert("x-forwarded-host", v);
    }
}

/// Picks the certificate by SNI from the current tables (the Gateway
/// listeners on this port, then, on the Ingress HTTPS port, the
/// Ingresses), with a self-signed fallback for names nothing covers.
#[derive(Debug)]
pub struct Sni {
    table: Shared,
    gateway: GatewayShared,
    port: u16,
    ingress: bool,
    fallback: Arc<rustls::sign::CertifiedKey>,
    cache: RwLock<std::collections::HashMap<(String, String), Arc<rustls::sign::CertifiedKey>>>,
}

/// A certified key from PEM.
pub fn certified(cert_pem: &str, key_pem: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .ok()?;
    if certs.is_empty() {
        return None;
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).ok()??;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    Some(Arc::new(rustls::sign::CertifiedKey::new(certs, signer)))
}

impl Sni {
    /// A resolver for the listener on `port` (`ingress`: the Ingress
    /// HTTPS listener), answering unknown names with `fallback`.
    pub fn new(
        table: Shared,
        gateway: GatewayShared,
        port: u16,
        ingress: bool,
        fallback: Arc<rustls::sign::CertifiedKey>,
    ) -> Sni {
        Sni {
            table,
            gateway,
            port,
            ingress,
            fallback,
            cache: RwLock::default(),
        }
    }

    fn cached(&self, cert: &super::routes::Cert) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let key = (cert.cert_pem.clone(), cert.key_pem.clone());
        if let Some(ck) = self.cache.read().ok().and_then(|c| c.get(&key).cloned()) {
            return Some(ck);
        }
        let ck = certified(&cert.cert_pem, &cert.key_pem)?;
        if let Ok(mut c) = self.cache.write() {
            if c.len() > 1024 {
                c.clear();
            }
            c.insert(key, ck.clone());
        }
        Some(ck)
    }
}

impl rustls::server::ResolvesServerCert for Sni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello.server_name().unwrap_or("");
        let gateway = self.gateway.read().ok()?.clone();
        if let Some(c) = gateway.ports.get(&self.port).and_then(|p| p.cert_for(name)) {
            return self.cached(c).or_else(|| Some(self.fallback.clone()));
        }
        if self.ingress {
            let table = self.table.read().ok()?.clone();
            if let Some(c) = table.cert_for(name) {
                return self.cached(c).or_else(|| Some(self.fallback.clone()));
            }
        }
        Some(self.fallback.clone())
    }
}
