//! The built-in ingress with real containers: two host names over HTTPS,
//! each with its own certificate (checked by curl against the test's CA),
//! upstream's path precedence, the default backend, `X-Forwarded-*`
//! headers seen by the backend, `status.loadBalancer`, and no failed
//! request while the backend rolls out.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Host, free_port, start_node_with};
use crate::common::Cluster;

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().expect("sh");
    assert!(st.success(), "{cmd}");
}

/// A CA and a certificate for `host` signed by it (openssl).
pub(super) fn certs(dir: &Path, hosts: &[&str]) {
    let d = dir.display();
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca 2>/dev/null"
    ));
    for h in hosts {
        sh(&format!(
            "cd {d} && openssl req -newkey rsa:2048 -nodes -keyout {h}.key -out {h}.csr -subj /CN={h} 2>/dev/null \
             && printf 'subjectAltName=DNS:{h}' > {h}.ext \
             && openssl x509 -req -in {h}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {h}.crt -days 2 -extfile {h}.ext 2>/dev/null"
        ));
    }
}

/// A Deployment of busybox httpd answering `page` on 8080 at `/` and
/// `/two` (and a CGI
/// script that prints the request's headers), with its Service on port 80
/// named `http`.
pub(super) fn web(c: &Cluster, name: &str, page: &str) {
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www/cgi-bin && echo '{page}' > /www/index.html && echo '{page}' > /www/two && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > /www/cgi-bin/env && chmod +x /www/cgi-bin/env && exec httpd -f -p 8080 -h /www"]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#
        ),
    );
}

pub(super) fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.trim().to_string())
}

#[test]
fn ingress_routes_hosts_and_paths_over_http_and_https() {
    let mut host = Host::new();
    let (http, https) = (free_port(), free_port());
    start_node_with(
        &mut host,
        &[
            "--ingress-http-port",
            &http.to_string(),
            "--ingress-https-port",
            &https.to_string(),
            "--ingress-bind-address",
            "127.0.0.1",
        ],
        |_| {},
    );
    let c = host.cluster();
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["one.example", "two.example"]);
    let p = |f: &str| dir.path().join(f).display().to_string();
    for h in ["one", "two"] {
        c.ok(&[
            "create",
            "secret",
            "tls",
            &format!("{h}-tls"),
            &format!("--cert={}", p(&format!("{h}.example.crt"))),
            &format!("--key={}", p(&format!("{h}.example.key"))),
        ]);
    }
    web(c, "one", "page-one");
    web(c, "two", "page-two");
    c.create(
        Some("default"),
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: sites}
spec:
  defaultBackend: {service: {name: one, port: {name: http}}}
  tls:
  - {hosts: [one.example], secretName: one-tls}
  - {hosts: [two.example], secretName: two-tls}
  rules:
  - host: one.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: one, port: {number: 80}}}}
      - {path: /two, pathType: Exact, backend: {service: {name: two, port: {number: 80}}}}
      - {path: /cgi-bin, pathType: Prefix, backend: {service: {name: one, port: {number: 80}}}}
  - host: two.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: two, port: {name: http}}}}
"#,
    );
    let class = c.get_json(&["ingressclass", "r8s"]);
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    let resolve = |h: &str| format!("{h}:{https}:127.0.0.1");
    let one_url = format!("https://one.example:{https}/");
    c.wait_for("one.example over HTTPS", Duration::from_secs(60), || {
        let (code, body) = curl(&[
            "--resolve",
            &resolve("one.example"),
            "--cacert",
            &p("ca.crt"),
            &one_url,
        ]);
        (code == "200" && body == "page-one").then_some(())
    });
    let two_url = format!("https://two.example:{https}/");
    c.wait_for("two.example over HTTPS", Duration::from_secs(60), || {
        let (code, body) = curl(&[
            "--resolve",
            &resolve("two.example"),
            "--cacert",
            &p("ca.crt"),
            &two_url,
        ]);
        (code == "200" && body == "page-two").then_some(())
    });
    // Each host's certificate is its own: two.example's does not cover one.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{https}"),
            "-servername",
            "two.example",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("subject=") && l.contains("two.example")),
        "{shown}"
    );

    // Paths: Exact before Prefix, whole elements, the default backend.
    let get = |host: &str, path: &str| {
        curl(&[
            "-H",
            &format!("Host: {host}"),
            &format!("http://127.0.0.1:{http}{path}"),
        ])
    };
    assert_eq!(get("one.example", "/two").1, "page-two");
    assert_eq!(get("one.example", "/"), ("200".into(), "page-one".into()));
    let (code, _) = get("one.example", "/two/x");
    assert_eq!(
        code, "404",
        "Exact /two does not take /two/x (it goes to one, which has no such file)"
    );
    assert_eq!(
        get("elsewhere.example", "/").1,
        "page-one",
        "the default backend"
    );

    // The backend sees who asked, how and for what.
    let (code, env) = curl(&[
        "--resolve",
        &resolve("one.example"),
        "--cacert",
        &p("ca.crt"),
        &format!("https://one.example:{https}/cgi-bin/env"),
    ]);
    assert_eq!(code, "200", "{env}");
    assert!(env.contains("HTTP_X_FORWARDED_PROTO=https"), "{env}");
    assert!(env.contains("HTTP_X_FORWARDED_FOR=127.0.0.1"), "{env}");
    assert!(
        env.contains(&format!("HTTP_X_FORWARDED_HOST=one.example:{https}")),
        "{env}"
    );

    c.wait_for("the Ingress status", Duration::from_secs(30), || {
        let i = c.get_json(&["ingress", "sites"]);
        i["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(|_| ())
    });
    // Another class is left alone.
    c.create(
        Some("default"),
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: foreign}
spec:
  ingressClassName: nginx
  rules:
  - host: foreign.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: two, port: {number: 80}}}}]}
"#,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        get("foreign.example", "/").1,
        "page-one",
        "served by the default backend, not the foreign rule"
    );

    // A WebSocket through the ingress, to a server on the node's address
    // behind a selectorless Service with its own EndpointSlice.
    let node_ip = format!("{}1", host.net);
    let ws_port = free_port();
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: ws}}
spec:
  ports: [{{name: http, port: 80, targetPort: {ws_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ws-manual
  labels: {{kubernetes.io/service-name: ws, endpointslice.kubernetes.io/managed-by: e2e}}
addressType: IPv4
ports: [{{name: http, port: {ws_port}, protocol: TCP}}]
endpoints: [{{addresses: ["{node_ip}"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ws}}
spec:
  rules:
  - host: ws.example
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: ws, port: {{number: 80}}}}}}}}]}}
"#
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    let out = crate::common::python(&format!(
        r#"
import socket, threading, base64, hashlib, os
CRLF = bytes([13, 10])
END = CRLF + CRLF
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("{node_ip}", {ws_port}))
srv.listen(1)
def serve():
    c, _ = srv.accept()
    req = b""
    while END not in req:
        req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(CRLF) if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(CRLF.join([b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + acc]) + END)
    hdr = c.recv(2)
    mask = c.recv(4)
    data = c.recv(hdr[1] & 0x7f)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    c.sendall(bytes([0x81, len(payload) + 5]) + b"echo:" + payload)
threading.Thread(target=serve, daemon=True).start()
cl = socket.create_connection(("127.0.0.1", {http}), timeout=5)
cl.sendall(CRLF.join([b"GET /chat HTTP/1.1", b"Host: ws.example", b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"]) + END)
resp = b""
while END not in resp:
    resp += cl.recv(4096)
head, buf = resp.split(END, 1)
print(head.split(CRLF)[0].decode())
mask = os.urandom(4)
msg = b"hello"
cl.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7f):
    buf += cl.recv(4096)
print(buf[2:2 + (buf[1] & 0x7f)].decode())
"#
    ));
    assert_eq!(out, "HTTP/1.1 101 Switching Protocols\necho:hello");

    // A rolling update of the backend loses no request.
    c.ok(&["rollout", "restart", "deployment", "two"]);
    let mut failures = Vec::new();
    for i in 0..300 {
        let (code, body) = get("two.example", "/");
        if code != "200" || body != "page-two" {
            failures.push(format!("{i}: {code} {body}"));
        }
    }
    c.ok(&["rollout", "status", "deployment", "two", "--timeout=60s"]);
    for i in 0..100 {
        let (code, body) = get("two.example", "/");
        if code != "200" || body != "page-two" {
            failures.push(format!("after {i}: {code} {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "failed requests during the rollout: {failures:?}"
    );
}
