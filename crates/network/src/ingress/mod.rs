//! The built-in ingress controller (networking.k8s.io/v1 Ingress), as k3s
//! ships Traefik: the IngressClass `r8s`, marked default, is installed;
//! Ingresses of that class (or of none) are served on the HTTP and HTTPS
//! ports ([`proxy`]) by the routing table ([`routes`]) rebuilt whenever an
//! Ingress, Service, EndpointSlice or Secret changes (the table is swapped
//! whole, so open connections are never dropped); each gets its
//! `status.loadBalancer` address. The same proxy serves the Gateway API
//! ([`crate::gateway`]).

pub mod proxy;
pub mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::NetworkError;

/// Where the ingress listens and what address it reports.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plain HTTP (`--ingress-http-port`).
    pub http: SocketAddr,
    /// HTTPS (`--ingress-https-port`).
    pub https: SocketAddr,
    /// The address Ingresses (and Gateways) report.
    pub address: String,
    /// Also serve the Gateway API (installing its CRDs).
    pub gateway: bool,
}

fn fallback_cert() -> Result<Arc<rustls::sign::CertifiedKey>, NetworkError> {
    let bad = |e: String| NetworkError::Config(format!("ingress fallback certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec!["r8s-ingress.local".to_string()])
        .map_err(|e| bad(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "R8S DEFAULT CERT");
    let cert = params.self_signed(&key).map_err(|e| bad(e.to_string()))?;
    proxy::certified(&cert.pem(), &key.serialize_pem()).ok_or_else(|| bad("unusable".into()))
}

/// Installs the IngressClass, starts the listeners and keeps the table and
/// the statuses current until the task is dropped.
pub async fn run(client: kube::Client, opts: Options) -> Result<(), NetworkError> {
    let table: proxy::Shared = Arc::new(RwLock::new(Arc::new(routes::Table::default())));
    let gateway_table: proxy::GatewayShared = Arc::new(RwLock::new(Arc::default()));
    let fallback = fallback_cert()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetworkError::Config(format!("ingress TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(proxy::Sni::new(
            table.clone(),
            gateway_table.clone(),
            opts.https.port(),
            true,
            fallback.clone(),
        )));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let bind = |a: SocketAddr| async move {
        tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| NetworkError::Config(format!("ingress listener {a}: {e}")))
    };
    let (http, https) = (bind(opts.http).await?, bind(opts.https).await?);
    let ports = (
        http.local_addr()
            .map(|a| a.port())
            .unwrap_or(opts.http.port()),
        https
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(opts.https.port()),
    );
    tracing::info!(http = ?http.local_addr().ok(), https = ?https.local_addr().ok(), "ingress listening");
    let p = proxy::Proxy::new(table.clone(), gateway_table.clone(), ports);
    tokio::spawn(p.clone().serve_http(http));
    tokio::spawn(p.clone().serve_https(https, Arc::new(tls)));

    let informers = controller_runtime::Informers::new(client.clone());
    if opts.gateway {
        let shared = crate::gateway::Shared {
            proxy: p,
            ingress_table: table.clone(),
            table: gateway_table,
            ingress_ports: ports,
            bind: opts.http.ip(),
            address: opts.address.clone(),
            fallback,
        };
        tokio::spawn(crate::gateway::run(
            client.clone(),
            informers.clone(),
            shared,
        ));
    }
    ensure_class(&client).await;
    let ingresses = informers.get::<Ingress>();
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let secrets = informers.get::<Secret>();
    let changed = Arc::new(tokio::sync::Notify::new());
    wake_on(&ingresses, &changed);
    wake_on(&services, &changed);
    wake_on(&slices, &changed);
    wake_on(&secrets, &changed);
    ingresses.ready().await;
    services.ready().await;
    slices.ready().await;
    secrets.ready().await;
    loop {
        let ings = ingresses.list();
        let t = routes::Table::build(&ings, &services.list(), &slices.list(), &secrets.list());
        if let Ok(mut w) = table.write() {
            *w = Arc::new(t);
        }
        for ing in ings.iter().filter(|i| routes::ours(i)) {
            report_status(&client, ing, &opts.address).await;
        }
        // Coalesce bursts of changes (a rollout moves many endpoints).
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Wakes `changed` on every change to `inf`'s kind (a lagging feed too).
pub(crate) fn wake_on<K: controller_runtime::informer::Kind>(
    inf: &controller_runtime::Informer<K>,
    changed: &Arc<tokio::sync::Notify>,
) {
    let mut rx = inf.subscribe();
    let changed = changed.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    changed.notify_one()
                }
                Err(_) => return,
            }
        }
    });
}

async fn ensure_class(client: &kube::Client) {
    let api: Api<IngressClass> = Api::all(client.clone());
    let class: IngressClass = match serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": routes::CLASS,
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": routes::CONTROLLER},
    })) {
        Ok(c) => c,
        Err(_) => return,
    };
    for _ in 0..30 {
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(e) => {
                tracing::debug!(error = %e, "creating the r8s IngressClass");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn report_status(client: &kube::Client, ing: &Ingress, address: &str) {
    let want = if address.parse::<std::net::IpAddr>().is_ok() {
        json!([{"ip": address}])
    } else {
        json!([{"hostname": address}])
    };
    let have = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| serde_json::to_value(i).unwrap_or_default());
    if have.as_ref() == Some(&want) {
        return;
    }
    let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
    let name = ing.metadata.name.as_deref().unwrap_or("");
    let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(ingress = %name, error = %e, "ingress status");
    }
}
