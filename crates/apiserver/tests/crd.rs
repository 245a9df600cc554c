//! Custom resources through kube-rs, as operators use them: a CRD made
//! with `#[derive(CustomResource)]`, a controller reconciling its objects
//! through the status subresource and watches, several versions of one
//! kind, and a definition's deletion taking its objects with it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::discovery::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::wait::{await_condition, conditions};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use apiserver::testing::{TestServer, https_server, wait_for};

/// A counter that its controller drives to `target`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "r8s.example.com",
    version = "v1",
    kind = "Counter",
    namespaced,
    status = "CounterStatus",
    shortname = "cnt",
    printcolumn = r#"{"name":"Target","type":"integer","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Count","type":"integer","jsonPath":".status.count"}"#
)]
pub struct CounterSpec {
    /// Where the count should end.
    pub target: i64,
}

/// What the controller observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct CounterStatus {
    /// The count reached.
    pub count: i64,
    /// The generation the count follows.
    pub observed_generation: i64,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(c: Arc<Counter>, client: Arc<kube::Client>) -> Result<Action, ReconcileError> {
    let api: Api<Counter> = Api::namespaced((*client).clone(), &c.namespace().unwrap_or_default());
    let status = json!({"status": {"count": c.spec.target, "observed_generation": c.metadata.generation.unwrap_or(0)}});
    api.patch_status(
        &c.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Counter>, _: &ReconcileError, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

async fn establish(client: &kube::Client, crd: CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("the definition is established within 5 s")
    .unwrap();
}

#[tokio::test]
async fn an_operator_reconciles_its_custom_resources() {
    let server = TestServer::start().await;
    let client = server.client().await;
    establish(&client, Counter::crd()).await;

    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    // The kind is usable as soon as the definition is established.
    let c = Counter::new("first", CounterSpec { target: 3 });
    let created = counters.create(&PostParams::default(), &c).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "status is the subresource's");

    let ctl = tokio::spawn(
        Controller::new(counters.clone(), Default::default())
            .run(reconcile, error_policy, Arc::new(client.clone()))
            .for_each(|_| async {}),
    );
    let counted = |name: &'static str, want: i64, generation: i64| {
        let counters = counters.clone();
        async move {
            wait_for(10, &format!("{name} counted to {want}"), || {
                let counters = counters.clone();
                async move {
                    let c = counters.get(name).await.ok()?;
                    let s = c.status?;
                    (s.count == want && s.observed_generation == generation).then_some(())
                }
            })
            .await
        }
    };
    counted("first", 3, 1).await;

    // A spec change moves the generation; the controller sees it by watch.
    counters
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": 7}})),
        )
        .await
        .unwrap();
    counted("first", 7, 2).await;
    // A status write does not move the generation, a main-resource write
    // does not change the status.
    let now = counters.get("first").await.unwrap();
    assert_eq!(now.metadata.generation, Some(2));
    let mut replaced = now.clone();
    replaced.status = Some(CounterStatus {
        count: 100,
        observed_generation: 100,
    });
    let after = counters
        .replace("first", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(after.status.map(|s| s.count), Some(7));

    let second = Counter::new("second", CounterSpec { target: 1 });
    counters
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    counted("second", 1, 1).await;
    ctl.abort();

    // A schema violation is a 422 naming the field.
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "r8s.example.com/v1", "kind": "Counter",
        "metadata": {"name": "bad"}, "spec": {"target": "three"}
    }))
    .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("r8s.example.com", "v1", "Counter"),
        "counters",
    );
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    match dynamic.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message.contains("spec.target: Invalid value: \"string\": spec.target in body must be of type integer: \"string\""),
                "{}",
                e.message
            );
        }
        other => panic!("a string target must be refused: {other:?}"),
    }

    // Deleting the definition deletes its objects, then the definition.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("counters.r8s.example.com", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(10, "the definition is gone", || {
        let crds = crds.clone();
        async move {
            crds.get_opt("counters.r8s.example.com")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    // Recreated, the kind starts empty.
    establish(&client, Counter::crd()).await;
    assert!(
        counters
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn several_versions_share_one_storage_version() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.r8s.example.com"},
        "spec": {
            "group": "r8s.example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false, "deprecated": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}},
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}, "colour": {"type": "string", "default": "blue"}}}}}}}
            ]
        }
    }))
    .unwrap();
    establish(&client, crd).await;
    let api_at = |v: &str| {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("r8s.example.com", v, "Widget"),
            "widgets",
        );
        Api::<DynamicObject>::all_with(client.clone(), &ar)
    };
    let old: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "r8s.example.com/v1beta1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 3}
    }))
    .unwrap();
    let created = api_at("v1beta1")
        .create(&PostParams::default(), &old)
        .await
        .unwrap();
    assert_eq!(
        created.types.unwrap().api_version,
        "r8s.example.com/v1beta1"
    );
    let read = api_at("v1").get("w").await.unwrap();
    assert_eq!(read.types.unwrap().api_version, "r8s.example.com/v1");
    assert_eq!(read.data["spec"]["size"], 3);
    // Read at v1, the object gets v1's defaults.
    assert_eq!(read.data["spec"]["colour"], "blue");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let stored = crds.get("widgets.r8s.example.com").await.unwrap();
    assert_eq!(
        stored.status.and_then(|s| s.stored_versions),
        Some(vec!["v1".to_string()])
    );
    // Both versions are discovered, v1 preferred.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == "r8s.example.com")
        .expect("the custom group is discovered");
    assert_eq!(group.versions().collect::<Vec<_>>(), ["v1", "v1beta1"]);
    assert_eq!(group.preferred_version_or_latest(), "v1");
}

/// A conversion webhook written here: `v1beta1` keeps `spec.cronSpec`,
/// `v1` calls it `spec.schedule`. Returns its URL and caBundle.
async fn conversion_webhook() -> (String, String) {
    let (port, ca) = https_server("127.0.0.1", |_, body| async move {
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let want = review["request"]["desiredAPIVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let converted: Vec<serde_json::Value> = review["request"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let mut o = o.clone();
                let spec = o["spec"].as_object_mut().unwrap();
                if want.ends_with("/v1") {
                    if let Some(v) = spec.remove("cronSpec") {
                        spec.insert("schedule".into(), v);
                    }
                } else if let Some(v) = spec.remove("schedule") {
                    spec.insert("cronSpec".into(), v);
                }
                o["apiVersion"] = json!(want);
                o["metadata"]["labels"]["converted-by"] = json!("webhook");
                o
            })
            .collect();
        (
            200,
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "response": {"uid": review["request"]["uid"], "convertedObjects": converted,
                             "result": {"status": "Success"}}}),
        )
    })
    .await;
    (format!("https://127.0.0.1:{port}/convert"), ca)
}

#[tokio::test]
async fn a_conversion_webhook_converts_between_versions() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (url, ca) = conversion_webhook().await;
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.r8s.example.com"},
        "spec": {
            "group": "r8s.example.com",
            "scope": "Namespaced",
            "names": {"plural": "crontabs", "kind": "CronTab"},
            "conversion": {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
                "clientConfig": {"url": url, "caBundle": ca}}},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false, "schema": schema},
                {"name": "v1", "served": true, "storage": true, "schema": schema}
            ]
        }
    }))
    .unwrap();
    establish(&client, crd).await;
    let at = |v: &str| {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("r8s.example.com", v, "CronTab"),
            "crontabs",
        );
        Api::<DynamicObject>::namespaced_with(client.clone(), "default", &ar)
    };
    // Written at the old version, stored (and read) at the new one.
    let old: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "r8s.example.com/v1beta1", "kind": "CronTab",
        "metadata": {"name": "nightly"}, "spec": {"cronSpec": "0 3 * * *"}
    }))
    .unwrap();
    let created = at("v1beta1")
        .create(&PostParams::default(), &old)
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"]["cronSpec"], "0 3 * * *",
        "answered at v1beta1"
    );
    let new = at("v1").get("nightly").await.unwrap();
    assert_eq!(
        new.types.as_ref().unwrap().api_version,
        "r8s.example.com/v1"
    );
    assert_eq!(new.data["spec"]["schedule"], "0 3 * * *");
    assert!(new.data["spec"].get("cronSpec").is_none());
    assert_eq!(
        new.metadata.labels.as_ref().unwrap()["converted-by"],
        "webhook"
    );
    // Lists at the old version are converted back.
    let listed = at("v1beta1").list(&Default::default()).await.unwrap();
    assert_eq!(listed.items[0].data["spec"]["cronSpec"], "0 3 * * *");
    // A merge patch at the old version applies to the converted object.
    at("v1beta1")
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cronSpec": "0 4 * * *"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        at("v1").get("nightly").await.unwrap().data["spec"]["schedule"],
        "0 4 * * *"
    );
    // A watch at the old version sees converted objects.
    let rv = at("v1beta1")
        .get("nightly")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = at("v1beta1")
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    at("v1")
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": "0 5 * * *"}})),
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a watch event")
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Modified(o) => {
            assert_eq!(o.types.unwrap().api_version, "r8s.example.com/v1beta1");
            assert_eq!(o.data["spec"]["cronSpec"], "0 5 * * *");
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}
