//! The Gateway API (standard channel, v1) on the ingress proxy: the CRDs
//! installed at start ([`crds`]), the GatewayClass `r8s`, and a controller
//! that turns Gateways, HTTPRoutes, GRPCRoutes and ReferenceGrants into
//! the proxy's per-port routing table ([`model`], [`convert`], [`table`];
//! all pure) and their statuses. A listener's port is the node's port:
//! the Ingress listeners serve Gateway listeners on the same ports (HTTP
//! on the HTTP one, HTTPS on the HTTPS one); any other port gets a
//! listener of its own, opened and closed as Gateways come and go.

pub mod convert;
pub mod crds;
pub mod model;
mod serve;
pub mod table;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::ingress::proxy::{Proxy, Sni};
use crate::ingress::wake_on;
use types::{GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant};

/// The GatewayClass r8s installs.
pub const CLASS: &str = "r8s";

/// What the controller needs from the ingress it shares a proxy with.
pub struct Shared {
    /// The proxy.
    pub proxy: Arc<Proxy>,
    /// Its tables.
    pub ingress_table: crate::ingress::proxy::Shared,
    /// The Gateway table.
    pub table: crate::ingress::proxy::GatewayShared,
    /// The Ingress listeners' ports (HTTP, HTTPS).
    pub ingress_ports: (u16, u16),
    /// The address other listeners bind.
    pub bind: IpAddr,
    /// The address Gateways report.
    pub address: String,
    /// The certificate for names nothing covers.
    pub fallback: Arc<rustls::sign::CertifiedKey>,
}

/// A listener of our own: its protocol and accept loop.
struct Bound {
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        // Stops accepting; connections already open carry on.
        self.task.abort();
    }
}

async fn bind(s: &Shared, port: u16, tls: bool) -> Result<Bound, String> {
    let l = tokio::net::TcpListener::bind(SocketAddr::new(s.bind, port))
        .await
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    let p = s.proxy.clone();
    let task = if tls {
        let sni = Sni::new(
            s.ingress_table.clone(),
            s.table.clone(),
            port,
            false,
            s.fallback.clone(),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(sni));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio::spawn(p.serve_https(l, Arc::new(cfg)))
    } else {
        tokio::spawn(p.serve_http(l))
    };
    tracing::info!(port, tls, "gateway listener open");
    Ok(Bound { tls, task })
}

async fn ensure_class(client: &kube::Client) {
    let api: Api<GatewayClass> = Api::all(client.clone());
    let class = GatewayClass {
        metadata: kube::api::ObjectMeta {
            name: Some(CLASS.into()),
            ..Default::default()
        },
        spec: types::GatewayClassSpec {
            controller_name: model::CONTROLLER.into(),
        },
        status: None,
    };
    for _ in 0..60 {
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(e) => {
                tracing::debug!(error = %e, "creating the r8s GatewayClass");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Installs the CRDs and the class, then keeps the table, the listeners
/// and the statuses current.
pub async fn run(client: kube::Client, informers: controller_runtime::Informers, s: Shared) {
    crds::install(&client).await;
    ensure_class(&client).await;
    let classes = informers.get::<GatewayClass>();
    let gateways = informers.get::<Gateway>();
    let http_routes = informers.get::<HTTPRoute>();
    let grpc_routes = informers.get::<GRPCRoute>();
    let grants = informers.get::<ReferenceGrant>();
    let namespaces = informers.get::<Namespace>();
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let secrets = informers.get::<Secret>();
    let changed = Arc::new(tokio::sync::Notify::new());
    wake_on(&grants, &changed);
    wake_on(&namespaces, &changed);
    wake_on(&services, &changed);
    wake_on(&slices, &changed);
    wake_on(&secrets, &changed);
    wake_on_spec(&classes, &changed);
    wake_on_spec(&gateways, &changed);
    wake_on_spec(&http_routes, &changed);
    wake_on_spec(&grpc_routes, &changed);
    classes.ready().await;
    gateways.ready().await;
    http_routes.ready().await;
    grpc_routes.ready().await;
    grants.ready().await;
    namespaces.ready().await;
    services.ready().await;
    slices.ready().await;
    secrets.ready().await;
    tracing::info!("gateway controller running");

    let mut bound: HashMap<u16, Bound> = HashMap::new();
    loop {
        let (cl, gw, hr, gr, rg, ns, sv, sl, se) = (
            classes.list(),
            gateways.list(),
            http_routes.list(),
            grpc_routes.list(),
            grants.list(),
            namespaces.list(),
            services.list(),
            slices.list(),
            secrets.list(),
        );
        let mut unavailable: HashMap<u16, String> = HashMap::new();
        let outcome = loop {
            let world = model::World {
                classes: &cl,
                gateways: &gw,
                http_routes: &hr,
                grpc_routes: &gr,
                grants: &rg,
                namespaces: &ns,
                services: &sv,
                slices: &sl,
                secrets: &se,
                address: &s.address,
                unavailable: &unavailable,
                fixed: BTreeMap::from([(s.ingress_ports.0, false), (s.ingress_ports.1, true)]),
            };
            let outcome = model::build(&world);
            // Open what the table wants, close what it no longer does.
            let mut failed = false;
            bound.retain(|port, b| {
                outcome
                    .table
                    .ports
                    .get(port)
                    .is_some_and(|t| t.tls == b.tls)
            });
            for (port, t) in &outcome.table.ports {
                if *port == s.ingress_ports.0
                    || *port == s.ingress_ports.1
                    || bound.contains_key(port)
                {
                    continue;
                }
                match bind(&s, *port, t.tls).await {
                    Ok(b) => {
                        bound.insert(*port, b);
                    }
                    Err(e) => {
                        tracing::warn!(port, error = %e, "gateway listener");
                        unavailable.insert(*port, e);
                        failed = true;
                    }
                }
            }
            if !failed {
                break outcome;
            }
        };
        if let Ok(mut w) = s.table.write() {
            *w = Arc::new(outcome.table);
        }
        write_statuses(&client, outcome.statuses, &cl, &gw, &hr, &gr).await;
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(Duration::from_millis(10)).await,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Wakes `changed` when an object of `inf`'s kind is added, deleted or
/// changes generation. Our own status writes change no generation:
/// waking on them would rebuild everything once more per change for
/// nothing.
fn wake_on_spec<K: controller_runtime::informer::Kind>(
    inf: &controller_runtime::Informer<K>,
    changed: &Arc<tokio::sync::Notify>,
) {
    let mut rx = inf.subscribe();
    let changed = changed.clone();
    tokio::spawn(async move {
        let mut seen: HashMap<String, i64> = HashMap::new();
        loop {
            match rx.recv().await {
                Ok(controller_runtime::Change::Apply(o)) => {
                    let m = kube::Resource::meta(o.as_ref());
                    let uid = m.uid.clone().unwrap_or_default();
                    let g = m.generation.unwrap_or(0);
                    if seen.insert(uid, g) != Some(g) {
                        changed.notify_one();
                    }
                }
                Ok(controller_runtime::Change::Delete(o)) => {
                    seen.remove(
                        kube::Resource::meta(o.as_ref())
                            .uid
                            .as_deref()
                            .unwrap_or_default(),
                    );
                    changed.notify_one();
                }
                Ok(controller_runtime::Change::Resync)
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    seen.clear();
                    changed.notify_one()
                }
                Err(_) => return,
            }
        }
    });
}

fn now() -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap_or(Value::Null)
}

/// Gives each new condition the stored transition time when its status
/// did not change, else now.
fn stamp(new: &mut Value, old: Option<&Value>, now: &Value) {
    let Some(list) = new.as_array_mut() else {
        return;
    };
    for c in list {
        let prev = old
            .and_then(Value::as_array)
            .and_then(|o| o.iter().find(|p| p["type"] == c["type"]));
        let t = match prev {
            Some(p) if p["status"] == c["status"] => p["lastTransitionTime"].clone(),
            _ => now.clone(),
        };
        c["lastTransitionTime"] = t;
    }
}

type Key = (&'static str, Option<String>, String);

fn key(kind: &'static str, m: &kube::api::ObjectMeta) -> Key {
    (
        kind,
        m.namespace.clone(),
        m.name.clone().unwrap_or_default(),
    )
}

async fn write_statuses(
    client: &kube::Client,
    statuses: Vec<model::Status>,
    classes: &[Arc<GatewayClass>],
    gateways: &[Arc<Gateway>],
    http_routes: &[Arc<HTTPRoute>],
    grpc_routes: &[Arc<GRPCRoute>],
) {
    let now = now();
    // What is stored now, by kind, namespace and name.
    let mut stored: HashMap<Key, &Option<Value>> = HashMap::new();
    stored.extend(
        classes
            .iter()
            .map(|o| (key("GatewayClass", &o.metadata), &o.status)),
    );
    stored.extend(
        gateways
            .iter()
            .map(|o| (key("Gateway", &o.metadata), &o.status)),
    );
    stored.extend(
        http_routes
            .iter()
            .map(|o| (key("HTTPRoute", &o.metadata), &o.status)),
    );
    stored.extend(
        grpc_routes
            .iter()
            .map(|o| (key("GRPCRoute", &o.metadata), &o.status)),
    );
    let mut written: std::collections::HashSet<Key> = std::collections::HashSet::new();
    for mut st in statuses {
        let ns = st.namespace.as_deref();
        let k: Key = (st.kind, st.namespace.clone(), st.name.clone());
        let old = stored
            .get(&k)
            .and_then(|s| s.as_ref())
            .cloned()
            .unwrap_or(Value::Null);
        stamp(&mut st.status["conditions"], Some(&old["conditions"]), &now);
        if let Some(ls) = st.status["listeners"].as_array_mut() {
            for l in ls {
                let prev = old["listeners"]
                    .as_array()
                    .and_then(|o| o.iter().find(|p| p["name"] == l["name"]));
                stamp(&mut l["conditions"], prev.map(|p| &p["conditions"]), &now);
            }
        }
        if let Some(ps) = st.status["parents"].as_array_mut() {
            for p in ps.iter_mut() {
                let prev = old["parents"].as_array().and_then(|o| {
                    o.iter().find(|q| {
                        q["parentRef"] == p["parentRef"] && q["controllerName"] == model::CONTROLLER
                    })
                });
                stamp(&mut p["conditions"], prev.map(|q| &q["conditions"]), &now);
            }
            // Other controllers' entries stay.
            for q in old["parents"].as_array().into_iter().flatten() {
                if q["controllerName"] != model::CONTROLLER {
                    ps.push(q.clone());
                }
            }
        }
        written.insert(k);
        let same = st
            .status
            .as_object()
            .is_some_and(|o| o.iter().all(|(k, v)| old[k] == *v));
        if !same {
            patch(client, st.kind, ns, &st.name, json!({"status": st.status})).await;
        }
    }
    // Routes that no longer name a Gateway of ours lose our entries.
    let stale = |kind: &'static str, m: &kube::api::ObjectMeta, status: &Option<Value>| {
        let parents = status.as_ref().and_then(|s| s["parents"].as_array())?;
        if !parents
            .iter()
            .any(|p| p["controllerName"] == model::CONTROLLER)
            || written.iter().any(|(k, n, name)| {
                *k == kind
                    && n.as_deref() == m.namespace.as_deref()
                    && Some(name.as_str()) == m.name.as_deref()
            })
        {
            return None;
        }
        let keep: Vec<Value> = parents
            .iter()
            .filter(|p| p["controllerName"] != model::CONTROLLER)
            .cloned()
            .collect();
        Some((
            m.namespace.clone(),
            m.name.clone().unwrap_or_default(),
            keep,
        ))
    };
    let mut fixes = Vec::new();
    for r in http_routes {
        fixes.extend(stale("HTTPRoute", &r.metadata, &r.status).map(|f| ("HTTPRoute", f)));
    }
    for r in grpc_routes {
        fixes.extend(stale("GRPCRoute", &r.metadata, &r.status).map(|f| ("GRPCRoute", f)));
    }
    for (kind, (ns, name, keep)) in fixes {
        patch(
            client,
            kind,
            ns.as_deref(),
            &name,
            json!({"status": {"parents": keep}}),
        )
        .await;
    }
}

async fn patch(client: &kube::Client, kind: &str, ns: Option<&str>, name: &str, body: Value) {
    let pp = PatchParams::default();
    let p = Patch::Merge(&body);
    let r = match (kind, ns) {
        ("GatewayClass", _) => Api::<GatewayClass>::all(client.clone())
            .patch_status(name, &pp, &p)
            .await
            .map(|_| ()),
        ("Gateway", Some(ns)) => Api::<Gateway>::namespaced(client.clone(), ns)
            .patch_status(name, &pp, &p)
            .await
            .map(|_| ()),
        ("HTTPRoute", Some(ns)) => Api::<HTTPRoute>::namespaced(client.clone(), ns)
            .patch_status(name, &pp, &p)
            .await
            .map(|_| ()),
        ("GRPCRoute", Some(ns)) => Api::<GRPCRoute>::namespaced(client.clone(), ns)
            .patch_status(name, &pp, &p)
            .await
            .map(|_| ()),
        _ => Ok(()),
    };
    if let Err(e) = r {
        tracing::debug!(kind, name, error = %e, "gateway status");
    }
}
