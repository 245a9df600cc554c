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
