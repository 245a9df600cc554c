//! `r8s agent --server URL[,URL…] --token TOKEN`: joining a cluster with a
//! token, and staying connected while servers come and go.
//!
//! The token pins the cluster CA (see `apiserver::join`): the agent reads
//! `/cacerts` over an unverified connection, checks it against the token's
//! hash, and only then sends the secret, over TLS verified with that CA.
//! The issued credentials are kept in the data dir and reused.
//!
//! Failover works as in k3s: the agent's clients talk to a TCP balancer on
//! 127.0.0.1 that forwards each new connection to the first server that
//! accepts it, preferring the one that worked last. Every r8s serving
//! certificate carries 127.0.0.1, so TLS verification holds through it.
//! When a server dies its connections break, watches reconnect, and the
//! new connections reach a live server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use apiserver::join::{JoinResponse, ca_hash, parse_token};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::{TcpListener, TcpStream};

/// A server's address, from its URL.
#[derive(Clone, Debug)]
struct Server {
    url: String,
    host: String,
    port: u16,
}

fn parse_server(url: &str) -> anyhow::Result<Server> {
    let u = url::Url::parse(url).with_context(|| format!("--server {url:?}"))?;
    if u.scheme() != "https" {
        bail!("--server {url:?}: must be an https:// URL");
    }
    let host = u
        .host_str()
        .with_context(|| format!("--server {url:?}: no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    Ok(Server {
        url: url.trim_end_matches('/').to_string(),
        host,
        port: u.port().unwrap_or(6443),
    })
}

fn tls_config(ca_pem: Option<&str>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut cfg = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
                roots.add(c.context("parsing the cluster CA")?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(apiserver::tls::AnyServerCert(provider)))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One HTTPS request over HTTP/1.1; returns (status, body).
async fn request(
    server: &Server,
    ca_pem: Option<&str>,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca_pem)?));
    let name = rustls::pki_types::ServerName::try_from(server.host.clone())
        .with_context(|| format!("server name {:?}", server.host))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect((server.host.as_str(), server.port)),
    )
    .await
    .context("connect timed out")??;
    let tls = connector.connect(name, tcp).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{}:{}", server.host, server.port))
        .header("content-type", "application/json");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        send.send_request(req.body(Full::new(Bytes::from(body)))?),
    )
    .await
    .context("request timed out")??;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// Joins through the first server that answers.
async fn join(servers: &[Server], token: &str, node_name: &str) -> anyhow::Result<JoinResponse> {
    let (hash, secret) = parse_token(token).context(
        "--token: expected R8S<sha256 of the CA>::<secret>, as in the server's <data-dir>/token",
    )?;
    let mut errors = Vec::new();
    for s in servers {
        match join_one(s, hash, secret, node_name).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!(server = %s.url, error = %format!("{e:#}"), "join failed; trying the next server");
                errors.push(format!("{}: {e:#}", s.url));
            }
        }
    }
    bail!("could not join through any server: {}", errors.join("; "))
}

async fn join_one(
    s: &Server,
    hash: &str,
    secret: &str,
    node_name: &str,
) -> anyhow::Result<JoinResponse> {
    let (status, ca) = request(s, None, "GET", "/cacerts", None, Vec::new()).await?;
    if status != 200 {
        bail!("/cacerts answered {status}");
    }
    let ca = String::from_utf8(ca.to_vec()).context("/cacerts is not text")?;
    if !ca_hash(&ca).eq_ignore_ascii_case(hash) {
        bail!(
            "the server's CA does not match the token (wrong token, or not the cluster it names)"
        );
    }
    let body = serde_json::to_vec(&serde_json::json!({ "nodeName": node_name }))?;
    let (status, resp) = request(s, Some(&ca), "POST", "/r8s/v1/join", Some(secret), body).await?;
    if status != 200 {
        bail!(
            "join answered {status}: {}",
            String::from_utf8_lossy(&resp).trim()
        );
    }
    let r: JoinResponse = serde_json::from_slice(&resp).context("join response")?;
    if r.ca_cert != ca {
        bail!("join returned a different CA than /cacerts");
    }
    Ok(r)
}

/// Forwards connections on 127.0.0.1 to the first live server.
async fn balancer(servers: Vec<Server>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the agent's API balancer")?;
    let addr = listener.local_addr()?;
    let preferred = Arc::new(AtomicUsize::new(0));
    let servers = Arc::new(servers);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let servers = servers.clone();
            let preferred = preferred.clone();
            tokio::spawn(async move {
                let first = preferred.load(Ordering::Relaxed);
                for i in 0..servers.len() {
                    let idx = (first + i) % servers.len();
                    let s = &servers[idx];
                    let dial = TcpStream::connect((s.host.as_str(), s.port));
                    match tokio::time::timeout(Duration::from_secs(3), dial).await {
                        Ok(Ok(mut out)) => {
                            if idx != first {
                                tracing::info!(server = %s.url, "API connections fail over");
                                preferred.store(idx, Ordering::Relaxed);
                            }
                            let _ = out.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            return;
                        }
                        _ => tracing::debug!(server = %s.url, "server unreachable"),
                    }
                }
                tracing::warn!("no API server reachable");
            });
        }
    });
    Ok(addr)
}

/// Joins (or reuses earlier credentials) and returns a client that fails
/// over between `urls`, and the cluster CA.
pub async fn client(
    urls: &[String],
    token: &str,
    node_name: &str,
    data_dir: &Path,
) -> anyhow::Result<(kube::Client, String)> {
    let servers: Vec<Server> = urls
        .iter()
        .map(|u| parse_server(u))
        .collect::<anyhow::Result<_>>()?;
    if servers.is_empty() {
        bail!("--server: at least one URL");
    }
    let (hash, _) = parse_token(token).context(
        "--token: expected R8S<sha256 of the CA>::<secret>, as in the server's <data-dir>/token",
    )?;
    let path = data_dir.join("agent").join("credentials.json");
    let saved: Option<JoinResponse> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|r: &JoinResponse| ca_hash(&r.ca_cert).eq_ignore_ascii_case(hash));
    let creds = match saved {
        Some(c) => c,
        None => {
            let c = join(&servers, token, node_name).await?;
            save_private(&path, &serde_json::to_vec(&c)?)?;
            c
        }
    };
    let lb = balancer(servers).await?;
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: r8s\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: node\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: r8s\n  context:\n    cluster: r8s\n    user: node\ncurrent-context: r8s\n",
        port = lb.port(),
        ca = b64(&creds.ca_cert),
        cert = b64(&creds.cert),
        key = b64(&creds.key),
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).context("agent kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg).context("building the client")?;
    Ok((client, creds.ca_cert))
}

fn save_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_parse() {
        let s = parse_server("https://10.0.0.1:6443/").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("10.0.0.1", 6443));
        let s = parse_server("https://[::1]:7443").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 7443));
        assert!(parse_server("http://x:1").is_err());
    }
}
