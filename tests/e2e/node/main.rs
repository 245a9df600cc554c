//! The node agent with real containers: `r8s server` with its built-in
//! agent, a busybox image built from Debian's busybox-static and imported
//! with `r8s image import`, and the real kubectl. Needs root (CI is root);
//! without it the test fails saying so.

#[path = "../common/mod.rs"]
mod common;

mod autoscaling;
mod basics;
mod console;
mod eviction;
mod gateway;
mod host;
mod ingress;
mod lifecycle;
mod registry;
mod resources;
mod security;
mod streaming;
mod volumes;

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
    /// A host with its node started and Ready.
    fn started() -> Host {
        let mut host = Host::new();
        start_node(&mut host);
        host
    }

    /// The running cluster.
    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("the node was started")
    }

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

/// A pod's condition of `type_`, or null.
fn pod_condition(p: &serde_json::Value, type_: &str) -> serde_json::Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}
