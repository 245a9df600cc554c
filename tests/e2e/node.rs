//! The node agent with real containers: `r8s server` with its built-in
//! agent, a busybox image built from Debian's busybox-static and imported
//! with `r8s image import`, and the real kubectl. Needs root (CI is root);
//! without it the test fails saying so.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Cluster, r8s_bin};

/// Names unique to this test run, and clean-up of what the agent made on
/// the host even when the test fails.
struct Host {
    cluster: Option<Cluster>,
    data: tempfile::TempDir,
    bridge: String,
    cgroup: String,
    cidr: String,
    net: String,
    /// The Service range: unique, so that nodes of parallel tests never
    /// program the same cluster IPs.
    svc_cidr: String,
}

impl Host {
    fn new() -> Host {
        common::require_root("the node e2e test needs root (namespaces, cgroups, mounts, bridges)");
        // Tests of one binary run in parallel in one process: each gets its
        // own names and addresses.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let third = (pid % 200) as u8 + 20;
        let second = 79 + n;
        Host {
            cluster: None,
            data: tempfile::tempdir().unwrap(),
            bridge: format!("r8se{}n{n}", pid % 100_000),
            cgroup: format!("r8s-e2e-{pid}-{n}"),
            cidr: format!("10.{second}.{third}.0/24"),
            net: format!("10.{second}.{third}."),
            svc_cidr: format!("10.{second}.{}.0/24", (u32::from(third) + 100) % 256),
        }
    }
}

impl Host {
    /// The server arguments of this test's node: its own bridge, pod and
    /// Service ranges, cgroup, and its bridge's gateway as the node's
    /// address (so nothing the node serves is on the host's addresses).
    fn node_args(&self) -> Vec<String> {
        [
            "--node-name",
            "e2e-node",
            "--bridge",
            &self.bridge,
            "--pod-cidr",
            &self.cidr,
            "--cgroup-root",
            &self.cgroup,
            "--kubelet-port",
            "0",
            "--node-ip",
            &format!("{}1", self.net),
            "--service-cidr",
            &self.svc_cidr,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Server first (so nothing restarts containers), then what it left
        // on the host, then its data dir.
        let mut c = self.cluster.take();
        if let Some(c) = c.as_mut() {
            c.kill();
        }
        kubelet::cleanup_host(&self.cgroup, &self.bridge, self.data.path());
        network::cleanup_host(&self.bridge);
        drop(c);
    }
}

/// A pod's events (core/v1, as `kubectl describe` reads them): reason,
/// message and the whole event.
fn pod_events(c: &Cluster, name: &str) -> Vec<(String, String, serde_json::Value)> {
    let sel = format!("involvedObject.name={name}");
    let v = c.get_json(&["events", "--field-selector", &sel]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
                e.clone(),
            )
        })
        .collect()
}

fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn pod(c: &Cluster, name: &str) -> serde_json::Value {
    c.get_json(&["pod", name])
}

#[test]
fn pods_run_as_real_containers() {
    let host = Host::new();
    let dir = tempfile::tempdir_in(host.data.path()).unwrap();
    let tar = common::busybox_tar(dir.path());
    // What `r8s image import` prints is checked here, so it runs by hand.
    let st = Command::new(r8s_bin())
        .args(["image", "import", "--data-dir"])
        .arg(dir.path())
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(String::from_utf8_lossy(&st.stdout).contains("docker.io/library/busybox:latest"));
    let ls = Command::new(r8s_bin())
        .args(["image", "ls", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains("docker.io/library/busybox:latest"));

    let mut host = host;
    let args = host.node_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.cluster = Some(Cluster::start_with(dir, &args));
    let c = host.cluster.as_ref().unwrap();
    c.wait_for("the node to be Ready", Duration::from_secs(30), || {
        let n = c.kubectl(&["get", "node", "e2e-node", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&n.stdout).ok()?;
        let images = v["status"]["images"].to_string();
        (images.contains("busybox")
            && v["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"))
        .then_some(())
    });

    // A web server in a container, reachable on its pod IP from the host,
    // seeing its configmap, env and downward API.
    c.create_cm(
        Some("default"),
        "site",
        &[("greeting", "hello from a configmap")],
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - mkdir -p /www && cat /cfg/greeting > /www/index.html && echo " $(GREETING_ENV) $POD_NAME $MY_IP" >> /www/index.html && echo ready && exec httpd -f -p 8080 -h /www
    env:
    - name: GREETING_ENV
      valueFrom: {configMapKeyRef: {name: site, key: greeting}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: MY_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
  volumes:
  - name: cfg
    configMap: {name: site}
"#,
    );
    let ip = c.wait_for("web to run with an IP", Duration::from_secs(60), || {
        let p = pod(c, "web");
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(str::to_string))
            .flatten()
    });
    assert!(
        ip.starts_with(&host.net),
        "{ip} is in the node's podCIDR {}",
        host.cidr
    );
    let body = c.wait_for("httpd to answer", Duration::from_secs(20), || {
        http_get(&format!("{ip}:8080"))
    });
    assert!(body.contains("hello from a configmap"), "{body}");
    assert!(
        body.contains(&format!("hello from a configmap web {ip}")),
        "env from configMapKeyRef and the downward API: {body}"
    );
    // Ready once the httpGet readiness probe has passed.
    let p = c.wait_for("web to be ready", Duration::from_secs(20), || {
        let p = pod(c, "web");
        (p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
    });
    let cs = &p["status"]["containerStatuses"][0];
    assert!(cs["containerID"].as_str().unwrap().starts_with("r8s://"));
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{p}");

    // Probes: readiness gates Ready; a failing liveness probe restarts.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "touch /tmp/alive; sleep 3; touch /tmp/ready; sleep 2; rm /tmp/alive; sleep 3600"]
    readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    let ready_of = |p: &serde_json::Value| p["status"]["containerStatuses"][0]["ready"].clone();
    c.wait_for(
        "probed to run but not be ready",
        Duration::from_secs(30),
        || {
            let p = pod(c, "probed");
            (p["status"]["phase"] == "Running" && ready_of(&p) == false).then_some(())
        },
    );
    c.wait_for("probed to become ready", Duration::from_secs(30), || {
        (ready_of(&pod(c, "probed")) == true).then_some(())
    });
    c.wait_for(
        "the liveness probe to restart probed",
        Duration::from_secs(60),
        || {
            let p = pod(c, "probed");
            (p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(())
        },
    );
    // What happened is told as events, in upstream's words, and shown by
    // `kubectl describe`.
    let want = [
        (
            "Scheduled",
            "Successfully assigned default/probed to e2e-node",
        ),
        (
            "Pulled",
            "Container image \"busybox:latest\" already present on machine",
        ),
        ("Created", "Created container: app"),
        ("Started", "Started container app"),
        ("Unhealthy", "Readiness probe failed: "),
        ("Unhealthy", "Liveness probe failed: "),
        (
            "Killing",
            "Container app failed liveness probe, will be restarted",
        ),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let evs = loop {
        let evs = pod_events(c, "probed");
        let missing: Vec<_> = want
            .iter()
            .filter(|(r, m)| !evs.iter().any(|(er, em, _)| er == r && em == m))
            .collect();
        if missing.is_empty() {
            break evs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events missing: {missing:?}; have {:?}",
            evs.iter().map(|(r, m, _)| (r, m)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let unhealthy = evs.iter().find(|(r, _, _)| r == "Unhealthy").unwrap();
    assert_eq!(unhealthy.2["type"], "Warning", "{:?}", unhealthy.2);
    assert_eq!(unhealthy.2["source"]["component"], "kubelet");
    assert_eq!(
        unhealthy.2["involvedObject"]["fieldPath"],
        "spec.containers{app}"
    );
    let described = c.ok(&["describe", "pod", "probed"]);
    assert!(
        described.contains("Liveness probe failed") && described.contains("Started container app"),
        "{described}"
    );

    // Capabilities: drop ALL, add NET_ADMIN (bit 12), and a user id.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: caps
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "grep CapBnd /proc/self/status; id -u"]
    securityContext:
      runAsUser: 1234
      capabilities: {drop: [ALL], add: [NET_ADMIN]}
"#,
    );
    c.wait_for("caps to finish", Duration::from_secs(30), || {
        (pod(c, "caps")["status"]["phase"] == "Succeeded").then_some(())
    });
    let caps = c.ok(&["logs", "caps"]);
    assert!(
        caps.contains("0000000000001000"),
        "bounding capabilities (a non-root user has no effective ones, as upstream): {caps}"
    );
    assert!(caps.contains("1234"), "runAsUser: {caps}");

    // Exit codes and restart policies.
    c.ok(&[
        "run",
        "fails",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo out-line; echo err-line >&2; exit 3",
    ]);
    c.ok(&[
        "run",
        "crashes",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    c.ok(&[
        "run",
        "done",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "true",
    ]);
    c.wait_for(
        "fails to fail with exit code 3",
        Duration::from_secs(60),
        || {
            let p = pod(c, "fails");
            let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
            (p["status"]["phase"] == "Failed" && t["exitCode"] == 3 && t["reason"] == "Error")
                .then_some(())
        },
    );
    // Logs through the API server and the kubelet API.
    let logs = c.ok(&["logs", "fails"]);
    assert!(
        logs.contains("out-line") && logs.contains("err-line"),
        "{logs:?}"
    );
    // exec over WebSocket, through the API server to the kubelet.
    assert_eq!(
        c.ok(&["exec", "web", "--", "cat", "/etc/hostname"]).trim(),
        "web"
    );
    let ps = c.ok(&["exec", "web", "--", "ps"]);
    assert!(ps.contains("httpd"), "the container's processes: {ps}");
    let echoed = c.ok_stdin(&["exec", "-i", "web", "--", "cat"], "through stdin\n");
    assert_eq!(echoed, "through stdin\n");
    let out = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 5"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "kubectl exec returns the command's exit code"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let web_logs = c.ok(&["logs", "web"]);
    assert_eq!(web_logs.trim(), "ready");
    let ts = c.ok(&["logs", "web", "--timestamps"]);
    assert!(
        ts.starts_with("20") && ts.trim_end().ends_with("Z ready"),
        "{ts}"
    );
    c.ok(&[
        "run",
        "counter",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "sleep 1; for i in 1 2 3; do echo line-$i; sleep 1; done",
    ]);
    c.wait_for("counter to run", Duration::from_secs(30), || {
        (pod(c, "counter")["status"]["phase"] == "Running").then_some(())
    });
    let followed = c.ok(&["logs", "-f", "counter"]);
    assert_eq!(
        followed, "line-1\nline-2\nline-3\n",
        "follow streams until the container ends"
    );
    let tail = c.ok(&["logs", "counter", "--tail=1"]);
    assert_eq!(tail, "line-3\n");
    c.wait_for("done to succeed", Duration::from_secs(60), || {
        let p = pod(c, "done");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        (p["status"]["phase"] == "Succeeded" && t["reason"] == "Completed").then_some(())
    });
    c.wait_for(
        "crashes to be restarted and back off",
        Duration::from_secs(60),
        || {
            let p = pod(c, "crashes");
            let cs = &p["status"]["containerStatuses"][0];
            (cs["restartCount"].as_i64() >= Some(1)
                && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && cs["lastState"]["terminated"]["exitCode"] == 1)
                .then_some(())
        },
    );

    // An image that is not there, with pull policy Never.
    c.ok(&[
        "run",
        "missing",
        "--image=nothere:1",
        "--image-pull-policy=Never",
    ]);
    c.wait_for("ErrImageNeverPull", Duration::from_secs(30), || {
        let p = pod(c, "missing");
        (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull")
            .then_some(())
    });

    // A killed and restarted server (and with it the agent) adopts the
    // running container instead of restarting it.
    let before = pod(c, "web");
    let cid = before["status"]["containerStatuses"][0]["containerID"].clone();
    host.cluster.as_mut().unwrap().restart();
    let c = host.cluster.as_ref().unwrap();
    assert!(
        http_get(&format!("{ip}:8080")).is_some(),
        "web kept serving"
    );
    c.wait_for(
        "the restarted agent to report web",
        Duration::from_secs(30),
        || {
            let p = pod(c, "web");
            let cs = &p["status"]["containerStatuses"][0];
            (cs["containerID"] == cid && cs["restartCount"] == 0 && cs["ready"] == true)
                .then_some(())
        },
    );
    assert!(c.ok(&["logs", "web"]).contains("ready"));

    // Deleting a pod stops its container and frees its network.
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cgroup_dir = if v2 {
        Path::new("/sys/fs/cgroup").join(&host.cgroup)
    } else {
        Path::new("/sys/fs/cgroup/memory").join(&host.cgroup)
    };
    let uid = pod(c, "web")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&[
        "delete",
        "pod",
        "web",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        http_get(&format!("{ip}:8080")).is_none(),
        "the deleted pod still answers"
    );
    let pod_cg = cgroup_dir.join(format!("pod{uid}"));
    assert!(
        cgroup_dir.exists(),
        "pods live under {}",
        cgroup_dir.display()
    );
    c.wait_for("the pod's cgroup to go", Duration::from_secs(20), || {
        (!pod_cg.exists()).then_some(())
    });
}

/// Imports busybox and starts a server with its agent on `host`; waits for
/// the node to be Ready.
fn start_node(host: &mut Host) {
    start_node_with(host, &[], |_| {});
}

/// Imports busybox (and whatever `more` imports into the data dir), then
/// starts the server with its agent and `extra` arguments.
fn start_node_with(host: &mut Host, extra: &[&str], more: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir_in(host.data.path()).unwrap();
    let tar = common::busybox_tar(dir.path());
    common::import_image(dir.path(), &tar);
    more(dir.path());
    let mut args = host.node_args();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.cluster = Some(Cluster::start_with(dir, &args));
    let c = host.cluster.as_ref().unwrap();
    c.wait_for("the node to be Ready", Duration::from_secs(30), || {
        let v = c.get_json(&["node", "e2e-node"]);
        (v["status"]["images"].to_string().contains("busybox")
            && v["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"))
        .then_some(())
    });
}

/// A web server pod answering `page` on 8080; returns its IP once it
/// serves.
fn run_web(c: &Cluster, page: &str) -> String {
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo '{page}' > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
        ),
    );
    let ip = c.wait_for("web to run with an IP", Duration::from_secs(60), || {
        let p = pod(c, "web");
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(str::to_string))
            .flatten()
    });
    c.wait_for("httpd to answer", Duration::from_secs(20), || {
        http_get(&format!("{ip}:8080")).filter(|b| b.contains(page))
    });
    ip
}

/// A local port nobody listens on (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kubectl port-forward`; killed on drop.
struct PortForward {
    child: std::process::Child,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl PortForward {
    /// Starts `kubectl port-forward pod/<pod> <free>:<remote>` and waits
    /// for it to listen.
    fn start(c: &Cluster, pod: &str, remote: u16, env: &[(&str, &str)]) -> PortForward {
        use std::io::BufRead;
        let port = free_port();
        let mut cmd = Command::new("kubectl");
        cmd.args([
            "port-forward",
            "-v=4",
            "--address",
            "127.0.0.1",
            &format!("pod/{pod}"),
            &format!("{port}:{remote}"),
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("kubectl must be installed and on PATH");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err_pipe)
                .lines()
                .map_while(Result::ok)
            {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out_pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out_pipe)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with("Forwarding from") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "kubectl port-forward did not start listening: {}",
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        PortForward {
            child,
            port,
            stderr,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `d` for kubectl to exit by itself.
    fn exits_within(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + d;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn port_forward_reaches_a_pod_port() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let page = "hello through port-forward";
    run_web(c, page);

    // kubectl 1.31+ tunnels SPDY in a WebSocket by default; with
    // KUBECTL_PORT_FORWARD_WEBSOCKETS=false it speaks plain SPDY/3.1.
    for (mode, env) in [
        ("spdy", &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..]),
        ("websocket", &[][..]),
    ] {
        let pf = PortForward::start(c, "web", 8080, env);
        for i in 0..2 {
            let body = http_get(&pf.addr()).unwrap_or_default();
            assert!(
                body.starts_with("HTTP/1.") && body.contains(page),
                "request {i} over {mode}: {body:?}\n{}",
                pf.stderr()
            );
        }
        assert!(
            !pf.stderr().contains("fallback"),
            "{mode}: kubectl fell back to another protocol: {}",
            pf.stderr()
        );
    }

    // Several connections at once over one forward.
    let pf = PortForward::start(c, "web", 8080, &[]);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let a = pf.addr();
            std::thread::spawn(move || http_get(&a).unwrap_or_default())
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().contains(page));
    }
    drop(pf);

    // A port nothing listens on: kubectl reports the kubelet's error and
    // gives up; the server keeps serving.
    for env in [&[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..], &[][..]] {
        let mut pf = PortForward::start(c, "web", 9999, env);
        let body = http_get(&pf.addr()).unwrap_or_default();
        assert!(!body.contains(page), "{body}");
        let exited = pf.exits_within(Duration::from_secs(20));
        let err = pf.stderr();
        assert!(
            err.contains("error forwarding port 9999 to pod web_default"),
            "kubectl shows the error: {err}"
        );
        assert!(
            exited.is_some(),
            "kubectl gives up on a lost connection: {err}"
        );
    }
    assert_eq!(pod(c, "web")["status"]["phase"], "Running");
    let pf = PortForward::start(c, "web", 8080, &[]);
    assert!(http_get(&pf.addr()).unwrap_or_default().contains(page));
}

/// A v4.channel.k8s.io WebSocket port-forward through the API server, as
/// client libraries (python kubernetes) speak it: prints what came back as
/// JSON.
const V4_CLIENT: &str = r#"
import base64, json, os, re, socket, ssl, struct, sys, tempfile
kubeconfig, path, protocol = sys.argv[1], sys.argv[2], sys.argv[3]
# r8s writes a one-cluster, one-user kubeconfig.
cfg = open(kubeconfig).read()
field = lambda k: re.search(r"^\s*" + k + r":\s*(\S+)", cfg, re.M).group(1)
server = field("server")
user = {k: field(k) for k in ("client-certificate-data", "client-key-data")}
host, port = server.split("://")[1].rstrip("/").rsplit(":", 1)
d = tempfile.mkdtemp()
for k in ("client-certificate-data", "client-key-data"):
    open(os.path.join(d, k), "wb").write(base64.b64decode(user[k]))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
ctx.load_cert_chain(os.path.join(d, "client-certificate-data"), os.path.join(d, "client-key-data"))
s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=15), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
lines = head.decode().split("\r\n")
out = {"status": lines[0], "headers": {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}, "messages": []}
def need(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    r, buf = buf[:n], buf[n:]
    return r
def read():
    b0, b1 = need(2)
    n = b1 & 0x7f
    if n == 126: n = struct.unpack(">H", need(2))[0]
    elif n == 127: n = struct.unpack(">Q", need(8))[0]
    return b0 & 0x0f, need(n)
def send(payload, op=2):
    mask = os.urandom(4)
    h = bytes([0x80 | op])
    n = len(payload)
    h += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    s.sendall(h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
if " 101 " in lines[0]:
    try:
        for _ in range(2):
            op, p = read()
            out["messages"].append([p[0], list(p[1:])])
        send(b"\x00GET / HTTP/1.0\r\n\r\n")
        data, err = b"", b""
        while True:
            op, p = read()
            if op == 8:
                out["close"] = struct.unpack(">H", p[:2])[0] if len(p) >= 2 else None
                break
            if op == 2 and p[0] == 0: data += p[1:]
            if op == 2 and p[0] == 1: err += p[1:]
        out["data"], out["error"] = data.decode(errors="replace"), err.decode(errors="replace")
    except (EOFError, OSError) as e:
        out["eof"] = str(e)
else:
    out["body"] = buf.decode(errors="replace")
print(json.dumps(out))
"#;

fn v4_port_forward(c: &Cluster, query: &str) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(V4_CLIENT)
        .arg(&c.kubeconfig)
        .arg(format!(
            "/api/v1/namespaces/default/pods/web/portforward?{query}"
        ))
        .arg("v4.channel.k8s.io")
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

#[test]
fn port_forward_over_v4_channel_websocket() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let page = "hello over v4 channels";
    run_web(c, page);

    let r = v4_port_forward(c, "ports=8080");
    assert!(r["status"].as_str().unwrap().contains("101"), "{r}");
    assert_eq!(r["headers"]["sec-websocket-protocol"], "v4.channel.k8s.io");
    // Each channel first names its port (little-endian 8080 = 0x1f90).
    assert_eq!(
        r["messages"],
        serde_json::json!([[0, [0x90, 0x1f]], [1, [0x90, 0x1f]]])
    );
    let data = r["data"].as_str().unwrap_or_default();
    assert!(data.starts_with("HTTP/1.") && data.contains(page), "{r}");
    assert_eq!(r["error"], "");
    assert_eq!(
        r["close"], 1000,
        "a normal closure once the port is done: {r}"
    );

    let r = v4_port_forward(c, "ports=9999");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("error forwarding port 9999 to pod web_default"),
        "{r}"
    );
    let r = v4_port_forward(c, "");
    assert!(!r["status"].as_str().unwrap().contains("101"), "{r}");
    assert!(
        r["body"].as_str().unwrap_or_default().contains("port"),
        "a missing port is refused: {r}"
    );
}

#[test]
fn exec_with_a_terminal() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    run_web(c, "hello");
    // kubectl -t needs a terminal on its stdin: script(1) gives it one, of
    // a known size, which kubectl sends as the first resize.
    let run = |inner: &str, typed: &str| -> (Option<i32>, String) {
        let kubectl = format!("stty cols 100 rows 30; exec kubectl exec -i -t web -- {inner}");
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &kubectl, "/dev/null"])
            .env("KUBECONFIG", &c.kubeconfig)
            .env("HOME", c.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux must be installed");
        // Keep stdin open (EOF would end the session) until it is done.
        let mut stdin = child.stdin.take();
        if !typed.is_empty() {
            std::thread::sleep(Duration::from_secs(2));
            if let Some(si) = stdin.as_mut() {
                si.write_all(typed.as_bytes()).unwrap();
            }
        }
        let out = common::wait_with_timeout(child, Duration::from_secs(60));
        drop(stdin);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // kubectl sends the size right after connecting, concurrently with
    // the command's start (as upstream): give it a moment to land.
    let (code, out) = run("sh -c 'tty; sleep 1; stty size; echo to-stderr >&2'", "");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("/dev/pts/"),
        "the command has a terminal: {out:?}"
    );
    assert!(out.contains("30 100"), "kubectl's terminal size: {out:?}");
    assert!(
        out.contains("to-stderr"),
        "stderr comes on the terminal: {out:?}"
    );
    // The terminal is the controlling one (job control works: a session
    // leader with a tty) and exit codes still come through.
    let (code, out) = run("sh -c 'ps -o pid,tty,comm; exit 7'", "");
    assert_eq!(code, Some(7), "{out}");
    assert!(
        out.contains("136,"),
        "ps sees a pty as sh's terminal: {out}"
    );
    // An interactive shell: what is typed runs.
    let (code, out) = run("sh", "echo typed-$((40+2))\rexit 3\r");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("typed-42"), "{out:?}");

    // A client that goes away hangs up the terminal: the command gets
    // SIGHUP instead of running on with nobody attached.
    let kubectl = "exec kubectl exec -i -t web -- sh -c 'echo $$ > /tmp/held; exec sleep 1000'";
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", kubectl, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("script(1) from util-linux must be installed");
    let held = |c: &Cluster| {
        let out = c.kubectl(&[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "test -s /tmp/held && kill -0 $(cat /tmp/held) && echo alive",
        ]);
        String::from_utf8_lossy(&out.stdout).contains("alive")
    };
    c.wait_for("the held command to run", Duration::from_secs(30), || {
        held(c).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    c.wait_for(
        "the command to end with its client",
        Duration::from_secs(30),
        || (!held(c)).then_some(()),
    );
}

/// A pod's phase once it has finished, and its logs.
/// kubectl before 1.30 (and 1.30+ with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`,
/// and Go tools on client-go's SPDY executor) run exec, attach and cp over
/// SPDY/3.1 streams rather than WebSockets.
#[test]
fn exec_attach_and_cp_over_spdy_for_older_clients() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    run_web(c, "hello");
    let k129 = common::versioned_kubectl("1.29");
    let old = |args: &[&str], stdin: Option<&str>| c.kubectl_bin(&k129, args, &[], stdin);
    // The transport really is SPDY: kubectl 1.29 knows nothing else.
    let out = old(&["-v=8", "exec", "web", "--", "cat", "/etc/hostname"], None);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
    assert!(
        log.contains("Upgrade: SPDY/3.1") && log.contains("101 Switching Protocols"),
        "kubectl 1.29 upgraded to SPDY: {log}"
    );
    // stdin in, stdout and stderr apart, the exit code out.
    let out = old(
        &[
            "exec",
            "-i",
            "web",
            "--",
            "sh",
            "-c",
            "cat; echo oops >&2; exit 5",
        ],
        Some("through spdy stdin\n"),
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through spdy stdin\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oops") && err.contains("command terminated with exit code 5"),
        "{err}"
    );
    // A command that reads and writes a lot at once: 8 MiB through `cat`,
    // in and back out over the same connection, on both transports. The
    // command starts reading late, so the client's input piles up first.
    let big: String = (0..8 * 1024 * 1024 / 64)
        .map(|i| format!("{i:063}\n"))
        .collect();
    let late_cat = ["exec", "-i", "web", "--", "sh", "-c", "sleep 2; cat"];
    for (what, out) in [
        ("SPDY", old(&late_cat, Some(&big))),
        ("WebSocket", c.kubectl_env(&late_cat, &[], Some(&big))),
    ] {
        assert!(out.status.success(), "{what}: {out:?}");
        assert!(
            out.stdout == big.as_bytes(),
            "{what}: 8 MiB through cat came back as {} bytes",
            out.stdout.len()
        );
    }
    // kubectl 1.33 told to use SPDY offers v5 first.
    let out = c.kubectl_env(
        &[
            "exec",
            "-i",
            "web",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x; exit 4",
        ],
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
        Some("v5\n"),
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-v5\n");
    // cp both ways is tar over exec.
    let local = c.dir.path().join("spdy-up.txt");
    std::fs::write(&local, "copied over spdy\n").unwrap();
    let (src, back) = (
        local.display().to_string(),
        c.dir.path().join("spdy-back.txt"),
    );
    let out = old(&["cp", &src, "web:/tmp/up.txt"], None);
    assert!(out.status.success(), "{out:?}");
    let out = old(
        &["cp", "web:/tmp/up.txt", &back.display().to_string()],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied over spdy\n"
    );
    // A terminal: kubectl's size arrives on the resize stream.
    let cmd = format!(
        "stty cols 77 rows 22; exec {} exec -i -t web -- sh -c 'tty; sleep 1; stty size; exit 6'",
        k129.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux must be installed");
    // Keep the terminal's input open until the command is done.
    let stdin = child.stdin.take();
    let out = common::wait_with_timeout(child, Duration::from_secs(60));
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(
        text.contains("/dev/pts/") && text.contains("22 77"),
        "a terminal of kubectl's size: {text:?}"
    );
    // attach: `kubectl run -i` feeds stdin and reads output until the end.
    let out = old(
        &[
            "run",
            "-i",
            "reader",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x; cat; echo eof-seen",
        ],
        Some("hello\nmore\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("got-hello") && stdout.contains("more\neof-seen"),
        "kubectl 1.29 run -i: {stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl debug node/<node>`: a pod in the host's network, PID and IPC
/// namespaces (hence the host's hostname) with the host's root at /host.
#[test]
fn kubectl_debug_node_runs_a_pod_in_the_hosts_namespaces() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let marker = host.data.path().join("marker");
    std::fs::write(&marker, "seen-from-the-node-debugger\n").unwrap();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host_name = host_name.trim();
    let script = format!(
        "cat /host{}; echo host-is-$(hostname); echo etc-hostname-$(cat /etc/hostname); ls /proc/1/ns >/dev/null && echo pid1-$(cat /proc/1/comm); exit 0\n",
        marker.display()
    );
    let out = c.kubectl_env(
        &[
            "debug",
            "node/e2e-node",
            "-i",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--profile=general",
        ],
        &[],
        Some(&script),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("seen-from-the-node-debugger"),
        "the host's root at /host: {stdout} / {stderr}"
    );
    assert!(
        stdout.contains(&format!("host-is-{host_name}")),
        "a hostNetwork pod has the node's hostname: {stdout} / {stderr}"
    );
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    assert!(
        stdout.contains(&format!("pid1-{}", host_init.trim())),
        "the host's PID namespace: {stdout} / {stderr}"
    );
    assert!(
        stdout.contains(&format!("etc-hostname-{host_name}")),
        "/etc/hostname of a hostNetwork pod is the node's: {stdout} / {stderr}"
    );

    // A pod name longer than a hostname may be: cut to 63 characters
    // without a trailing dash, as upstream does.
    let long = format!("{}-{}", "l".repeat(62), "tail");
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {long}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
        ),
    );
    c.wait_for("the long-named pod to run", Duration::from_secs(60), || {
        (pod(c, &long)["status"]["phase"] == "Running").then_some(())
    });
    let short = "l".repeat(62);
    assert_eq!(c.ok(&["exec", &long, "--", "hostname"]).trim(), short);
    assert_eq!(
        c.ok(&["exec", &long, "--", "cat", "/etc/hostname"]).trim(),
        short
    );
}

/// A pod that asks for an AppArmor profile on a node that cannot enforce
/// one is held Pending, as upstream's kubelet holds it, not run
/// unconfined (`Unconfined` runs); one asking for a user namespace is not
/// run in the host's.
#[test]
fn pods_the_node_cannot_confine_are_held_not_run() {
    assert!(
        !kubelet::apparmor::enabled(),
        "this test checks a node without AppArmor, and this host's kernel has it enabled"
    );
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let manifest = |name: &str, profile: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    securityContext:
      appArmorProfile: {{type: {profile}}}
"#
        )
    };
    c.create(Some("default"), &manifest("confined", "RuntimeDefault"));
    c.create(Some("default"), &manifest("free", "Unconfined"));
    c.wait_for("free to run", Duration::from_secs(60), || {
        (pod(c, "free")["status"]["phase"] == "Running").then_some(())
    });
    let p = c.wait_for("confined to be held", Duration::from_secs(30), || {
        let p = pod(c, "confined");
        (p["status"]["reason"] == "AppArmor").then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    assert_eq!(
        p["status"]["message"],
        "Cannot enforce AppArmor: AppArmor is not enabled on the host"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "Blocked",
        "{p}"
    );
    let events = pod_events(c, "confined");
    assert!(
        events.iter().any(|(reason, msg, e)| reason == "AppArmor"
            && e["type"] == "Warning"
            && msg == "Cannot enforce AppArmor: AppArmor is not enabled on the host"),
        "{events:?}"
    );
    // Held, not started: it stays so, and deleting it works.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pod(c, "confined")["status"]["phase"], "Pending");

    // A pod asking for its own user namespace is not run in the host's:
    // its sandbox fails, as upstream's does on a runtime without them.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: userns
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    let p = c.wait_for("userns to be held", Duration::from_secs(30), || {
        let p = pod(c, "userns");
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "ContainerCreating"
            && w["message"]
                .as_str()
                .is_some_and(|m| m.contains("user namespaces")))
        .then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    let events = pod_events(c, "userns");
    assert!(
        events
            .iter()
            .any(|(reason, _, e)| reason == "FailedCreatePodSandBox" && e["type"] == "Warning"),
        "{events:?}"
    );
    // A volume type the node cannot provide holds the pod with the
    // reason, instead of an empty directory where its data should be.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: wants-nfs
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    nfs: {server: 127.0.0.1, path: /exports}
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{name: shared, mountPath: /data}]
"#,
    );
    let want = "MountVolume.SetUp failed for volume \"shared\" : volume type \"nfs\" is not supported by this node";
    let p = c.wait_for("wants-nfs to be held", Duration::from_secs(30), || {
        let p = pod(c, "wants-nfs");
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "ContainerCreating"
            && w["message"].as_str().is_some_and(|m| m.contains(want)))
        .then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    c.wait_for("a FailedMount event", Duration::from_secs(20), || {
        pod_events(c, "wants-nfs")
            .iter()
            .any(|(reason, msg, e)| {
                reason == "FailedMount" && msg == want && e["type"] == "Warning"
            })
            .then_some(())
    });
    c.ok(&[
        "delete",
        "pod",
        "confined",
        "free",
        "userns",
        "wants-nfs",
        "--wait=true",
        "--timeout=60s",
    ]);
}

fn run_to_end(c: &Cluster, name: &str, manifest: &str) -> (String, String) {
    c.create(Some("default"), manifest);
    let phase = c.wait_for(
        &format!("{name} to finish"),
        Duration::from_secs(60),
        || {
            let p = pod(c, name);
            let ph = p["status"]["phase"].as_str().unwrap_or("").to_string();
            (ph == "Succeeded" || ph == "Failed").then_some(ph)
        },
    );
    (phase, c.ok(&["logs", name]))
}

fn claim_pod(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {claim}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}"]
    volumeMounts:
    - name: data
      mountPath: /data
"#
    )
}

#[test]
fn persistent_volume_claims_keep_data_across_pods() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();

    // The default class provisions a directory on the node.
    let sc = c.get_json(&["storageclass", "local-path"]);
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
"#,
    );
    let pv_name = c.wait_for("the claim to bind", Duration::from_secs(30), || {
        let pvc = c.get_json(&["pvc", "data"]);
        (pvc["status"]["phase"] == "Bound")
            .then(|| pvc["spec"]["volumeName"].as_str().map(str::to_string))
            .flatten()
    });
    let pv = c.get_json(&["pv", &pv_name]);
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    let dir = pv["spec"]["hostPath"]["path"].as_str().unwrap().to_string();

    let (phase, _) = run_to_end(
        c,
        "writer",
        &claim_pod("writer", "data", "echo kept > /data/f && sync"),
    );
    assert_eq!(phase, "Succeeded");
    assert_eq!(
        std::fs::read_to_string(Path::new(&dir).join("f")).unwrap(),
        "kept\n",
        "the data is in the provisioned directory on the node"
    );
    c.ok(&["delete", "pod", "writer", "--wait=true"]);
    let (phase, logs) = run_to_end(c, "reader", &claim_pod("reader", "data", "cat /data/f"));
    assert_eq!((phase.as_str(), logs.as_str()), ("Succeeded", "kept\n"));

    // A pre-created hostPath volume binds to a claim of its class.
    let static_dir = tempfile::tempdir_in(host.data.path()).unwrap();
    std::fs::write(static_dir.path().join("seed"), "from the admin\n").unwrap();
    c.create(
        None,
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: static-{pid}
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  persistentVolumeReclaimPolicy: Retain
  hostPath:
    path: {path}
"#,
            pid = std::process::id(),
            path = static_dir.path().display()
        ),
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: manual
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 100Mi
"#,
    );
    let (phase, logs) = run_to_end(
        c,
        "seeded",
        &claim_pod("seeded", "manual", "cat /data/seed"),
    );
    assert_eq!(
        (phase.as_str(), logs.as_str()),
        ("Succeeded", "from the admin\n")
    );

    // Deleting the claim deletes the provisioned volume and its directory,
    // and releases (keeps) the static one.
    c.ok(&["delete", "pod", "reader", "seeded", "--wait=true"]);
    c.ok(&["delete", "pvc", "data", "manual", "--wait=true"]);
    c.wait_for(
        "the provisioned volume to go",
        Duration::from_secs(30),
        || (!c.kubectl(&["get", "pv", &pv_name]).status.success()).then_some(()),
    );
    assert!(
        !Path::new(&dir).exists(),
        "{dir} was removed with its volume"
    );
    let static_name = format!("static-{}", std::process::id());
    c.wait_for(
        "the static volume to be Released",
        Duration::from_secs(30),
        || (c.get_json(&["pv", &static_name])["status"]["phase"] == "Released").then_some(()),
    );
    assert!(
        static_dir.path().join("seed").exists(),
        "Retain keeps the data"
    );
}

#[test]
fn lifecycle_hooks_run_after_start_and_before_sigterm() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let shared = tempfile::tempdir_in(host.data.path()).unwrap();
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: hooks
spec:
  terminationGracePeriodSeconds: 20
  volumes:
  - name: host
    hostPath:
      path: {dir}
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo term >> /host/log; exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts:
    - name: host
      mountPath: /host
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo poststart >> /host/log"]
      preStop:
        exec:
          command: ["sh", "-c", "echo prestop >> /host/log"]
"#,
            dir = shared.path().display()
        ),
    );
    c.wait_for("hooks to run", Duration::from_secs(60), || {
        (pod(c, "hooks")["status"]["phase"] == "Running").then_some(())
    });
    let log = shared.path().join("log");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "poststart\n",
        "postStart ran once the container started"
    );
    // A new definition restarts the container as upstream's kubelet kills
    // one: preStop, then SIGTERM (the trap exits at once, well inside the
    // 20 s grace), then a new run with its own postStart.
    c.ok(&["set", "image", "pod/hooks", "main=busybox"]);
    c.wait_for(
        "the redefined container to restart",
        Duration::from_secs(15),
        || {
            let p = pod(c, "hooks");
            let st = &p["status"]["containerStatuses"][0];
            (st["restartCount"] == 1 && st["state"]["running"].is_object()).then_some(())
        },
    );
    c.wait_for("the new run's postStart", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text == "poststart\nprestop\nterm\npoststart\n").then_some(())
    });
    let p = pod(c, "hooks");
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(
        last["exitCode"], 0,
        "the old run ended on its SIGTERM trap, not SIGKILL: {last}"
    );
    c.ok(&["delete", "pod", "hooks", "--wait=true"]);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "poststart\nprestop\nterm\npoststart\nprestop\nterm\n",
        "preStop ran before the container got SIGTERM"
    );
}

/// What a pod leaves on the host, by its uid: processes in its cgroup,
/// mounts, its veth, network namespace and IP lease.
fn leftovers(c: &Cluster, host: &Host, uid: &str) -> Vec<String> {
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cg.contains(&format!("pod{uid}")) {
            left.push(format!("process {}", e.file_name().to_string_lossy()));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in mounts.lines().filter(|l| l.contains(uid)) {
        left.push(format!("mount {m}"));
    }
    let compact: String = uid.replace('-', "");
    let veth = format!("veth{}", &compact[..11]);
    if Path::new("/sys/class/net").join(&veth).exists() {
        left.push(format!("veth {veth}"));
    }
    let netns = format!("{}-{}", host.bridge, &uid[..18]);
    if Path::new("/run/netns").join(&netns).exists() {
        left.push(format!("netns {netns}"));
    }
    for e in std::fs::read_dir(c.dir.path().join("agent/ipam"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .contains(uid)
        {
            left.push(format!("IP lease {}", e.file_name().to_string_lossy()));
        }
    }
    left
}

#[test]
fn pods_share_localhost_and_volumes_and_leave_nothing_behind() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();

    // Two containers: one serves what the other writes into their shared
    // emptyDir, and fetches it back over localhost.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - name: shared
    emptyDir: {}
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "8080", "-h", "/shared"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
  - name: client
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from-the-client > /shared/index.html; while true; do wget -qO- http://localhost:8080/ || true; sleep 1; done"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
"#,
    );
    c.wait_for(
        "the client to fetch its page over localhost",
        Duration::from_secs(60),
        || {
            let out = c.kubectl(&["logs", "duo", "-c", "client"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("from-the-client")
                .then_some(())
        },
    );

    // kubectl cp both ways (tar over exec).
    let local = tempfile::tempdir_in(host.data.path()).unwrap();
    let src = local.path().join("up.txt");
    std::fs::write(&src, "copied up\n").unwrap();
    c.ok(&[
        "cp",
        src.to_str().unwrap(),
        "default/duo:/shared/up.txt",
        "-c",
        "web",
    ]);
    assert_eq!(
        c.ok(&["exec", "duo", "-c", "client", "--", "cat", "/shared/up.txt"]),
        "copied up\n"
    );
    let back = local.path().join("back.txt");
    c.ok(&[
        "cp",
        "default/duo:/shared/index.html",
        back.to_str().unwrap(),
        "-c",
        "web",
    ]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from-the-client\n");

    // A Secret volume is a tmpfs, never on disk.
    c.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=pw=hunter2",
    ]);
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: secretive
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: creds
    secret: {secretName: creds}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: creds, mountPath: /etc/creds}
"#,
    );
    c.wait_for("secretive to run", Duration::from_secs(60), || {
        (pod(c, "secretive")["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(
        c.ok(&["exec", "secretive", "--", "cat", "/etc/creds/pw"]),
        "hunter2"
    );
    let mounts = c.ok(&["exec", "secretive", "--", "cat", "/proc/mounts"]);
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/etc/creds"))
        .unwrap_or_else(|| panic!("no /etc/creds mount in {mounts}"));
    assert_eq!(line.split_whitespace().nth(2), Some("tmpfs"), "{line}");

    // Over its memory limit: OOMKilled.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: hungry
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "tail /dev/zero"]
    resources:
      limits: {memory: 32Mi}
"#,
    );
    c.wait_for("hungry to be OOMKilled", Duration::from_secs(60), || {
        let p = pod(c, "hungry");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        (p["status"]["phase"] == "Failed" && t["reason"] == "OOMKilled" && t["exitCode"] == 137)
            .then_some(())
    });

    // A crash loop: --previous shows the last run's output, and the
    // back-off grows 10 s, 20 s.
    c.ok(&[
        "run",
        "crashy",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--",
        "sh",
        "-c",
        "echo run-$RANDOM; exit 1",
    ]);
    // The first exit restarts at once (upstream's doBackOff): by the first
    // back-off the container has run twice, and --previous has output.
    let first = c.wait_for("a first back-off", Duration::from_secs(60), || {
        let p = pod(c, "crashy");
        let cs = &p["status"]["containerStatuses"][0];
        (cs["state"]["waiting"]["reason"] == "CrashLoopBackOff").then(|| cs.clone())
    });
    assert!(first["restartCount"].as_i64() >= Some(1), "{first}");
    assert!(
        first["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("back-off 10s"),
        "{first}"
    );
    let prev = c.ok(&["logs", "crashy", "--previous"]);
    assert!(prev.starts_with("run-"), "{prev:?}");
    c.wait_for("a 20 s back-off", Duration::from_secs(60), || {
        let p = pod(c, "crashy");
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "CrashLoopBackOff" && w["message"].as_str()?.starts_with("back-off 20s"))
            .then_some(())
    });
    let prev = c.ok(&["logs", "crashy", "--previous"]);
    assert!(prev.starts_with("run-"), "{prev:?}");
    let uid = pod(c, "crashy")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let backoff =
        format!("Back-off restarting failed container crashy in pod crashy_default({uid})");
    c.wait_for("a BackOff event", Duration::from_secs(20), || {
        pod_events(c, "crashy")
            .iter()
            .any(|(r, m, e)| r == "BackOff" && *m == backoff && e["type"] == "Warning")
            .then_some(())
    });

    // A Job's pod runs to completion.
    c.create(
        Some("default"),
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "echo job-done"]
"#,
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    assert_eq!(c.ok(&["logs", "job/once"]), "job-done\n");

    // Deleting pods stops them within their grace period and leaves no
    // processes, mounts, veths, namespaces or IP leases behind.
    let uids: Vec<String> = ["duo", "secretive"]
        .iter()
        .map(|n| pod(c, n)["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    for uid in &uids {
        // The check sees a running pod's state (so it can fail).
        let l = leftovers(c, &host, uid);
        for kind in ["process", "mount", "veth", "netns", "IP lease"] {
            assert!(
                l.iter().any(|x| x.starts_with(kind)),
                "no {kind} seen for a running pod: {l:?}"
            );
        }
    }
    let t = std::time::Instant::now();
    c.ok(&[
        "delete",
        "pod",
        "duo",
        "secretive",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "deletion took {:?} (grace periods are 5 s and 1 s)",
        t.elapsed()
    );
    for uid in &uids {
        let left = c.wait_for(
            "the pod's host state to go",
            Duration::from_secs(20),
            || {
                let l = leftovers(c, &host, uid);
                l.is_empty().then_some(l)
            },
        );
        assert!(left.is_empty());
    }
}

#[test]
fn containers_of_a_pod_share_ipc_and_uts_and_with_share_process_namespace_pid() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let pair = |name: &str, share: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  shareProcessNamespace: {share}
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3601"]
  - name: b
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3602"]
"#
        )
    };
    c.create(Some("default"), &pair("shared", true));
    c.create(Some("default"), &pair("apart", false));
    for n in ["shared", "apart"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let ns_of = |pod: &str, ctr: &str, kind: &str| {
        c.ok(&[
            "exec",
            pod,
            "-c",
            ctr,
            "--",
            "readlink",
            &format!("/proc/self/ns/{kind}"),
        ])
        .trim()
        .to_string()
    };
    let host_ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for kind in ["ipc", "uts"] {
        for p in ["shared", "apart"] {
            let (a, b) = (ns_of(p, "a", kind), ns_of(p, "b", kind));
            assert_eq!(a, b, "{p}: containers share the pod's {kind} namespace");
            assert_ne!(a, host_ns(kind), "{p}: not the host's {kind} namespace");
        }
    }
    assert_eq!(
        c.ok(&["exec", "shared", "-c", "b", "--", "hostname"])
            .trim(),
        "shared"
    );
    // Process namespace: shared only when asked, with pause as PID 1.
    assert_eq!(ns_of("shared", "a", "pid"), ns_of("shared", "b", "pid"));
    assert_ne!(ns_of("apart", "a", "pid"), ns_of("apart", "b", "pid"));
    let ps = c.ok(&["exec", "shared", "-c", "a", "--", "ps", "-o", "pid,args"]);
    assert!(
        ps.contains("sleep 3601") && ps.contains("sleep 3602"),
        "each container sees the other's processes: {ps}"
    );
    let init = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    assert!(init.contains("pause"), "PID 1 is the pause process: {ps}");
    let ps = c.ok(&["exec", "apart", "-c", "a", "--", "ps", "-o", "pid,args"]);
    assert!(!ps.contains("sleep 3602"), "{ps}");

    // Deleting the pod stops its pause process and releases the namespaces.
    let uid = pod(c, "shared")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let pause: i32 =
        std::fs::read_to_string(c.dir.path().join(format!("agent/pods/{uid}/ns/pause.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert!(Path::new(&format!("/proc/{pause}")).exists());
    c.ok(&[
        "delete",
        "pod",
        "shared",
        "apart",
        "--wait=true",
        "--timeout=60s",
    ]);
    c.wait_for(
        "pause and the ns mounts to go",
        Duration::from_secs(20),
        || {
            let l = leftovers(c, &host, &uid);
            let pause_left = std::fs::read(format!("/proc/{pause}/cmdline"))
                .is_ok_and(|cl| String::from_utf8_lossy(&cl).contains("pause"));
            (l.is_empty() && !pause_left).then_some(())
        },
    );
}

#[test]
fn stats_summary_reports_node_and_pod_usage_through_the_api_server() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    run_web(c, "stats");
    // Some CPU and memory use in the pod.
    c.ok(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    ]);
    let raw = c.ok(&["get", "--raw", "/api/v1/nodes/e2e-node/proxy/stats/summary"]);
    let s = common::json(&raw);
    assert_eq!(s["node"]["nodeName"], "e2e-node");
    assert!(
        s["node"]["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{raw}"
    );
    assert!(s["node"]["fs"]["capacityBytes"].as_u64() > Some(0), "{raw}");
    let web = s["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "web")
        .unwrap_or_else(|| panic!("no web pod in {raw}"));
    assert_eq!(web["podRef"]["namespace"], "default");
    let ctr = &web["containers"][0];
    assert_eq!(ctr["name"], "web");
    assert!(
        ctr["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{raw}"
    );
    assert!(ctr["memory"]["workingSetBytes"].as_u64() > Some(0), "{raw}");
    assert!(
        web["cpu"]["usageCoreNanoSeconds"].as_u64() >= ctr["cpu"]["usageCoreNanoSeconds"].as_u64()
    );
    assert!(
        web["process_stats"]["process_count"].as_u64() >= Some(1),
        "{raw}"
    );
    // A node that does not exist is a 404.
    let out = c.kubectl(&["get", "--raw", "/api/v1/nodes/nope/proxy/stats/summary"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{:?}",
        out
    );
}

#[test]
fn kubectl_run_attaches_to_stdin_and_a_terminal() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    // -i without a terminal: stdin reaches the container, its output comes
    // back, and stdinOnce closes stdin when kubectl is done.
    let out = c.kubectl_env(
        &[
            "run",
            "-i",
            "reader",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x; cat; echo eof-seen",
        ],
        &[],
        Some("hello\nmore\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("got-hello") && stdout.contains("more\neof-seen"),
        "kubectl run -i: {stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = pod(c, "reader");
    assert_eq!(p["spec"]["containers"][0]["stdin"], true);
    assert_eq!(p["status"]["phase"], "Succeeded", "{p}");

    // -it --rm under a terminal (script(1)): an interactive shell, then the
    // pod is deleted.
    let cmd = "stty cols 90 rows 20; exec kubectl run -it --rm tty --image=busybox:latest --image-pull-policy=Never --restart=Never -- sh";
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", cmd, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux must be installed");
    let mut stdin = child.stdin.take().unwrap();
    // Wait for the pod to run and kubectl to attach before typing.
    c.wait_for("the tty pod to run", Duration::from_secs(60), || {
        let out = c.kubectl(&["get", "pod", "tty", "-o", "json"]);
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    stdin
        .write_all(b"echo hi-$((40+2)) $(tty); stty size; exit\n")
        .unwrap();
    let out = common::wait_with_timeout(child, Duration::from_secs(60));
    drop(stdin);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("hi-42 /dev/pts/0"),
        "an interactive shell on a terminal: {text}"
    );
    assert!(
        text.contains("20 90"),
        "the terminal has kubectl's size: {text}"
    );
    c.wait_for("--rm to delete the pod", Duration::from_secs(30), || {
        (!c.kubectl(&["get", "pod", "tty"]).status.success()).then_some(())
    });
}

#[test]
fn host_ports_reach_the_pod_from_the_node() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let hp = free_port();
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: hp
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo via-host-port > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
    - containerPort: 8080
      hostPort: {hp}
"#
        ),
    );
    c.wait_for("hp to run", Duration::from_secs(60), || {
        (pod(c, "hp")["status"]["phase"] == "Running").then_some(())
    });
    let body = c.wait_for("the host port to answer", Duration::from_secs(20), || {
        http_get(&format!("127.0.0.1:{hp}")).filter(|b| b.contains("via-host-port"))
    });
    assert!(body.contains("200 OK"), "{body}");
    c.ok(&["delete", "pod", "hp", "--wait=true", "--timeout=60s"]);
    assert!(
        http_get(&format!("127.0.0.1:{hp}")).is_none(),
        "the host port is unmapped with its pod"
    );
}

#[test]
fn configmap_and_secret_volumes_follow_updates_atomically() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    c.create_cm(Some("default"), "conf", &[("mode", "one")]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=pw=first",
    ]);
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: watcher
  labels: {tier: a}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: conf
    configMap: {name: conf}
  - name: sec
    secret: {secretName: sec}
  - name: meta
    downwardAPI:
      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: conf, mountPath: /conf}
    - {name: sec, mountPath: /sec}
    - {name: meta, mountPath: /meta}
"#,
    );
    c.wait_for("watcher to run", Duration::from_secs(60), || {
        (pod(c, "watcher")["status"]["phase"] == "Running").then_some(())
    });
    let read = |path: &str| c.ok(&["exec", "watcher", "--", "cat", path]);
    assert_eq!(read("/conf/mode"), "one");
    assert_eq!(read("/sec/pw"), "first");
    let before = c.ok(&["exec", "watcher", "--", "readlink", "/conf/..data"]);
    c.ok(&[
        "patch",
        "configmap",
        "conf",
        "-p",
        r#"{"data":{"mode":"two","extra":"new key"}}"#,
    ]);
    c.ok(&[
        "patch",
        "secret",
        "sec",
        "-p",
        r#"{"stringData":{"pw":"second"}}"#,
    ]);
    c.ok(&["label", "pod", "watcher", "tier=b", "--overwrite"]);
    c.wait_for(
        "the updates to reach the running pod",
        Duration::from_secs(60),
        || {
            (read("/conf/mode") == "two"
                && read("/conf/extra") == "new key"
                && read("/sec/pw") == "second"
                && read("/meta/labels").contains("tier=\"b\""))
            .then_some(())
        },
    );
    let after = c.ok(&["exec", "watcher", "--", "readlink", "/conf/..data"]);
    assert_ne!(before, after, "a new ..data generation was swapped in");
    assert_eq!(
        pod(c, "watcher")["status"]["containerStatuses"][0]["restartCount"],
        0,
        "updates do not restart the container"
    );
}

#[test]
fn pods_get_a_bound_service_account_token() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let sleeper = |name: &str, automount: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  automountServiceAccountToken: {automount}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
        )
    };
    c.create(Some("default"), &sleeper("with-token", true));
    c.create(Some("default"), &sleeper("without", false));
    for n in ["with-token", "without"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = c.ok(&["exec", "with-token", "--", "cat", &format!("{dir}/token")]);
    // The token is kept in memory (a tmpfs, as upstream's projected
    // volumes), never on the node's disk.
    let mounts = c.ok(&["exec", "with-token", "--", "cat", "/proc/mounts"]);
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(dir))
        .unwrap_or_else(|| panic!("no {dir} mount in {mounts}"));
    assert_eq!(line.split_whitespace().nth(2), Some("tmpfs"), "{line}");
    assert_eq!(
        c.ok(&[
            "exec",
            "with-token",
            "--",
            "cat",
            &format!("{dir}/namespace")
        ]),
        "default"
    );
    let ca = c.ok(&["exec", "with-token", "--", "cat", &format!("{dir}/ca.crt")]);
    assert_eq!(
        ca,
        std::fs::read_to_string(c.dir.path().join("tls/ca.crt")).unwrap(),
        "the cluster CA"
    );
    let out = c.kubectl(&["exec", "without", "--", "ls", dir]);
    assert!(
        !out.status.success(),
        "automountServiceAccountToken: false mounts nothing"
    );

    // The token authenticates as the pod's service account while the pod
    // exists.
    let as_token = |t: &str| {
        Command::new("kubectl")
            .args(["--kubeconfig=/dev/null", "--server", &c.url])
            .arg("--certificate-authority")
            .arg(c.dir.path().join("tls/ca.crt"))
            .args(["--token", t, "get", "pods", "-o", "name"])
            .env("HOME", c.dir.path())
            .output()
            .unwrap()
    };
    let out = as_token(&token);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pod/with-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&["delete", "pod", "with-token", "--wait=true"]);
    let out = as_token(&token);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "a token bound to a deleted pod no longer works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl create token: a fresh, unbound one.
    let fresh = c.ok(&["create", "token", "default", "--duration=15m"]);
    assert!(as_token(fresh.trim()).status.success());
}

fn image_list(c: &Cluster) -> String {
    let out = Command::new(r8s_bin())
        .args(["image", "ls", "--data-dir"])
        .arg(c.dir.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn image_gc_removes_unused_images_but_never_one_a_pod_uses() {
    let mut host = Host::new();
    // A second, distinct image: busybox with one byte appended (still a
    // valid static ELF, a different layer).
    let build_other = |dir: &Path| {
        let bin = dir.join("busybox-other");
        let mut bytes = std::fs::read("/bin/busybox").expect("Debian's busybox-static");
        bytes.push(0);
        std::fs::write(&bin, bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tar = dir.join("other.tar");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/build-busybox-image.sh");
        let st = Command::new("bash")
            .arg(&script)
            .arg(&tar)
            .arg("other:1")
            .env("BUSYBOX", &bin)
            .status()
            .unwrap();
        assert!(st.success());
        let st = Command::new(r8s_bin())
            .args(["image", "import", "--data-dir"])
            .arg(dir)
            .arg(&tar)
            .status()
            .unwrap();
        assert!(st.success());
    };
    // Every pass finds the disk "too full" (thresholds 0), so only the
    // in-use rule protects an image.
    start_node_with(
        &mut host,
        &[
            "--image-gc-high-threshold",
            "0",
            "--image-gc-low-threshold",
            "0",
            "--image-gc-period",
            "1s",
            "--minimum-image-ttl-duration",
            "12s",
        ],
        build_other,
    );
    let c = host.cluster.as_ref().unwrap();
    let listed = image_list(c);
    assert!(
        listed.contains("other:1") && listed.contains("busybox"),
        "{listed}"
    );
    c.ok(&[
        "run",
        "keeper",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--",
        "sleep",
        "3600",
    ]);
    c.wait_for("keeper to run", Duration::from_secs(60), || {
        (pod(c, "keeper")["status"]["phase"] == "Running").then_some(())
    });
    c.wait_for(
        "the unused image to be collected",
        Duration::from_secs(60),
        || (!image_list(c).contains("other:1")).then_some(()),
    );
    assert!(
        image_list(c).contains("busybox"),
        "the image a pod uses stays"
    );
    assert_eq!(pod(c, "keeper")["status"]["phase"], "Running");
    c.ok(&["delete", "pod", "keeper", "--wait=true", "--grace-period=1"]);
    c.wait_for("busybox to go once unused", Duration::from_secs(60), || {
        (!image_list(c).contains("busybox")).then_some(())
    });
}

#[test]
fn seccomp_profiles_confine_containers() {
    let mut host = Host::new();
    // A Localhost profile, in Docker's format, where the kubelet looks
    // for them: `<data-dir>/agent/seccomp/<localhostProfile>`.
    start_node_with(&mut host, &[], |data| {
        let dir = data.join("agent/seccomp/profiles");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("no-mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
    });
    let c = host.cluster.as_ref().unwrap();
    let run = |args: &[&str]| {
        let o = c.kubectl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let pod_with = |name: &str, pod_sc: &str, ctr_sc: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {pod_sc}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    securityContext: {ctr_sc}
"#
        )
    };
    c.create(Some("default"), &pod_with("unconfined", "{}", "{}"));
    c.create(
        Some("default"),
        &pod_with(
            "runtime-default",
            "{seccompProfile: {type: RuntimeDefault}, runAsUser: 1000}",
            "{}",
        ),
    );
    c.create(
        Some("default"),
        &pod_with(
            "local",
            "{seccompProfile: {type: RuntimeDefault}}",
            "{seccompProfile: {type: Localhost, localhostProfile: profiles/no-mkdir.json}}",
        ),
    );
    c.create(
        Some("default"),
        &pod_with(
            "missing-profile",
            "{}",
            "{seccompProfile: {type: Localhost, localhostProfile: profiles/absent.json}}",
        ),
    );
    for n in ["unconfined", "runtime-default", "local"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let mode = |pod: &str, pid: &str| {
        let status = c.ok(&["exec", pod, "--", "cat", &format!("/proc/{pid}/status")]);
        status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no Seccomp line in {status}"))
    };
    // Mode 0: no filter; mode 2: a filter, on the container's process and
    // on processes exec'd into it.
    assert_eq!(mode("unconfined", "1"), "0");
    assert_eq!(mode("unconfined", "self"), "0");
    for p in ["runtime-default", "local"] {
        assert_eq!(mode(p, "1"), "2", "{p}: PID 1 is filtered");
        assert_eq!(mode(p, "self"), "2", "{p}: exec'd processes are filtered");
    }

    // An exec'd process runs as the container's user, with exactly the
    // container's capabilities (the filter is loaded with CAP_SYS_ADMIN,
    // which is dropped again before the command runs).
    assert_eq!(
        c.ok(&["exec", "runtime-default", "--", "id", "-u"]).trim(),
        "1000"
    );
    let caps_of = |pod: &str, pid: &str| {
        let status = c.ok(&["exec", pod, "--", "cat", &format!("/proc/{pid}/status")]);
        status
            .lines()
            .filter(|l| l.starts_with("Cap"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for p in ["local", "unconfined"] {
        assert_eq!(
            caps_of(p, "self"),
            caps_of(p, "1"),
            "{p}: exec'd capabilities"
        );
    }

    // Creating a user namespace needs no capability, so only the filter
    // stops it: allowed unconfined, refused by RuntimeDefault.
    let (ok, out) = run(&["exec", "unconfined", "--", "unshare", "-U", "true"]);
    assert!(ok, "unconfined containers may unshare: {out}");
    let (ok, out) = run(&["exec", "runtime-default", "--", "unshare", "-U", "true"]);
    assert!(!ok, "RuntimeDefault refuses unshare");
    assert!(out.contains("Operation not permitted"), "{out}");
    // Everyday work is unaffected.
    let out = c.ok(&[
        "exec",
        "runtime-default",
        "--",
        "sh",
        "-c",
        "mkdir /tmp/d && echo hi > /tmp/d/f && cat /tmp/d/f && ps",
    ]);
    assert!(out.starts_with("hi"), "{out}");

    // The container's Localhost profile wins over the pod's RuntimeDefault.
    let (ok, out) = run(&["exec", "local", "--", "mkdir", "/tmp/x"]);
    assert!(!ok, "the local profile refuses mkdir: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    c.ok(&["exec", "local", "--", "touch", "/tmp/file"]);
    c.ok(&["exec", "local", "--", "unshare", "-U", "true"]);

    // A missing profile is the container's error, as upstream.
    let waiting = c.wait_for(
        "missing-profile to report its error",
        Duration::from_secs(30),
        || {
            let p = pod(c, "missing-profile");
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            (w["reason"] == "CreateContainerError").then_some(w)
        },
    );
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or("")
            .contains("profiles/absent.json"),
        "{waiting}"
    );

    // Bad profiles are refused by the API server, naming the field.
    let bad = pod_with(
        "bad",
        "{seccompProfile: {type: Localhost}}",
        "{seccompProfile: {type: Sometimes}}",
    );
    let o = c.kubectl_env(&["create", "-f", "-"], &[], Some(&bad));
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains("spec.securityContext.seccompProfile.localhostProfile: Required value"),
        "{out}"
    );
    assert!(
        out.contains("spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Sometimes\""),
        "{out}"
    );
}

#[test]
fn pressure_conditions_taint_the_node_and_refuse_pods() {
    let mut host = Host::new();
    // A threshold no host can meet puts the node under memory pressure.
    start_node_with(
        &mut host,
        &["--eviction-hard", "memory.available<1Ei"],
        |_| {},
    );
    let c = host.cluster.as_ref().unwrap();
    let condition = |t: &str| {
        let node = c.get_json(&["node", "e2e-node"]);
        node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["type"] == t).cloned())
            .unwrap_or_default()
    };
    let mp = condition("MemoryPressure");
    assert_eq!(mp["status"], "True", "{mp}");
    assert_eq!(mp["reason"], "KubeletHasInsufficientMemory");
    for t in ["DiskPressure", "PIDPressure"] {
        assert_eq!(condition(t)["status"], "False", "{t}");
    }
    assert_eq!(condition("Ready")["status"], "True");
    // The transition time stays put across heartbeats.
    let since = mp["lastTransitionTime"].clone();
    c.wait_for("a heartbeat", Duration::from_secs(30), || {
        (condition("MemoryPressure")["lastHeartbeatTime"] != mp["lastHeartbeatTime"]).then_some(())
    });
    assert_eq!(condition("MemoryPressure")["lastTransitionTime"], since);
    // The node lifecycle controller taints the node, so the scheduler
    // places nothing there.
    c.wait_for("the memory-pressure taint", Duration::from_secs(30), || {
        let node = c.get_json(&["node", "e2e-node"]);
        node["spec"]["taints"]
            .as_array()?
            .iter()
            .any(|t| {
                t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
            })
            .then_some(())
    });
    let pod_yaml = |name: &str, node: &str, resources: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    resources: {resources}
"#
        )
    };
    c.create(Some("default"), &pod_yaml("scheduled", "", "{}"));
    c.wait_for(
        "scheduled to be unschedulable",
        Duration::from_secs(30),
        || {
            let p = pod(c, "scheduled");
            let cond = p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|x| x["type"] == "PodScheduled")?
                .clone();
            (cond["reason"] == "Unschedulable"
                && cond["message"]
                    .as_str()?
                    .contains("node.kubernetes.io/memory-pressure"))
            .then_some(())
        },
    );
    // A pod sent straight to the node: BestEffort is refused, as upstream's
    // admission does; a pod with requests runs.
    c.create(
        Some("default"),
        &pod_yaml("besteffort", "nodeName: e2e-node", "{}"),
    );
    c.create(
        Some("default"),
        &pod_yaml(
            "burstable",
            "nodeName: e2e-node",
            "{requests: {cpu: 10m, memory: 16Mi}}",
        ),
    );
    let rejected = c.wait_for("besteffort to be refused", Duration::from_secs(30), || {
        let p = pod(c, "besteffort");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(rejected["status"]["reason"], "Evicted", "{rejected}");
    assert_eq!(
        rejected["status"]["message"],
        "Pod was rejected: The node had condition: [MemoryPressure]. "
    );
    // Admitted and started, then evicted: with memory below the threshold
    // the eviction manager ends pods one per pass, as upstream does.
    let p = c.wait_for("burstable to be evicted", Duration::from_secs(60), || {
        let p = pod(c, "burstable");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let msg = p["status"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1Ei, available: "
        ),
        "{p}"
    );
    assert!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"].is_string(),
        "it ran before it was evicted: {p}"
    );
    assert_evicted(c, "burstable", &msg);

    // Disk pressure refuses every pod.
    let c = host.cluster.as_mut().unwrap();
    c.restart_replacing("memory.available<1Ei", "nodefs.available<1Ei");
    let c = host.cluster.as_ref().unwrap();
    c.wait_for("DiskPressure", Duration::from_secs(30), || {
        let node = c.get_json(&["node", "e2e-node"]);
        let cs = node["status"]["conditions"].as_array()?.clone();
        let status = |t: &str| {
            cs.iter()
                .find(|x| x["type"] == t)
                .map(|x| x["status"].clone())
        };
        (status("DiskPressure")? == "True" && status("MemoryPressure")? == "False").then_some(())
    });
    c.create(
        Some("default"),
        &pod_yaml(
            "on-full-disk",
            "nodeName: e2e-node",
            "{requests: {cpu: 10m, memory: 16Mi}}",
        ),
    );
    let rejected = c.wait_for(
        "on-full-disk to be refused",
        Duration::from_secs(30),
        || {
            let p = pod(c, "on-full-disk");
            (p["status"]["phase"] == "Failed").then_some(p)
        },
    );
    assert_eq!(
        rejected["status"]["message"],
        "Pod was rejected: The node had condition: [DiskPressure]. "
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[test]
fn containers_get_service_environment_variables() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Service
metadata:
  name: my-db
spec:
  ports:
  - {name: sql, port: 5432}
  - {name: metrics, port: 9187}
"#,
    );
    let db_ip = c.get_json(&["service", "my-db"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let k8s_ip = c.get_json(&["service", "kubernetes"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let pod_yaml = |name: &str, links: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  enableServiceLinks: {links}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    env:
    - {{name: DB_URL, value: "postgres://$(MY_DB_SERVICE_HOST):$(MY_DB_SERVICE_PORT_SQL)/app"}}
    - {{name: MY_DB_SERVICE_PORT, value: "overridden"}}
"#
        )
    };
    c.create(Some("default"), &pod_yaml("linked", true));
    c.create(Some("default"), &pod_yaml("unlinked", false));
    for n in ["linked", "unlinked"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let env_of = |p: &str| -> std::collections::HashMap<String, String> {
        c.ok(&["exec", p, "--", "env"])
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    };
    let env = env_of("linked");
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some(k8s_ip.as_str()));
    assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
    assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
    assert_eq!(get("MY_DB_SERVICE_HOST"), Some(db_ip.as_str()));
    assert_eq!(get("MY_DB_SERVICE_PORT_METRICS"), Some("9187"));
    assert_eq!(
        get("MY_DB_PORT"),
        Some(format!("tcp://{db_ip}:5432").as_str())
    );
    // The container's own variables may use them, and win over them.
    assert_eq!(
        get("DB_URL"),
        Some(format!("postgres://{db_ip}:5432/app").as_str())
    );
    assert_eq!(get("MY_DB_SERVICE_PORT"), Some("overridden"));
    // enableServiceLinks: false keeps only the API server's.
    let env = env_of("unlinked");
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        Some(k8s_ip.as_str())
    );
    assert!(!env.contains_key("MY_DB_SERVICE_HOST"), "{env:?}");
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[test]
fn termination_messages_come_from_the_file_or_the_logs() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: ends
spec:
  restartPolicy: Never
  containers:
  - name: file
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo -n 'disk quota gone' > /dev/termination-log; exit 3"]
  - name: custom-path
    image: busybox:latest
    imagePullPolicy: Never
    terminationMessagePath: /tmp/why
    command: ["sh", "-c", "echo done > /tmp/why"]
  - name: from-logs
    image: busybox:latest
    imagePullPolicy: Never
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "for i in $(seq 1 100); do echo line $i; done; exit 1"]
  - name: quiet
    image: busybox:latest
    imagePullPolicy: Never
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo fine"]
"#,
    );
    let p = c.wait_for("ends to finish", Duration::from_secs(60), || {
        let p = pod(c, "ends");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let term = |name: &str| {
        p["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["state"]["terminated"]
            .clone()
    };
    assert_eq!(term("file")["exitCode"], 3);
    assert_eq!(term("file")["message"], "disk quota gone");
    assert_eq!(term("custom-path")["message"], "done\n");
    // The last 80 lines of the log of a failed container.
    let m = term("from-logs")["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with("line 21\n") && m.ends_with("line 100\n"),
        "{m:?}"
    );
    // A container that succeeded has no message from its logs.
    assert!(term("quiet").get("message").is_none(), "{}", term("quiet"));
    c.ok(&["delete", "pod", "ends", "--wait=true", "--timeout=60s"]);
}

/// The cgroup files of a container, on either layout: (memory limit, CPU
/// quota as "quota period", pids limit).
fn container_limits(cgroup: &Path, v2: bool) -> (String, String, String) {
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    if v2 {
        (
            read(cgroup.join("memory.max")),
            read(cgroup.join("cpu.max")),
            read(cgroup.join("pids.max")),
        )
    } else {
        let rel = cgroup.strip_prefix("/sys/fs/cgroup").unwrap();
        let at = |ctl: &str, f: &str| read(Path::new("/sys/fs/cgroup").join(ctl).join(rel).join(f));
        (
            at("memory", "memory.limit_in_bytes"),
            format!(
                "{} {}",
                at("cpu", "cpu.cfs_quota_us"),
                at("cpu", "cpu.cfs_period_us")
            ),
            at("pids", "pids.max"),
        )
    }
}

/// Limits, OOM kills, usage and cleanup through the host's cgroups, on
/// the v1 hybrid layout of this machine and on a pure cgroup v2 host
/// (`tools/cgroup-v2-vm.sh` runs it in a v2 VM). Timeouts are generous
/// for the emulated VM.
#[test]
fn cgroups_limit_and_account_containers() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    eprintln!("cgroup layout: {}", if v2 { "v2" } else { "v1" });
    let slow = Duration::from_secs(240);
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: limited
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    image: busybox:latest
    imagePullPolicy: Never
    restartPolicy: Always
    command: ["sleep", "3600"]
    resources:
      limits: {memory: 32Mi, cpu: 100m}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    resources:
      limits: {memory: 64Mi, cpu: 250m}
"#,
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: hungry
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "tail /dev/zero"]
    resources:
      limits: {memory: 32Mi}
"#,
    );
    let p = c.wait_for("limited to run", slow, || {
        let p = pod(c, "limited");
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(p["status"]["qosClass"], "Guaranteed");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let cid = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("r8s://")
        .to_string();
    let base = if v2 {
        Path::new("/sys/fs/cgroup").to_path_buf()
    } else {
        Path::new("/sys/fs/cgroup/memory").to_path_buf()
    };
    let pod_cg = base.join(&host.cgroup).join(format!("pod{uid}"));
    let ctr_cg = Path::new("/sys/fs/cgroup")
        .join(&host.cgroup)
        .join(format!("pod{uid}"))
        .join(&cid);
    let (mem, cpu, _pids) = container_limits(&ctr_cg, v2);
    assert_eq!(mem, (64u64 << 20).to_string(), "memory limit");
    assert_eq!(cpu, "25000 100000", "a quarter CPU");
    // The container's process is in its cgroup.
    let procs = if v2 {
        ctr_cg.join("cgroup.procs")
    } else {
        Path::new("/sys/fs/cgroup/memory")
            .join(ctr_cg.strip_prefix("/sys/fs/cgroup").unwrap())
            .join("cgroup.procs")
    };
    let pids = std::fs::read_to_string(&procs).unwrap();
    assert!(!pids.trim().is_empty(), "no process in {}", procs.display());

    c.wait_for("hungry to be OOMKilled", slow, || {
        let p = pod(c, "hungry");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        (p["status"]["phase"] == "Failed" && t["reason"] == "OOMKilled" && t["exitCode"] == 137)
            .then_some(())
    });

    // Usage from the cgroups reaches /stats/summary.
    let summary = c.wait_for("the pod's memory in the summary", slow, || {
        let raw = c.ok(&["get", "--raw", "/api/v1/nodes/e2e-node/proxy/stats/summary"]);
        let v: serde_json::Value = serde_json::from_str(&raw).ok()?;
        let p = v["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "limited")?
            .clone();
        (p["memory"]["workingSetBytes"].as_u64()? > 0).then_some(p)
    });
    assert!(
        summary["containers"][0]["memory"]["usageBytes"].as_u64() > Some(0),
        "{summary}"
    );

    // In-place resize: the cgroup follows, the container keeps running.
    let resize = |cpu: &str, mem: &str| {
        format!(
            r#"{{"spec":{{"containers":[{{"name":"c","resources":{{"requests":{{"cpu":"{cpu}","memory":"{mem}"}},"limits":{{"cpu":"{cpu}","memory":"{mem}"}}}}}}]}}}}"#
        )
    };
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        &resize("500m", "96Mi"),
    ]);
    let p = c.wait_for("limited resized in place", slow, || {
        let p = pod(c, "limited");
        let st = &p["status"]["containerStatuses"][0];
        (st["resources"]["limits"]["cpu"] == "500m"
            && st["resources"]["limits"]["memory"] == "96Mi")
            .then_some(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["allocatedResources"]["cpu"],
        "500m"
    );
    let (mem, cpu, _pids) = container_limits(&ctr_cg, v2);
    assert_eq!(mem, (96u64 << 20).to_string(), "memory limit after resize");
    assert_eq!(cpu, "50000 100000", "half a CPU after resize");
    // A resize may not change the QoS class, nor more than CPU and memory.
    let err = c.fails(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"100m"}}}]}}"#,
    ]);
    assert!(
        err.contains("Pod QOS Class may not change as a result of resizing"),
        "{err}"
    );
    // More than the node has stays pending.
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        &resize("1000", "96Mi"),
    ]);
    let p = c.wait_for("the resize to be infeasible", slow, || {
        let p = pod(c, "limited");
        (pod_condition(&p, "PodResizePending")["reason"] == "Infeasible").then_some(p)
    });
    let msg = pod_condition(&p, "PodResizePending")["message"].clone();
    assert!(
        msg.as_str()
            .unwrap_or("")
            // 1000 CPUs for the app and the sidecar's 100m.
            .starts_with("Node didn't have enough capacity: cpu, requested: 1000100, capacity: "),
        "{msg}"
    );
    let (_, cpu, _) = container_limits(&ctr_cg, v2);
    assert_eq!(cpu, "50000 100000", "unchanged while pending");
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        &resize("250m", "64Mi"),
    ]);
    c.wait_for("the pending resize to clear", slow, || {
        let p = pod(c, "limited");
        (pod_condition(&p, "PodResizePending").is_null()
            && p["status"]["containerStatuses"][0]["resources"]["limits"]["cpu"] == "250m")
            .then_some(())
    });
    let (mem, cpu, _pids) = container_limits(&ctr_cg, v2);
    assert_eq!(
        (mem.as_str(), cpu.as_str()),
        ((64u64 << 20).to_string().as_str(), "25000 100000")
    );

    // A sidecar resizes in place too; a regular init container would not.
    let p = pod(c, "limited");
    let side_id = p["status"]["initContainerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("r8s://")
        .to_string();
    let side_cg = Path::new("/sys/fs/cgroup")
        .join(&host.cgroup)
        .join(format!("pod{uid}"))
        .join(&side_id);
    assert_eq!(container_limits(&side_cg, v2).1, "10000 100000");
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        r#"{"spec":{"initContainers":[{"name":"side","resources":{"requests":{"cpu":"200m","memory":"48Mi"},"limits":{"cpu":"200m","memory":"48Mi"}}}]}}"#,
    ]);
    let p = c.wait_for("the sidecar resized in place", slow, || {
        let p = pod(c, "limited");
        let st = &p["status"]["initContainerStatuses"][0];
        (st["resources"]["limits"]["cpu"] == "200m").then_some(p)
    });
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    let (mem, cpu, _) = container_limits(&side_cg, v2);
    assert_eq!(
        (mem.as_str(), cpu.as_str()),
        ((48u64 << 20).to_string().as_str(), "20000 100000")
    );
    // Removing a limit is refused, as upstream.
    let err = c.fails(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","resources":{"limits":{"memory":null}}}]}}"#,
    ]);
    assert!(err.contains("resource limits cannot be removed"), "{err}");

    // Deleting the pods removes their cgroups.
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=240s"]);
    c.wait_for("the pod's cgroups to go", slow, || {
        (!pod_cg.exists() && !ctr_cg.exists()).then_some(())
    });
}

/// A pod's condition of `type_`, or null.
fn pod_condition(p: &serde_json::Value, type_: &str) -> serde_json::Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}

/// Waits for `name` to be evicted and checks what upstream's kubelet shows
/// for an evicted pod; returns the pod.
fn assert_evicted(c: &Cluster, name: &str, message: &str) -> serde_json::Value {
    let p = c.wait_for(
        &format!("{name} to be evicted"),
        Duration::from_secs(60),
        || {
            let p = pod(c, name);
            (p["status"]["phase"] == "Failed").then_some(p)
        },
    );
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    assert_eq!(p["status"]["message"], message, "{p}");
    let dt = pod_condition(&p, "DisruptionTarget");
    assert_eq!(dt["status"], "True", "{p}");
    assert_eq!(dt["reason"], "TerminationByKubelet");
    for cs in p["status"]["containerStatuses"].as_array().unwrap() {
        assert!(cs["state"]["terminated"].is_object(), "{cs}");
    }
    c.wait_for(
        &format!("{name}'s Evicted event"),
        Duration::from_secs(20),
        || {
            pod_events(c, name)
                .iter()
                .any(|(r, m, e)| r == "Evicted" && m == message && e["type"] == "Warning")
                .then_some(())
        },
    );
    p
}

#[test]
fn pods_past_their_storage_limits_or_deadline_are_ended_by_the_kubelet() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let pod_with = |name: &str, volumes: &str, containers: &str, extra: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  {extra}
  volumes: {volumes}
  containers:
{containers}
"#
        )
    };
    let ctr = |name: &str, script: &str, limit: &str| {
        format!(
            r#"  - name: {name}
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
    resources: {limit}
"#
        )
    };
    let scratch = r#"[{name: data, emptyDir: {sizeLimit: 5Mi}}]"#;
    let plain = r#"[{name: data, emptyDir: {}}]"#;
    let write = |path: &str, mib: u32| format!("dd if=/dev/zero of={path} bs=1M count={mib}");
    let limit5 = "{limits: {ephemeral-storage: 5Mi}}";
    // Within every limit: keeps running.
    c.create(
        Some("default"),
        &pod_with(
            "calm",
            scratch,
            &ctr(
                "calm",
                &format!("{} && {}", write("/data/f", 1), write("/tmp/f", 1)),
                limit5,
            ),
            "",
        ),
    );
    // An emptyDir past its sizeLimit.
    c.create(
        Some("default"),
        &pod_with(
            "scratch",
            scratch,
            &ctr("w", &write("/data/f", 8), "{}"),
            "",
        ),
    );
    // One container's writable layer past its own limit (the pod's total
    // is within the sum of both).
    c.create(
        Some("default"),
        &pod_with(
            "layers",
            plain,
            &format!(
                "{}{}",
                ctr("big", &write("/tmp/f", 8), limit5),
                ctr("small", "true", limit5)
            ),
            "",
        ),
    );
    // The pod's total (a container and an emptyDir) past its containers'.
    c.create(
        Some("default"),
        &pod_with(
            "total",
            plain,
            &ctr(
                "t",
                &format!("{} && {}", write("/data/f", 3), write("/tmp/f", 3)),
                limit5,
            ),
            "",
        ),
    );
    // Past activeDeadlineSeconds.
    c.create(
        Some("default"),
        &pod_with(
            "deadline",
            plain,
            &ctr("d", "true", "{}"),
            "activeDeadlineSeconds: 5",
        ),
    );
    c.wait_for("calm to run", Duration::from_secs(60), || {
        (pod(c, "calm")["status"]["phase"] == "Running").then_some(())
    });
    let scratch_pod = assert_evicted(
        c,
        "scratch",
        "Usage of EmptyDir volume \"data\" exceeds the limit \"5Mi\". ",
    );
    assert_evicted(
        c,
        "layers",
        "Container big exceeded its local ephemeral storage limit \"5Mi\". ",
    );
    assert_evicted(
        c,
        "total",
        "Pod ephemeral local storage usage exceeds the total limit of containers 5Mi. ",
    );
    // The evicted pod's processes, network and emptyDir data are gone; the
    // pod object stays until deleted.
    let uid = scratch_pod["metadata"]["uid"].as_str().unwrap();
    let left = leftovers(c, &host, uid);
    assert!(left.is_empty(), "{left:?}");
    let data = c.path().join("agent/pods").join(uid).join("volumes/data");
    assert!(!data.exists(), "{} is still there", data.display());

    let d = c.wait_for("deadline to fail", Duration::from_secs(60), || {
        let p = pod(c, "deadline");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(d["status"]["reason"], "DeadlineExceeded", "{d}");
    assert_eq!(
        d["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    assert!(pod_condition(&d, "DisruptionTarget").is_null(), "{d}");
    let t = &d["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 137, "{d}");

    let calm = pod(c, "calm");
    assert_eq!(calm["status"]["phase"], "Running", "{calm}");
    assert_eq!(calm["status"]["containerStatuses"][0]["restartCount"], 0);
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

/// Starts a node whose data dir is a 300 MiB tmpfs of its own (so what
/// the pods write is all that moves its free space); returns a reader of
/// the free bytes.
fn start_tmpfs_node(host: &mut Host, extra: &[&str]) -> impl Fn() -> u64 + use<> {
    let data = host.data.path().to_path_buf();
    nix::mount::mount(
        Some("tmpfs"),
        &data,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=300m"),
    )
    .expect("mounting a tmpfs for the node's data dir");
    start_node_with(host, extra, |_| {});
    move || {
        nix::sys::statvfs::statvfs(&data)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }
}

/// A pod writing `mib` MiB into an emptyDir, then sleeping.
fn disk_writer(name: &str, mib: u32, resources: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: data, emptyDir: {{}}}}]
  containers:
  - name: {name}
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count={mib}; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
    resources: {resources}
"#
    )
}

/// `--eviction-minimum-reclaim`: once disk pressure evicts, it goes on
/// until the threshold plus the margin is free, not just the threshold.
#[test]
fn minimum_reclaim_evicts_past_the_threshold() {
    let mut host = Host::new();
    let free = start_tmpfs_node(
        &mut host,
        &[
            "--eviction-hard",
            "nodefs.available<200Mi",
            "--eviction-minimum-reclaim",
            "nodefs.available=100Mi",
            "--eviction-pressure-transition-period",
            "5s",
        ],
    );
    let c = host.cluster.as_ref().unwrap();
    // Evicting the bigger writer alone brings the node back above 200 MiB
    // free, but not to 300 MiB: only the margin makes the second one go.
    assert!(
        free() > 250 << 20,
        "the node starts with room to spare: {}",
        free()
    );
    c.create(Some("default"), &disk_writer("small", 40, "{}"));
    c.wait_for("small to run", Duration::from_secs(60), || {
        (pod(c, "small")["status"]["phase"] == "Running").then_some(())
    });
    c.create(Some("default"), &disk_writer("big", 60, "{}"));
    let p = c.wait_for("big to be evicted", Duration::from_secs(90), || {
        let p = pod(c, "big");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    let p = c.wait_for(
        "small to be evicted for the margin",
        Duration::from_secs(90),
        || {
            let p = pod(c, "small");
            (p["status"]["phase"] == "Failed").then_some(p)
        },
    );
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    let msg = p["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 200Mi, available: "
        ),
        "{msg}"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[test]
fn disk_pressure_evicts_the_pod_using_the_most_disk() {
    let mut host = Host::new();
    let free = start_tmpfs_node(
        &mut host,
        &[
            "--eviction-hard",
            "nodefs.available<200Mi",
            "--eviction-pressure-transition-period",
            "5s",
        ],
    );
    let c = host.cluster.as_ref().unwrap();
    assert!(
        free() > 230 << 20,
        "the node starts with room to spare: {}",
        free()
    );
    // A pod within its request, then one that takes 100 MiB it never asked
    // for: only the second may go.
    c.create(
        Some("default"),
        &disk_writer("modest", 20, "{requests: {ephemeral-storage: 50Mi}}"),
    );
    c.wait_for("modest to run", Duration::from_secs(60), || {
        (pod(c, "modest")["status"]["phase"] == "Running").then_some(())
    });
    c.create(Some("default"), &disk_writer("hog", 100, "{}"));
    let p = c.wait_for("hog to be evicted", Duration::from_secs(90), || {
        let p = pod(c, "hog");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let msg = p["status"]["message"].as_str().unwrap_or("").to_string();
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    assert!(
        msg.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 200Mi, available: "
        ) && msg.contains("Container hog was using ")
            && msg.ends_with("request is 0, has larger consumption of ephemeral-storage. "),
        "{msg}"
    );
    assert_evicted(c, "hog", &msg);
    // Its emptyDir is reclaimed, the pressure ends, the other pod never
    // stopped.
    c.wait_for("the disk space back", Duration::from_secs(30), || {
        (free() > 230 << 20).then_some(())
    });
    c.wait_for("DiskPressure to clear", Duration::from_secs(60), || {
        let node = c.get_json(&["node", "e2e-node"]);
        let dp = node["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|x| x["type"] == "DiskPressure")?
            .clone();
        (dp["status"] == "False").then_some(())
    });
    let modest = pod(c, "modest");
    assert_eq!(modest["status"]["phase"], "Running", "{modest}");
    assert_eq!(modest["status"]["containerStatuses"][0]["restartCount"], 0);
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[test]
fn sidecars_start_before_and_stop_after_the_app_and_gates_hold_readiness() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    let shared = tempfile::tempdir().unwrap();
    // A Job-like pod: the sidecar is up before the next init container
    // runs, the pod succeeds when its app container does, and the sidecar
    // is stopped (SIGTERM) only after that.
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: batch
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes: [{{name: shared, hostPath: {{path: {dir}}}}}]
  initContainers:
  - name: logger
    restartPolicy: Always
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo logger-term >> /shared/log; exit 0' TERM; sleep 1; echo logger-up >> /shared/log; while true; do sleep 1; done"]
    startupProbe:
      exec: {{command: ["grep", "-q", "logger-up", "/shared/log"]}}
      periodSeconds: 1
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: setup
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "grep -q logger-up /shared/log && echo setup >> /shared/log"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo main >> /shared/log; sleep 2"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#,
            dir = shared.path().display()
        ),
    );
    let p = c.wait_for("batch to succeed", Duration::from_secs(90), || {
        let p = pod(c, "batch");
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Succeeded", "{p}");
    assert_eq!(
        std::fs::read_to_string(shared.path().join("log")).unwrap(),
        "logger-up\nsetup\nmain\nlogger-term\n"
    );
    let logger = &p["status"]["initContainerStatuses"][0];
    assert_eq!(logger["name"], "logger");
    assert_eq!(logger["state"]["terminated"]["exitCode"], 0, "{p}");
    assert_eq!(logger["restartCount"], 0, "{p}");

    // A failed init container under Never ends the pod, sidecars included.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: broken
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    restartPolicy: Always
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
  - name: fails
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 1; exit 2"]
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: Never
    command: ["true"]
"#,
    );
    let p = c.wait_for(
        "broken to fail, its sidecar stopped",
        Duration::from_secs(60),
        || {
            let p = pod(c, "broken");
            (p["status"]["phase"] == "Failed"
                && p["status"]["initContainerStatuses"][0]["state"]["terminated"].is_object())
            .then_some(p)
        },
    );
    assert_eq!(
        p["status"]["initContainerStatuses"][1]["state"]["terminated"]["exitCode"], 2,
        "{p}"
    );

    // A long-running pod: its sidecar's readiness and a readiness gate
    // both hold the pod's Ready condition.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: gated
spec:
  readinessGates: [{conditionType: example.com/ready}]
  initContainers:
  - name: side
    restartPolicy: Always
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "while [ ! -f /tmp/exit ]; do sleep 1; done; exit 3"]
    readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    let ready = |p: &serde_json::Value| pod_condition(p, "Ready");
    c.wait_for(
        "gated to run, held back by its sidecar",
        Duration::from_secs(60),
        || {
            let p = pod(c, "gated");
            let r = ready(&p);
            (p["status"]["phase"] == "Running"
                && p["status"]["initContainerStatuses"][0]["started"] == true
                && r["status"] == "False"
                && r["reason"] == "ContainersNotReady"
                && r["message"] == "containers with unready status: [side]")
                .then_some(())
        },
    );
    c.ok(&["exec", "gated", "-c", "side", "--", "touch", "/tmp/ready"]);
    let p = c.wait_for(
        "the sidecar ready, the gate holding",
        Duration::from_secs(30),
        || {
            let p = pod(c, "gated");
            (pod_condition(&p, "ContainersReady")["status"] == "True"
                && ready(&p)["reason"] == "ReadinessGatesNotReady")
                .then_some(p)
        },
    );
    assert_eq!(
        ready(&p)["message"],
        "corresponding condition of pod readiness gate \"example.com/ready\" does not exist.",
        "{p}"
    );
    assert_eq!(p["status"]["initContainerStatuses"][0]["ready"], true);
    c.ok(&[
        "patch",
        "pod",
        "gated",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"example.com/ready","status":"True"}]}}"#,
    ]);
    c.wait_for("gated to be Ready", Duration::from_secs(30), || {
        (ready(&pod(c, "gated"))["status"] == "True").then_some(())
    });
    // The sidecar exits: it is restarted, the app container is not, and
    // the gate's condition survives the kubelet's status updates.
    c.ok(&["exec", "gated", "-c", "side", "--", "touch", "/tmp/exit"]);
    let p = c.wait_for("the sidecar restarted", Duration::from_secs(60), || {
        let p = pod(c, "gated");
        let side = &p["status"]["initContainerStatuses"][0];
        (side["restartCount"] == 1 && side["state"]["running"].is_object()).then_some(p)
    });
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["lastState"]["terminated"]["exitCode"], 3,
        "{p}"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    assert_eq!(
        pod_condition(&p, "example.com/ready")["status"],
        "True",
        "{p}"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[test]
fn kubectl_debug_runs_an_ephemeral_container_in_the_pod() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: target
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    c.wait_for("target to run", Duration::from_secs(60), || {
        (pod(c, "target")["status"]["phase"] == "Running").then_some(())
    });
    // A debug container in the app's process namespace sees its processes.
    c.ok(&[
        "debug",
        "target",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--target=app",
        "--container=dbg",
        "--",
        "sh",
        "-c",
        "ps; sleep 3600",
    ]);
    let p = c.wait_for("dbg to run", Duration::from_secs(60), || {
        let p = pod(c, "target");
        let st = p["status"]["ephemeralContainerStatuses"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "dbg")?
            .clone();
        st["state"]["running"].is_object().then_some(p)
    });
    assert_eq!(
        p["spec"]["ephemeralContainers"][0]["targetContainerName"],
        "app"
    );
    let ps = c.wait_for("dbg's ps output", Duration::from_secs(20), || {
        let out = c.ok(&["logs", "target", "-c", "dbg"]);
        out.contains("sleep 3600").then_some(out)
    });
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some("1") && l.contains("sleep 3600")),
        "the app's process is PID 1 of the shared namespace: {ps}"
    );
    assert_eq!(
        c.ok(&["exec", "target", "-c", "dbg", "--", "echo", "inside"])
            .trim(),
        "inside"
    );
    // Interactive, as `kubectl debug -it` is used: kubectl attaches.
    let out = c.kubectl_env(
        &[
            "debug",
            "-i",
            "target",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--container=dbg2",
            "--",
            "sh",
        ],
        &[],
        Some("echo hello-from-debug; exit 0\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hello-from-debug"),
        "stdout {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The app container was never touched; the debug containers are not
    // restarted once they end.
    let p = c.wait_for("dbg2 to end", Duration::from_secs(30), || {
        let p = pod(c, "target");
        let st = p["status"]["ephemeralContainerStatuses"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "dbg2")?
            .clone();
        st["state"]["terminated"].is_object().then_some(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    assert_eq!(p["status"]["phase"], "Running");

    // A new image restarts the container (the one change a pod's
    // containers allow).
    c.ok(&["set", "image", "pod/target", "app=busybox"]);
    c.wait_for(
        "app restarted on its new image",
        Duration::from_secs(60),
        || {
            let p = pod(c, "target");
            let st = &p["status"]["containerStatuses"][0];
            (st["restartCount"] == 1
                && st["image"] == "busybox"
                && st["state"]["running"].is_object())
            .then_some(())
        },
    );

    // Whatever the restart policy: a Never pod restarts its container on a
    // new image rather than failing.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: never
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    c.wait_for("never to run", Duration::from_secs(60), || {
        (pod(c, "never")["status"]["phase"] == "Running").then_some(())
    });
    c.ok(&["set", "image", "pod/never", "app=busybox"]);
    c.wait_for(
        "never restarted on its new image",
        Duration::from_secs(60),
        || {
            let p = pod(c, "never");
            let st = &p["status"]["containerStatuses"][0];
            (p["status"]["phase"] == "Running"
                && st["restartCount"] == 1
                && st["state"]["running"].is_object())
            .then_some(())
        },
    );

    // The pod's spec is otherwise immutable, as upstream's.
    let err = c.fails(&[
        "patch",
        "pod",
        "target",
        "-p",
        r#"{"spec":{"containers":[{"name":"app","command":["true"]}]}}"#,
    ]);
    assert!(
        err.contains("pod updates may not change fields other than"),
        "{err}"
    );
    // Ephemeral containers can be added, never removed or changed.
    let err = c.fails(&[
        "patch",
        "pod",
        "target",
        "--subresource=ephemeralcontainers",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/ephemeralContainers/0"}]"#,
    ]);
    assert!(
        err.contains("existing ephemeral containers \"dbg\" may not be removed"),
        "{err}"
    );
    c.ok(&["delete", "pod", "target", "--wait=true", "--timeout=60s"]);
}

#[test]
fn pods_get_their_hosts_dns_config_and_sysctls() {
    let mut host = Host::new();
    start_node(&mut host);
    let c = host.cluster.as_ref().unwrap();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: tuned
spec:
  hostname: db-0
  subdomain: db
  hostAliases:
  - ip: 10.1.2.3
    hostnames: [foo.local, bar.local]
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53]
    searches: [ns1.svc.cluster-domain.example, my.dns.search.suffix]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  securityContext:
    sysctls:
    - {name: net.ipv4.ip_local_port_range, value: "20000 20100"}
    - {name: kernel.shm_rmid_forced, value: "1"}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    c.wait_for("tuned to run", Duration::from_secs(60), || {
        (pod(c, "tuned")["status"]["phase"] == "Running").then_some(())
    });
    let ip = pod(c, "tuned")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let hosts = c.ok(&["exec", "tuned", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{ip}\tdb-0.db.default.svc.cluster.local\tdb-0\n")),
        "{hosts}"
    );
    assert!(
        hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"),
        "{hosts}"
    );
    assert_eq!(
        c.ok(&["exec", "tuned", "--", "cat", "/etc/resolv.conf"]),
        "nameserver 192.0.2.53\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n"
    );
    assert_eq!(c.ok(&["exec", "tuned", "--", "hostname"]).trim(), "db-0");
    let range = c.ok(&[
        "exec",
        "tuned",
        "--",
        "cat",
        "/proc/sys/net/ipv4/ip_local_port_range",
    ]);
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "20100"]
    );
    assert_eq!(
        c.ok(&[
            "exec",
            "tuned",
            "--",
            "cat",
            "/proc/sys/kernel/shm_rmid_forced"
        ])
        .trim(),
        "1"
    );
    // The host's own value is untouched.
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    assert_ne!(
        host_range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "20100"]
    );

    // subPathExpr expands the container's variables; a subPath that a
    // container turned into a symlink out of the volume is refused.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: sub
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: plant
    image: busybox:latest
    imagePullPolicy: Never
    command: ["ln", "-s", "/", "/data/escape"]
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: named
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hi > /mnt/f; sleep 3600"]
    env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts: [{name: data, mountPath: /mnt, subPathExpr: "dirs/$(POD)"}]
  - name: escaper
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{name: data, mountPath: /host, subPath: escape}]
"#,
    );
    let p = c.wait_for("escaper to be refused", Duration::from_secs(60), || {
        let p = pod(c, "sub");
        let st = p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "escaper")?
            .clone();
        (st["state"]["waiting"]["reason"] == "CreateContainerError").then_some((p, st))
    });
    assert!(
        p.1["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("resolves outside of the volume"),
        "{}",
        p.1
    );
    let uid = p.0["metadata"]["uid"].as_str().unwrap();
    let f = c
        .path()
        .join("agent/pods")
        .join(uid)
        .join("volumes/data/dirs/sub/f");
    c.wait_for(
        "named to write through its subPathExpr",
        Duration::from_secs(30),
        || (std::fs::read_to_string(&f).ok()? == "hi\n").then_some(()),
    );

    // An unsafe sysctl is refused by the node.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: greedy
spec:
  securityContext:
    sysctls: [{name: kernel.msgmax, value: "65536"}]
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    let p = c.wait_for("greedy to be refused", Duration::from_secs(60), || {
        let p = pod(c, "greedy");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "SysctlForbidden", "{p}");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

/// Seconds between two RFC 3339 timestamps.
fn seconds_between(from: &serde_json::Value, to: &serde_json::Value) -> i64 {
    let t = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("not a timestamp: {v}"))
            .as_second()
    };
    t(to) - t(from)
}

#[test]
fn soft_thresholds_evict_after_their_grace_period_with_capped_pod_grace() {
    let mut host = Host::new();
    start_node_with(
        &mut host,
        &[
            "--eviction-hard",
            "",
            "--eviction-soft",
            "memory.available<1Ei",
            "--eviction-soft-grace-period",
            "memory.available=30s",
            "--eviction-max-pod-grace-period",
            "3",
        ],
        |_| {},
    );
    let c = host.cluster.as_ref().unwrap();
    // The condition is there at once; only evictions wait.
    c.wait_for("MemoryPressure", Duration::from_secs(30), || {
        let node = c.get_json(&["node", "e2e-node"]);
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|x| x["type"] == "MemoryPressure" && x["status"] == "True")
            .then_some(())
    });
    // It ignores SIGTERM and asks for 60 s of grace: the cap decides.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
spec:
  # Straight to the node: the scheduler keeps off the tainted node.
  nodeName: e2e-node
  terminationGracePeriodSeconds: 60
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let p = loop {
        let p = pod(c, "stubborn");
        if p["status"]["phase"] == "Failed" {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stubborn was not evicted: {p}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let msg = p["status"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.starts_with("The node was low on resource: memory. Threshold quantity: 1Ei"),
        "{p}"
    );
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    let ran = seconds_between(&t["startedAt"], &t["finishedAt"]);
    // Node start to eviction is at least the 30 s grace period; the pod
    // started a few seconds after the node.
    assert!(
        ran >= 20,
        "evicted after {ran} s, before the grace period: {p}"
    );
    let ev = c.wait_for("the Evicted event", Duration::from_secs(20), || {
        pod_events(c, "stubborn")
            .into_iter()
            .find(|(r, _, _)| r == "Evicted")
    });
    let stopped = seconds_between(&ev.2["firstTimestamp"], &t["finishedAt"]);
    assert!(
        (0..=8).contains(&stopped),
        "killed {stopped} s after the eviction: the 3 s cap, not the pod's 60 s"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}
