//! ResourceQuota controller against a real API server: status.used follows
//! the pods and ConfigMaps created in the namespace.

use apiserver::testing::wait_for;
use std::collections::BTreeMap;

use apiserver::testing::TestServer;
use controllers::{Context, Options, resourcequota};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// The quota's status.used as plain strings.
async fn used(api: &Api<ResourceQuota>) -> BTreeMap<String, String> {
    api.get("q")
        .await
        .unwrap()
        .status
        .and_then(|s| s.used)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_usage_follows_pods_and_configmaps() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ctx = Context::new(client.clone(), Options::default());
    tokio::spawn(resourcequota::run(ctx));

    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "q"}})).unwrap(),
        )
        .await
        .unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "q");
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "q"},
                "spec": {"hard": {"pods": "10", "requests.cpu": "2", "requests.memory": "1Gi",
                    "limits.memory": "2Gi", "configmaps": "5"}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let zero = expect(&[
        ("configmaps", "0"),
        ("limits.memory", "0"),
        ("pods", "0"),
        ("requests.cpu", "0"),
        ("requests.memory", "0"),
    ]);
    wait_for(20, "initial usage", || async {
        (used(&quotas).await == zero).then_some(())
    })
    .await;
    let st = quotas.get("q").await.unwrap().status.unwrap();
    assert_eq!(st.hard.unwrap()["requests.memory"].0, "1Gi");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "q");
    for name in ["a", "b"] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {
                "requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    Api::<ConfigMap>::namespaced(client.clone(), "q")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let want = expect(&[
        ("configmaps", "1"),
        ("limits.memory", "256Mi"),
        ("pods", "2"),
        ("requests.cpu", "500m"),
        ("requests.memory", "128Mi"),
    ]);
    wait_for(20, "usage of two pods and a ConfigMap", || async {
        (used(&quotas).await == want).then_some(())
    })
    .await;

    // A finished pod no longer counts.
    pods.patch_status(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    let want = expect(&[
        ("configmaps", "1"),
        ("limits.memory", "128Mi"),
        ("pods", "1"),
        ("requests.cpu", "250m"),
        ("requests.memory", "64Mi"),
    ]);
    wait_for(20, "usage without the finished pod", || async {
        (used(&quotas).await == want).then_some(())
    })
    .await;
}
