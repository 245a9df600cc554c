//! The HTTPS server: TLS accept loop, HTTP/1.1 and HTTP/2 by ALPN,
//! authentication, top-level routing, metrics, and cluster bootstrap.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use api::catalogue;
use http::{Method, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use store::SharedStore;
use tokio::net::TcpListener;

use crate::auth::{self, User};
use crate::discovery;
use crate::error::ApiError;
use crate::http::{self as h, Body, RequestBody};
use crate::rest::Rest;
use crate::router::{self, Route};
use crate::tls::{self, Pki};
use crate::watch::WatchCache;

/// The Kubernetes version r8s reports (kubectl's dispatcher picks its
/// client from it).
pub const KUBE_VERSION: &str = "v1.33.0";

/// Server start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// PKI trouble.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding or file I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The listening address is taken or not ours.
    #[error("{addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it could not be bound.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Bootstrapping cluster objects failed.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    /// The cluster identity shared through the store.
    #[error(transparent)]
    Join(#[from] crate::join::JoinError),
    /// The encryption-at-rest configuration.
    #[error("encryption at rest: {0}")]
    Encryption(#[from] crate::encryption::EncryptionError),
    /// The audit configuration.
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// How to run the API server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: PKI and kubeconfig live here.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// HTTPS port; 0 picks a free one.
    pub https_port: u16,
    /// Extra subject alternative names for the serving certificate.
    pub tls_sans: Vec<String>,
    /// The range cluster IPs come from (`--service-cidr`); its first
    /// address is the `kubernetes` Service, its tenth cluster DNS.
    pub service_cidr: ipnet::Ipv4Net,
    /// The address the `kubernetes` Service's endpoints name
    /// (`--advertise-address`): one that pods and other nodes can reach.
    /// None: the bind address if it is a specific one, else loopback.
    pub advertise_address: Option<IpAddr>,
    /// How requests are authorized (`--authorization-mode`).
    pub authorization_mode: crate::authz::Mode,
    /// An EncryptionConfiguration (`--encryption-provider-config`).
    pub encryption_provider_config: Option<PathBuf>,
    /// Without a configuration: encrypt Secrets with the cluster's default
    /// key (`--secrets-encryption`, on by default as in k3s).
    pub secrets_encryption: bool,
    /// The audit log (`--audit-policy-file`, `--audit-log-path`).
    pub audit: Option<crate::audit::Options>,
    /// How often the built-in metrics API scrapes the nodes
    /// (`--metric-resolution`, metrics-server's 15 s by default).
    pub metric_resolution: std::time::Duration,
}

impl Config {
    /// The `kubernetes` Service's cluster IP: the range's first address.
    pub fn kubernetes_service_ip(&self) -> std::net::Ipv4Addr {
        nth_address(self.service_cidr, 1)
    }

    /// The cluster DNS Service's IP: the range's tenth address, as k3s.
    pub fn cluster_dns_ip(&self) -> std::net::Ipv4Addr {
        nth_address(self.service_cidr, 10)
    }
}

/// The `n`th address of a range (wrapping inside tiny ranges).
fn nth_address(net: ipnet::Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    let size = 1u64 << (32 - net.prefix_len());
    let off = (u64::from(n) % size.max(1)) as u32;
    std::net::Ipv4Addr::from(u32::from(net.network()) + off)
}

/// A running API server.
pub struct Running {
    /// The URL clients use.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The admin kubeconfig written at start.
    pub kubeconfig: PathBuf,
    /// The PKI (to issue node and user certificates).
    pub pki: Pki,
    /// The token nodes join with (also written to `<data-dir>/token`).
    pub token: String,
    /// The accept loop.
    pub task: tokio::task::JoinHandle<()>,
    /// The web console's one-time sign-in link (as the admin).
    pub console_link: String,
}

struct State {
    rest: Rest,
    audit: Option<crate::audit::AuditLog>,
    identity: crate::join::Identity,
    metrics: crate::metrics::Metrics,
    server_address: String,
    console: console::Console,
}

impl State {
    fn sources(&self) -> discovery::Sources<'_> {
        discovery::Sources {
            crds: &self.rest.crds,
            aggregated: &self.rest.aggregator,
        }
    }

    /// The remote APIService a path belongs to, if the group is neither
    /// built in nor custom.
    fn aggregated_target(&self, path: &str) -> Option<serde_json::Value> {
        let mut segs = path.trim_start_matches('/').split('/');
        if segs.next() != Some("apis") {
            return None;
        }
        let group = segs.next()?;
        let version = segs.next()?;
        // The built-in metrics API gives way to an APIService that names a
        // Service (the real metrics-server).
        if (group != crate::resource_metrics::GROUP
            && catalogue::groups().iter().any(|(g, _)| *g == group))
            || self.rest.crds.groups().iter().any(|(g, _)| g == group)
        {
            return None;
        }
        self.rest
            .aggregator
            .remote(group, version)
            .map(|r| r.service)
    }
}

/// Starts the API server on `store`.
pub async fn start(cfg: Config, store: SharedStore) -> Result<Running, ServerError> {
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.data_dir)?;
    let bind = SocketAddr::new(cfg.bind_address, cfg.https_port);
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| ServerError::Bind { addr: bind, source })?;
    let addr = listener.local_addr()?;
    let client_host = if cfg.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        cfg.bind_address.to_string()
    };
    let mut sans = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        cfg.kubernetes_service_ip().to_string(),
    ];
    if let Some(a) = cfg.advertise_address {
        sans.push(a.to_string());
    }
    if let Ok(host) = hostname() {
        sans.push(host);
    }
    if !cfg.bind_address.is_unspecified() {
        sans.push(cfg.bind_address.to_string());
    }
    for s in &cfg.tls_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    // The CA and the join secret are shared through the store, so that
    // several servers on one etcd are one cluster to their clients.
    let identity = crate::join::shared_identity(&store, &cfg.data_dir.join("tls"), &sans).await?;
    let pki = identity.pki.clone();
    let token = identity.token();
    crate::tls::write_private(&cfg.data_dir.join("token"), &format!("{token}\n"))?;
    let tls_config = pki.server_config()?;
    let host_for_url = if client_host.contains(':') {
        format!("[{client_host}]")
    } else {
        client_host.clone()
    };
    let url = format!("https://{host_for_url}:{}", addr.port());
    let kubeconfig = cfg.data_dir.join("kubeconfig.yaml");
    pki.write_admin_kubeconfig(&kubeconfig, &url)?;

    let store = if cfg.secrets_encryption || cfg.encryption_provider_config.is_some() {
        crate::encryption::wrap(
            store,
            cfg.encryption_provider_config.as_deref(),
            &cfg.data_dir,
            &identity.encryption_key,
        )?
    } else {
        store
    };
    let cache = WatchCache::start(store.clone(), 16384).await?;
    let rest = Rest::new(store, cache, cfg.service_cidr);
    let signer = crate::satoken::Signer::new(&identity.sa_key).map_err(ServerError::Bootstrap)?;
    let _ = rest.sa_signer.set(Arc::new(signer));
    match crate::rest::node_proxy::kubelet_client_config(&pki) {
        Ok(c) => {
            let _ = rest.kubelet_tls.set(c);
        }
        Err(e) => tracing::warn!(error = %e, "no kubelet client credentials; pod logs unavailable"),
    }
    let advertise = cfg
        .advertise_address
        .map(|a| a.to_string())
        .unwrap_or_else(|| client_host.clone());
    crate::bootstrap::objects(&rest, &cfg, &advertise, addr.port()).await?;
    let audit = cfg
        .audit
        .as_ref()
        .map(crate::audit::AuditLog::open)
        .transpose()?;
    let state = Arc::new(State {
        rest,
        audit,
        identity,
        metrics: crate::metrics::Metrics::default(),
        server_address: format!("{client_host}:{}", addr.port()),
        console: console::Console::new(admin_identity(&pki)),
    });
    let console_link = state.console.sign_in_link(&url);
    // Give existing Services (from before IPAddress allocation, or left by
    // a crash between claim and create) their IPAddresses, then keep doing
    // so in the background.
    if let Err(e) = crate::admission::ipalloc::repair(&state.rest.store).await {
        tracing::warn!(error = %e.message, "cluster IP repair failed");
    }
    let repair_state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::admission::ipalloc::REPAIR_PERIOD).await;
            if let Err(e) = crate::admission::ipalloc::repair(&repair_state.rest.store).await {
                tracing::warn!(error = %e.message, "cluster IP repair failed");
            }
        }
    });
    state.rest.aggregator.start(&state.rest.store);
    state
        .rest
        .resource_metrics
        .set_resolution(cfg.metric_resolution);
    let metrics_state = state.clone();
    tokio::spawn(async move {
        metrics_state
            .rest
            .resource_metrics
            .run(&metrics_state.rest)
            .await
    });
    state.rest.authz.set_mode(cfg.authorization_mode);
    state.rest.authz.start(&state.rest.store).await;
    for cache in [&state.rest.quotas, &state.rest.limit_ranges] {
        cache.clone().spawn(state.rest.store.clone());
        if let Ok(rev) = state.rest.store.current_revision().await {
            cache.wait_synced(rev).await;
        }
    }
    tokio::spawn(crate::certificates::run(
        state.rest.store.clone(),
        state.identity.pki.ca_cert_pem.clone(),
        state.identity.pki.ca_key_pem.clone(),
    ));
    // Registered webhooks and policies apply from the first request on.
    state.rest.extensions.start(&state.rest.store).await;
    // Custom kinds are served from the first request on.
    tokio::spawn(state.rest.crd_controller.clone().run());
    if let Ok(rev) = state.rest.store.current_revision().await {
        state
            .rest
            .crd_controller
            .wait_synced(rev, std::time::Duration::from_secs(5))
            .await;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let task = tokio::spawn(accept_loop(listener, acceptor, state));
    tracing::info!(url = %url, took_ms = started.elapsed().as_millis() as u64, "API server ready");
    Ok(Running {
        url,
        addr,
        kubeconfig,
        pki,
        token,
        task,
        console_link,
    })
}

/// Who the console's one-time link signs in as: the admin kubeconfig's
/// user.
fn admin_identity(pki: &Pki) -> console::Identity {
    let named = rustls_pemfile::certs(&mut pki.admin_cert_pem.as_bytes())
        .flatten()
        .next()
        .and_then(|der| tls::user_from_cert(&der));
    let (name, groups) =
        named.unwrap_or_else(|| ("system:admin".into(), vec!["system:masters".into()]));
    console::Identity { name, groups }
}

fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_lowercase())
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            // A client that never finishes the handshake must not hold a task
            // forever.
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::user_from_cert(c))
                .map(|(n, g)| User::from_cert(n, g))
                .unwrap_or_else(User::anonymous);
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, user, peer).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

fn metric_verb(method: &Method, route: &Route, watch: bool) -> &'static str {
    match (method, route) {
        (&Method::GET, Route::Resource(r)) if watch || r.watch_prefix => "WATCH",
        (&Method::GET, Route::Resource(r)) if r.name.is_none() => "LIST",
        (&Method::GET, _) => "GET",
        (&Method::POST, _) => "POST",
        (&Method::PUT, _) => "PUT",
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, Route::Resource(r)) if r.name.is_none() => "DELETECOLLECTION",
        (&Method::DELETE, _) => "DELETE",
        _ => "OTHER",
    }
}

async fn handle(
    state: &State,
    req: Request<Incoming>,
    user: User,
    peer: SocketAddr,
) -> Response<Body> {
    let start = Instant::now();
    let path = req.uri().path().to_string();
    let route = router::route(&path, &state.rest.crds);
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = metric_verb(req.method(), &route, watch);
    let (group, resource) = match &route {
        Route::Resource(r) => (r.info.group.to_string(), r.info.plural.to_string()),
        _ => (String::new(), String::new()),
    };
    let mut req = req;
    // A browser cannot set headers on a WebSocket, so it sends its token
    // as a subprotocol, as upstream accepts; the kubelet never sees it.
    let ws_token = auth::take_websocket_bearer(req.headers_mut());
    let header_token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
        .map(str::to_string);
    if console::Console::owns(&path) {
        return serve_console(state, req, header_token.as_deref()).await;
    }
    // A bearer token (a service account's, or a console session's) when
    // no client certificate named the user; an invalid one is a 401, as
    // upstream.
    let mut user = user;
    // The node join endpoint takes its own secret as a bearer token.
    if user.is_anonymous()
        && route != Route::NodeJoin
        && let Some(token) = header_token.or(ws_token).filter(|t| !t.is_empty())
    {
        let session = state
            .console
            .authenticate(&token)
            .map(|who| User::from_cert(who.name, who.groups))
            .ok_or_else(|| "not a console session".to_string());
        let found = match session {
            Ok(u) => Ok(u),
            Err(_) => crate::rest::token::authenticate(&state.rest, &token).await,
        };
        match found {
            Ok(u) => user = u,
            Err(why) => {
                tracing::debug!(%why, "bearer token rejected");
                let resp = h::error(&ApiError::unauthorized());
                state
                    .metrics
                    .observe(verb, &group, &resource, 401, start.elapsed());
                return resp;
            }
        }
    }
    let resp = if auth::public_path(&path) {
        dispatch(state, route, req.map(Either::Left), user).await
    } else {
        match &state.audit {
            Some(log) => audited(state, log, route, req, user, peer).await,
            None => match authorize(state, &req, user).await {
                Ok(user) => dispatch(state, route, req.map(Either::Left), user).await,
                Err(e) => h::error(&e),
            },
        }
    };
    state.metrics.observe(
        verb,
        &group,
        &resource,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

/// The web console's own paths: its assets and sign-in. Everything the
/// console does to the cluster comes back through the API as the user.
async fn serve_console(
    state: &State,
    req: Request<Incoming>,
    bearer: Option<&str>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match h::read_body(Either::Left(body), &parts.headers).await {
        Ok(b) => b,
        Err(e) => return h::error(&e),
    };
    let pki = &state.identity.pki;
    let verify = |cert: &str, key: &str| {
        pki.verify_client_pair(cert, key)
            .map(|(name, groups)| console::Identity { name, groups })
    };
    let resp = state
        .console
        .handle(&parts.method, parts.uri.path(), bearer, body, &verify);
    resp.map(h::full)
}

/// Serves a request under the audit log: the event is begun once the
/// caller is known, records the authorizer's decision, the request object
/// (Request level, writes), and the response (its status; the object at
/// RequestResponse level); a watch is recorded when its response starts.
async fn audited(
    state: &State,
    log: &crate::audit::AuditLog,
    route: Route,
    req: Request<Incoming>,
    user: User,
    peer: SocketAddr,
) -> Response<Body> {
    use http_body_util::BodyExt;
    let authenticated = user.clone();
    let authz = &state.rest.authz;
    let store = &state.rest.store;
    let impersonated = crate::authz::impersonate::apply(authz, store, req.headers(), user).await;
    let run_as = match &impersonated {
        Ok(u) => u.clone(),
        Err(_) => authenticated.clone(),
    };
    let result = match impersonated {
        Ok(u) => {
            let attrs = crate::authz::Attributes::of_request(
                &u,
                req.method(),
                req.uri().path(),
                req.uri().query(),
            );
            authz.check(store, &attrs).await.map(|()| u)
        }
        Err(e) => Err(e),
    };
    let attrs = crate::authz::Attributes::of_request(
        &run_as,
        req.method(),
        req.uri().path(),
        req.uri().query(),
    );
    let facts = crate::audit::RequestFacts {
        uri: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        source_ip: peer.ip().to_string(),
        user_agent: req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        authenticated: &authenticated,
        api_version: match &route {
            Route::Resource(r) => Some(r.info.api_version()),
            _ => None,
        },
    };
    let Some(mut ev) = log.begin(&attrs, &facts) else {
        return match result {
            Ok(user) => dispatch(state, route, req.map(Either::Left), user).await,
            Err(e) => h::error(&e),
        };
    };
    ev.decision(result.is_ok());
    let user = match result {
        Ok(u) => u,
        Err(e) => {
            ev.response(e.code, Some(&e.status()));
            log.emit(&ev, "ResponseComplete");
            return h::error(&e);
        }
    };
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    // A write's body is read here (a copy goes on to the handler) so that
    // its object names the event's objectRef, and is recorded at Request.
    let req = if writes {
        let (parts, body) = req.into_parts();
        let bytes = match h::read_body(Either::Left(body), &parts.headers).await {
            Ok(b) => b,
            Err(e) => return h::error(&e),
        };
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            ev.request_object(v);
        }
        Request::from_parts(parts, Either::Right(http_body_util::Full::new(bytes)))
    } else {
        req.map(Either::Left)
    };
    let resp = dispatch(state, route, req, user).await;
    let code = resp.status().as_u16();
    if hyper::body::Body::size_hint(resp.body()).exact().is_none() {
        // A stream (a watch, logs): recorded as it starts.
        ev.response(code, None);
        log.emit(&ev, "ResponseStarted");
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    ev.response(code, parsed.as_ref());
    log.emit(&ev, "ResponseComplete");
    Response::from_parts(parts, h::full(bytes))
}

/// Impersonation, then authorization: the user the request runs as, or
/// why it may not run.
async fn authorize(state: &State, req: &Request<Incoming>, user: User) -> Result<User, ApiError> {
    let authz = &state.rest.authz;
    let store = &state.rest.store;
    let user = crate::authz::impersonate::apply(authz, store, req.headers(), user).await?;
    let attrs = crate::authz::Attributes::of_request(
        &user,
        req.method(),
        req.uri().path(),
        req.uri().query(),
    );
    authz.check(store, &attrs).await?;
    Ok(user)
}

async fn dispatch(
    state: &State,
    route: Route,
    req: Request<RequestBody>,
    user: User,
) -> Response<Body> {
    let get_only =
        |req: &Request<RequestBody>| req.method() == Method::GET || req.method() == Method::HEAD;
    if let Some(apiservice) = state.aggregated_target(req.uri().path()) {
        return crate::aggregator::proxy::forward(&state.rest.store, &apiservice, req, &user).await;
    }
    match route {
        Route::Resource(r) => state.rest.serve(r, req, user).await,
        Route::NodeJoin if req.method() == Method::POST => node_join(state, req).await,
        _ if !get_only(&req) => h::error(&ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method(),
            req.uri().path()
        ))),
        Route::Version => h::json(200, &version()),
        Route::CaCerts => h::text(200, state.identity.pki.ca_cert_pem.clone()),
        Route::NodeJoin => h::error(&ApiError::method_not_allowed(
            "node join takes POST".to_string(),
        )),
        Route::Health(_) => h::text(200, "ok"),
        Route::Metrics => {
            let mut r = h::text(200, state.metrics.render());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        Route::CoreVersions => match discovery::aggregated_version(req.headers()) {
            Some(v) => h::json_typed(
                200,
                &discovery::aggregated(&state.sources(), true, v),
                &discovery::aggregated_content_type(v),
            ),
            None => h::json(200, &discovery::core_versions(&state.server_address)),
        },
        Route::Groups => match discovery::aggregated_version(req.headers()) {
            Some(v) => h::json_typed(
                200,
                &discovery::aggregated(&state.sources(), false, v),
                &discovery::aggregated_content_type(v),
            ),
            None => h::json(200, &discovery::group_list(&state.sources())),
        },
        Route::Group(g) => match discovery::group(&state.sources(), &g) {
            Some(doc) => h::json(200, &doc),
            None => h::error(&ApiError::no_route(req.uri().path())),
        },
        Route::ResourceList(g, v) => match discovery::resource_list(&state.rest.crds, &g, &v) {
            Some(doc) => h::json(200, &doc),
            None => h::error(&ApiError::no_route(req.uri().path())),
        },
        Route::OpenApiV2 => {
            // Only JSON is served; a protobuf-only client must not get JSON
            // it would misparse.
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("*/*");
            if accept.contains("json") || accept.contains("*/*") || accept.trim().is_empty() {
                h::json(200, api::openapi::v2_document())
            } else {
                h::error(&ApiError::not_acceptable(format!(
                    "only application/json is served for /openapi/v2 (asked for {accept})"
                )))
            }
        }
        Route::OpenApiV3Root => h::json(200, &state.rest.crds.openapi_v3_root()),
        Route::OpenApiV3(g, v) if api::openapi::v3_document(&g, &v).is_none() => {
            match state.rest.crds.openapi_v3(&g, &v) {
                Some(doc) => h::json(200, &doc.0),
                None => h::error(&ApiError::no_route(req.uri().path())),
            }
        }
        Route::OpenApiV3(g, v) => match api::openapi::v3_document(&g, &v) {
            Some(doc) => {
                let mut r = h::json(200, doc);
                r.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("public, immutable"),
                );
                r
            }
            None => h::error(&ApiError::no_route(req.uri().path())),
        },
        Route::NotFound => h::error(&ApiError::no_route(req.uri().path())),
    }
}

fn version() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": KUBE_VERSION,
        "gitCommit": "r8s",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

/// `POST /r8s/v1/join`: a node presents the join secret and gets its
/// client certificate (see [`crate::join`]).
async fn node_join(state: &State, req: Request<RequestBody>) -> Response<Body> {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (parts, body) = req.into_parts();
    let body = match h::read_body(body, &parts.headers).await {
        Ok(b) => b,
        Err(e) => return h::error(&e),
    };
    match crate::join::join(&state.identity, auth.as_deref(), &body) {
        Ok(resp) => match serde_json::to_value(&resp) {
            Ok(v) => h::json(200, &v),
            Err(e) => h::error(&ApiError::internal(e.to_string())),
        },
        Err(e) => h::error(&e),
    }
}
