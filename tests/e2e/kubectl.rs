//! End-to-end: the real kubectl against a real `r8s server`.

mod common;

use common::{Cluster, json};

const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
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
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
        env:
        - name: A
          value: "1"
"#;

const EXTRAS: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: team-a
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team-a
data:
  colour: blue
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: team-a
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

#[test]
fn version_namespaces_and_discovery() {
    let c = Cluster::start();
    let v = c.ok(&["version", "-o", "json"]);
    let v = json(&v);
    assert_eq!(v["serverVersion"]["major"], "1");
    assert_eq!(v["serverVersion"]["minor"], "33");
    let ns = c.ok(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ns.starts_with("NAME"), "table header: {ns}");
    assert!(ns.contains("Active"));
    let res = c.ok(&["api-resources"]);
    for r in [
        "deployments",
        "pods",
        "cronjobs",
        "leases",
        "priorityclasses",
        "endpointslices",
    ] {
        assert!(res.contains(r), "api-resources lacks {r}: {res}");
    }
    assert!(res.contains("deploy") && res.contains("apps/v1"));
    let versions = c.ok(&["api-versions"]);
    for gv in [
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "autoscaling/v1",
        "v1",
        "rbac.authorization.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "api-versions lacks {gv}: {versions}"
        );
    }
    let svc = c.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(svc, "10.43.0.1");
}

#[test]
fn apply_get_and_reapply_deployment() {
    let c = Cluster::start();
    let f = c.file("deploy.yaml", DEPLOY);
    let out = c.ok(&["apply", "-f", &f]);
    assert_eq!(out.trim(), "deployment.apps/web created");
    let out = c.ok(&["apply", "-f", &f]);
    assert_eq!(out.trim(), "deployment.apps/web unchanged");
    let wide = c.ok(&["get", "deploy", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or("");
    for col in [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(header.contains(col), "{wide}");
    }
    assert!(
        wide.contains("busybox:1.36") && wide.contains("app=web"),
        "{wide}"
    );
    let d = json(&c.ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Re-apply with a changed image and a dropped env var.
    let changed = DEPLOY.replace("busybox:1.36", "busybox:1.37").replace(
        "        env:\n        - name: A\n          value: \"1\"\n",
        "",
    );
    let f2 = c.file("deploy2.yaml", &changed);
    let out = c.ok(&["apply", "-f", &f2]);
    assert_eq!(out.trim(), "deployment.apps/web configured");
    let d = json(&c.ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["metadata"]["generation"], 2);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox:1.37");
    assert!(
        container.get("env").is_none(),
        "env should be removed: {container}"
    );

    let yaml = c.ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"));
    let jp = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].name}",
    ]);
    assert_eq!(jp, "web");
    let cc = c.ok(&[
        "get",
        "deploy",
        "-o",
        "custom-columns=N:.metadata.name,R:.spec.replicas",
    ]);
    assert!(cc.contains("web") && cc.contains('2'), "{cc}");
}

#[test]
fn server_side_apply_and_multi_document_files() {
    let c = Cluster::start();
    let f = c.file("extras.yaml", EXTRAS);
    let out = c.ok(&["apply", "--server-side", "-f", &f]);
    assert!(out.contains("namespace/team-a serverside-applied"), "{out}");
    assert!(
        out.contains("configmap/settings serverside-applied"),
        "{out}"
    );
    let cm = json(&c.ok(&["get", "cm", "settings", "-n", "team-a", "-o", "json"]));
    assert_eq!(cm["data"]["colour"], "blue");
    let svc = json(&c.ok(&["get", "svc", "web", "-n", "team-a", "-o", "json"]));
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
    assert!(ip.starts_with("10.43."), "cluster IP {ip}");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    let changed = EXTRAS.replace("colour: blue", "colour: green");
    let f2 = c.file("extras2.yaml", &changed);
    c.ok(&["apply", "--server-side", "-f", &f2]);
    let colour = c.ok(&[
        "get",
        "cm",
        "settings",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.data.colour}",
    ]);
    assert_eq!(colour, "green");
    let all = c.ok(&["get", "cm,svc", "-A"]);
    assert!(all.contains("team-a") && all.contains("settings"), "{all}");
}

#[test]
fn create_namespace_configmap_secret_generators() {
    // kubectl's generators send protobuf bodies.
    let c = Cluster::start();
    c.ok(&["create", "namespace", "gen"]);
    c.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "gen",
        "--from-literal=a=1",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "-n",
        "gen",
        "--from-literal=password=s3cret",
    ]);
    let s = c.ok(&[
        "get",
        "secret",
        "pw",
        "-n",
        "gen",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(s, "czNjcmV0");
    let a = c.ok(&["get", "cm", "cfg", "-n", "gen", "-o", "jsonpath={.data.a}"]);
    assert_eq!(a, "1");
    let dup = c.fails(&["create", "configmap", "cfg", "-n", "gen"]);
    assert!(
        dup.contains("AlreadyExists") || dup.contains("already exists"),
        "{dup}"
    );
}

#[test]
fn create_label_annotate_patch_scale_delete() {
    let c = Cluster::start();
    c.create_ns("work");
    c.create_cm(Some("work"), "cfg", &[("a", "1")]);

    c.ok(&["label", "cm", "cfg", "-n", "work", "tier=backend"]);
    c.ok(&["annotate", "cm", "cfg", "-n", "work", "note=hello"]);
    let sel = c.ok(&[
        "get",
        "cm",
        "-n",
        "work",
        "-l",
        "tier=backend",
        "-o",
        "name",
    ]);
    assert_eq!(sel.trim(), "configmap/cfg");
    let none = c.ok(&[
        "get",
        "cm",
        "-n",
        "work",
        "-l",
        "tier in (frontend)",
        "-o",
        "name",
    ]);
    assert_eq!(none.trim(), "");
    let by_field = c.ok(&[
        "get",
        "cm",
        "-n",
        "work",
        "--field-selector",
        "metadata.name=cfg",
        "-o",
        "name",
    ]);
    assert_eq!(by_field.trim(), "configmap/cfg");
    c.ok(&["label", "cm", "cfg", "-n", "work", "tier-"]);
    let labels = c.ok(&[
        "get",
        "cm",
        "cfg",
        "-n",
        "work",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!labels.contains("tier"), "{labels}");

    c.ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "work",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    c.ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "work",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/a","value":"10"}]"#,
    ]);
    c.ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "work",
        "-p",
        r#"{"data":{"c":"3"}}"#,
    ]);
    let data = json(&c.ok(&["get", "cm", "cfg", "-n", "work", "-o", "json"]));
    assert_eq!(
        data["data"],
        serde_json::json!({"a": "10", "b": "2", "c": "3"})
    );

    let f = c.file("deploy.yaml", DEPLOY);
    c.ok(&["apply", "-n", "work", "-f", &f]);
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "work",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:2"}]}}}}"#,
    ]);
    let d = json(&c.ok(&["get", "deploy", "web", "-n", "work", "-o", "json"]));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:2"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let out = c.ok(&["scale", "deploy", "web", "-n", "work", "--replicas=5"]);
    assert!(out.contains("scaled"), "{out}");
    let r = c.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "work",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(r, "5");

    let out = c.ok(&["delete", "cm", "cfg", "-n", "work"]);
    assert_eq!(out.trim(), "configmap \"cfg\" deleted");
    let gone = c.fails(&["get", "cm", "cfg", "-n", "work"]);
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    c.ok(&[
        "delete",
        "deploy",
        "web",
        "-n",
        "work",
        "--cascade=background",
        "--wait=true",
    ]);
    c.fails(&["get", "deploy", "web", "-n", "work"]);
}

#[test]
fn bad_input_gets_clear_errors() {
    let c = Cluster::start();
    let bad = c.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    let err = c.fails(&["apply", "-f", &bad]);
    assert!(
        err.contains("metadata.name") && err.contains("Invalid value"),
        "{err}"
    );
    let unknown = c.file(
        "unknown.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\nbogus: 1\n",
    );
    let err = c.fails(&["apply", "-f", &unknown]);
    assert!(err.contains("bogus"), "{err}");
    let err = c.fails(&["get", "pods", "-l", "a in (b"]);
    assert!(!err.is_empty());
    let err = c.fails(&["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(
        err.contains("field label not supported") || err.contains("bogus"),
        "{err}"
    );
    let nopod = c.file(
        "nopod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n",
    );
    let err = c.fails(&["create", "-f", &nopod]);
    assert!(
        err.contains("spec.containers[0].image: Required value"),
        "{err}"
    );
}

#[test]
fn a_taken_port_is_named_and_logs_are_plain_text() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(common::r8s_bin())
        .args(["server", "--no-agent", "--bind-address", "127.0.0.1"])
        .args(["--https-port", &port, "--data-dir"])
        .arg(dir.path())
        .env("R8S_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_with_timeout(child, std::time::Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a taken port: {stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}: Address already in use")),
        "the error does not name the address: {stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in logs written to a pipe: {stderr:?}"
    );
}

#[test]
fn describe_explain_edit_diff_events() {
    let c = Cluster::start();
    let f = c.file("deploy.yaml", DEPLOY);
    c.ok(&["apply", "-f", &f]);
    let d = c.ok(&["describe", "deploy", "web"]);
    assert!(
        d.contains("Name:") && d.contains("web") && d.contains("busybox:1.36"),
        "{d}"
    );
    let e = c.ok(&["explain", "deployment.spec.replicas"]);
    assert!(e.contains("replicas") && e.contains("integer"), "{e}");
    let e = c.ok(&["explain", "pods.spec.containers"]);
    assert!(e.contains("image"), "{e}");

    // edit through a scripted editor
    let editor = c.file(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/replicas: 2/replicas: 3/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = c.kubectl_env(
        &["edit", "deploy", "web"],
        &[("KUBE_EDITOR", &editor), ("EDITOR", &editor)],
        None,
    );
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(r, "3");

    let changed = DEPLOY.replace("replicas: 2", "replicas: 4");
    let f2 = c.file("deploy4.yaml", &changed);
    let out = c.kubectl(&["diff", "-f", &f2]);
    // kubectl diff exits 1 when there are differences.
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("replicas: 4"), "{text}");

    c.ok(&["events"]);
    c.ok(&["get", "events", "-A"]);
}

#[test]
fn watch_streams_changes() {
    let c = Cluster::start();
    c.create_cm(None, "w1", &[]);
    let mut child = std::process::Command::new("kubectl")
        .args([
            "get",
            "cm",
            "-w",
            "--output-watch-events",
            "-o",
            "json",
            "--request-timeout=0",
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    c.create_cm(None, "w2", &[]);
    c.ok(&["label", "cm", "w2", "x=y"]);
    c.ok(&["delete", "cm", "w2"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // kubectl prints one JSON watch event per change: {"type": ..., "object": ...}.
    let events: Vec<(String, String)> = serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .filter_map(Result::ok)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("ADDED", "w1"),
        ("ADDED", "w2"),
        ("MODIFIED", "w2"),
        ("DELETED", "w2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let relevant: Vec<(String, String)> = events
        .into_iter()
        .filter(|(_, n)| n.starts_with('w'))
        .collect();
    assert_eq!(relevant, want, "{text}");
}

#[test]
fn data_survives_restart() {
    let mut c = Cluster::start();
    c.create_cm(None, "keep", &[("k", "v")]);
    let rv1: i64 = c
        .ok(&[
            "get",
            "cm",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .expect("rv");
    c.kill();
    let dir = std::mem::replace(&mut c.dir, tempfile::tempdir().expect("tempdir"));
    let c2 = Cluster::start_in(dir, &[]);
    let v = c2.ok(&["get", "cm", "keep", "-o", "jsonpath={.data.k}"]);
    assert_eq!(v, "v");
    c2.create_cm(None, "after", &[]);
    let rv2: i64 = c2
        .ok(&[
            "get",
            "cm",
            "after",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .expect("rv");
    assert!(rv2 > rv1, "revision went backwards: {rv2} <= {rv1}");
}

/// Creates an owner ConfigMap and a dependent ConfigMap owned by it.
fn owner_and_dependent(c: &Cluster, owner: &str, dep: &str) {
    c.create_cm(None, owner, &[]);
    let uid = c.ok(&["get", "cm", owner, "-o", "jsonpath={.metadata.uid}"]);
    c.create(
        None,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {dep}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n"
        ),
    );
}

fn wait_gone(c: &Cluster, kind: &str, name: &str) -> bool {
    for _ in 0..100 {
        if !c.kubectl(&["get", kind, name]).status.success() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn cascading_deletion_foreground_background_orphan() {
    let c = Cluster::start();
    owner_and_dependent(&c, "fg-owner", "fg-dep");
    c.ok(&[
        "delete",
        "cm",
        "fg-owner",
        "--cascade=foreground",
        "--timeout=30s",
    ]);
    assert!(
        wait_gone(&c, "cm", "fg-dep"),
        "foreground deletion left the dependent"
    );
    assert!(wait_gone(&c, "cm", "fg-owner"));

    owner_and_dependent(&c, "bg-owner", "bg-dep");
    c.ok(&["delete", "cm", "bg-owner", "--cascade=background"]);
    assert!(
        wait_gone(&c, "cm", "bg-dep"),
        "background deletion left the dependent"
    );

    owner_and_dependent(&c, "or-owner", "or-dep");
    c.ok(&[
        "delete",
        "cm",
        "or-owner",
        "--cascade=orphan",
        "--timeout=30s",
    ]);
    assert!(wait_gone(&c, "cm", "or-owner"));
    let refs = c.ok(&[
        "get",
        "cm",
        "or-dep",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert_eq!(
        refs.trim(),
        "",
        "orphaned dependent still has an owner: {refs}"
    );
}

#[test]
fn deleting_a_namespace_deletes_its_content() {
    let c = Cluster::start();
    c.create_ns("doomed");
    c.create_cm(Some("doomed"), "inside", &[]);
    c.ok(&["delete", "ns", "doomed", "--timeout=60s"]);
    assert!(wait_gone(&c, "ns", "doomed"));
    let err = c.fails(&["get", "cm", "inside", "-n", "doomed"]);
    assert!(err.contains("not found"), "{err}");
}
