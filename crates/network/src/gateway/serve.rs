//! A request a Gateway route took: the rule's redirect, or its filters and
//! a backend picked by weight; gRPC streams over HTTP/2 to the backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::table::{Action, RedirectTo, Target};
use crate::ingress::proxy::{Body, Edits, Proxy, bare_host, forwarded_headers, text};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn well_known(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// The `Location` of a redirect, as the specification builds it: the
/// scheme's well-known port is left out; with no port and no scheme given,
/// the listener's port is kept.
pub fn location(
    rd: &RedirectTo,
    tls: bool,
    host: &str,
    listener_port: u16,
    path: &str,
    prefix: Option<&str>,
    query: Option<&str>,
) -> String {
    let scheme = rd
        .scheme
        .clone()
        .unwrap_or_else(|| if tls { "https".into() } else { "http".into() });
    let name = rd.hostname.clone().unwrap_or_else(|| bare_host(host));
    let port = match (rd.port, &rd.scheme) {
        (Some(p), _) => p,
        (None, Some(s)) => well_known(s),
        (None, None) => listener_port,
    };
    let port = if port == well_known(&scheme) {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = rd
        .path
        .as_ref()
        .map(|p| p.apply(path, prefix))
        .unwrap_or_else(|| path.to_string());
    match query {
        Some(q) => format!("{scheme}://{name}{port}{path}?{q}"),
        None => format!("{scheme}://{name}{port}{path}"),
    }
}

impl Proxy {
    /// Serves `req` by `action`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn gateway_request(
        &self,
        req: Request<Incoming>,
        action: &Action,
        prefix: Option<&str>,
        peer: SocketAddr,
        tls: bool,
        port: u16,
        host: &str,
    ) -> Response<Body> {
        if action.broken {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "route rule cannot be served\n",
            );
        }
        if let Some(rd) = &action.redirect {
            let loc = location(
                rd,
                tls,
                host,
                port,
                req.uri().path(),
                prefix,
                req.uri().query(),
            );
            let mut resp = Response::new(
                Full::new(bytes::Bytes::new())
                    .map_err(|n| match n {})
                    .boxed(),
            );
            *resp.status_mut() = StatusCode::from_u16(rd.status).unwrap_or(StatusCode::FOUND);
            if let Ok(v) = HeaderValue::from_str(&loc) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            if let Some(e) = &action.response_headers {
                e.apply(resp.headers_mut());
            }
            return resp;
        }
        let backend = match action.pick() {
            Some(Target::Backend(b)) if !b.endpoints.is_empty() => b.clone(),
            // No usable backend: the specification's 500.
            _ => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no usable backend for this route\n",
                );
            }
        };
        let path = action
            .rewrite_path
            .as_ref()
            .map(|p| p.apply(req.uri().path(), prefix));
        if action.grpc {
            return self.grpc(req, action, &backend, peer, tls, host).await;
        }
        let edits = Edits {
            request_headers: action.request_headers.as_ref(),
            response_headers: action.response_headers.as_ref(),
            host: action.rewrite_host.as_deref(),
            path,
            mirrors: &action.mirrors,
            timeout: action.timeout,
            try_timeout: action.backend_timeout,
        };
        self.forward(req, &backend, peer, tls, host, edits).await
    }

    /// gRPC: the request streams to one endpoint over h2c (no retry: the
    /// body is not buffered), trailers and all.
    async fn grpc(
        &self,
        req: Request<Incoming>,
        action: &Action,
        backend: &crate::ingress::routes::Backend,
        peer: SocketAddr,
        tls: bool,
        host: &str,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        forwarded_headers(&mut parts, peer, tls, host);
        // gRPC needs `te: trailers`, which the hop-by-hop rule dropped.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
        if let Some(e) = &action.request_headers {
            e.apply(&mut parts.headers);
        }
        parts.version = http::Version::HTTP_2;
        let ep = backend.endpoints[NEXT.fetch_add(1, Ordering::Relaxed) % backend.endpoints.len()];
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let Ok(uri) = format!("http://{ep}{pq}").parse::<http::Uri>() else {
            return text(StatusCode::BAD_REQUEST, "bad request path\n");
        };
        parts.uri = uri;
        parts.headers.remove(header::HOST);
        let out = Request::from_parts(parts, body);
        match self.h2.request(out).await {
            Ok(resp) => {
                let (mut p, b) = resp.into_parts();
                if let Some(e) = &action.response_headers {
                    e.apply(&mut p.headers);
                }
                Response::from_parts(p, b.boxed())
            }
            Err(e) => {
                tracing::debug!(backend = %backend.name, endpoint = %ep, error = %e, "gateway: gRPC backend failed");
                text(StatusCode::BAD_GATEWAY, "bad gateway\n")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::table::PathEdit;

    #[test]
    fn redirect_locations_as_the_specification_builds_them() {
        let rd = |scheme: Option<&str>, port: Option<u16>, path: Option<PathEdit>| RedirectTo {
            scheme: scheme.map(String::from),
            hostname: None,
            port,
            path,
            status: 301,
        };
        // The scheme changes: its well-known port, left out.
        assert_eq!(
            location(
                &rd(Some("https"), None, None),
                false,
                "a.example:8080",
                8080,
                "/x",
                None,
                Some("q=1")
            ),
            "https://a.example/x?q=1"
        );
        // Nothing but a path: the listener's port stays.
        assert_eq!(
            location(
                &rd(None, None, Some(PathEdit::Full("/new".into()))),
                false,
                "a.example:8080",
                8080,
                "/old",
                None,
                None
            ),
            "http://a.example:8080/new"
        );
        assert_eq!(
            location(
                &rd(None, None, None),
                false,
                "a.example",
                80,
                "/",
                None,
                None
            ),
            "http://a.example/"
        );
        assert_eq!(
            location(
                &rd(None, Some(9443), Some(PathEdit::Prefix("/v2".into()))),
                true,
                "a.example",
                443,
                "/v1/items",
                Some("/v1"),
                None
            ),
            "https://a.example:9443/v2/items"
        );
    }
}
