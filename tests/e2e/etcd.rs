//! Several `r8s server` processes on one real etcd serve one cluster:
//! writes through one are read and watched through the other, and the
//! scheduler and controllers fail over through their Leases.

mod common;
#[path = "../../crates/store/tests/etcd_harness/mod.rs"]
#[allow(dead_code)]
mod etcd_harness;

use std::time::Duration;

use common::{Cluster, json};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn lease_holder(c: &Cluster, name: &str) -> Option<String> {
    let out = c.kubectl(&["get", "lease", "-n", "kube-system", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    json(&String::from_utf8_lossy(&out.stdout))["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn two_servers_share_one_etcd_and_fail_over() {
    let rt = rt();
    let etcd = rt.block_on(etcd_harness::EtcdServer::start());
    let spec = format!("etcd://{}", etcd.url().trim_start_matches("http://"));
    let a = Cluster::start_in(tempfile::tempdir().unwrap(), &["--datastore", &spec]);
    let b = Cluster::start_in(tempfile::tempdir().unwrap(), &["--datastore", &spec]);

    // A Secret written through one server is encrypted in etcd with the
    // cluster's key (shared through the store) and read through the other.
    a.ok(&[
        "create",
        "secret",
        "generic",
        "enc",
        "--from-literal=k=etcd-plaintext-value",
    ]);
    let raw = rt.block_on(async {
        use store::Store;
        let etcd = store::EtcdStore::connect_spec(&spec).await.unwrap();
        etcd.get("/registry/secrets/default/enc")
            .await
            .unwrap()
            .unwrap()
    });
    assert!(raw.value.starts_with(b"k8s:enc:aescbc:v1:r8s-default:"));
    let text = String::from_utf8_lossy(&raw.value);
    assert!(
        !text.contains("etcd-plaintext-value") && !text.contains("ZXRjZC1wbGFpbnRleHQtdmFsdWU=")
    );
    let got = b.get_json(&["secret", "enc"]);
    assert_eq!(got["data"]["k"], "ZXRjZC1wbGFpbnRleHQtdmFsdWU=");

    // A write through one server is read, and watched, through the other.
    let watch = b.watch_log(&["configmaps", "-n", "default"]);
    a.create_cm(Some("default"), "shared", &[("k", "v1")]);
    let got = b.get_json(&["configmap", "shared", "-n", "default"]);
    assert_eq!(got["data"]["k"], "v1");
    b.ok(&[
        "patch",
        "configmap",
        "shared",
        "-n",
        "default",
        "-p",
        r#"{"data":{"k":"v2"}}"#,
    ]);
    let got = a.get_json(&["configmap", "shared", "-n", "default"]);
    assert_eq!(
        got["data"]["k"], "v2",
        "a write through b is visible through a"
    );
    a.wait_for(
        "b's watch sees both versions",
        Duration::from_secs(20),
        || {
            let seen: Vec<String> = watch
                .events()
                .iter()
                .filter(|e| e["object"]["metadata"]["name"] == "shared")
                .filter_map(|e| e["object"]["data"]["k"].as_str().map(str::to_string))
                .collect();
            (seen == ["v1", "v2"]).then_some(())
        },
    );
    // A stale update through the other server conflicts: one revision space.
    let rv_old = got["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    b.ok(&[
        "patch",
        "configmap",
        "shared",
        "-n",
        "default",
        "-p",
        r#"{"data":{"k":"v3"}}"#,
    ]);
    let stale = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"shared","namespace":"default","resourceVersion":"{rv_old}"}},"data":{{"k":"stale"}}}}"#
    );
    let err = a.fails_stdin(&["replace", "-f", "-"], &stale);
    assert!(
        err.contains("Conflict") || err.contains("modified"),
        "{err}"
    );

    // Exactly one controller manager holds the Lease; when its server dies
    // the other takes over and runs the controllers.
    let holder = a.wait_for(
        "a controller-manager leader",
        Duration::from_secs(30),
        || lease_holder(&a, "kube-controller-manager"),
    );
    let mut servers = [Some(a), Some(b)];
    let leader_idx = servers
        .iter()
        .position(|s| holder.contains(&format!("_{}_", s.as_ref().unwrap().pid())))
        .expect("the lease holder is one of the two servers");
    servers[leader_idx].as_mut().unwrap().kill();
    servers[leader_idx] = None;
    let survivor = servers[1 - leader_idx].as_ref().unwrap();
    let new_holder = survivor.wait_for("the survivor takes over", Duration::from_secs(40), || {
        lease_holder(survivor, "kube-controller-manager").filter(|h| *h != holder)
    });
    assert!(
        new_holder.contains(&format!("_{}_", survivor.pid())),
        "new holder {new_holder} is the surviving server"
    );
    // And its controllers work: a Deployment gets its ReplicaSet.
    survivor.ok(&[
        "create",
        "deployment",
        "after-failover",
        "--image=busybox",
        "--replicas=2",
    ]);
    survivor.wait_for(
        "a ReplicaSet from the new leader",
        Duration::from_secs(30),
        || {
            let rs = survivor.get_json(&["rs", "-l", "app=after-failover"]);
            (rs["items"].as_array().is_some_and(|i| !i.is_empty())).then_some(())
        },
    );
}

/// A node agent process, killed and its host state removed on drop.
struct Agent {
    child: std::process::Child,
    data: tempfile::TempDir,
    bridge: String,
    cgroup: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kubelet::cleanup_host(&self.cgroup, &self.bridge, self.data.path());
        network::cleanup_host(&self.bridge);
    }
}

fn renew_time(c: &Cluster, node: &str) -> Option<String> {
    let out = c.kubectl(&["get", "lease", "-n", "kube-node-lease", node, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    json(&String::from_utf8_lossy(&out.stdout))["spec"]["renewTime"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn servers_share_one_ca_and_an_agent_joins_with_a_token_and_fails_over() {
    common::require_root("the agent needs root (cgroups, bridges); CI runs as root");
    let rt = rt();
    let etcd = rt.block_on(etcd_harness::EtcdServer::start());
    let spec = format!("etcd://{}", etcd.url().trim_start_matches("http://"));
    let a = Cluster::start_in(tempfile::tempdir().unwrap(), &["--datastore", &spec]);
    let b = Cluster::start_in(tempfile::tempdir().unwrap(), &["--datastore", &spec]);

    // One CA: a's kubeconfig works against b, and both print one token.
    let out = a.kubectl(&["--server", &b.url, "get", "namespaces", "-o", "name"]);
    assert!(
        out.status.success(),
        "a's kubeconfig against b: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(a.dir.path().join("token")).unwrap();
    let token = token.trim().to_string();
    assert_eq!(
        std::fs::read_to_string(b.dir.path().join("token"))
            .unwrap()
            .trim(),
        token
    );

    // A token naming another CA is refused before the secret is sent.
    let wrong = format!(
        "R8S{}::{}",
        "0".repeat(64),
        token.split("::").nth(1).unwrap()
    );
    let out = std::process::Command::new(common::r8s_bin())
        .args(["agent", "--server", &b.url, "--token", &wrong, "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not match the token"),
        "an agent with a wrong CA hash must refuse: {err}"
    );

    let pid = std::process::id();
    let node = format!("e2e-join-{pid}");
    let third = (pid % 200) as u8 + 20;
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(data.path().join("agent.log")).unwrap();
    let child = std::process::Command::new(common::r8s_bin())
        .args(["agent", "--server", &format!("{},{}", a.url, b.url)])
        .args([
            "--token",
            &token,
            "--node-name",
            &node,
            "--kubelet-port",
            "0",
        ])
        .args(["--bridge", &format!("r8sj{}", pid % 100_000)])
        .args(["--cgroup-root", &format!("r8s-e2e-join-{pid}")])
        .args(["--pod-cidr", &format!("10.78.{third}.0/24")])
        // Addresses on the test's own bridge, not the host's.
        .args(["--node-ip", &format!("10.78.{third}.1")])
        .arg("--data-dir")
        .arg(data.path())
        .env("R8S_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        bridge: format!("r8sj{}", pid % 100_000),
        cgroup: format!("r8s-e2e-join-{pid}"),
        data,
    };
    let agent_log =
        || std::fs::read_to_string(agent.data.path().join("agent.log")).unwrap_or_default();
    let ready = |c: &Cluster| {
        let out = c.kubectl(&["get", "node", &node, "-o", "json"]);
        out.status.success()
            && json(&String::from_utf8_lossy(&out.stdout))["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
    };
    b.wait_for("the joined node is Ready", Duration::from_secs(60), || {
        ready(&b).then_some(())
    });
    let node_json = b.get_json(&["node", &node]);
    assert!(
        node_json["metadata"]["name"] == node.as_str(),
        "log: {}",
        agent_log()
    );

    // The first server dies: the agent keeps renewing its Lease via b.
    let mut servers = [Some(a), Some(b)];
    servers[0].as_mut().unwrap().kill();
    let b = servers[1].as_ref().unwrap();
    let before = renew_time(b, &node).expect("the node's Lease");
    let after = b.wait_for(
        "a Lease renewal through the surviving server",
        Duration::from_secs(45),
        || renew_time(b, &node).filter(|t| *t != before),
    );
    assert!(after > before, "renewTime {before} then {after}");
    assert!(ready(b), "the node stays Ready; agent log: {}", agent_log());
    drop(agent);
    drop(servers);
    drop(etcd);
}
