//! Hollow nodes against a real in-process API server.

use apiserver::testing::wait_for;
use std::time::Duration;

use apiserver::testing::TestServer;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn opts(nodes: usize) -> hollow::Options {
    hollow::Options {
        nodes,
        zones: vec!["zone-a".into(), "zone-b".into()],
        name_prefix: "hollow".into(),
        pod_start_delay: Duration::from_millis(100),
        cpu: "8".into(),
        memory: "32Gi".into(),
        max_pods: 110,
        lease_interval: Duration::from_millis(500),
        status_interval: Duration::from_secs(1),
        concurrency: 16,
        ..Default::default()
    }
}

/// Starts hollow nodes and waits until all are registered.
async fn start(client: &kube::Client, o: hollow::Options) -> tokio::task::JoinHandle<()> {
    let n = o.nodes;
    let c = client.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = hollow::run(c, o).await {
            panic!("hollow nodes failed: {e}");
        }
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    wait_for(20, "every node's lease", || {
        let leases = leases.clone();
        async move {
            let l = leases.list(&Default::default()).await.ok()?;
            (l.items.len() >= n).then_some(())
        }
    })
    .await;
    task
}

fn pod(name: &str, node: &str, restart: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart,
            "initContainers": [{"name": "setup", "image": "busybox:1.36"}],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        },
    }))
    .unwrap()
}

async fn wait_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    wait_for(20, &format!("pod {name} {phase}"), || {
        let pods = pods.clone();
        let name = name.to_string();
        let phase = phase.to_string();
        async move {
            let p = pods.get(&name).await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some(phase.as_str())).then_some(p)
        }
    })
    .await
}

fn condition(node_or_pod: &[(String, String)], t: &str) -> Option<String> {
    node_or_pod
        .iter()
        .find(|(ty, _)| ty == t)
        .map(|(_, s)| s.clone())
}

async fn renew_time(leases: &Api<Lease>, name: &str) -> Option<String> {
    let l = leases.get(name).await.ok()?;
    let t = l.spec?.renew_time?;
    Some(format!("{:?}", t.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_nodes_with_labels_capacity_conditions_and_renews_leases() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    // An existing node of that name is taken over, not refused.
    let pre: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "hollow-1", "labels": {"keep": "me"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &pre).await.unwrap();

    let _task = start(&client, opts(3)).await;

    let mut cidrs = Vec::new();
    let mut ips = Vec::new();
    for i in 0..3 {
        let name = format!("hollow-{i}");
        let n = wait_for(10, "node status", || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move {
                let n = nodes.get(&name).await.ok()?;
                n.status.as_ref()?.conditions.as_ref()?;
                Some(n)
            }
        })
        .await;
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], name);
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["node.kubernetes.io/instance-type"], "hollow");
        assert_eq!(labels["topology.kubernetes.io/region"], "r8s");
        let zone = if i % 2 == 0 { "zone-a" } else { "zone-b" };
        assert_eq!(labels["topology.kubernetes.io/zone"], zone);
        if i == 1 {
            assert_eq!(labels["keep"], "me", "take-over keeps foreign labels");
        }
        assert_eq!(
            n.metadata.annotations.as_ref().unwrap()[hollow::HOLLOW_ANNOTATION],
            "true"
        );
        let status = n.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "8");
        assert_eq!(cap["memory"].0, "32Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "100Gi");
        assert_eq!(status.allocatable.unwrap()["cpu"].0, "8");
        let conds: Vec<(String, String)> = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect();
        assert_eq!(condition(&conds, "Ready").as_deref(), Some("True"));
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(condition(&conds, t).as_deref(), Some("False"), "{t}");
        }
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let info = status.node_info.unwrap();
        assert_eq!(info.kubelet_version, "v1.33.0");
        assert_eq!(info.container_runtime_version, "r8s-hollow://0.1");
        let addrs = status.addresses.unwrap();
        let internal = addrs.iter().find(|a| a.type_ == "InternalIP").unwrap();
        assert_eq!(internal.address, format!("10.200.0.{}", i + 1));
        assert!(
            addrs
                .iter()
                .any(|a| a.type_ == "Hostname" && a.address == name)
        );
        let cidr = n.spec.unwrap().pod_cidr.unwrap();
        assert_eq!(cidr, hollow::pod_cidr(i));
        cidrs.push(cidr);
        ips.push(internal.address.clone());
    }
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "podCIDRs are unique");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = leases.get("hollow-0").await.unwrap();
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("hollow-0"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owner = &lease.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", "hollow-0")
    );
    let first = renew_time(&leases, "hollow-0").await.unwrap();
    wait_for(10, "a lease renewal", || {
        let leases = leases.clone();
        let first = first.clone();
        async move { (renew_time(&leases, "hollow-0").await? != first).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_pod_becomes_running_and_ready() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let _task = start(&client, opts(2)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("web", "hollow-1", "Always", json!({})),
    )
    .await
    .unwrap();
    let p = wait_phase(&pods, "web", "Running").await;
    let status = p.status.unwrap();
    let ip = status.pod_ip.unwrap();
    assert!(
        ip.starts_with("10.64.1."),
        "pod IP {ip} in hollow-1's 10.64.1.0/24"
    );
    assert_eq!(status.host_ip.as_deref(), Some("10.200.0.2"));
    assert!(status.start_time.is_some());
    let conds = status.conditions.unwrap();
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let c = conds.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(c.status, "True", "{t}");
    }
    let cs = &status.container_statuses.unwrap()[0];
    assert_eq!(cs.name, "app");
    assert_eq!(cs.image, "nginx:1.27");
    assert!(cs.ready);
    assert_eq!(cs.started, Some(true));
    assert_eq!(cs.restart_count, 0);
    assert!(cs.container_id.as_deref().unwrap().starts_with("hollow://"));
    assert!(cs.state.as_ref().unwrap().running.is_some());
    let init = &status.init_container_statuses.unwrap()[0];
    let term = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    assert_eq!(term.exit_code, 0);

    // A second pod on the same node gets another address.
    pods.create(
        &PostParams::default(),
        &pod("web2", "hollow-1", "Always", json!({})),
    )
    .await
    .unwrap();
    let p2 = wait_phase(&pods, "web2", "Running").await;
    assert_ne!(p2.status.unwrap().pod_ip.unwrap(), ip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_to_completion_pods_end_per_their_annotations() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let _task = start(&client, opts(1)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let fail = json!({hollow::RUN_DURATION_ANNOTATION: "300ms", hollow::EXIT_CODE_ANNOTATION: "1"});
    pods.create(
        &PostParams::default(),
        &pod("fails", "hollow-0", "Never", fail),
    )
    .await
    .unwrap();
    let ok = json!({hollow::RUN_DURATION_ANNOTATION: "200ms"});
    pods.create(
        &PostParams::default(),
        &pod("works", "hollow-0", "OnFailure", ok),
    )
    .await
    .unwrap();

    let failed = wait_phase(&pods, "fails", "Failed").await;
    let cs = &failed.status.unwrap().container_statuses.unwrap()[0];
    let term = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(term.exit_code, 1);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    assert!(!cs.ready);

    let done = wait_phase(&pods, "works", "Succeeded").await;
    let status = done.status.unwrap();
    let term = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (0, Some("Completed"))
    );
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_on_a_hollow_node_completes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let _task = start(&client, opts(1)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("doomed", "hollow-0", "Always", json!({})),
    )
    .await
    .unwrap();
    wait_phase(&pods, "doomed", "Running").await;
    // Default grace period (30 s): only the node's confirmation removes it.
    pods.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(10, "the pod to be gone", || {
        let pods = pods.clone();
        async move {
            match pods.get_opt("doomed").await {
                Ok(None) => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_annotation_kills_the_node_until_removed() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let _task = start(&client, opts(2)).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let stop =
        |v: serde_json::Value| json!({"metadata": {"annotations": {hollow::STOP_ANNOTATION: v}}});
    nodes
        .patch(
            "hollow-0",
            &PatchParams::default(),
            &Patch::Merge(&stop(json!("true"))),
        )
        .await
        .unwrap();
    // The annotation reaches the node watch; after that, renewals stop.
    // Wait out renewals in flight, then watch 4 lease periods.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let frozen = renew_time(&leases, "hollow-0").await.unwrap();
    let live = renew_time(&leases, "hollow-1").await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod("stuck", "hollow-0", "Always", json!({})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(renew_time(&leases, "hollow-0").await.unwrap(), frozen);
    assert_ne!(
        renew_time(&leases, "hollow-1").await.unwrap(),
        live,
        "other nodes keep renewing"
    );
    let p = pods.get("stuck").await.unwrap();
    assert_ne!(
        p.status.and_then(|s| s.phase).as_deref(),
        Some("Running"),
        "a dead node starts no pods"
    );

    // Removing the annotation revives the node and its pods.
    nodes
        .patch(
            "hollow-0",
            &PatchParams::default(),
            &Patch::Merge(&stop(json!(null))),
        )
        .await
        .unwrap();
    wait_for(10, "lease renewal after revival", || {
        let leases = leases.clone();
        let frozen = frozen.clone();
        async move { (renew_time(&leases, "hollow-0").await? != frozen).then_some(()) }
    })
    .await;
    wait_phase(&pods, "stuck", "Running").await;
}

#[tokio::test]
async fn zero_nodes_is_an_error() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let err = hollow::run(client, opts(0)).await.unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}
