//! Services, cluster DNS and pod egress with real containers: `r8s server`
//! with its built-in node agent and network, busybox pods, the real
//! kubectl, and a test-made "outside" network namespace. Needs root (CI
//! is root); without it the test fails saying so.
//!
//! Traffic goes only to addresses r8s or the test made: the node's pod
//! bridge (whose gateway is the node's address here), the service range
//! routed onto it, pod namespaces, the outside namespace, and an upstream
//! DNS server of the test's own on a loopback address.

mod common;
#[path = "network/policy.rs"]
mod policy;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{Cluster, r8s_bin};

/// Names and addresses unique to one test, and clean-up of everything the
/// node and the test put on the host, even when the test fails.
struct Net {
    cluster: Option<Cluster>,
    data: tempfile::TempDir,
    bridge: String,
    cgroup: String,
    /// The cluster's pod range; the node gets its first /24.
    cluster_cidr: String,
    pod_cidr: String,
    service_cidr: String,
    /// The node's address: the gateway of its pod bridge.
    node_ip: String,
    /// The "outside" namespace, its veth, and the addresses on each end.
    outside: String,
    veth: String,
    host_side: String,
    outside_ip: String,
    /// The upstream resolver's address and its runtime.
    upstream: String,
    _dns: Option<(tokio::runtime::Runtime, network::dns::DnsServer)>,
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

fn must(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Net {
    fn new() -> Net {
        common::require_root("the network e2e test needs root (namespaces, bridges, nftables)");
        for tool in ["ip", "nft", "busybox", "python3"] {
            assert!(
                sh(&format!("command -v {tool}")).status.success(),
                "the network e2e test needs {tool} (Debian: iproute2, nftables, busybox-static, python3)"
            );
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        Net {
            cluster: None,
            data: tempfile::tempdir().unwrap(),
            bridge: format!("r8sn{}n{n}", pid % 100_000),
            cgroup: format!("r8s-net-{pid}-{n}"),
            cluster_cidr: format!("10.{}.0.0/16", 140 + n),
            pod_cidr: format!("10.{}.0.0/24", 140 + n),
            service_cidr: format!("10.{}.0.0/16", 180 + n),
            node_ip: format!("10.{}.0.1", 140 + n),
            outside: format!("r8so{}n{n}", pid % 100_000),
            veth: format!("r8sv{}n{n}", pid % 100_000),
            host_side: format!("172.31.{n}.1"),
            outside_ip: format!("172.31.{n}.2"),
            upstream: format!("127.0.77.{}", n + 1),
            _dns: None,
        }
    }

    fn c(&self) -> &Cluster {
        self.cluster.as_ref().expect("cluster started")
    }

    /// The cluster IP range's `n`th address.
    fn service_ip(&self, n: u8) -> String {
        let base = self.service_cidr.trim_end_matches(".0.0/16");
        format!("{base}.0.{n}")
    }

    /// The outside world: a namespace behind a veth pair, reached from the
    /// node through `host_side`.
    fn make_outside(&self) {
        must(&format!(
            "ip netns add {o} && ip link add {v} type veth peer name eth0 netns {o} && \
             ip addr add {h}/30 dev {v} && ip link set {v} up && \
             ip -n {o} addr add {x}/30 dev eth0 && ip -n {o} link set eth0 up && ip -n {o} link set lo up && \
             ip -n {o} route add default via {h}",
            o = self.outside,
            v = self.veth,
            h = self.host_side,
            x = self.outside_ip
        ));
    }

    /// An upstream resolver on a loopback address: it serves the zone
    /// `outside.test` with `www.ns.svc.outside.test` → 203.0.113.7 (data only).
    fn start_upstream(&mut self) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let addr: std::net::SocketAddr = format!("{}:53", self.upstream).parse().unwrap();
        let server = rt.block_on(async {
            let mut r = network::dns::Records::new("outside.test").unwrap();
            let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "www", "namespace": "ns"},
                "spec": {"clusterIP": "203.0.113.7", "clusterIPs": ["203.0.113.7"], "ports": [{"port": 80}]},
            }))
            .unwrap();
            r.apply_service(&svc);
            let cfg = network::dns::DnsConfig {
                listen: vec![addr],
                domain: "outside.test".into(),
                upstreams: vec![],
            };
            network::dns::serve_records(std::sync::Arc::new(std::sync::RwLock::new(r)), &cfg)
                .await
                .unwrap_or_else(|e| panic!("upstream DNS on {addr}: {e}"))
        });
        self._dns = Some((rt, server));
    }

    fn start(&mut self) {
        self.make_outside();
        self.start_upstream();
        let dir = tempfile::tempdir_in(self.data.path()).unwrap();
        let tar = common::busybox_tar(dir.path());
        common::import_image(dir.path(), &tar);
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, format!("nameserver {}\n", self.upstream)).unwrap();
        let resolv = resolv.to_string_lossy().into_owned();
        let args = [
            "--node-name",
            "e2e-net",
            "--bridge",
            &self.bridge,
            "--cgroup-root",
            &self.cgroup,
            "--kubelet-port",
            "0",
            "--cluster-cidr",
            &self.cluster_cidr,
            "--service-cidr",
            &self.service_cidr,
            "--node-ip",
            &self.node_ip,
            "--resolv-conf",
            &resolv,
        ];
        self.cluster = Some(Cluster::start_with(dir, &args));
        let c = self.c();
        c.wait_for(
            "the node to be Ready with a pod CIDR",
            Duration::from_secs(30),
            || {
                let v = c.get_json(&["node", "e2e-net"]);
                (v["spec"]["podCIDR"].as_str() == Some(self.pod_cidr.as_str())
                    && v["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True"))
                .then_some(())
            },
        );
    }

    /// Runs a shell command in the client pod; (stdout, stderr, success).
    fn in_client(&self, cmd: &str) -> (String, String, bool) {
        let out = self.c().kubectl(&["exec", "client", "--", "sh", "-c", cmd]);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    }

    /// GET `path` from `target` (host:port) inside the client pod; the
    /// body's last line.
    fn fetch(&self, target: &str, path: &str) -> Option<String> {
        let (host, port) = target.rsplit_once(':').unwrap_or((target, "80"));
        let (out, _, ok) = self.in_client(&format!(
            "printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}"
        ));
        let line = out.lines().last()?.trim().to_string();
        (ok && out.starts_with("HTTP/1.") && !line.is_empty()).then_some(line)
    }

    /// Who answers `n` requests to `target` from the client pod.
    fn answerers(&self, target: &str, n: usize) -> std::collections::BTreeSet<String> {
        let (out, _, _) = self.in_client(&format!(
            "for i in $(seq {n}); do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} | tail -1; done"
        ));
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// GET from the outside namespace (busybox's nc from the host).
    fn fetch_outside(&self, addr: &str, port: &str, path: &str) -> Option<String> {
        let out = sh(&format!(
            "printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | ip netns exec {} busybox nc -w 3 {addr} {port}",
            self.outside
        ));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().last()?.trim().to_string();
        (text.starts_with("HTTP/1.") && !line.is_empty()).then_some(line)
    }

    fn nslookup(&self, args: &str) -> String {
        let (out, err, _) = self.in_client(&format!("nslookup {args}"));
        out + &err
    }

    fn table(&self) -> String {
        String::from_utf8_lossy(
            &Command::new("nft")
                .args(["list", "table", "ip", &network::table_name(&self.bridge)])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A developer may keep a failed test's cluster to look at it.
        if std::thread::panicking() && std::env::var_os("R8S_E2E_HOLD").is_some() {
            eprintln!(
                "holding the cluster for 10 minutes: KUBECONFIG={}",
                self.c().kubeconfig.display()
            );
            std::thread::sleep(Duration::from_secs(600));
        }
        let mut c = self.cluster.take();
        if let Some(c) = c.as_mut() {
            c.kill();
        }
        kubelet::cleanup_host(&self.cgroup, &self.bridge, self.data.path());
        network::cleanup_host(&self.bridge);
        let _ = sh(&format!(
            "ip link del {} 2>/dev/null; ip netns del {} 2>/dev/null",
            self.veth, self.outside
        ));
        drop(c);
    }
}

/// Polls `check` until it gives Ok, failing with `what` and the last thing
/// it saw after `timeout`.
fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last saw: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The client address busybox httpd reports (`[::ffff:a.b.c.d]`).
fn remote_addr(s: &str) -> String {
    s.trim_matches(|c| c == '[' || c == ']')
        .trim_start_matches("::ffff:")
        .to_string()
}

/// A GET of `/` and the whole response.
fn http_raw(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.")
        .then(|| body.lines().last().unwrap_or("").trim().to_string())
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:latest
        imagePullPolicy: Never
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          exec: {command: ["test", "-f", "/tmp/ready"]}
          periodSeconds: 1
        command:
        - sh
        - -c
        - |
          mkdir -p /www/cgi-bin
          hostname > /www/index.html
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /www/cgi-bin/ip
          chmod +x /www/cgi-bin/ip
          touch /tmp/ready
          exec httpd -f -p 8080 -h /www
"#;

const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#;

const STATEFUL: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {name: http, port: 8080}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: db
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#;

/// A UDP echo server answering with its pod name (the host's Python).
const UDP_ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: udp-echo
spec:
  replicas: 1
  selector:
    matchLabels: {app: udp-echo}
  template:
    metadata:
      labels: {app: udp-echo}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: echo
        image: busybox:latest
        imagePullPolicy: Never
        command: ["python3", "-c", "import os, socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 5300))\nwhile True:\n    d, a = s.recvfrom(100)\n    s.sendto(os.environ['HOSTNAME'].encode(), a)\n"]
        readinessProbe:
          exec: {command: ["true"]}
          periodSeconds: 1
        volumeMounts:
        - {name: usr, mountPath: /usr, readOnly: true}
        - {name: lib, mountPath: /lib, readOnly: true}
        - {name: lib64, mountPath: /lib64, readOnly: true}
      volumes:
      - {name: usr, hostPath: {path: /usr}}
      - {name: lib, hostPath: {path: /lib}}
      - {name: lib64, hostPath: {path: /lib64}}
---
apiVersion: v1
kind: Service
metadata:
  name: udp-echo
spec:
  selector: {app: udp-echo}
  ports:
  - {port: 5300, targetPort: 5300, protocol: UDP}
"#;

/// A UDP client that keeps one source port and prints every answer.
const UDP_CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: udp-client
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["python3", "-u", "-c", "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 40000))\ns.settimeout(0.3)\nwhile True:\n    s.sendto(b'x', ('SERVICE_IP', 5300))\n    try:\n        print(s.recvfrom(100)[0].decode())\n    except socket.timeout:\n        pass\n    time.sleep(0.2)\n"]
    volumeMounts:
    - {name: usr, mountPath: /usr, readOnly: true}
    - {name: lib, mountPath: /lib, readOnly: true}
    - {name: lib64, mountPath: /lib64, readOnly: true}
  volumes:
  - {name: usr, hostPath: {path: /usr}}
  - {name: lib, hostPath: {path: /lib}}
  - {name: lib64, hostPath: {path: /lib64}}
"#;

/// A pod that runs the host's curl and Python (the Debian
/// python3-kubernetes client) against the API through the `kubernetes`
/// Service, with its projected service-account token.
const API_CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: api-client
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: usr, mountPath: /usr, readOnly: true}
    - {name: lib, mountPath: /lib, readOnly: true}
    - {name: lib64, mountPath: /lib64, readOnly: true}
  volumes:
  - {name: usr, hostPath: {path: /usr}}
  - {name: lib, hostPath: {path: /lib}}
  - {name: lib64, hostPath: {path: /lib64}}
"#;

fn pod_json(c: &Cluster, name: &str) -> serde_json::Value {
    c.get_json(&["pod", name])
}

fn ready_pods(c: &Cluster, sel: &str) -> Vec<(String, String)> {
    c.pods("default", sel)
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["status"]["podIP"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn services_dns_and_egress_on_one_node() {
    let mut net = Net::new();
    net.start();
    let c = net.c();
    c.create(Some("default"), WEB);
    c.create(Some("default"), CLIENT);
    c.wait_for("2 web pods Ready", Duration::from_secs(90), || {
        (ready_pods(c, "app=web").len() == 2).then_some(())
    });
    c.wait_for("the client pod to run", Duration::from_secs(60), || {
        (pod_json(c, "client")["status"]["phase"] == "Running").then_some(())
    });
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "http",
    ]);
    let svc_ip = c.get_json(&["svc", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let names: std::collections::BTreeSet<String> = ready_pods(c, "app=web")
        .into_iter()
        .map(|(n, _)| n)
        .collect();

    // By cluster IP and by every form of its name, from a pod.
    for target in [
        format!("{svc_ip}:80"),
        "web:80".into(),
        "web.default:80".into(),
        "web.default.svc.cluster.local:80".into(),
    ] {
        let who = c.wait_for(
            &format!("web through {target}"),
            Duration::from_secs(30),
            || net.fetch(&target, "/index.html"),
        );
        assert!(
            names.contains(&who),
            "{target} answered by {who}, not one of {names:?}"
        );
    }
    // Both endpoints get traffic; the node itself reaches the cluster IP.
    c.wait_for("both web pods to answer", Duration::from_secs(30), || {
        (net.answerers(&format!("{svc_ip} 80"), 16) == names).then_some(())
    });
    let from_host = http_get(&format!("{svc_ip}:80"), "/index.html").expect("host → cluster IP");
    assert!(names.contains(&from_host));

    // An endpoint that turns unready stops getting traffic.
    let (gone, _) = ready_pods(c, "app=web")[0].clone();
    c.ok(&["exec", &gone, "--", "rm", "/tmp/ready"]);
    c.wait_for(
        "the unready pod to leave the endpoints",
        Duration::from_secs(30),
        || {
            let who = net.answerers(&format!("{svc_ip} 80"), 12);
            (!who.contains(&gone) && who.len() == 1).then_some(())
        },
    );
    c.ok(&["exec", &gone, "--", "touch", "/tmp/ready"]);

    // Scaling changes who answers.
    c.ok(&["scale", "deployment", "web", "--replicas", "3"]);
    c.wait_for("3 web pods answering", Duration::from_secs(90), || {
        let ready: std::collections::BTreeSet<String> = ready_pods(c, "app=web")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        (ready.len() == 3 && net.answerers(&format!("{svc_ip} 80"), 24) == ready).then_some(())
    });

    // Hairpin: a pod reaching its own Service gets answers, its own too.
    let (me, _) = ready_pods(c, "app=web")[0].clone();
    let out = c.ok(&[
        "exec", &me, "--", "sh", "-c",
        "for i in $(seq 30); do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80 | tail -1; done",
    ]);
    let answers: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        answers.len(),
        30,
        "every request through the Service answered: {out}"
    );
    assert!(
        answers.contains(&me.as_str()),
        "the pod reached itself: {out}"
    );

    // Session affinity sticks to one pod.
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "sticky",
        "--port",
        "80",
        "--target-port",
        "http",
        "--session-affinity",
        "ClientIP",
    ]);
    c.wait_for("sticky to answer", Duration::from_secs(30), || {
        net.fetch("sticky:80", "/")
    });
    assert_eq!(net.answerers("sticky 80", 12).len(), 1, "ClientIP affinity");

    // NodePort from the node and from outside; the client's address is
    // replaced unless externalTrafficPolicy is Local.
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-np",
        "--type",
        "NodePort",
        "--port",
        "80",
        "--target-port",
        "http",
    ]);
    let np = c.get_json(&["svc", "web-np"])["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .unwrap()
        .to_string();
    let node_addr = format!("{}:{np}", net.node_ip);
    c.wait_for(
        "the node port from the node",
        Duration::from_secs(30),
        || http_get(&node_addr, "/index.html"),
    );
    let seen = c.wait_for(
        "the node port from outside",
        Duration::from_secs(30),
        || net.fetch_outside(&net.node_ip, &np, "/cgi-bin/ip"),
    );
    assert_ne!(
        seen, net.outside_ip,
        "externalTrafficPolicy Cluster masquerades"
    );
    c.ok(&[
        "patch",
        "svc",
        "web-np",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    c.wait_for(
        "the client's own address with externalTrafficPolicy Local",
        Duration::from_secs(30),
        || {
            (remote_addr(&net.fetch_outside(&net.node_ip, &np, "/cgi-bin/ip")?) == net.outside_ip)
                .then_some(())
        },
    );

    // LoadBalancer: the built-in load balancer gives the node's address.
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-lb",
        "--type",
        "LoadBalancer",
        "--port",
        "8081",
        "--target-port",
        "http",
    ]);
    let lb = c.wait_for("a load-balancer address", Duration::from_secs(30), || {
        c.get_json(&["svc", "web-lb"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(lb, net.node_ip);
    c.wait_for(
        "the load balancer from outside",
        Duration::from_secs(30),
        || net.fetch_outside(&lb, "8081", "/index.html"),
    );

    // externalTrafficPolicy: Local on a load balancer: the node answers
    // its health check port with its endpoints.
    c.ok(&[
        "patch",
        "svc",
        "web-lb",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let hc = c.wait_for("a healthCheckNodePort", Duration::from_secs(30), || {
        c.get_json(&["svc", "web-lb"])["spec"]["healthCheckNodePort"].as_i64()
    });
    let replicas = ready_pods(c, "app=web").len();
    poll("the health check port", Duration::from_secs(30), || {
        let r = http_raw(&format!("{}:{hc}", net.node_ip)).unwrap_or_default();
        if r.starts_with("HTTP/1.1 200") && r.contains(&format!("\"localEndpoints\":{replicas}")) {
            Ok(())
        } else {
            Err(r)
        }
    });

    // A Service without a selector, with a hand-made EndpointSlice.
    let (_, ip) = ready_pods(c, "app=web")[0].clone();
    c.create(
        Some("default"),
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - {{name: web, port: 81}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: manual-1\n  labels:\n    kubernetes.io/service-name: manual\n\
             addressType: IPv4\nports:\n- {{name: web, port: 8080}}\nendpoints:\n- addresses: [\"{ip}\"]\n"
        ),
    );
    c.wait_for("the selector-less Service", Duration::from_secs(30), || {
        net.fetch("manual:81", "/index.html")
    });

    // No endpoints, or a port the Service lacks: refused at once.
    c.ok(&["create", "service", "clusterip", "empty", "--tcp", "80"]);
    poll(
        "the empty Service to refuse",
        Duration::from_secs(30),
        || {
            let (out, err, ok) = net.in_client("echo | nc -w 5 empty 80");
            if !ok && err.contains("refused") {
                Ok(())
            } else {
                let t = network::table_name(&net.bridge);
                let rules = must(&format!(
                    "nft list chain ip {t} reject-chain; nft list map ip {t} no-endpoint-services"
                ));
                Err(format!("ok={ok} {out} {err}\n{rules}"))
            }
        },
    );
    let (_, err, ok) = net.in_client(&format!("echo | nc -w 5 {svc_ip} 81"));
    assert!(
        !ok && err.contains("refused"),
        "a port the Service lacks: {err}"
    );

    // DNS: headless StatefulSet members, SRV, PTR, ExternalName, pods,
    // and names outside the cluster through the node's resolver.
    c.create(Some("default"), STATEFUL);
    c.wait_for("2 db pods Ready", Duration::from_secs(90), || {
        (ready_pods(c, "app=db").len() == 2).then_some(())
    });
    let db0 = pod_json(c, "db-0")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    poll(
        "db-0.db resolves to its pod",
        Duration::from_secs(30),
        || {
            let out = net.nslookup("db-0.db.default.svc.cluster.local");
            if out.contains(&format!("Address: {db0}")) {
                Ok(())
            } else {
                Err(format!("{db0}: {out}"))
            }
        },
    );
    let srv = c.wait_for(
        "SRV records of the headless Service",
        Duration::from_secs(30),
        || {
            let out = net.nslookup("-type=srv _http._tcp.db.default.svc.cluster.local");
            (out.matches(" 8080 ").count() == 2).then_some(out)
        },
    );
    assert!(srv.contains("db-0.db.default.svc.cluster.local"), "{srv}");
    let headless = net.nslookup("db.default.svc.cluster.local");
    assert_eq!(headless.matches("Address: 10.").count(), 2, "{headless}");
    let ptr = net.nslookup(&svc_ip);
    assert!(
        ptr.contains("name = web.default.svc.cluster.local"),
        "{ptr}"
    );
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name",
        "web.default.svc.cluster.local",
    ]);
    let cname = c.wait_for("ExternalName as a CNAME", Duration::from_secs(30), || {
        let out = net.nslookup("-type=cname ext.default.svc.cluster.local");
        out.contains("canonical name = web.default.svc.cluster.local")
            .then_some(out)
    });
    assert!(!cname.contains("NXDOMAIN"), "{cname}");
    let pod_name = format!("{}.default.pod.cluster.local", db0.replace('.', "-"));
    assert!(net.nslookup(&pod_name).contains(&format!("Address: {db0}")));
    let missing = net.nslookup("nope.default.svc.cluster.local");
    assert!(missing.contains("NXDOMAIN"), "{missing}");
    let outside = net.nslookup("www.ns.svc.outside.test");
    assert!(
        outside.contains("Address: 203.0.113.7"),
        "forwarded upstream: {outside}"
    );
    assert!(
        net.c().ok(&[
            "get",
            "svc",
            "-n",
            "kube-system",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]) == net.service_ip(10)
    );

    // The API through kubernetes.default.svc with the pod's own token.
    c.create(Some("default"), API_CLIENT);
    c.wait_for("the API client pod to run", Duration::from_secs(60), || {
        (pod_json(c, "api-client")["status"]["phase"] == "Running").then_some(())
    });
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let list_pods = format!(
        "curl -sS --cacert {sa}/ca.crt -H \"Authorization: Bearer $(cat {sa}/token)\" https://kubernetes.default.svc/api/v1/namespaces/default/pods"
    );
    // The pod's token alone may not list pods (RBAC), until its service
    // account is bound to a role that may.
    let denied = c.ok(&["exec", "api-client", "--", "sh", "-c", &list_pods]);
    assert!(
        denied.contains(r#"pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""#),
        "{denied}"
    );
    c.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "-n",
        "default",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    let listed = c.ok(&["exec", "api-client", "--", "sh", "-c", &list_pods]);
    let v: serde_json::Value =
        serde_json::from_str(&listed).unwrap_or_else(|e| panic!("{e}: {listed}"));
    assert_eq!(v["kind"], "PodList", "{listed}");
    let py = c.kubectl(&[
        "exec", "api-client", "--", "python3", "-c",
        "from kubernetes import client, config; config.load_incluster_config(); \
         print(sorted(p.metadata.name for p in client.CoreV1Api().list_namespaced_pod('default').items))",
    ]);
    let py_out = String::from_utf8_lossy(&py.stdout);
    assert!(
        py.status.success() && py_out.contains("'api-client'") && py_out.contains("'client'"),
        "the Python client's in-cluster config (Debian: python3-kubernetes): {py_out} {}",
        String::from_utf8_lossy(&py.stderr)
    );

    // UDP: a client that keeps its source port follows the Service to a
    // new endpoint once the old one is gone (its conntrack entry is
    // cleared; otherwise every packet refreshes the entry to the dead pod).
    c.create(Some("default"), UDP_ECHO);
    c.wait_for(
        "the UDP echo pod to be Ready",
        Duration::from_secs(60),
        || ready_pods(c, "app=udp-echo").pop(),
    );
    let udp_ip = c.get_json(&["svc", "udp-echo"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    c.create(Some("default"), &UDP_CLIENT.replace("SERVICE_IP", &udp_ip));
    let first = c.wait_for("a UDP answer", Duration::from_secs(60), || {
        let logs = c.kubectl(&["logs", "udp-client"]);
        let text = String::from_utf8_lossy(&logs.stdout).into_owned();
        text.lines()
            .last()
            .map(str::to_string)
            .filter(|l| l.starts_with("udp-echo-"))
    });
    c.ok(&["delete", "pod", &first, "--wait=true"]);
    c.wait_for(
        "UDP answers from the replacement endpoint",
        Duration::from_secs(60),
        || {
            let logs = c.kubectl(&["logs", "udp-client", "--tail=1"]);
            let last = String::from_utf8_lossy(&logs.stdout).trim().to_string();
            (last.starts_with("udp-echo-") && last != first).then_some(())
        },
    );

    // Egress: a pod reaching the outside arrives from the node's address on
    // that side.
    let listener = Command::new("ip")
        .args(["netns", "exec", &net.outside, "python3", "-c"])
        .arg(format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{}', 9000))\ns.listen()\ns.settimeout(30)\nc,a=s.accept()\nprint(a[0], flush=True)",
            net.outside_ip
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let outside_ip = net.outside_ip.clone();
    c.wait_for("a pod to connect outside", Duration::from_secs(20), || {
        net.in_client(&format!("echo hi | nc -w 2 {outside_ip} 9000"))
            .2
            .then_some(())
    });
    let out = common::wait_with_timeout(listener, Duration::from_secs(30));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        net.host_side,
        "masqueraded to the node"
    );

    // Deleting a Service leaves no rules behind.
    assert!(net.table().contains("default/web-np/"));
    c.ok(&["delete", "svc", "web-np", "web-lb", "sticky"]);
    c.wait_for(
        "the deleted Services' rules to go",
        Duration::from_secs(30),
        || {
            let t = net.table();
            (!t.contains("default/web-np/")
                && !t.contains("default/web-lb/")
                && !t.contains("default/sticky/"))
            .then_some(())
        },
    );
    assert!(
        http_get(&node_addr, "/index.html").is_none(),
        "the node port is closed"
    );
}

/// Several nodes on one host: each `r8s agent` in its own network
/// namespace on a test-made "LAN" bridge, joined to a control-plane-only
/// server with its token. Removed, with everything the agents made, on
/// drop.
struct Lan {
    cluster: Option<Cluster>,
    data: tempfile::TempDir,
    lan: String,
    cluster_cidr: String,
    nodes: Vec<LanNode>,
}

struct LanNode {
    name: String,
    netns: String,
    veth: String,
    bridge: String,
    cgroup: String,
    ip: String,
    data: std::path::PathBuf,
    agent: Option<std::process::Child>,
}

impl LanNode {
    fn ip_in(&self, args: &str) -> String {
        must(&format!("ip -n {} {args}", self.netns))
    }
}

impl Lan {
    fn start(mode: &str, nodes: usize, n: u32) -> Lan {
        common::require_root("the multi-node network test needs root");
        let pid = std::process::id() % 10_000;
        let prefix = format!("10.{}.0", 230 + n);
        let mut lan = Lan {
            cluster: None,
            data: tempfile::tempdir().unwrap(),
            lan: format!("r8sl{pid}n{n}"),
            cluster_cidr: format!("10.{}.0.0/16", 150 + n),
            nodes: Vec::new(),
        };
        must(&format!(
            "ip link add {l} type bridge && ip addr add {prefix}.1/24 dev {l} && ip link set {l} up",
            l = lan.lan
        ));
        let tar = common::busybox_tar(lan.data.path());
        let server_dir = tempfile::tempdir_in(lan.data.path()).unwrap();
        let san = format!("{prefix}.1");
        let svc = format!("10.{}.0.0/16", 190 + n);
        lan.cluster = Some(Cluster::start_with(
            server_dir,
            &[
                "--no-agent",
                "--tls-san",
                &san,
                "--advertise-address",
                &san,
                "--cluster-cidr",
                &lan.cluster_cidr,
                "--service-cidr",
                &svc,
            ],
        ));
        let c = lan.cluster.as_ref().unwrap();
        let port = c.url.rsplit(':').next().unwrap().to_string();
        let url = format!("https://{prefix}.1:{port}");
        let token = std::fs::read_to_string(c.path().join("token")).unwrap();
        let resolv = lan.data.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
        for k in 0..nodes {
            let node = LanNode {
                name: format!("n{k}"),
                netns: format!("r8sk{pid}n{n}k{k}"),
                veth: format!("r8sh{pid}n{n}k{k}"),
                bridge: format!("r8sb{pid}n{n}k{k}"),
                cgroup: format!("r8s-lan-{pid}-{n}-{k}"),
                ip: format!("{prefix}.{}", 10 + k),
                data: lan.data.path().join(format!("node{k}")),
                agent: None,
            };
            must(&format!(
                "ip netns add {ns} && ip link add {v} type veth peer name eth0 netns {ns} && \
                 ip link set {v} master {l} && ip link set {v} up && \
                 ip -n {ns} addr add {ip}/24 dev eth0 && ip -n {ns} link set eth0 up && \
                 ip -n {ns} link set lo up && ip -n {ns} route add default via {prefix}.1",
                ns = node.netns,
                v = node.veth,
                l = lan.lan,
                ip = node.ip
            ));
            common::import_image(&node.data, &tar);
            lan.nodes.push(node);
        }
        for node in &mut lan.nodes {
            let log = std::fs::File::create(node.data.join("agent.log")).unwrap();
            // nsenter, not `ip netns exec`: that remounts /sys, hiding the
            // cgroup hierarchies the agent needs.
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", node.netns))
                .arg(r8s_bin())
                .args(["agent", "--server", &url, "--token", token.trim()])
                .arg("--data-dir")
                .arg(&node.data)
                .args(["--node-name", &node.name, "--bridge", &node.bridge])
                .args(["--cgroup-root", &node.cgroup, "--kubelet-port", "0"])
                .args(["--node-ip", &node.ip, "--pod-network", mode])
                .args(["--cluster-cidr", &lan.cluster_cidr])
                .arg("--resolv-conf")
                .arg(&resolv)
                .env("R8S_LOG", "warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            node.agent = Some(child);
        }
        let c = lan.cluster.as_ref().unwrap();
        c.wait_for(
            &format!("{nodes} nodes Ready"),
            Duration::from_secs(60),
            || {
                let v = c.get_json(&["nodes"]);
                let ready = v["items"]
                    .as_array()?
                    .iter()
                    .filter(|n| {
                        n["spec"]["podCIDR"].is_string()
                            && n["status"]["conditions"].as_array().is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                    })
                    .count();
                (ready == nodes).then_some(())
            },
        );
        lan
    }

    fn c(&self) -> &Cluster {
        self.cluster.as_ref().expect("cluster")
    }

    /// Stops node `k`'s agent and its pods, as a machine that died.
    fn kill_node(&mut self, k: usize) {
        let node = &mut self.nodes[k];
        if let Some(mut a) = node.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        kubelet::cleanup_host(&node.cgroup, &node.bridge, &node.data);
    }

    /// A shell command in pod `pod`.
    fn exec(&self, pod: &str, cmd: &str) -> (String, bool) {
        let out = self.c().kubectl(&["exec", pod, "--", "sh", "-c", cmd]);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.success(),
        )
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = std::fs::read_to_string(node.data.join("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!(
                    "--- agent {} (last lines, newest first):\n{}",
                    node.name,
                    tail.join("\n")
                );
                let state = sh(&format!(
                    "ip -n {ns} route; ip -n {ns} -br addr; ip netns exec {ns} sysctl net.ipv4.ip_forward",
                    ns = node.netns
                ));
                eprintln!(
                    "--- {}:\n{}",
                    node.name,
                    String::from_utf8_lossy(&state.stdout)
                );
            }
            if let Some(c) = self.cluster.as_ref() {
                eprintln!(
                    "{}",
                    String::from_utf8_lossy(&c.kubectl(&["get", "pods", "-o", "wide"]).stdout)
                );
            }
        }
        for k in 0..self.nodes.len() {
            self.kill_node(k);
        }
        if let Some(c) = self.cluster.as_mut() {
            c.kill();
        }
        for node in &self.nodes {
            let _ = sh(&format!("ip netns del {} 2>/dev/null", node.netns));
            let _ = sh(&format!("ip link del {} 2>/dev/null", node.veth));
        }
        let _ = sh(&format!("ip link del {} 2>/dev/null", self.lan));
    }
}

/// Web pods spread one per node, and a client on the first node.
fn spread_web(lan: &Lan, nodes: usize) -> Vec<(String, String, String)> {
    let c = lan.c();
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {nodes}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}
      containers:
      - name: web
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: n0
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
        ),
    );
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    c.wait_for(
        "the web pods and the client to run",
        Duration::from_secs(90),
        || {
            let pods = c.pods("default", "app=web");
            let running: Vec<(String, String, String)> = pods
                .iter()
                .filter(|p| common::phase(p) == "Running" && p["status"]["podIP"].is_string())
                .map(|p| {
                    (
                        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                        common::node_of(p).to_string(),
                    )
                })
                .collect();
            let client = pod_json(c, "client")["status"]["phase"] == "Running";
            (client && running.len() == nodes).then_some(running)
        },
    )
}

fn across_nodes(mode: &str, nodes: usize, n: u32) {
    let mut lan = Lan::start(mode, nodes, n);
    let c = lan.c();
    // Every node got its own /24 of the cluster range and reports its LAN
    // address.
    let v = c.get_json(&["nodes"]);
    let mut cidrs: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap().to_string())
        .collect();
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), nodes, "distinct pod CIDRs: {cidrs:?}");
    let web = spread_web(&lan, nodes);
    let on: std::collections::BTreeSet<&str> = web.iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(on.len(), nodes, "one web pod per node: {web:?}");
    // Pod to pod, from n0 to every node, and back from each to the client.
    let client_ip = pod_json(c, "client")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, ip, node) in &web {
        let got = c.wait_for(
            &format!("the client reaching {name} on {node}"),
            Duration::from_secs(30),
            || {
                let (out, ok) = lan.exec(
                    "client",
                    &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 8080"),
                );
                ok.then(|| out.lines().last().unwrap_or("").trim().to_string())
            },
        );
        assert_eq!(&got, name);
        let (_, ok) = lan.exec(name, &format!("ping -c 1 -W 3 {client_ip}"));
        assert!(ok, "{name} on {node} pings the client on n0");
    }
    // Pod to Service: every endpoint, wherever it runs, answers.
    let names: std::collections::BTreeSet<String> = web.iter().map(|(n, _, _)| n.clone()).collect();
    c.wait_for("every node's pod answering through the Service", Duration::from_secs(60), || {
        let (out, _) = lan.exec(
            "client",
            "for i in $(seq 24); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web.default.svc.cluster.local 80 | tail -1; done",
        );
        let seen: std::collections::BTreeSet<String> =
            out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        (seen == names).then_some(())
    });
    if mode == "vxlan" {
        let dev = network::overlay::device_for_bridge(&lan.nodes[0].bridge);
        let link = lan.nodes[0].ip_in(&format!("-d link show {dev}"));
        assert!(
            link.contains("vxlan id 1") && link.contains("mtu 1450"),
            "{link}"
        );
    }
    // A node that goes away takes its routes with it.
    let last = nodes - 1;
    let gone_cidr = c.get_json(&["node", &format!("n{last}")])["spec"]["podCIDR"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        lan.nodes[0]
            .ip_in("route show proto 82")
            .contains(&gone_cidr)
    );
    lan.kill_node(last);
    lan.c().ok(&["delete", "node", &format!("n{last}")]);
    let n0 = &lan.nodes[0];
    lan.c().wait_for(
        "the removed node's route to go",
        Duration::from_secs(30),
        || (!n0.ip_in("route show proto 82").contains(&gone_cidr)).then_some(()),
    );
    // Deleting the Service leaves no rules on any node.
    lan.c().ok(&["delete", "svc", "web"]);
    for node in &lan.nodes[..last] {
        lan.c().wait_for(
            &format!("the Service's rules to leave {}", node.name),
            Duration::from_secs(30),
            || {
                let t = must(&format!(
                    "ip netns exec {} nft list table ip {}",
                    node.netns,
                    network::table_name(&node.bridge)
                ));
                (!t.contains("default/web/")).then_some(())
            },
        );
    }
}

#[test]
fn pods_and_services_across_three_nodes_over_vxlan() {
    across_nodes("vxlan", 3, 0);
}

#[test]
fn pods_and_services_across_two_nodes_with_host_routes() {
    across_nodes("host-gw", 2, 1);
}

/// What of the host names this test's node: interfaces, routes, nftables
/// tables, network namespaces, cgroups and mounts that mention its bridge,
/// its address ranges, its cgroup or its data dir.
fn host_state(net: &Net) -> Vec<String> {
    let marks = [
        net.bridge.clone(),
        net.cgroup.clone(),
        net.data.path().to_string_lossy().into_owned(),
        net.pod_cidr.trim_end_matches("0/24").to_string(),
        net.service_cidr.trim_end_matches("0.0/16").to_string(),
        network::table_name(&net.bridge),
    ];
    let text = must(
        "ip -br link; ip -br addr; ip route; nft list tables; ls /run/netns; \
         find /sys/fs/cgroup -maxdepth 2 -type d; cat /proc/self/mountinfo",
    );
    text.lines()
        .filter(|l| marks.iter().any(|m| l.contains(m.as_str())))
        .map(str::to_string)
        .collect()
}

#[test]
fn reset_leaves_the_host_as_it_was() {
    let mut net = Net::new();
    let before = host_state(&net);
    net.start();
    let c = net.c();
    c.create(Some("default"), WEB);
    c.wait_for("2 web pods Ready", Duration::from_secs(90), || {
        (ready_pods(c, "app=web").len() == 2).then_some(())
    });
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "http",
        "--type",
        "NodePort",
    ]);
    c.wait_for("the Service's rules", Duration::from_secs(30), || {
        net.table().contains("default/web/").then_some(())
    });
    let during = host_state(&net);
    assert!(
        during.len() > 5,
        "the node left no trace to reset: {during:?}"
    );
    // The node dies without a word; its pods keep running.
    let data = c.path().to_path_buf();
    net.cluster.as_mut().unwrap().kill();
    for round in 0..2 {
        let out = Command::new(r8s_bin())
            .args(["reset", "--data-dir"])
            .arg(&data)
            .args(["--bridge", &net.bridge, "--cgroup-root", &net.cgroup])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "r8s reset (round {round}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(host_state(&net), before, "after r8s reset (round {round})");
    }
}
