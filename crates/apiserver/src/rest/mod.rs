//! The REST layer: one generic handler for every kind. It turns HTTP verbs
//! into store operations with Kubernetes object semantics; per-kind
//! behaviour comes from `api::registry`.

mod admit;
mod evict;
mod meta;
pub(crate) mod node_proxy;
mod read;
mod review;
mod sub;
pub mod token;
mod write;

use std::sync::Arc;

use api::catalogue::ResourceInfo;
use http::{Method, Request, Response};
use serde_json::Value;
use store::{KeyValue, SharedStore};

use crate::auth::User;
use crate::error::ApiError;
use crate::http::{self as h, Body};
use crate::router::ResourceRoute;
use crate::watch::WatchCache;

pub use meta::now_rfc3339;
pub(crate) use read::{render_list, render_one as render};

/// State the REST handlers share.
pub struct Rest {
    /// The store.
    pub store: SharedStore,
    /// The watch cache.
    pub cache: Arc<WatchCache>,
    /// Serialises IP and port allocation.
    pub(crate) alloc_lock: tokio::sync::Mutex<()>,
    /// The `--service-cidr` cluster IPs come from first.
    pub(crate) service_cidr: ipnet::Ipv4Net,
    /// Client TLS for kubelet APIs (logs), set once the PKI is loaded.
    pub(crate) kubelet_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    /// Signs and verifies service-account tokens.
    pub(crate) sa_signer: std::sync::OnceLock<Arc<crate::satoken::Signer>>,
    /// The custom kinds served now.
    pub crds: Arc<crate::crd::Registry>,
    /// Keeps `crds` in step with the stored definitions.
    pub(crate) crd_controller: Arc<crate::crd::controller::Controller>,
    /// The registered admission webhooks and policies.
    pub(crate) extensions: Arc<crate::admission::dynamic::Extensions>,
    /// The registered APIServices.
    pub aggregator: Arc<crate::aggregator::Aggregator>,
    /// Decides who may do what (RBAC and the Node authorizer).
    pub authz: Arc<crate::authz::Authorizer>,
    /// The ResourceQuotas, for quota admission.
    pub(crate) quotas: Arc<crate::watched::Watched>,
    /// The LimitRanges, for LimitRanger admission.
    pub(crate) limit_ranges: Arc<crate::watched::Watched>,
    /// Serializes quota charges per namespace.
    pub(crate) quota_locks: crate::admission::quota::Locks,
    /// The resource metrics API (metrics.k8s.io) and its scraper.
    pub resource_metrics: Arc<crate::resource_metrics::ResourceMetrics>,
}

/// A kind's strategy: compiled for built-in kinds, read from the
/// definition for custom ones.
pub(crate) enum StrategyRef {
    Builtin(&'static dyn api::registry::Strategy),
    Custom(Arc<api::crd::strategy::CustomStrategy>),
}

impl std::ops::Deref for StrategyRef {
    type Target = dyn api::registry::Strategy;

    fn deref(&self) -> &Self::Target {
        match self {
            StrategyRef::Builtin(s) => *s,
            StrategyRef::Custom(s) => s.as_ref(),
        }
    }
}

pub use crate::http::Query;

/// Everything about one request the handlers need.
pub struct Call {
    /// The parsed path.
    pub route: ResourceRoute,
    /// Method.
    pub method: Method,
    /// Query.
    pub query: Query,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Authenticated user.
    pub user: User,
}

impl Call {
    /// The resource.
    pub fn info(&self) -> &'static ResourceInfo {
        self.route.info
    }

    /// The namespace for a namespaced resource (from the path).
    pub fn ns(&self) -> Option<&str> {
        self.route.namespace.as_deref()
    }

    /// The field manager for managedFields: `fieldManager`, else the user
    /// agent's program name, as upstream derives it.
    pub fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        self.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }
}

pub use crate::objects::{collection_prefix, decode_kv, object_key};

impl Rest {
    /// What the admission plugins may use of the server.
    pub(crate) fn admission_context(&self) -> crate::admission::Context<'_> {
        crate::admission::Context {
            store: &self.store,
            alloc_lock: &self.alloc_lock,
            service_cidr: self.service_cidr,
            quotas: &self.quotas,
            limit_ranges: &self.limit_ranges,
            quota_locks: &self.quota_locks,
        }
    }

    /// The rules of `info`'s kind.
    pub(crate) fn strategy(&self, info: &ResourceInfo) -> StrategyRef {
        match self.crds.get(info) {
            Some(served) => StrategyRef::Custom(served.strategy.clone()),
            None => StrategyRef::Builtin(api::registry::strategy(info)),
        }
    }

    /// Creates the REST layer over a store and its watch cache.
    pub fn new(store: SharedStore, cache: Arc<WatchCache>, service_cidr: ipnet::Ipv4Net) -> Rest {
        let crds = Arc::new(crate::crd::Registry::default());
        let crd_controller = crate::crd::controller::Controller::new(store.clone(), crds.clone());
        Rest {
            crds,
            crd_controller,
            extensions: Arc::new(crate::admission::dynamic::Extensions::new()),
            aggregator: Arc::new(crate::aggregator::Aggregator::default()),
            authz: Arc::new(crate::authz::Authorizer::new()),
            quotas: crate::watched::Watched::of("", "resourcequotas"),
            limit_ranges: crate::watched::Watched::of("", "limitranges"),
            quota_locks: Default::default(),
            resource_metrics: Default::default(),
            store,
            cache,
            alloc_lock: tokio::sync::Mutex::new(()),
            service_cidr,
            kubelet_tls: std::sync::OnceLock::new(),
            sa_signer: std::sync::OnceLock::new(),
        }
    }

    /// Serves one resource request.
    pub async fn serve(
        &self,
        route: ResourceRoute,
        req: Request<crate::http::RequestBody>,
        user: User,
    ) -> Response<Body> {
        let mut req = req;
        // Streaming subresources reach the kubelet through a tunnel of the
        // upgraded connection.
        let tunnel = matches!(
            route.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        ) && route.info.plural == "pods"
            && req.headers().contains_key(http::header::UPGRADE);
        let on_upgrade = tunnel.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let call = Call {
            route,
            method: parts.method.clone(),
            query: Query::parse(parts.uri.query()),
            headers: parts.headers,
            user,
        };
        if let Some(up) = on_upgrade {
            let raw_query = parts.uri.query().unwrap_or("").to_string();
            return match node_proxy::tunnel(self, &call, &raw_query, up).await {
                Ok(r) => r,
                Err(e) => h::error(&e),
            };
        }
        let mut resp = match self.dispatch(&call, body).await {
            Ok(r) => r,
            Err(e) => h::error(&e),
        };
        // A deprecated custom version says so on every request, as
        // upstream.
        if let Some(w) = self.crds.get(call.info()).and_then(|s| s.warning())
            && let Ok(v) =
                http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\"")))
        {
            resp.headers_mut().append("Warning", v);
        }
        resp
    }

    async fn dispatch(
        &self,
        call: &Call,
        body: crate::http::RequestBody,
    ) -> Result<Response<Body>, ApiError> {
        let info = call.info();
        if info.namespaced && call.route.namespace.is_none() && call.route.name.is_some() {
            return Err(ApiError::no_route(
                "a namespaced resource needs a namespace in the path",
            ));
        }
        if !info.namespaced && call.route.namespace.is_some() {
            return Err(ApiError::no_route("the resource is not namespaced"));
        }
        if crate::resource_metrics::is_metrics(info) && call.route.subresource.is_none() {
            let watch = call.route.watch_prefix || call.query.flag("watch");
            if call.method != Method::GET || watch {
                return Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({} {})",
                    call.method, info.plural
                )));
            }
            return self.resource_metrics.serve(call);
        }
        if review::is_review(info) && call.method == Method::POST && call.route.name.is_none() {
            let bytes = h::read_body(body, &call.headers).await?;
            return review::serve(self, call, &bytes).await;
        }
        if let Some(sub) = call.route.subresource.as_deref() {
            if !info.has_subresource(sub) {
                return Err(ApiError::not_found(
                    info.group,
                    &format!("{}/{sub}", info.plural),
                    "",
                ));
            }
            return sub::serve(self, call, sub, body).await;
        }
        let name = call.route.name.as_deref();
        let verb_ok = |v: &str| {
            if info.has_verb(v) {
                Ok(())
            } else {
                Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({v} {})",
                    info.plural
                )))
            }
        };
        let watch = call.route.watch_prefix || call.query.flag("watch");
        match (&call.method, name) {
            (&Method::GET, _) if watch => {
                verb_ok("watch")?;
                read::watch(self, call).await
            }
            (&Method::GET, None) => {
                verb_ok("list")?;
                read::list(self, call).await
            }
            (&Method::GET, Some(name)) => {
                verb_ok("get")?;
                read::get(self, call, name).await
            }
            (&Method::POST, None) => {
                verb_ok("create")?;
                let bytes = h::read_body(body, &call.headers).await?;
                write::create(self, call, &bytes).await
            }
            (&Method::PUT, Some(name)) => {
                verb_ok("update")?;
                let bytes = h::read_body(body, &call.headers).await?;
                write::update(self, call, name, &bytes).await
            }
            (&Method::PATCH, Some(name)) => {
                verb_ok("patch")?;
                let bytes = h::read_body(body, &call.headers).await?;
                write::patch(self, call, name, &bytes).await
            }
            (&Method::DELETE, Some(name)) => {
                verb_ok("delete")?;
                let bytes = h::read_body(body, &call.headers).await?;
                write::delete(self, call, name, &bytes).await
            }
            (&Method::DELETE, None) => {
                verb_ok("deletecollection")?;
                let bytes = h::read_body(body, &call.headers).await?;
                write::delete_collection(self, call, &bytes).await
            }
            (m, _) => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m} {})",
                info.plural
            ))),
        }
    }

    /// Reads an object, 404 if absent.
    pub async fn load(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(Value, KeyValue), ApiError> {
        let (mut obj, kv) = crate::objects::load(&self.store, info, ns, name).await?;
        if info.conversion_webhook {
            self.convert(info, std::slice::from_mut(&mut obj), &info.api_version())
                .await?;
        }
        Ok((obj, kv))
    }

    /// Converts custom objects to `desired` (an apiVersion) when their
    /// kind has a conversion webhook; a no-op otherwise.
    pub(crate) async fn convert(
        &self,
        info: &ResourceInfo,
        objs: &mut [Value],
        desired: &str,
    ) -> Result<(), ApiError> {
        if !info.conversion_webhook {
            return Ok(());
        }
        let Some(served) = self.crds.get(info) else {
            return Ok(());
        };
        crate::crd::conversion::convert(&self.store, &served, objs, desired).await
    }
}

impl Rest {
    /// Creates an object on the server's own behalf (bootstrap objects),
    /// through the same pipeline as API requests. AlreadyExists is success.
    pub async fn ensure(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<(), ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if self
            .store
            .get(&object_key(info, ns, &name))
            .await?
            .is_some()
        {
            return Ok(());
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("r8s-apiserver"),
        );
        let call = Call {
            route: ResourceRoute {
                info,
                namespace: ns.map(str::to_string),
                name: None,
                subresource: None,
                rest: String::new(),
                watch_prefix: false,
                custom: None,
            },
            method: Method::POST,
            query: Query::default(),
            headers,
            user: User::new("system:apiserver", vec!["system:masters".into()]),
        };
        match write::create_object(self, &call, obj).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(ApiError {
                message: format!("bootstrap {} {name}: {}", info.plural, e.message),
                ..e
            }),
        }
    }
}
