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
