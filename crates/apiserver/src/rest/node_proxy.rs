//! Requests the API server forwards to a node's kubelet API, as upstream's
//! pod `log` subresource does: find the pod's node, its InternalIP and
//! kubelet port, and stream the kubelet's answer back.
//!
//! The API server authenticates to kubelets with its admin client
//! certificate. Like upstream without `--kubelet-certificate-authority`,
//! it does not verify the kubelet's self-signed serving certificate.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use super::{Call, Rest};
use crate::error::ApiError;
use crate::http::{self as h, Body};
use crate::tls::Pki;

/// The TLS client configuration for talking to kubelets.
pub fn kubelet_client_config(pki: &Pki) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pki.admin_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("admin certificate: {e}"))?;
    let key = rustls_pemfile::private_key(&mut pki.admin_key_pem.as_bytes())
        .map_err(|e| format!("admin key: {e}"))?
        .ok_or("admin key: no key in PEM")?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServerCert(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// Where a node's kubelet listens: (InternalIP, port).
async fn kubelet_of(rest: &Rest, node: &str) -> Result<(String, u16), ApiError> {
    let info = api::catalogue::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not in the catalogue"))?;
    let (n, _) = rest.load(info, None, node).await?;
    let ip = n["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .map(str::to_string);
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64();
    match (ip, port) {
        (Some(ip), Some(port)) if port > 0 => Ok((ip, port as u16)),
        _ => Err(ApiError::unavailable(format!(
            "node {node} has no kubelet endpoint (is it a real node with an agent?)"
        ))),
    }
}

/// The container a log or exec request means: `container=` or the only one.
fn container_of(pod: &Value, name: &str, call: &Call) -> Result<String, ApiError> {
    if let Some(c) = call.query.get("container") {
        let known = ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
            .any(|x| x["name"] == c);
        if !known {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        return Ok(c.to_string());
    }
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.to_string()),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// `GET pods/<name>/log`.
pub async fn pod_log(
    rest: &Rest,
    call: &Call,
    name: &str,
    pod: &Value,
) -> Result<Response<Body>, ApiError> {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let container = container_of(pod, name, call)?;
    let ns = call.ns().unwrap_or("default");
    let query = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for k in [
            "follow",
            "previous",
            "tailLines",
            "timestamps",
            "sinceSeconds",
            "sinceTime",
            "limitBytes",
        ] {
            if let Some(v) = call.query.get(k) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    };
    let path = format!("/containerLogs/{ns}/{name}/{container}?{query}");
    let (ip, port) = kubelet_of(rest, node).await?;
    let resp = get(rest, &ip, port, &path).await?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        let mut e = match status.as_u16() {
            404 => ApiError::bad_request(text.trim().to_string()),
            400 => ApiError::bad_request(text.trim().to_string()),
            _ => ApiError::internal(text.trim().to_string()),
        };
        if text.trim().is_empty() {
            e = ApiError::internal(format!("kubelet answered {status}"));
        }
        return Err(e);
    }
    let stream = data_frames(resp.into_body());
    Ok(Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(h::streaming(stream))
        .unwrap_or_else(|_| h::text(500, "")))
}

/// The data of a proxied response body as a stream (trailers dropped).
pub(crate) fn data_frames(
    body: hyper::body::Incoming,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold(body, |mut body| async move {
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Some((data, body));
                    }
                }
                _ => return None,
            }
        }
    })
}

/// `GET nodes/<name>/proxy/<path>`: the node's kubelet API (for example
/// `/stats/summary`), answered as the kubelet answers.
pub async fn node_get(rest: &Rest, call: &Call, node: &str) -> Result<Response<Body>, ApiError> {
    let (ip, port) = kubelet_of(rest, node).await?;
    let mut path = format!("/{}", call.route.rest.trim_start_matches('/'));
    if !call.query.0.is_empty() {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &call.query.0 {
            q.append_pair(k, v);
        }
        path.push('?');
        path.push_str(&q.finish());
    }
    let resp = get(rest, &ip, port, &path).await?;
    let status = resp.status();
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static("text/plain"));
    let stream = data_frames(resp.into_body());
    Ok(Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ct)
        .body(h::streaming(stream))
        .unwrap_or_else(|_| h::text(500, "")))
}

/// An HTTP/1.1 connection over TLS to a kubelet; with `upgrades` it can
/// switch protocols (exec).
async fn connect(
    rest: &Rest,
    ip: &str,
    port: u16,
    upgrades: bool,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>, ApiError> {
    let tls =
        rest.kubelet_tls.get().cloned().ok_or_else(|| {
            ApiError::unavailable("the API server has no kubelet client credentials")
        })?;
    let unavailable = |e: String| ApiError::unavailable(format!("kubelet {ip}:{port}: {e}"));
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .map_err(|_| unavailable("connect timed out".into()))?
    .map_err(|e| unavailable(e.to_string()))?;
    let server_name = rustls::pki_types::ServerName::try_from(ip.to_string())
        .map_err(|e| unavailable(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
    });
    Ok(sender)
}

/// One HTTPS GET to a kubelet.
pub(crate) async fn get(
    rest: &Rest,
    ip: &str,
    port: u16,
    path: &str,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let mut sender = connect(rest, ip, port, false).await?;
    let req = http::Request::get(path)
        .header(http::header::HOST, format!("{ip}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::unavailable(format!("kubelet {ip}:{port}: {e}")))
}

/// The kubelet's query for a port-forward: the client's `ports` (repeated
/// or comma-separated) joined into one `port`, as upstream does.
fn port_forward_query(raw_query: &str) -> String {
    let ports: Vec<String> = url::form_urlencoded::parse(raw_query.as_bytes())
        .filter(|(k, _)| k == "ports")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if ports.is_empty() {
        return String::new();
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("port", &ports.join(","));
    format!("?{}", q.finish())
}

/// Headers of an upgrade request forwarded to the kubelet.
const UPGRADE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// `pods/<name>/exec` and `pods/<name>/portforward` with an upgrade:
/// forwards the upgrade (WebSocket or SPDY) to the kubelet, which answers
/// the protocol switch itself, and splices the two connections.
pub async fn tunnel(
    rest: &Rest,
    call: &Call,
    raw_query: &str,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let name = call
        .route
        .name
        .as_deref()
        .ok_or_else(|| ApiError::no_route("a subresource needs an object name"))?;
    let (pod, _) = rest.load(info, call.ns(), name).await?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let sub = call.route.subresource.as_deref().unwrap_or("");
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    let ns = call.ns().unwrap_or("default");
    let path = match sub {
        "exec" => {
            if phase == "Succeeded" || phase == "Failed" {
                return Err(ApiError::bad_request(format!(
                    "cannot exec into a container in a completed pod; current phase is {phase}"
                )));
            }
            let container = container_of(&pod, name, call)?;
            format!("/exec/{ns}/{name}/{container}?{raw_query}")
        }
        "attach" => {
            if phase == "Succeeded" || phase == "Failed" {
                return Err(ApiError::bad_request(format!(
                    "cannot attach to a container in a completed pod; current phase is {phase}"
                )));
            }
            let container = container_of(&pod, name, call)?;
            format!("/attach/{ns}/{name}/{container}?{raw_query}")
        }
        "portforward" => {
            if phase != "Running" {
                return Err(ApiError::bad_request(format!(
                    "unable to forward ports because pod is not running. Current status={phase}"
                )));
            }
            format!("/portForward/{ns}/{name}{}", port_forward_query(raw_query))
        }
        _ => {
            return Err(ApiError::unavailable(format!(
                "pods/{sub} is not supported by r8s node agents yet"
            )));
        }
    };
    let (ip, port) = kubelet_of(rest, node).await?;
    let unavailable = |e: String| ApiError::unavailable(format!("kubelet {ip}:{port}: {e}"));
    let mut sender = connect(rest, &ip, port, true).await?;
    let mut req = http::Request::get(path).header(http::header::HOST, format!("{ip}:{port}"));
    for h in UPGRADE_HEADERS {
        for v in call.headers.get_all(*h) {
            req = req.header(*h, v);
        }
    }
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| unavailable(e.to_string()))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(ApiError::bad_request(text.trim().to_string()));
    }
    let mut out = Response::builder().status(101);
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (Ok(client), Ok(kubelet)) = (client_upgrade.await, kubelet_upgrade.await) else {
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut kubelet = hyper_util::rt::TokioIo::new(kubelet);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await;
    });
    out.body(h::full(Bytes::new()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forward_ports_become_one_port_parameter() {
        assert_eq!(port_forward_query(""), "");
        assert_eq!(port_forward_query("ports=8080"), "?port=8080");
        assert_eq!(
            port_forward_query("ports=8080&ports=9090,7070"),
            "?port=8080%2C9090%2C7070"
        );
    }
}
