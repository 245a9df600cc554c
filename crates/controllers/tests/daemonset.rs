//! DaemonSet controller against a real API server with Nodes created
//! through the API; the test plays the kubelet by patching pod status.

use apiserver::testing::wait_for;
use std::time::Duration;

use apiserver::testing::TestServer;
use controllers::daemonset::pod_node;
use controllers::{Context, Options};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn add_node(nodes: &Api<Node>, name: &str, taints: serde_json::Value) {
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
}

/// Live pods by the node they are pinned to.
async fn placement(pods: &Api<Pod>) -> Vec<String> {
    let mut v: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(pod_node)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_eligible_node_following_new_nodes_and_taints() {
    let server = TestServer::start().await;
    let client = server.client().await;
    tokio::spawn(controllers::daemonset::run(Context::new(
        client.clone(),
        Options::default(),
    )));
    let nodes: Api<Node> = Api::all(client.clone());
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for n in ["n1", "n2", "n3"] {
        add_node(&nodes, n, json!([])).await;
    }
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent:v1"}]}}
        }
    }))
    .unwrap();
    dss.create(&PostParams::default(), &ds).await.unwrap();
    wait_for(10, "a pod on each of 3 nodes", || async {
        (placement(&pods).await == ["n1", "n2", "n3"]).then_some(())
    })
    .await;
    // Left to the scheduler: pinned by affinity, not bound.
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(
        all.iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.is_none())
    );
    let hash = all[0].labels()["controller-revision-hash"].clone();
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        revs.get(&format!("agent-{hash}")).await.unwrap().revision,
        1
    );

    // A 4th node gets one; a tainted 5th does not.
    add_node(&nodes, "n4", json!([])).await;
    add_node(
        &nodes,
        "n5",
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    )
    .await;
    wait_for(10, "a pod on n4", || async {
        (placement(&pods).await == ["n1", "n2", "n3", "n4"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        placement(&pods).await,
        ["n1", "n2", "n3", "n4"],
        "tainted n5 got a pod"
    );

    // Kubelet: all Running and Ready; status adds up.
    let now = jiff::Timestamp::now().to_string();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let st = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
        pods.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&st))
            .await
            .unwrap();
    }
    let st = wait_for(10, "status numberReady 4", || async {
        let st = dss.get("agent").await.unwrap().status?;
        (st.number_ready == 4).then_some(st)
    })
    .await;
    assert_eq!(st.desired_number_scheduled, 4);
    assert_eq!(st.current_number_scheduled, 4);
    assert_eq!(st.number_misscheduled, 0);
    assert_eq!(st.number_available, Some(4));
    assert_eq!(st.updated_number_scheduled, Some(4));

    // Tolerating the taint brings n5 in (a template change: rolling update).
    dss.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Exists"}]}}}})),
    )
    .await
    .unwrap();
    wait_for(10, "a pod on n5", || async {
        placement(&pods)
            .await
            .contains(&"n5".to_string())
            .then_some(())
    })
    .await;
    // Removing a node takes its pod away.
    nodes.delete("n1", &Default::default()).await.unwrap();
    wait_for(10, "n1's pod gone", || async {
        (!placement(&pods).await.contains(&"n1".to_string())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_at_most_max_unavailable() {
    let server = TestServer::start().await;
    let client = server.client().await;
    tokio::spawn(controllers::daemonset::run(Context::new(
        client.clone(),
        Options::default(),
    )));
    let nodes: Api<Node> = Api::all(client.clone());
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for n in ["a", "b", "c"] {
        add_node(&nodes, n, json!([])).await;
    }
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "ru", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "ru"}},
            "template": {"metadata": {"labels": {"app": "ru"}},
                "spec": {"containers": [{"name": "c", "image": "v1"}]}}
        }
    }))
    .unwrap();
    dss.create(&PostParams::default(), &ds).await.unwrap();
    let ready_all = || async {
        let now = jiff::Timestamp::now().to_string();
        for p in pods.list(&ListParams::default()).await.unwrap().items {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let st = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
            // The controller may delete it meanwhile.
            let _ = pods
                .patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&st))
                .await;
        }
    };
    wait_for(10, "3 pods", || async {
        (placement(&pods).await.len() == 3).then_some(())
    })
    .await;
    ready_all().await;
    dss.patch(
        "ru",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
        ),
    )
    .await
    .unwrap();
    let image = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default()
    };
    // Default maxUnavailable 1: one node at a time while the kubelet lags.
    wait_for(10, "first v2 pod", || async {
        let items = pods.list(&ListParams::default()).await.unwrap().items;
        items.iter().any(|p| image(p) == "v2").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = pods.list(&ListParams::default()).await.unwrap().items;
    let old_live = items
        .iter()
        .filter(|p| image(p) == "v1" && p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(old_live, 2, "more than maxUnavailable=1 replaced at once");
    for _ in 0..3 {
        ready_all().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for(15, "all at v2", || async {
        ready_all().await;
        let items = pods.list(&ListParams::default()).await.unwrap().items;
        let live: Vec<&Pod> = items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (live.len() == 3 && live.iter().all(|p| image(p) == "v2")).then_some(())
    })
    .await;
    let st = wait_for(10, "updatedNumberScheduled 3", || async {
        let st = dss.get("ru").await.unwrap().status?;
        (st.updated_number_scheduled == Some(3) && st.number_available == Some(3)).then_some(st)
    })
    .await;
    assert_eq!(st.observed_generation, Some(2));
}
