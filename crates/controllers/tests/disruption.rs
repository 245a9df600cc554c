//! The disruption controller computes PodDisruptionBudget status from the
//! pods and their controller's scale; evictions use the budget up and are
//! refused with 429 once it is exhausted.

use apiserver::testing::wait_until;

use apiserver::testing::TestServer;
use controllers::{Context, Options};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// A ReplicaSet with `replicas` (no RS controller runs: the test makes its
/// pods) and `ready` running, ready pods owned by it.
async fn workload(client: &kube::Client, replicas: i32, ready: usize) -> Api<Pod> {
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap();
    let rs = rss.create(&PostParams::default(), &rs).await.unwrap();
    let uid = rs.metadata.uid.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..ready {
        let name = format!("web-{i}");
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": "web", "uid": uid, "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}
        ]}});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    pods
}

async fn budget(client: &kube::Client, spec: serde_json::Value) -> Api<PodDisruptionBudget> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    let p: PodDisruptionBudget =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec})).unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    api
}

async fn status(api: &Api<PodDisruptionBudget>) -> PodDisruptionBudgetStatus {
    api.get_status("web")
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

/// A client that reports 429 at once (kube-rs retries them for minutes by
/// default; kubectl drain retries evictions itself).
async fn no_retry_client(server: &TestServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&server.running.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn start(client: &kube::Client) -> tokio::task::JoinHandle<()> {
    let ctx = Context::new(client.clone(), Options::default());
    tokio::spawn(controllers::disruption::run(ctx))
}

#[tokio::test]
async fn percent_min_available_uses_the_controller_scale_rounding_up() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // 5 replicas wanted, 4 pods ready; minAvailable 50% of 5 rounds up to 3.
    let _pods = workload(&client, 5, 4).await;
    let api = budget(&client, json!({"minAvailable": "50%"})).await;
    let task = start(&client);
    wait_until(10, "status computed", || async {
        status(&api).await.observed_generation == Some(1)
    })
    .await;
    let st = status(&api).await;
    assert_eq!(st.expected_pods, 5);
    assert_eq!(st.desired_healthy, 3);
    assert_eq!(st.current_healthy, 4);
    assert_eq!(st.disruptions_allowed, 1);
    let cond = &st.conditions.unwrap()[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("DisruptionAllowed", "True", "SufficientPods")
    );
    task.abort();
}

#[tokio::test]
async fn evictions_are_allowed_until_the_budget_is_used_up() {
    let server = TestServer::start().await;
    let client = no_retry_client(&server).await;
    let pods = workload(&client, 3, 3).await;
    let api = budget(&client, json!({"maxUnavailable": 1})).await;
    let task = start(&client);
    wait_until(10, "one disruption allowed", || async {
        let st = status(&api).await;
        st.observed_generation == Some(1) && st.disruptions_allowed == 1
    })
    .await;
    let st = status(&api).await;
    assert_eq!((st.expected_pods, st.desired_healthy), (3, 2));

    pods.evict("web-0", &EvictParams::default()).await.unwrap();
    // The evicted pod is terminating (no kubelet here): no longer healthy.
    wait_until(10, "the controller sees the eviction", || async {
        let st = status(&api).await;
        st.current_healthy == 2 && st.disruptions_allowed == 0
    })
    .await;
    let st = status(&api).await;
    let cond = &st.conditions.unwrap()[0];
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InsufficientPods")
    );

    let err = match pods.evict("web-1", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 429, got {other:?}"),
    };
    assert_eq!(err.code, 429);
    assert_eq!(err.reason, "TooManyRequests");
    assert_eq!(
        err.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        err.details.unwrap().causes[0].message,
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );
    let web1 = pods.get("web-1").await.unwrap();
    assert!(web1.metadata.deletion_timestamp.is_none());
    task.abort();
}
