//! The end-to-end harness: a real `r8s server` in a temp dir on a free
//! port, driven by the installed `kubectl`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed (and its data dir removed) on drop.
pub struct Cluster {
    child: Child,
    /// The data dir.
    pub dir: tempfile::TempDir,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API URL.
    pub url: String,
    /// The web console's one-time sign-in link, as the server printed it.
    pub console_link: String,
    /// The extra server arguments (for restarts).
    extra: Vec<String>,
}

/// The r8s binary under test.
/// Fails the test, saying why, unless it runs as root (CI does).
pub fn require_root(why: &str) {
    assert!(nix::unistd::geteuid().is_root(), "{why}");
}

pub fn r8s_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_r8s"))
}

impl Cluster {
    /// Starts a server with the embedded SQLite store.
    pub fn start() -> Cluster {
        Self::start_in(tempfile::tempdir().expect("tempdir"), &[])
    }

    /// Starts a server without a node agent in `dir` with extra arguments.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Cluster {
        let mut args = vec!["--no-agent"];
        args.extend_from_slice(extra);
        Self::start_with(dir, &args)
    }

    /// Starts a server in `dir` with exactly these extra arguments.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Cluster {
        // The scheduler's and controllers' /metrics ports are fixed by
        // default (10259, 10257): tests turn them off unless they ask.
        let mut ports = Vec::new();
        for flag in [
            "--scheduler-secure-port",
            "--controller-manager-secure-port",
        ] {
            if !extra.contains(&flag) {
                ports.extend([flag, "0"]);
            }
        }
        // So is the ingress (80, 443), unless a test gives it ports.
        if !extra.contains(&"--ingress-http-port") {
            ports.extend(["--disable", "ingress"]);
        }
        let mut child = Command::new(r8s_bin())
            .args(["server", "--https-port", "0", "--data-dir"])
            .arg(dir.path())
            .args(&ports)
            .args(extra)
            .env(
                "R8S_LOG",
                std::env::var("R8S_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn r8s server");
        let stdout = child.stdout.take().expect("stdout");
        let mut url = String::new();
        let mut kubeconfig = PathBuf::new();
        let mut console_link = String::new();
        let mut lines = BufReader::new(stdout).lines();
        while url.is_empty() || kubeconfig.as_os_str().is_empty() || console_link.is_empty() {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("r8s API server listening on ") {
                        url = u.trim().to_string();
                    }
                    if let Some(k) = line.strip_prefix("kubeconfig: ") {
                        kubeconfig = PathBuf::from(k.trim());
                    }
                    if let Some(k) = line.strip_prefix("web console: ") {
                        console_link = k.trim().to_string();
                    }
                }
                _ => break,
            }
        }
        assert!(
            !url.is_empty(),
            "r8s server did not report its URL (see its stderr above)"
        );
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Cluster {
            child,
            dir,
            kubeconfig,
            url,
            console_link,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Runs kubectl with this cluster's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_env(args, &[], None)
    }

    /// Runs kubectl with extra environment and optional stdin.
    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        self.kubectl_bin(Path::new("kubectl"), args, env, stdin)
    }

    /// Runs a given kubectl binary (e.g. an older version) with extra
    /// environment and optional stdin.
    pub fn kubectl_bin(
        &self,
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Output {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{} must be installed: {e}", bin.display()));
        if let Some(input) = stdin {
            use std::io::Write;
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input.as_bytes()).expect("write stdin");
        }
        wait_with_timeout(child, Duration::from_secs(60))
    }

    /// Runs kubectl and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with stdin and asserts success.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_env(args, &[], Some(stdin));
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a manifest with `kubectl create -f -` (JSON/YAML on the wire,
    /// unlike the protobuf-sending generators), in `ns` when given.
    pub fn create(&self, ns: Option<&str>, manifest: &str) -> String {
        match ns {
            Some(ns) => self.ok_stdin(&["create", "-n", ns, "-f", "-"], manifest),
            None => self.ok_stdin(&["create", "-f", "-"], manifest),
        }
    }

    /// Creates a namespace from a manifest.
    pub fn create_ns(&self, name: &str) {
        self.create(
            None,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
        );
    }

    /// Creates a ConfigMap from a manifest, with `data` lines (`k: v`).
    pub fn create_cm(&self, ns: Option<&str>, name: &str, data: &[(&str, &str)]) {
        let mut m = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
        if !data.is_empty() {
            m.push_str("data:\n");
            for (k, v) in data {
                m.push_str(&format!("  {k}: \"{v}\"\n"));
            }
        }
        self.create(ns, &m);
    }

    /// Runs kubectl, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed but printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes a file into the data dir and returns its path as a string.
    pub fn file(&self, name: &str, contents: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p.to_string_lossy().into_owned()
    }

    /// Stops the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (SIGKILL) and starts it again on the same data dir.
    pub fn restart(&mut self) {
        self.kill();
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let new = Cluster::start_with(dir, &extra);
        *self = new;
    }

    /// Kills the server (SIGKILL) and starts it again on the same data dir
    /// with `from` in its arguments replaced by `to`.
    pub fn restart_replacing(&mut self, from: &str, to: &str) {
        let at = self
            .extra
            .iter()
            .position(|a| a == from)
            .unwrap_or_else(|| panic!("{from:?} is not among the server's arguments"));
        self.extra[at] = to.to_string();
        self.restart();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs kubectl with `stdin`, expecting failure; returns its stderr.
    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_env(args, &[], Some(stdin));
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed but printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Data dir path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for a child, killing it after `timeout` so a hung client fails the
/// test instead of hanging CI. Output is drained while waiting, so a child
/// that prints more than a pipe holds cannot block on it.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    use std::io::Read;
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "command timed out after {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&err)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait failed: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Parses JSON output.
/// Runs a script with Debian's interpreter (where python3-kubernetes, the
/// official client, lives), asserts success and returns its trimmed
/// standard output.
pub fn python(script: &str) -> String {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .output()
        .expect("python3 with the kubernetes client (Debian: python3-kubernetes)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A `r8s hollow` process (simulated nodes) joined to a cluster; killed on
/// drop.
pub struct Hollow {
    child: Child,
}

impl Hollow {
    /// Stops the simulated nodes abruptly (no goodbye to the API server).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Cluster {
    /// Starts `nodes` hollow nodes named `prefix-0..` spread over `zones`,
    /// and waits until kubectl sees them all Ready.
    pub fn hollow(&self, prefix: &str, nodes: usize, zones: &[&str], extra: &[&str]) -> Hollow {
        let mut cmd = Command::new(r8s_bin());
        cmd.args(["hollow", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .args(["--nodes", &nodes.to_string(), "--name-prefix", prefix])
            .args(extra)
            .env(
                "R8S_LOG",
                std::env::var("R8S_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if !zones.is_empty() {
            cmd.args(["--zones", &zones.join(",")]);
        }
        let child = cmd.spawn().expect("spawn r8s hollow");
        let h = Hollow { child };
        let want: Vec<String> = (0..nodes).map(|i| format!("{prefix}-{i}")).collect();
        self.wait_for(
            &format!("{nodes} hollow nodes {prefix}-* Ready"),
            Duration::from_secs(60),
            || {
                let out = self.ok(&["get", "nodes", "-o", "json"]);
                let v = json(&out);
                let ready = v["items"]
                    .as_array()?
                    .iter()
                    .filter(|n| {
                        want.iter()
                            .any(|w| n["metadata"]["name"].as_str() == Some(w))
                            && n["status"]["conditions"].as_array().is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                    })
                    .count();
                (ready == nodes).then_some(())
            },
        );
        h
    }

    /// Polls `check` every 200 ms until it returns Some, failing the test
    /// with `what` after `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubectl get -o json` parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        json(&self.ok(&a))
    }

    /// Pods in `ns` matching label selector `sel`, as JSON objects.
    pub fn pods(&self, ns: &str, sel: &str) -> Vec<serde_json::Value> {
        let v = self.get_json(&["pods", "-n", ns, "-l", sel]);
        v["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Phase of a pod JSON object.
pub fn phase(p: &serde_json::Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

/// Node name of a pod JSON object.
pub fn node_of(p: &serde_json::Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

/// A background `kubectl get -w --output-watch-events -o json` recording
/// every event it prints.
pub struct WatchLog {
    child: Child,
    events: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl WatchLog {
    /// Events seen so far (`{"type": ..., "object": ...}`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for WatchLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// Starts recording watch events of `kubectl get <args> -w`.
    pub fn watch_log(&self, args: &[&str]) -> WatchLog {
        let mut child = Command::new("kubectl")
            .arg("get")
            .args(args)
            .args(["-w", "--output-watch-events", "-o", "json"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl must be installed and on PATH");
        let out = child.stdout.take().expect("stdout");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            let de = serde_json::Deserializer::from_reader(BufReader::new(out));
            for v in de.into_iter::<serde_json::Value>().flatten() {
                if let Ok(mut e) = sink.lock() {
                    e.push(v);
                }
            }
        });
        WatchLog { child, events }
    }
}

/// An older kubectl installed next to the one on PATH (the machine's
/// kubectl dispatcher keeps `kubectl.1.27` … `kubectl.1.33` side by side
/// and picks one by the server's version): for tests of what older clients
/// speak. Fails, naming what is missing, when it is not installed.
pub fn versioned_kubectl(version: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl must be on PATH");
    let real = std::fs::canonicalize(&found).unwrap_or(found);
    let dir = real.parent().unwrap_or(Path::new("/"));
    let want = dir.join(format!("kubectl.{version}"));
    assert!(
        want.is_file(),
        "this test needs kubectl {version} installed as {} (next to {})",
        want.display(),
        real.display()
    );
    want
}

/// Builds the busybox test image (from Debian's busybox-static) as
/// `<dir>/busybox.tar`.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let out = dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/build-busybox-image.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .status()
        .expect("bash");
    assert!(
        st.success(),
        "building the busybox image failed: install Debian's busybox-static"
    );
    out
}

/// Imports an image tarball into a node's data dir (`r8s image import`).
pub fn import_image(data_dir: &Path, tar: &Path) {
    let st = Command::new(r8s_bin())
        .args(["image", "import", "--data-dir"])
        .arg(data_dir)
        .arg(tar)
        .output()
        .expect("run r8s image import");
    assert!(
        st.status.success(),
        "r8s image import: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}
