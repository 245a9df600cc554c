//! A real `etcd` process for tests: free loopback ports, a private data
//! directory (on tmpfs when there is one, since etcd fsyncs every commit),
//! killed and removed on drop, even when the test panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use tempfile::TempDir;

/// Where the etcd binary is: `$ETCD_BIN`, else `etcd` on `PATH`.
fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("etcd not found: apt-get install etcd-server"))
}

/// Two distinct free loopback ports (held together so they differ).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// A running single-member etcd.
pub struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// Client-side TLS material when etcd serves HTTPS with client-cert auth.
    tls: Option<EtcdTls>,
}

/// A CA, a serving certificate for 127.0.0.1 and a client certificate,
/// written as PEM files into `dir`; returns the client's view.
fn write_pki(dir: &Path) -> EtcdTls {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
    let issue = |name: &str, server: bool| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        if server {
            p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    issue("server", true);
    issue("client", false);
    EtcdTls {
        ca_file: dir.join("ca.crt"),
        cert_file: Some(dir.join("client.crt")),
        key_file: Some(dir.join("client.key")),
    }
}

impl EtcdServer {
    /// Starts etcd on fresh ports and a fresh data directory, and waits
    /// until it serves requests.
    pub async fn start() -> EtcdServer {
        Self::start_with(false).await
    }

    /// Starts etcd serving HTTPS and requiring client certificates.
    pub async fn start_tls() -> EtcdServer {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> EtcdServer {
        let bin = etcd_binary();
        let shm = Path::new("/dev/shm");
        let mut last_log = String::new();
        // A port picked as free can be taken by the time etcd binds it.
        for _ in 0..3 {
            let dir = if shm.is_dir() {
                tempfile::Builder::new()
                    .prefix("r8s-etcd-")
                    .tempdir_in(shm)
                    .unwrap()
            } else {
                tempfile::tempdir().unwrap()
            };
            let (client_port, peer_port) = free_ports();
            let tls = tls.then(|| write_pki(dir.path()));
            let mut server = EtcdServer {
                child: None,
                dir,
                client_port,
                peer_port,
                tls,
            };
            server.spawn(&bin);
            if server.wait_ready().await {
                return server;
            }
            last_log = server.log();
        }
        panic!("etcd did not start; last log:\n{last_log}");
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client TLS settings etcd accepts, for a TLS server.
    pub fn tls(&self) -> Option<EtcdTls> {
        self.tls.clone()
    }

    /// A store connected to this etcd with the given request timeout.
    pub async fn store(&self, timeout: Duration) -> EtcdStore {
        let opts = EtcdOptions {
            request_timeout: timeout,
            connect_timeout: Duration::from_secs(2),
        };
        EtcdStore::connect_with(&[self.url()], self.tls(), opts)
            .await
            .unwrap()
    }

    /// SIGKILLs etcd (the data directory stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn(&etcd_binary());
        assert!(
            self.wait_ready().await,
            "etcd did not restart; log:\n{}",
            self.log()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or(&text).to_string()
    }

    fn spawn(&mut self, bin: &Path) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--name=default")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"));
        if self.tls.is_some() {
            let d = self.dir.path();
            cmd.arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", d.join("ca.crt").display()))
                .arg(format!("--cert-file={}", d.join("server.crt").display()))
                .arg(format!("--key-file={}", d.join("server.key").display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // If the test binary dies without unwinding (SIGKILL), take etcd along.
        // SAFETY: the hook runs between fork and exec and only calls prctl,
        // which is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!("etcd not found: apt-get install etcd-server ({bin:?}: {e})")
        }));
    }

    /// Waits until etcd answers; false when it exited or never answered.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let opts = EtcdOptions {
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                eprintln!("etcd exited early ({status}):\n{}", self.log());
                self.child = None;
                return false;
            }
            if EtcdStore::connect_with(&[self.url()], self.tls(), opts.clone())
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        false
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
