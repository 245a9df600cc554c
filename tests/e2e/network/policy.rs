//! NetworkPolicy on two nodes with real containers: default deny, a
//! podSelector and a namespaceSelector letting exactly their pods in from
//! either node, an ipBlock egress rule, and a pod isolated before its
//! first packet. Included by `network.rs` (its harness: `Lan`).

use super::*;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A web server (busybox httpd answering with its name) on `node`.
fn web_pod(name: &str, ns: &str, node: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{labels}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    ports:
    - {{name: http, containerPort: 8080}}
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
"#
    )
}

/// Runs `cmd` in pod `ns/pod`.
fn exec_in(c: &Cluster, ns: &str, pod: &str, cmd: &str) -> (String, bool) {
    let out = c.kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", cmd]);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// Whether `ns/pod` gets an HTTP answer from `addr:port` (what it says).
fn fetch(c: &Cluster, ns: &str, pod: &str, addr: &str, port: u16) -> Option<String> {
    let (out, ok) = exec_in(
        c,
        ns,
        pod,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} {port}"),
    );
    let last = out.lines().last().unwrap_or("").trim().to_string();
    (ok && !last.is_empty()).then_some(last)
}

/// Waits until `ns/pod` can (or cannot) reach `addr:port`.
fn wait_reach(c: &Cluster, ns: &str, pod: &str, addr: &str, port: u16, want: bool) {
    let what = format!(
        "{ns}/{pod} {} {addr}:{port}",
        if want { "reaching" } else { "blocked from" }
    );
    c.wait_for(&what, Duration::from_secs(30), || {
        (fetch(c, ns, pod, addr, port).is_some() == want).then_some(())
    });
}

/// A TCP server on the test's own address on the LAN (the "outside" of
/// the cluster), answering with one line and counting who connected.
fn outside_server(addr: &str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind(format!("{addr}:0")).expect("bind the outside server");
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            if let Ok(peer) = conn.peer_addr() {
                s.lock().unwrap().push(peer.ip().to_string());
            }
            let mut conn = conn;
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\noutside\n");
        }
    });
    (port, seen)
}

#[test]
fn network_policies_across_two_nodes() {
    let lan = Lan::start("host-gw", 2, 2);
    let c = lan.c();
    c.create_ns("ops");
    c.ok(&["label", "ns", "ops", "team=ops"]);
    c.create_ns("dev");
    let mut pods = String::new();
    pods += &web_pod("db", "default", "n1", "app: db");
    pods += &web_pod("front-0", "default", "n0", "role: frontend");
    pods += &web_pod("front-1", "default", "n1", "role: frontend");
    pods += &web_pod("back-0", "default", "n0", "role: backend");
    pods += &web_pod("probe", "ops", "n0", "app: probe");
    pods += &web_pod("probe", "dev", "n0", "app: probe");
    c.create(None, &pods);
    c.ok(&[
        "expose",
        "pod",
        "db",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    c.wait_for("every pod running", Duration::from_secs(90), || {
        let v = c.get_json(&["pods", "-A"]);
        let items = v["items"].as_array()?;
        (items.len() == 6
            && items
                .iter()
                .all(|p| common::phase(p) == "Running" && p["status"]["podIP"].is_string()))
        .then_some(())
    });
    let db_ip = pod_json(c, "db")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let svc_ip = c.get_json(&["svc", "db"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    // Open by default: everyone reaches the database.
    for (ns, pod) in [
        ("default", "back-0"),
        ("default", "front-0"),
        ("dev", "probe"),
    ] {
        wait_reach(c, ns, pod, &db_ip, 8080, true);
    }

    // Default deny in the namespace: nobody gets in, from either node.
    c.create(
        Some("default"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    wait_reach(c, "default", "front-0", &db_ip, 8080, false);
    for (ns, pod) in [
        ("default", "front-1"),
        ("default", "back-0"),
        ("ops", "probe"),
    ] {
        assert!(
            fetch(c, ns, pod, &db_ip, 8080).is_none(),
            "{ns}/{pod} reached the database through default deny"
        );
    }
    // Pods of a namespace without policies still talk to each other, and
    // a denied pod can still start connections out (return traffic).
    let dev_probe = c.get_json(&["pod", "-n", "dev", "probe"])["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        fetch(c, "default", "front-1", &dev_probe, 8080).as_deref(),
        Some("probe"),
        "an isolated pod's own connections get their answers"
    );

    // Let frontends in on the named port, and the ops namespace.
    c.create(
        Some("default"),
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-access
spec:
  podSelector:
    matchLabels: {app: db}
  ingress:
  - from:
    - podSelector:
        matchLabels: {role: frontend}
    ports:
    - {protocol: TCP, port: http}
  - from:
    - namespaceSelector:
        matchLabels: {team: ops}
"#,
    );
    wait_reach(c, "default", "front-0", &db_ip, 8080, true);
    assert_eq!(
        fetch(c, "default", "front-1", &db_ip, 8080).as_deref(),
        Some("db"),
        "a frontend on the database's own node"
    );
    assert_eq!(
        fetch(c, "default", "front-0", &svc_ip, 80).as_deref(),
        Some("db"),
        "through the Service: the policy sees the pod the proxy picked"
    );
    assert_eq!(
        fetch(c, "ops", "probe", &db_ip, 8080).as_deref(),
        Some("db")
    );
    for (ns, pod) in [("default", "back-0"), ("dev", "probe")] {
        assert!(
            fetch(c, ns, pod, &db_ip, 8080).is_none(),
            "{ns}/{pod} is neither a frontend nor in ops"
        );
    }
    let table = must(&format!(
        "ip netns exec {} nft list table ip {}",
        lan.nodes[1].netns,
        network::policy::table_name(&lan.nodes[1].bridge)
    ));
    assert!(
        table.contains(&db_ip),
        "db's address in n1's policy table:\n{table}"
    );

    // Egress to an ipBlock: the backends may not leave the cluster for
    // the LAN host; others still may.
    let host = lan.nodes[0].ip.rsplit_once('.').unwrap().0.to_string() + ".1";
    let (port, seen) = outside_server(&host);
    wait_reach(c, "default", "back-0", &host, port, true);
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: backend-egress
spec:
  podSelector:
    matchLabels: {{role: backend}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except: ["{host}/32"]
"#
        ),
    );
    wait_reach(c, "default", "back-0", &host, port, false);
    assert_eq!(
        fetch(c, "default", "front-0", &host, port).as_deref(),
        Some("outside")
    );
    assert_eq!(
        fetch(c, "default", "back-0", &dev_probe, 8080).as_deref(),
        Some("probe"),
        "the rest of 0.0.0.0/0 stays open"
    );

    // A new backend is isolated before its first packet: it tries the
    // outside the moment it starts.
    let before = seen.lock().unwrap().len();
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: eager
  labels: {{role: backend}}
spec:
  nodeName: n0
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} {port}; then echo reached; else echo blocked; fi; exec sleep 3600"]
"#
        ),
    );
    let said = c.wait_for("the eager pod's verdict", Duration::from_secs(60), || {
        let out = c.kubectl(&["logs", "eager"]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        (log.contains("reached") || log.contains("blocked")).then_some(log)
    });
    assert!(said.contains("blocked"), "eager pod: {said}");
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "no connection from the eager pod"
    );

    // Deleting the policies opens the namespace again.
    c.ok(&["delete", "networkpolicy", "--all"]);
    wait_reach(c, "default", "back-0", &db_ip, 8080, true);
    wait_reach(c, "default", "back-0", &host, port, true);
}
