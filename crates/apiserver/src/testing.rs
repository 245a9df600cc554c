//! An in-process API server on the memory store for other crates' tests
//! (controllers, scheduler, hollow nodes): real HTTPS, real kube-rs client.

use std::sync::Arc;

/// A running test server; stopped and its temp dir removed on drop.
pub struct TestServer {
    /// The running server (its kubeconfig, URL and PKI).
    pub running: crate::Running,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.running.task.abort();
    }
}

impl TestServer {
    /// Starts a server on a fresh memory store and a free loopback port.
    ///
    /// # Panics
    /// When the server cannot start: a test setup failure.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir for the test server");
        let cfg = crate::Config {
            data_dir: dir.path().to_path_buf(),
            bind_address: "127.0.0.1".parse().expect("loopback"),
            https_port: 0,
            tls_sans: vec![],
            service_cidr: crate::SERVICE_CIDR,
            advertise_address: None,
            authorization_mode: Default::default(),
            encryption_provider_config: None,
            secrets_encryption: true,
            audit: None,
            metric_resolution: std::time::Duration::from_secs(15),
        };
        let store = Arc::new(store::memory::MemoryStore::new());
        let running = crate::start(cfg, store)
            .await
            .expect("start test API server");
        TestServer { running, _dir: dir }
    }

    /// A kube-rs client with the admin credentials.
    ///
    /// # Panics
    /// When the written kubeconfig cannot be loaded.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.running.kubeconfig)
            .expect("read test kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("load test kubeconfig");
        kube::Client::try_from(config).expect("build client")
    }
}

/// Polls `check` every 50 ms until it yields `Some`, failing the test with
/// `what` after `secs` seconds: the one wait every component test shares.
///
/// # Panics
/// When the time runs out.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// [`wait_for`] for a condition without a value.
///
/// # Panics
/// When the time runs out.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(secs, what, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await
}

/// An HTTPS server for tests (webhooks, aggregated API servers): a
/// self-signed certificate for `san` (an IP or a DNS name), each request
/// answered with the JSON and status `handler` returns for its head and
/// body. Returns the port and the base64 `caBundle` that verifies it.
///
/// # Panics
/// When the listener or certificate cannot be made.
pub async fn https_server<F, Fut>(san: &str, handler: F) -> (u16, String)
where
    F: Fn(http::request::Parts, bytes::Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, serde_json::Value)> + Send,
{
    use base64::Engine;
    use http_body_util::{BodyExt, Full};
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![san.to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(cert.pem());
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let (code, out) = handler(parts, body).await;
                            let mut r =
                                http::Response::new(Full::new(bytes::Bytes::from(out.to_string())));
                            *r.status_mut() =
                                http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca_bundle)
}

/// An aggregated API server for tests: serves `sample.r8s.test/v1beta1`
/// with one namespaced kind, Flunder, and answers a list with the
/// `X-Remote-User` it was sent. Returns its port and the `caBundle` its
/// certificate (for `sample-api.default.svc`) verifies with.
pub async fn sample_api_server() -> (u16, String) {
    use serde_json::json;
    https_server("sample-api.default.svc", |head: http::request::Parts, _| async move {
        let user = head
            .headers
            .get("X-Remote-User")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match head.uri.path() {
            "/apis/sample.r8s.test/v1beta1" => (200, json!({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "sample.r8s.test/v1beta1",
                "resources": [{"name": "flunders", "singularName": "flunder", "namespaced": true,
                    "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]}]
            })),
            "/apis/sample.r8s.test/v1beta1/namespaces/default/flunders" => (200, json!({
                "kind": "FlunderList", "apiVersion": "sample.r8s.test/v1beta1", "metadata": {},
                "items": [{"kind": "Flunder", "apiVersion": "sample.r8s.test/v1beta1",
                    "metadata": {"name": "seen-by", "namespace": "default"}, "spec": {"user": user}}]
            })),
            _ => (404, json!({})),
        }
    })
    .await
}
