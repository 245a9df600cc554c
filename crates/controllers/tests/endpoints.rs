//! EndpointSlice and Endpoints controllers against a real API server: a
//! Service's endpoints follow its pods' IPs and readiness.

use apiserver::testing::wait_for;

use apiserver::testing::TestServer;
use controllers::{Context, Options, endpoints};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn make_pod(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}),
        ),
    )
    .await
    .unwrap();
}

/// (ready IPs, not-ready IPs) of an Endpoints object, sorted.
fn ips(e: &Endpoints) -> (Vec<String>, Vec<String>) {
    let mut r = Vec::new();
    let mut n = Vec::new();
    for s in e.subsets.iter().flatten() {
        r.extend(s.addresses.iter().flatten().map(|a| a.ip.clone()));
        n.extend(s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
    }
    r.sort();
    n.sort();
    (r, n)
}

/// (ready IPs, not-ready IPs) over a Service's slices, sorted.
fn slice_ips(slices: &[EndpointSlice]) -> (Vec<String>, Vec<String>) {
    let mut r = Vec::new();
    let mut n = Vec::new();
    for e in slices.iter().flat_map(|s| &s.endpoints) {
        let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
        if ready { &mut r } else { &mut n }.extend(e.addresses.clone());
    }
    r.sort();
    n.sort();
    (r, n)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints_follow_pod_readiness_and_deletion() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ctx = Context::new(client.clone(), Options::default());
    tokio::spawn(endpoints::run_slices(ctx.clone()));
    tokio::spawn(endpoints::run_endpoints(ctx));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let svc = svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web", "labels": {"tier": "front"}},
                "spec": {"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    make_pod(&pods, "a", "10.1.0.1", true).await;
    make_pod(&pods, "b", "10.1.0.2", true).await;
    make_pod(&pods, "c", "10.1.0.3", false).await;

    let want = (strs(&["10.1.0.1", "10.1.0.2"]), strs(&["10.1.0.3"]));
    let e = wait_for(20, "Endpoints with all pods", || async {
        eps.get_opt("web").await.unwrap().filter(|e| ips(e) == want)
    })
    .await;
    let sub = &e.subsets.as_ref().unwrap()[0];
    let port = &sub.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    let labels = e.metadata.labels.unwrap();
    assert_eq!(labels["tier"], "front");
    assert_eq!(
        labels["endpoints.kubernetes.io/managed-by"],
        "endpoint-controller"
    );
    assert!(
        e.metadata
            .annotations
            .unwrap()
            .contains_key("endpoints.kubernetes.io/last-change-trigger-time")
    );

    let by_svc = ListParams::default().labels("kubernetes.io/service-name=web");
    let list = wait_for(20, "slices with all pods", || async {
        let l = slices.list(&by_svc).await.unwrap().items;
        (slice_ips(&l) == want).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
    assert_eq!(s.address_type, "IPv4");
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), &owner.uid),
        ("Service", svc.metadata.uid.as_ref().unwrap())
    );
    assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
    let a = s
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.1.0.1"])
        .unwrap();
    assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    let c = s
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.1.0.3"])
        .unwrap()
        .conditions
        .clone()
        .unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(false), Some(false))
    );

    // A pod goes away; another becomes ready.
    pods.delete("b", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    pods.patch_status(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
    let want = (strs(&["10.1.0.1", "10.1.0.3"]), Vec::new());
    wait_for(20, "Endpoints after the changes", || async {
        eps.get_opt("web").await.unwrap().filter(|e| ips(e) == want)
    })
    .await;
    wait_for(20, "slices after the changes", || async {
        let l = slices.list(&by_svc).await.unwrap().items;
        (slice_ips(&l) == want && l.len() == 1).then_some(())
    })
    .await;

    // A Service without a selector is the user's: nothing is made for it,
    // but the API server's own `kubernetes` Service gets its slice.
    let k = wait_for(20, "kubernetes slice", || async {
        slices.get_opt("kubernetes").await.unwrap()
    })
    .await;
    assert_eq!(
        k.metadata.labels.unwrap()["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(k.endpoints.len(), 1);
    assert_eq!(k.ports.as_ref().unwrap()[0].name.as_deref(), Some("https"));
    assert!(
        eps.get_opt("kubernetes").await.unwrap().is_some(),
        "bootstrap Endpoints left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabelled_pods_leave_and_not_ready_addresses_can_be_published() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ctx = Context::new(client.clone(), Options::default());
    tokio::spawn(endpoints::run_slices(ctx.clone()));
    tokio::spawn(endpoints::run_endpoints(ctx));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    svcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": true,
                "ports": [{"port": 80, "targetPort": 9000}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    make_pod(&pods, "a", "10.2.0.1", false).await;
    make_pod(&pods, "b", "10.2.0.2", true).await;
    let want = (strs(&["10.2.0.1", "10.2.0.2"]), Vec::new());
    let e = wait_for(20, "not-ready pod published", || async {
        eps.get_opt("web").await.unwrap().filter(|e| ips(e) == want)
    })
    .await;
    assert_eq!(e.subsets.unwrap()[0].ports.as_ref().unwrap()[0].port, 9000);
    // Relabelled: the pod no longer matches and leaves the endpoints.
    pods.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    let want = (strs(&["10.2.0.1"]), Vec::new());
    wait_for(20, "relabelled pod gone", || async {
        eps.get_opt("web").await.unwrap().filter(|e| ips(e) == want)
    })
    .await;
    // Deleting the Service deletes its Endpoints.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for(20, "Endpoints deleted", || async {
        eps.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
}
