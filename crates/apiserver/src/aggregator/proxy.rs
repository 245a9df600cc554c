//! Proxying a request to an aggregated API server: the APIService's
//! Service resolved to a ready endpoint, TLS checked against its
//! `caBundle` (or not, with `insecureSkipTLSVerify`), the caller named in
//! upstream's request headers (`X-Remote-User`, `X-Remote-Group`), the
//! answer streamed back (watches included).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};

use crate::http::RequestBody;
use serde_json::Value;
use store::SharedStore;

use crate::auth::User;
pub use crate::backend::{ResolveError, Target};
use crate::error::ApiError;
use crate::http::{self as h, Body};

/// The endpoint behind an APIService.
pub async fn resolve(store: &SharedStore, apiservice: &Value) -> Result<Target, ResolveError> {
    let r = &apiservice["spec"]["service"];
    crate::backend::service_target(
        store,
        r["namespace"].as_str().unwrap_or(""),
        r["name"].as_str().unwrap_or(""),
        r["port"].as_i64().unwrap_or(443),
        "",
    )
    .await
}

fn tls(apiservice: &Value) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    crate::backend::tls_config(
        apiservice["spec"]["caBundle"].as_str(),
        apiservice["spec"]["insecureSkipTLSVerify"].as_bool() == Some(true),
    )
    .map_err(|e| e.0)
}

/// A GET of `path` on the backend, as JSON.
pub async fn get_json(
    target: &Target,
    apiservice: &Value,
    path: &str,
    timeout: Duration,
) -> Result<Value, String> {
    let tls = tls(apiservice)?;
    let call = async {
        let mut sender = crate::backend::connect::<Empty<Bytes>>(target, tls).await?;
        let req = Request::get(path)
            .header(
                http::header::HOST,
                format!("{}:{}", target.server_name, target.port),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
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
            return Err(format!("bad status from {path}: {}", status.as_u16()));
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| "context deadline exceeded".to_string())?
}

/// Headers that belong to one hop, not to the proxied request.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "authorization",
    "impersonate-user",
    "impersonate-group",
    "x-remote-user",
    "x-remote-group",
];

/// Forwards one request to the APIService's backend.
pub async fn forward(
    store: &SharedStore,
    apiservice: &Value,
    req: Request<RequestBody>,
    user: &User,
) -> Response<Body> {
    let name = apiservice["metadata"]["name"].as_str().unwrap_or("");
    let unavailable = |why: String| {
        h::error(&ApiError::unavailable(format!(
            "the server is currently unable to handle the request: APIService {name}: {why}"
        )))
    };
    let target = match resolve(store, apiservice).await {
        Ok(t) => t,
        Err(ResolveError::ServiceNotFound) => return unavailable("service not found".into()),
        Err(ResolveError::NoEndpoints(_)) => return unavailable("no ready endpoints".into()),
        Err(ResolveError::Other(m)) => return unavailable(m),
    };
    let tls = match tls(apiservice) {
        Ok(t) => t,
        Err(e) => return unavailable(e),
    };
    let mut sender = match crate::backend::connect::<RequestBody>(&target, tls).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = Request::builder().method(parts.method).uri(path);
    for (k, v) in &parts.headers {
        if !HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    out = out
        .header(
            http::header::HOST,
            format!("{}:{}", target.server_name, target.port),
        )
        .header("X-Remote-User", user.name.as_str());
    for g in &user.groups {
        out = out.header("X-Remote-Group", g.as_str());
    }
    let Ok(out) = out.body(body) else {
        return unavailable("bad request".into());
    };
    match sender.send_request(out).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut r = Response::builder().status(parts.status);
            for (k, v) in &parts.headers {
                if !HOP.contains(&k.as_str()) {
                    r = r.header(k, v);
                }
            }
            r.body(h::streaming(crate::rest::node_proxy::data_frames(body)))
                .unwrap_or_else(|_| h::json(502, &serde_json::json!({})))
        }
        Err(e) => unavailable(e.to_string()),
    }
}
