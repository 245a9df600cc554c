//! pods/eviction honours PodDisruptionBudgets as upstream (no disruption
//! controller runs here: the tests set the budget's status themselves), and
//! pod admission (default tolerations, priority).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;

struct Server {
    _dir: tempfile::TempDir,
    running: apiserver::Running,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.running.task.abort();
    }
}

async fn server() -> (Server, kube::Client) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = apiserver::Config {
        data_dir: dir.path().to_path_buf(),
        bind_address: "127.0.0.1".parse().unwrap(),
        https_port: 0,
        tls_sans: vec![],
        service_cidr: apiserver::SERVICE_CIDR,
        advertise_address: None,
        authorization_mode: Default::default(),
        encryption_provider_config: None,
        secrets_encryption: true,
        audit: None,
        metric_resolution: std::time::Duration::from_secs(15),
    };
    let store = Arc::new(store::memory::MemoryStore::new());
    let running = apiserver::start(cfg, store).await.unwrap();
    let kc = kube::config::Kubeconfig::read_from(&running.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    // kube-rs retries 429s for minutes by default; these tests assert them.
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    (Server { _dir: dir, running }, client)
}

/// A running, ready pod labelled app=web (terminationGracePeriodSeconds 0
/// so a delete removes it at once).
async fn ready_pod(pods: &Api<Pod>, name: &str, ready: bool) {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }}
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn pdb(client: &kube::Client, name: &str, allowed: i32, current: i32, desired: i32) {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let p: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"minAvailable": desired, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    let status = json!({"status": {
        "observedGeneration": 1, "disruptionsAllowed": allowed,
        "currentHealthy": current, "desiredHealthy": desired, "expectedPods": current
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn eviction_uses_up_the_budget_then_answers_429() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for n in ["a", "b", "c"] {
        ready_pod(&pods, n, true).await;
    }
    pdb(&client, "web", 1, 3, 2).await;

    pods.evict("a", &EvictParams::default()).await.unwrap();
    assert!(
        pods.get_opt("a").await.unwrap().is_none(),
        "evicted pod is deleted"
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let st = pdbs.get_status("web").await.unwrap().status.unwrap();
    assert_eq!(st.disruptions_allowed, 0);
    assert!(st.disrupted_pods.unwrap().contains_key("a"));
    let cond = st.conditions.unwrap();
    assert_eq!(cond[0].type_, "DisruptionAllowed");
    assert_eq!(cond[0].status, "False");

    let err = api_error(pods.evict("b", &EvictParams::default()).await.unwrap_err());
    assert_eq!(err.code, 429);
    assert_eq!(err.reason, "TooManyRequests");
    assert_eq!(
        err.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert_eq!(
        causes[0].message,
        "The disruption budget web needs 2 healthy pods and has 3 currently"
    );
    assert!(
        pods.get_opt("b").await.unwrap().is_some(),
        "refused pod stays"
    );
}

#[tokio::test]
async fn unready_pods_go_while_the_budget_is_healthy_and_two_budgets_are_an_error() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    ready_pod(&pods, "a", true).await;
    ready_pod(&pods, "sick", false).await;
    pdb(&client, "web", 0, 2, 2).await;
    // Budget at zero, but it is healthy: the unready pod may go, and the
    // budget is not charged.
    pods.evict("sick", &EvictParams::default()).await.unwrap();
    assert!(pods.get_opt("sick").await.unwrap().is_none());
    let err = api_error(pods.evict("a", &EvictParams::default()).await.unwrap_err());
    assert_eq!(err.code, 429);

    pdb(&client, "web2", 1, 2, 1).await;
    let err = api_error(pods.evict("a", &EvictParams::default()).await.unwrap_err());
    assert_eq!(err.code, 500);
    assert!(
        err.message
            .contains("This pod has more than one PodDisruptionBudget"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn pods_without_a_budget_or_not_running_are_just_deleted() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    ready_pod(&pods, "free", true).await;
    pods.evict("free", &EvictParams::default()).await.unwrap();
    assert!(pods.get_opt("free").await.unwrap().is_none());

    ready_pod(&pods, "done", true).await;
    pdb(&client, "web", 0, 1, 1).await;
    pods.patch_status(
        "done",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    pods.evict("done", &EvictParams::default()).await.unwrap();
    assert!(pods.get_opt("done").await.unwrap().is_none());
}

#[tokio::test]
async fn a_budget_not_yet_observed_refuses_evictions() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    ready_pod(&pods, "a", true).await;
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let p: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "fresh"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    let err = api_error(pods.evict("a", &EvictParams::default()).await.unwrap_err());
    assert_eq!(err.code, 429);
    assert_eq!(
        err.details.unwrap().causes[0].message,
        "The disruption budget fresh is still being processed by the server."
    );
}

// The create pipeline (rest/write.rs) must run the admission chain (Priority)
// for these two to pass; see the nodes helper's report.
#[tokio::test]
async fn new_pods_get_default_not_ready_and_unreachable_tolerations() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    ready_pod(&pods, "a", true).await;
    let p = pods.get("a").await.unwrap();
    let tols = p.spec.unwrap().tolerations.unwrap();
    let keys: Vec<_> = tols
        .iter()
        .map(|t| {
            (
                t.key.clone().unwrap(),
                t.effect.clone().unwrap(),
                t.toleration_seconds,
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (
                "node.kubernetes.io/not-ready".to_string(),
                "NoExecute".to_string(),
                Some(30)
            ),
            (
                "node.kubernetes.io/unreachable".to_string(),
                "NoExecute".to_string(),
                Some(30)
            ),
        ]
    );
}

#[tokio::test]
async fn priority_class_names_resolve_and_unknown_ones_are_forbidden() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mk = |name: &str, class: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"priorityClassName": class, "containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap()
    };
    let p = pods
        .create(&PostParams::default(), &mk("crit", "system-node-critical"))
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().priority, Some(2_000_001_000));
    let err = api_error(
        pods.create(&PostParams::default(), &mk("x", "foo"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"x\" is forbidden: no PriorityClass with name foo was found"
    );
}
