//! A node whose Lease stops being renewed becomes Unknown and tainted, its
//! pods are marked not ready and evicted per their tolerations; it recovers
//! when it reports Ready again.

use apiserver::testing::wait_until;
use std::time::Duration;

use apiserver::testing::TestServer;
use controllers::{Context, Options};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn now() -> String {
    Timestamp::now().to_string()
}

async fn create_node(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    heartbeat_status(client, name).await;
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "kube-node-lease"}})).unwrap();
    let _ = nsapi.create(&PostParams::default(), &ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let l: Lease = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now()}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &l).await.unwrap();
}

async fn heartbeat_status(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now(), "lastTransitionTime": now()
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn bound_pod(pods: &Api<Pod>, name: &str, node: &str, tolerations: Value) {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations,
                 "containers": [{"name": "c", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True"}
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn unreachable_for(secs: Option<i64>) -> Value {
    json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": secs},
           {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": secs}])
}

/// Gone, or terminating (no kubelet finishes graceful deletion here).
async fn evicted(pods: &Api<Pod>, name: &str) -> bool {
    match pods.get_opt(name).await.unwrap() {
        None => true,
        Some(p) => p.metadata.deletion_timestamp.is_some(),
    }
}

fn taints(n: &Node) -> Vec<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

#[tokio::test]
async fn a_silent_node_is_marked_unknown_tainted_and_drained_per_tolerations() {
    let server = TestServer::start().await;
    let client = server.client().await;
    create_node(&client, "n1").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    bound_pod(&pods, "doomed", "n1", unreachable_for(Some(0))).await;
    bound_pod(&pods, "patient", "n1", unreachable_for(Some(4))).await;
    bound_pod(&pods, "forever", "n1", unreachable_for(None)).await;

    let opts = Options {
        node_monitor_grace_period: Duration::from_secs(2),
        ..Options::default()
    };
    let ctx = Context::new(client.clone(), opts);
    let task = tokio::spawn(controllers::nodelifecycle::run(ctx));
    let nodes: Api<Node> = Api::all(client.clone());

    // No renewals: after the grace period the node is Unknown and tainted.
    wait_until(60, "node Unknown and tainted", || async {
        let n = nodes.get("n1").await.unwrap();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready").cloned());
        let t = taints(&n);
        ready.is_some_and(|c| {
            c.status == "Unknown"
                && c.reason.as_deref() == Some("NodeStatusUnknown")
                && c.message.as_deref() == Some("Kubelet stopped posting node status.")
        }) && t.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into()))
            && t.contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()))
    })
    .await;
    let n = nodes.get("n1").await.unwrap();
    let conds = n.status.unwrap().conditions.unwrap();
    for ty in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(
            conds.iter().any(|c| c.type_ == ty && c.status == "Unknown"),
            "{ty} Unknown"
        );
    }
    let tainted_at = std::time::Instant::now();

    wait_until(5, "the non-tolerating pod evicted", || {
        evicted(&pods, "doomed")
    })
    .await;
    assert!(
        !evicted(&pods, "patient").await || tainted_at.elapsed() >= Duration::from_secs(3),
        "the tolerating pod must outlive its tolerationSeconds"
    );
    wait_until(10, "the tolerating pod evicted after 4 s", || {
        evicted(&pods, "patient")
    })
    .await;
    assert!(
        !evicted(&pods, "forever").await,
        "forever-tolerating pod stays"
    );
    wait_until(5, "pods on the node marked not ready", || async {
        let p = pods.get("forever").await.unwrap();
        p.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False")
    })
    .await;

    // The node comes back: taints go.
    heartbeat_status(&client, "n1").await;
    wait_until(10, "taints removed on recovery", || async {
        taints(&nodes.get("n1").await.unwrap()).is_empty()
    })
    .await;
    assert!(!evicted(&pods, "forever").await);
    task.abort();
}

#[tokio::test]
async fn a_node_reporting_not_ready_gets_not_ready_taints() {
    let server = TestServer::start().await;
    let client = server.client().await;
    create_node(&client, "n2").await;
    let ctx = Context::new(client.clone(), Options::default());
    let task = tokio::spawn(controllers::nodelifecycle::run(ctx));
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "KubeletNotReady",
        "lastHeartbeatTime": now(), "lastTransitionTime": now()
    }]}});
    nodes
        .patch_status("n2", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    wait_until(60, "not-ready taints", || async {
        let t = taints(&nodes.get("n2").await.unwrap());
        t.contains(&("node.kubernetes.io/not-ready".into(), "NoExecute".into()))
            && t.contains(&("node.kubernetes.io/not-ready".into(), "NoSchedule".into()))
    })
    .await;
    let n = nodes.get("n2").await.unwrap();
    assert!(
        n.spec
            .unwrap()
            .taints
            .unwrap()
            .iter()
            .all(|t| t.time_added.is_some())
    );
    task.abort();
}
