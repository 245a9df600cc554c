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

/// An aggregated API server for tests: serves `sample.r8s.test/v1beta1`
/// with one namespaced kind, Flunder, over TLS, and answers a list with
/// the `X-Remote-User` it was sent.
///
/// Returns its port and the base64 `caBundle` its certificate (for
/// `sample-api.default.svc`) verifies with.
///
/// # Panics
/// When the listener or certificate cannot be made.
pub async fn sample_api_server() -> (u16, String) {
    use base64::Engine;
    use bytes::Bytes;
    use http_body_util::Full;
    use serde_json::json;
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["sample-api.default.svc".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(cert.pem());
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let user = req
                            .headers()
                            .get("X-Remote-User")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = match req.uri().path() {
                            "/apis/sample.r8s.test/v1beta1" => json!({
                                "kind": "APIResourceList", "apiVersion": "v1",
                                "groupVersion": "sample.r8s.test/v1beta1",
                                "resources": [{"name": "flunders", "singularName": "flunder", "namespaced": true,
                                    "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]}]
                            }),
                            "/apis/sample.r8s.test/v1beta1/namespaces/default/flunders" => json!({
                                "kind": "FlunderList", "apiVersion": "sample.r8s.test/v1beta1", "metadata": {},
                                "items": [{"kind": "Flunder", "apiVersion": "sample.r8s.test/v1beta1",
                                    "metadata": {"name": "seen-by", "namespace": "default"}, "spec": {"user": user}}]
                            }),
                            _ => {
                                let mut r =
                                    http::Response::new(Full::new(Bytes::from_static(b"{}")));
                                *r.status_mut() = http::StatusCode::NOT_FOUND;
                                return Ok::<_, std::convert::Infallible>(r);
                            }
                        };
                        Ok(http::Response::new(Full::new(Bytes::from(
                            body.to_string(),
                        ))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca_bundle)
}
