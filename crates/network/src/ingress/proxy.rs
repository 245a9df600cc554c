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

type Body = BoxBody<Bytes, hyper::Error>;

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
    client: Client<HttpConnector, Full<Bytes>>,
    next: AtomicUsize,
}

fn text(code: StatusCode, s: &'static str) -> Response<Body> {
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

impl Proxy {
    /// A proxy over `table`.
    pub fn new(table: Shared) -> Arc<Proxy> {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_secs(5)));
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(conn);
        Arc::new(Proxy {
            table,
            client,
            next: AtomicUsize::new(0),
        })
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        let table = self.table.read().map(|t| t.clone()).unwrap_or_default();
        let Some(backend) = table.route(&host, &path) else {
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        if backend.endpoints.is_empty() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no available server\n");
        }
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
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert("x-forwarded-host", v);
        }
        parts.version = http::Version::HTTP_11;
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let n = backend.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Up to three endpoints: a refused connection moves on to the
        // next, anything after the request was sent is the answer.
        for i in 0..n.min(3) {
            let ep = backend.endpoints[(start + i) % n];
            let Ok(uri) = format!("http://{ep}{pq}").parse::<http::Uri>() else {
                return text(StatusCode::BAD_REQUEST, "bad request path\n");
            };
            let mut out = Request::from_parts(parts.clone(), Full::new(body.clone()));
            *out.uri_mut() = uri;
            let resp =
                tokio::time::timeout(Duration::from_secs(60), self.client.request(out)).await;
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

    /// Serves plain HTTP (h1 and h2c) on `listener`.
    pub async fn serve_http(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move { me.connection(TokioIo::new(tcp), peer, false).await });
        }
    }

    /// Serves HTTPS on `listener` with `tls` (certificates by SNI).
    pub async fn serve_https(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (me, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    me.connection(TokioIo::new(stream), peer, true).await;
                }
            });
        }
    }

    async fn connection<I>(self: Arc<Self>, io: I, peer: SocketAddr, tls: bool)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let me = self.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req, peer, tls).await) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(io, svc)
            .await;
    }
}

/// Picks the certificate by SNI from the current table, with a
/// self-signed fallback for names no Ingress covers.
#[derive(Debug)]
pub struct Sni {
    table: Shared,
    fallback: Arc<rustls::sign::CertifiedKey>,
    cache: RwLock<std::collections::HashMap<(String, String), Arc<rustls::sign::CertifiedKey>>>,
}

/// A certified key from PEM.
pub fn certified(cert_pem: &str, key_pem: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .ok()?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).ok()??;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    Some(Arc::new(rustls::sign::CertifiedKey::new(certs, signer)))
}

impl Sni {
    /// A resolver over `table`, answering unknown names with `fallback`.
    pub fn new(table: Shared, fallback: Arc<rustls::sign::CertifiedKey>) -> Sni {
        Sni {
            table,
            fallback,
            cache: RwLock::default(),
        }
    }
}

impl rustls::server::ResolvesServerCert for Sni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello.server_name()?;
        let table = self.table.read().ok()?.clone();
        let Some(cert) = table.cert_for(name) else {
            return Some(self.fallback.clone());
        };
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
