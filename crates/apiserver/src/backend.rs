//! Outbound HTTPS to the servers the API server calls: admission webhooks
//! and aggregated API servers. A target is a URL or a Service reached at
//! one of its ready endpoints (no dependency on the node's service
//! proxy); TLS is verified against the caller's `caBundle`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use store::SharedStore;

/// Why a call failed (the failure policy decides what that means).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

/// Where to send a request: address, TLS name, path.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address to connect to.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// The path (prefix) requests go to.
    pub path: String,
}

/// Why a Service could not be resolved to an endpoint.
#[derive(Debug)]
pub enum ResolveError {
    /// No such Service.
    ServiceNotFound,
    /// No ready endpoint for the port (named as given).
    NoEndpoints(String),
    /// Anything else.
    Other(String),
}

fn url_target(url: &str) -> Result<Target, CallError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| CallError(format!("webhook URL {url:?} must use https")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
        (
            h.to_string(),
            p.trim_start_matches(':').parse().unwrap_or(443),
        )
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().unwrap_or(443)),
            None => (authority.to_string(), 443),
        }
    };
    Ok(Target {
        server_name: host.clone(),
        host,
        port,
        path: path.to_string(),
    })
}

/// A Service's ready endpoint for `port`, as upstream's endpoint routing
/// resolves webhook and aggregated-API services.
pub async fn service_target(
    store: &SharedStore,
    ns: &str,
    name: &str,
    port: i64,
    path: &str,
) -> Result<Target, ResolveError> {
    let server_name = format!("{name}.{ns}.svc");
    let svc_info = api::catalogue::find("", "v1", "services")
        .ok_or_else(|| ResolveError::Other("no services".into()))?;
    let service = match crate::objects::load(store, svc_info, Some(ns), name).await {
        Ok((s, _)) => s,
        Err(e) if e.code == 404 => return Err(ResolveError::ServiceNotFound),
        Err(e) => return Err(ResolveError::Other(e.message)),
    };
    let sport = service["spec"]["ports"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["port"].as_i64() == Some(port))
                .cloned()
        })
        .ok_or_else(|| {
            ResolveError::Other(format!("service/{name} in \"{ns}\" has no port {port}"))
        })?;
    let port_name = sport["name"].as_str().unwrap_or("").to_string();
    let slices = store
        .range(&format!("/registry/endpointslices/{ns}/"), None, 0, 0)
        .await
        .map_err(|e| ResolveError::Other(e.to_string()))?;
    for kv in slices.kvs {
        let Ok(slice) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str() != Some(name) {
            continue;
        }
        let Some(p) = slice["ports"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            })
            .and_then(|p| p["port"].as_i64())
        else {
            continue;
        };
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            if ep["conditions"]["ready"].as_bool() == Some(false) {
                continue;
            }
            if let Some(addr) = ep["addresses"][0].as_str() {
                return Ok(Target {
                    host: addr.to_string(),
                    port: u16::try_from(p).unwrap_or(443),
                    server_name,
                    path: path.to_string(),
                });
            }
        }
    }
    Err(ResolveError::NoEndpoints(port_name))
}

/// TLS for a backend: its `caBundle` (else the system's trust store), or
/// no verification at all when the caller insists
/// (`insecureSkipTLSVerify`).
pub fn tls_config(
    ca_bundle: Option<&str>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, CallError> {
    if insecure {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServerCert(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))))
        .with_no_client_auth();
        return Ok(Arc::new(config));
    }
    let mut roots = rustls::RootCertStore::empty();
    let pem: Vec<u8> = match ca_bundle.filter(|b| !b.is_empty()) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| CallError(format!("caBundle is not base64: {e}")))?,
        // Without a caBundle the system's trust store is used, as upstream.
        None => std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default(),
    };
    for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(CallError(
            "no trusted certificate authority for the webhook".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CallError(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP/1.1 connection over TLS to `target`.
pub async fn connect<B>(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(target.server_name.clone())
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// POSTs `body` to the webhook of `client_config`, within `timeout`;
/// returns the parsed JSON answer.
pub async fn post(
    store: &SharedStore,
    client_config: &Value,
    body: &Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let target = match client_config["url"].as_str() {
        Some(u) => url_target(u)?,
        None => match client_config.get("service").filter(|s| s.is_object()) {
            Some(svc) => {
                let ns = svc["namespace"].as_str().unwrap_or("default");
                let name = svc["name"].as_str().unwrap_or("");
                service_target(
                    store,
                    ns,
                    name,
                    svc["port"].as_i64().unwrap_or(443),
                    svc["path"].as_str().unwrap_or("/"),
                )
                .await
                .map_err(|e| {
                    CallError(format!(
                        "failed to call webhook service {ns}/{name}: {}",
                        match e {
                            ResolveError::ServiceNotFound => "service not found".to_string(),
                            ResolveError::NoEndpoints(_) => "no ready endpoints".to_string(),
                            ResolveError::Other(m) => m,
                        }
                    ))
                })?
            }
            None => return Err(CallError("the webhook has neither url nor service".into())),
        },
    };
    let shown = match client_config["url"].as_str() {
        Some(u) => u.to_string(),
        None => format!(
            "https://{}:{}{}",
            target.server_name, target.port, target.path
        ),
    };
    let tls = tls_config(client_config["caBundle"].as_str(), false)?;
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let call = async {
        let mut sender = connect(&target, tls).await?;
        let req = http::Request::post(&target.path)
            .header(
                http::header::HOST,
                format!("{}:{}", target.server_name, target.port),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "the server responded with status code {}",
                status.as_u16()
            ));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("invalid response: {e}"))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError(format!(
            "failed to call webhook: Post \"{shown}\": {e}"
        ))),
        Err(_) => Err(CallError(format!(
            "failed to call webhook: Post \"{shown}\": context deadline exceeded"
        ))),
    }
}
