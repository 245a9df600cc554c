//! The scheduler against a real in-process API server: placement by
//! resources, nodeSelector, taints, anti-affinity and zone spread; the
//! FailedScheduling report; and priority preemption.

use apiserver::testing::wait_for;

use apiserver::testing::TestServer;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Creates a Ready node with labels, taints and allocatable cpu/memory.
async fn node(client: &Client, name: &str, labels: Value, taints: Value, cpu: &str) {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints}
    }))
    .unwrap();
    api.create(&PostParams::default(), &n).await.unwrap();
    let res = json!({"cpu": cpu, "memory": "8Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// Creates a pod in `default` with one container and the given spec fields.
async fn pod(client: &Client, name: &str, labels: Value, spec: Value) {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    }
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
}

fn cpu(c: &str) -> Value {
    json!([{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": c}}}])
}

/// Waits until the pod is bound and returns its node.
async fn bound(client: &Client, name: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_for(20, &format!("{name} bound"), || {
        let api = api.clone();
        async move {
            api.get(name)
                .await
                .ok()?
                .spec?
                .node_name
                .filter(|n| !n.is_empty())
        }
    })
    .await
}

async fn start() -> (TestServer, Client, tokio::task::JoinHandle<()>) {
    let server = TestServer::start().await;
    let client = server.client().await;
    let sched = tokio::spawn(scheduler::run(
        client.clone(),
        scheduler::Options::default(),
    ));
    (server, client, sched)
}

#[tokio::test]
async fn places_pods_by_resources_selector_and_taints() {
    let (_server, client, sched) = start().await;
    node(&client, "small", json!({"disk": "ssd"}), json!([]), "2").await;
    node(&client, "large", json!({"disk": "hdd"}), json!([]), "8").await;
    node(
        &client,
        "gpu",
        json!({"accelerator": "gpu"}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        "16",
    )
    .await;
    pod(&client, "big", json!({}), json!({"containers": cpu("6")})).await;
    pod(
        &client,
        "ssd",
        json!({}),
        json!({"nodeSelector": {"disk": "ssd"}}),
    )
    .await;
    pod(
        &client,
        "trainer",
        json!({}),
        json!({"nodeSelector": {"accelerator": "gpu"},
               "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
    )
    .await;
    // 12 cpu fits only on the tainted node, which this pod does not tolerate.
    pod(&client, "huge", json!({}), json!({"containers": cpu("12")})).await;
    assert_eq!(bound(&client, "big").await, "large");
    assert_eq!(bound(&client, "ssd").await, "small");
    assert_eq!(bound(&client, "trainer").await, "gpu");

    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cond = wait_for(20, "huge PodScheduled=False", || {
        let api = api.clone();
        async move {
            let p = api.get("huge").await.ok()?;
            p.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        }
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some(
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
             2 Insufficient cpu. preemption: 0/3 nodes are available: \
             3 Preemption is not helpful for scheduling."
        )
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let ev = wait_for(20, "FailedScheduling event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("FailedScheduling")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("huge")
                })
        }
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.note, cond.message);
    let ok = wait_for(20, "Scheduled event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("Scheduled")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("big")
                })
        }
    })
    .await;
    assert_eq!(
        ok.note.as_deref(),
        Some("Successfully assigned default/big to large")
    );

    // A gated pod is left alone until its gates are removed.
    pod(
        &client,
        "gated",
        json!({}),
        json!({"schedulingGates": [{"name": "example.com/wait"}]}),
    )
    .await;
    pod(&client, "after-gated", json!({}), json!({})).await;
    bound(&client, "after-gated").await;
    let gated = api.get("gated").await.unwrap();
    assert_eq!(gated.spec.as_ref().unwrap().node_name, None);
    api.patch(
        "gated",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedulingGates": null}})),
    )
    .await
    .unwrap();
    bound(&client, "gated").await;

    // A new node that fits brings the parked pod back at once.
    node(&client, "xl", json!({}), json!([]), "32").await;
    assert_eq!(bound(&client, "huge").await, "xl");
    sched.abort();
}

#[tokio::test]
async fn anti_affinity_and_zone_spread() {
    let (_server, client, sched) = start().await;
    for (n, zone) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")] {
        node(
            &client,
            n,
            json!({"topology.kubernetes.io/zone": zone}),
            json!([]),
            "8",
        )
        .await;
    }
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..4 {
        pod(
            &client,
            &format!("db-{i}"),
            json!({"app": "db"}),
            anti.clone(),
        )
        .await;
    }
    let mut hosts = Vec::new();
    for i in 0..4 {
        hosts.push(bound(&client, &format!("db-{i}")).await);
    }
    hosts.sort();
    assert_eq!(hosts, vec!["a1", "a2", "a3", "b1"]);
    // A fifth replica has nowhere to go.
    pod(&client, "db-4", json!({"app": "db"}), anti.clone()).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let msg = wait_for(20, "db-4 unschedulable", || {
        let api = api.clone();
        async move {
            api.get("db-4")
                .await
                .ok()?
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?
                .message
        }
    })
    .await;
    // Existing pods' anti-affinity is checked first, as upstream.
    assert_eq!(
        msg,
        "0/4 nodes are available: 4 node(s) didn't satisfy existing pods anti-affinity rules. \
         preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod."
    );

    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
    let mut zones = std::collections::BTreeMap::new();
    for i in 0..6 {
        let name = format!("web-{i}");
        pod(&client, &name, json!({"app": "web"}), spread.clone()).await;
        let n = bound(&client, &name).await;
        *zones.entry(n.chars().next().unwrap()).or_insert(0) += 1;
    }
    // Zone a has three nodes, zone b one: the constraint still balances zones.
    assert_eq!(
        zones.into_iter().collect::<Vec<_>>(),
        vec![('a', 3), ('b', 3)]
    );
    sched.abort();
}

#[tokio::test]
async fn high_priority_pod_preempts_low_priority() {
    let (_server, client, sched) = start().await;
    let pcs: Api<PriorityClass> = Api::all(client.clone());
    for (name, value, policy) in [
        ("low", 10, "PreemptLowerPriority"),
        ("high", 1000, "PreemptLowerPriority"),
        ("high-never", 1000, "Never"),
    ] {
        let pc: PriorityClass = serde_json::from_value(
            json!({"metadata": {"name": name}, "value": value, "preemptionPolicy": policy}),
        )
        .unwrap();
        pcs.create(&PostParams::default(), &pc).await.unwrap();
    }
    node(&client, "only", json!({}), json!([]), "1").await;
    pod(
        &client,
        "victim",
        json!({}),
        json!({"priorityClassName": "low", "containers": cpu("800m")}),
    )
    .await;
    assert_eq!(bound(&client, "victim").await, "only");

    // A class with preemptionPolicy Never gives no right to preempt.
    pod(
        &client,
        "polite",
        json!({}),
        json!({"priorityClassName": "high-never", "containers": cpu("800m")}),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let msg = wait_for(20, "polite unschedulable", || {
        let api = api.clone();
        async move {
            api.get("polite")
                .await
                .ok()?
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?
                .message
        }
    })
    .await;
    assert_eq!(
        msg,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    api.delete("polite", &DeleteParams::default())
        .await
        .unwrap();

    pod(
        &client,
        "vip",
        json!({}),
        json!({"priorityClassName": "high", "containers": cpu("800m")}),
    )
    .await;
    // The victim is deleted gracefully; play the kubelet and finish the deletion.
    wait_for(20, "victim terminating", || {
        let api = api.clone();
        async move { api.get("victim").await.ok()?.metadata.deletion_timestamp }
    })
    .await;
    let nominated = api
        .get("vip")
        .await
        .unwrap()
        .status
        .and_then(|s| s.nominated_node_name);
    let victim = api.get("victim").await.unwrap();
    let disrupted = victim
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget");
    api.delete("victim", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(bound(&client, "vip").await, "only");
    assert_eq!(
        disrupted.and_then(|c| c.reason).as_deref(),
        Some("PreemptionByScheduler")
    );
    // nominatedNodeName may be written just after the deletion was observed.
    let nominated = match nominated {
        Some(n) => n,
        None => {
            wait_for(20, "nominatedNodeName", || {
                let api = api.clone();
                async move { api.get("vip").await.ok()?.status?.nominated_node_name }
            })
            .await
        }
    };
    assert_eq!(nominated, "only");
    sched.abort();
}
