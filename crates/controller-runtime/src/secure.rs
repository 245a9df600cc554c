//! Secure serving with delegated authentication and authorization, as
//! upstream's components do for their own endpoints (the kubelet API,
//! kube-scheduler's and kube-controller-manager's `/metrics`): callers
//! present a client certificate from the cluster CA (CN the user, O the
//! groups) or a bearer token the API server vouches for (TokenReview), and
//! the API server decides what they may do (SubjectAccessReview).
//! Decisions are cached briefly (allowed 5 minutes, denied 30 seconds,
//! upstream's defaults); `/healthz`, `/readyz` and `/livez` are always
//! allowed, as upstream's `--authorization-always-allow-paths`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use x509_parser::prelude::FromDer;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
const TOKEN_TTL: Duration = Duration::from_secs(120);

/// Failures of setting up a secure endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The user name.
    pub user: String,
    /// The groups.
    pub groups: Vec<String>,
}

impl Caller {
    /// The caller a verified client certificate names (CN, Os).
    pub fn from_cert(der: &[u8]) -> Option<Caller> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(Caller { user, groups })
    }
}

/// What a caller asks to do, as a SubjectAccessReview states it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A resource request (the kubelet API's `nodes/<sub>`).
    Resource {
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
        /// The subresource.
        subresource: String,
        /// The object's name.
        name: String,
    },
    /// A non-resource URL (`/metrics`).
    NonResource {
        /// The verb.
        verb: String,
        /// The path.
        path: String,
    },
}

type Key = (Caller, Attributes);

/// Asks the API server who a token is and what a caller may do, and
/// remembers the answers for a while.
pub struct Delegated {
    client: kube::Client,
    decisions: Mutex<HashMap<Key, (bool, Instant)>>,
    tokens: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
}

impl Delegated {
    /// Delegates to the API server behind `client`.
    pub fn new(client: kube::Client) -> Delegated {
        Delegated {
            client,
            decisions: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// The user a bearer token belongs to (TokenReview), if any.
    pub async fn authenticate_token(&self, token: &str) -> Option<Caller> {
        if let Some((who, at)) = self.tokens.lock().ok().and_then(|t| t.get(token).cloned())
            && at.elapsed() < TOKEN_TTL
        {
            return who;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let who = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r
                .status
                .filter(|s| s.authenticated == Some(true))
                .and_then(|s| s.user)
                .map(|u| Caller {
                    user: u.username.unwrap_or_default(),
                    groups: u.groups.unwrap_or_default(),
                }),
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview failed");
                return None;
            }
        };
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(token.to_string(), (who.clone(), Instant::now()));
        }
        who
    }

    /// Whether `caller` may do `attrs` (SubjectAccessReview); an error
    /// when the API server could not be asked.
    pub async fn allowed(&self, caller: &Caller, attrs: &Attributes) -> Result<bool, String> {
        let key = (caller.clone(), attrs.clone());
        if let Some((allowed, at)) = self
            .decisions
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
        {
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            if at.elapsed() < ttl {
                return Ok(allowed);
            }
        }
        let mut spec = SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            ..Default::default()
        };
        match attrs {
            Attributes::Resource {
                verb,
                resource,
                subresource,
                name,
            } => {
                spec.resource_attributes = Some(ResourceAttributes {
                    verb: Some(verb.clone()),
                    resource: Some(resource.clone()),
                    subresource: Some(subresource.clone()),
                    name: Some(name.clone()),
                    ..Default::default()
                })
            }
            Attributes::NonResource { verb, path } => {
                spec.non_resource_attributes = Some(NonResourceAttributes {
                    verb: Some(verb.clone()),
                    path: Some(path.clone()),
                })
            }
        }
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let allowed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| e.to_string())?
            .status
            .is_some_and(|s| s.allowed);
        if let Ok(mut c) = self.decisions.lock() {
            c.insert(key, (allowed, Instant::now()));
        }
        Ok(allowed)
    }
}

/// A TLS server configuration with a self-signed serving certificate for
/// `addr` (as upstream's components make one when given none) that asks
/// for client certificates from `ca_pem` but, with `optional_client_cert`,
/// also admits callers without one (they may bring a bearer token).
pub fn server_config(
    addr: SocketAddr,
    ca_pem: &str,
    optional_client_cert: bool,
) -> Result<Arc<rustls::ServerConfig>, SecureError> {
    let bad = |e: String| SecureError::Tls(e);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let verifier = if optional_client_cert {
        builder.allow_unauthenticated().build()
    } else {
        builder.build()
    }
    .map_err(|e| bad(e.to_string()))?;
    let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .map_err(|e| bad(e.to_string()))?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(addr.ip()));
    let cert = params.self_signed(&key).map_err(|e| bad(e.to_string()))?;
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| bad(e.to_string()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], der_key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(cfg))
}

fn text(code: u16, body: impl Into<Bytes>, content_type: &str) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new())))
}

/// Serves a component's `/metrics` (what `render` returns, Prometheus
/// text) and `/healthz` on `addr` over TLS, to callers the API server
/// authenticates and allows `get` on the non-resource URL `/metrics` (as
/// `system:monitoring` grants). Returns the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    ca_pem: &str,
    client: kube::Client,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> Result<SocketAddr, SecureError> {
    let tls = server_config(addr, ca_pem, true)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SecureError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let delegated = Arc::new(Delegated::new(client));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, delegated, render) =
                (acceptor.clone(), delegated.clone(), render.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cert_caller = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| Caller::from_cert(c));
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (delegated, render, cert_caller) =
                            (delegated.clone(), render.clone(), cert_caller.clone());
                        async move {
                            Ok::<_, Infallible>(
                                answer(&req, cert_caller, &delegated, render.as_ref()).await,
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn answer(
    req: &http::Request<hyper::body::Incoming>,
    cert_caller: Option<Caller>,
    delegated: &Delegated,
    render: &(dyn Fn() -> String + Send + Sync),
) -> http::Response<Full<Bytes>> {
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/livez") {
        return text(200, "ok", "text/plain");
    }
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = match (cert_caller, token) {
        (Some(c), _) => Some(c),
        (None, Some(t)) => match delegated.authenticate_token(t).await {
            Some(c) => Some(c),
            None => return text(401, "Unauthorized", "text/plain"),
        },
        (None, None) => None,
    };
    let caller = caller.unwrap_or_else(|| Caller {
        user: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
    });
    let attrs = Attributes::NonResource {
        verb: "get".into(),
        path: path.to_string(),
    };
    match delegated.allowed(&caller, &attrs).await {
        Ok(true) => {}
        Ok(false) => {
            return text(
                403,
                format!(
                    "Forbidden: user \"{}\" cannot get path \"{path}\"",
                    caller.user
                ),
                "text/plain",
            );
        }
        Err(e) => return text(500, format!("authorization failed: {e}"), "text/plain"),
    }
    if path != "/metrics" {
        return text(404, "404 page not found", "text/plain");
    }
    text(200, render(), "text/plain; version=0.0.4; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_come_from_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "alice");
        dn.push(rcgen::DnType::OrganizationName, "dev");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let caller = Caller::from_cert(cert.der()).unwrap();
        assert_eq!(caller.user, "alice");
        assert_eq!(caller.groups, ["dev"]);
    }
}
