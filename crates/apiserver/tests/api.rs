//! API semantics through kube-rs (a third-party client) against an
//! in-process server on the memory store: the behaviour kubectl does not
//! show directly (conflicts, pagination, watch resume and 410, bookmarks,
//! error statuses for bad input).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use store::Store;

struct Server {
    _dir: tempfile::TempDir,
    running: apiserver::Running,
    store: Arc<store::memory::MemoryStore>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.running.task.abort();
    }
}

async fn server() -> (Server, kube::Client) {
    server_on(Arc::new(store::memory::MemoryStore::new())).await
}

async fn server_on(store: Arc<store::memory::MemoryStore>) -> (Server, kube::Client) {
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
    let running = apiserver::start(cfg, store.clone()).await.unwrap();
    let kc = kube::config::Kubeconfig::read_from(&running.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    (
        Server {
            _dir: dir,
            running,
            store,
        },
        client,
    )
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": v}})).unwrap()
}

async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ct)
        .body(body)
        .unwrap();
    match client.request_text(req).await {
        Ok(text) => (200, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(kube::Error::Api(s)) => (s.code, json!({"reason": s.reason, "message": s.message})),
        Err(e) => panic!("transport error: {e}"),
    }
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let mut first = created.clone();
    first.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("a", &PostParams::default(), &first)
        .await
        .unwrap();
    let mut stale = created;
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("{other}"),
    }
    let dup = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(dup, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{dup}"
    );
    let missing = api.get("nope").await.unwrap_err();
    assert!(
        matches!(missing, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{missing}"
    );
}

#[tokio::test]
async fn pagination_walks_every_object_once() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..25 {
        api.create(&PostParams::default(), &cm(&format!("p{i:02}"), "x"))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => {
                assert!(page.metadata.remaining_item_count.unwrap_or(0) > 0);
                token = Some(t);
            }
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, expected);
    let labeled = api
        .list(&ListParams::default().labels("nothing=here"))
        .await
        .unwrap();
    assert!(labeled.items.is_empty());
}

#[tokio::test]
async fn watch_resumes_from_resource_version_and_expires_when_compacted() {
    let (s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = api
        .create(&PostParams::default(), &cm("w", "1"))
        .await
        .unwrap();
    let rv = a.metadata.resource_version.clone().unwrap();
    let mut b = a.clone();
    b.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("w", &PostParams::default(), &b).await.unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();

    let stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap();
    let events: Vec<_> = stream.take(2).try_collect().await.unwrap();
    assert!(
        matches!(events[0], WatchEvent::Modified(ref c) if c.data.as_ref().unwrap()["k"] == "2")
    );
    assert!(matches!(events[1], WatchEvent::Deleted(_)));

    // Compact everything, restart the API server on the same store (its
    // watch cache starts empty), and ask for history that is gone: 410.
    let now = s.store.current_revision().await.unwrap();
    s.store.compact(now).await.unwrap();
    let (s2, client2) = server_on(s.store.clone()).await;
    let api2: Api<ConfigMap> = Api::namespaced(client2, "default");
    let stream = api2.watch(&WatchParams::default().timeout(5), &rv).await;
    let code = match stream {
        Ok(st) => match st.take(1).collect::<Vec<_>>().await.pop() {
            Some(Ok(WatchEvent::Error(e))) => e.code,
            other => panic!("expected a 410 error event, got {other:?}"),
        },
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code, 410);
    drop(s2);
}

#[tokio::test]
async fn watch_sends_bookmarks_and_initial_events() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("b1", "1"))
        .await
        .unwrap();
    let wp = WatchParams::default().timeout(3).initial_events();
    let stream = api.watch(&wp, "").await.unwrap();
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        stream.take(2).try_collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        matches!(events[0], WatchEvent::Added(ref c) if c.metadata.name.as_deref() == Some("b1"))
    );
    match &events[1] {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_gets_status_errors() {
    let (_s, client) = server().await;
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not match the expected API version"),
        "{body}"
    );
    let (code, _) = raw(
        &client,
        "GET",
        "/apis/nope.example.com/v1/things",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 404);
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    let (code, _) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        big.into_bytes(),
    )
    .await;
    assert_eq!(code, 413);
    let (code, body) = raw(
        &client,
        "GET",
        "/api/v1/pods?labelSelector=a%20in%20(b",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("spec.containers[0].image: Required value"),
        "{body}"
    );
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"},"bogus":1}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(r#"unknown field "bogus""#),
        "{body}"
    );
    let (code, _) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/missing/configmaps",
        "application/json",
        br#"{"metadata":{"name":"x"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn binding_status_and_scale() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
    let p = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        p.spec.as_ref().unwrap().restart_policy.as_deref(),
        Some("Always")
    );
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        "application/json",
        br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let p = pods.get("p").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("n1"));
    // Status writes go through the subresource only.
    let patch = json!({"status": {"phase": "Running"}});
    pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        pods.get("p")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );

    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client, "default");
    let d = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let scale = deploys.get_scale("d").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    deploys
        .patch_scale(
            "d",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let d = deploys.get("d").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(4));
    assert_eq!(d.metadata.generation, Some(2));
}

#[tokio::test]
async fn server_side_apply_tracks_managers() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    let pp = PatchParams::apply("alice");
    api.patch("ssa", &pp, &Patch::Apply(&a)).await.unwrap();
    let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}});
    let err = api
        .patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&b))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err}"
    );
    api.patch("ssa", &PatchParams::apply("bob").force(), &Patch::Apply(&b))
        .await
        .unwrap();
    let got = api.get("ssa").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["a"], "9");
    assert_eq!(got.data.as_ref().unwrap()["b"], "2");
    // alice drops b from her configuration: it goes away.
    let a2 =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    api.patch("ssa", &pp, &Patch::Apply(&a2)).await.unwrap();
    let got = api.get("ssa").await.unwrap();
    assert_eq!(got.data.unwrap_or_default().get("b"), None);
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"bob".to_string()), "{managers:?}");
}

#[tokio::test]
async fn pods_default_to_the_default_service_account() {
    let (_s, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "sa"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .unwrap();
    let made = pods.create(&PostParams::default(), &p).await.unwrap();
    let spec = made.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(spec.service_account.as_deref(), Some("default"));

    // A service account's imagePullSecrets go to its pods that name none.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(pods.clone().into_client(), "default");
    let sa = serde_json::from_value(json!({"metadata": {"name": "puller"},
        "imagePullSecrets": [{"name": "regcred"}]}))
    .unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let with_sa = |name: &str, secrets: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {
            "serviceAccountName": "puller", "imagePullSecrets": secrets,
            "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    };
    let names = |p: Pod| -> Vec<String> {
        p.spec
            .unwrap()
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    let inherited = pods
        .create(&PostParams::default(), &with_sa("inherits", json!([])))
        .await
        .unwrap();
    assert_eq!(names(inherited), ["regcred"]);
    let own = pods
        .create(
            &PostParams::default(),
            &with_sa("own", json!([{"name": "mine"}])),
        )
        .await
        .unwrap();
    assert_eq!(names(own), ["mine"]);
}

/// Sends `req` and returns the status and the exact body bytes.
async fn exact(client: &kube::Client, req: http::Request<Vec<u8>>) -> (u16, String) {
    use http_body_util::BodyExt;
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn error_bodies_are_upstreams_bytes() {
    let (_s, client) = server().await;
    let req = http::Request::get("/api/v1/namespaces/default/pods/nope")
        .body(vec![])
        .unwrap();
    let (code, body) = exact(&client, req).await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"pods\"},\"code\":404}\n"
    );
    let req = http::Request::get("/apis/apps/v1/namespaces/default/deployments/web")
        .body(vec![])
        .unwrap();
    let (_, body) = exact(&client, req).await;
    assert!(
        body.contains("\"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n"),
        "{body}"
    );
}

#[tokio::test]
async fn writes_answer_partial_object_metadata_when_asked() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("meta", "1"))
        .await
        .unwrap();
    let accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let patch = http::Request::patch("/api/v1/namespaces/default/configmaps/meta")
        .header("Accept", accept)
        .header("Content-Type", "application/merge-patch+json")
        .body(br#"{"metadata":{"labels":{"x":"y"}}}"#.to_vec())
        .unwrap();
    let (code, body) = exact(&client, patch).await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadata", "{v}");
    assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(v["metadata"]["labels"]["x"], "y");
    assert!(v.get("data").is_none(), "{v}");

    let put = http::Request::put("/api/v1/namespaces/default/configmaps/meta")
        .header("Accept", accept)
        .header("Content-Type", "application/json")
        .body(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "meta"}, "data": {"k": "2"}}))
            .unwrap(),
        )
        .unwrap();
    let (code, body) = exact(&client, put).await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadata", "{v}");
    assert!(v.get("data").is_none(), "{v}");
    // kube-rs's own metadata patch.
    let meta = api
        .patch_metadata(
            "meta",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(meta.metadata.annotations.unwrap()["a"], "b");
    assert_eq!(api.get("meta").await.unwrap().data.unwrap()["k"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unconditional_updates_retry_concurrent_writes() {
    let (_s, client) = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("race", "0"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                // No resourceVersion: "whatever is there".
                let mut c = cm("race", &format!("{w}-{i}"));
                c.metadata.labels = Some([(format!("w{w}"), i.to_string())].into());
                api.replace("race", &PostParams::default(), &c)
                    .await
                    .map_err(|e| format!("writer {w}, update {i}: {e}"))?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // With a stale resourceVersion it is still a conflict.
    let mut stale = api.get("race").await.unwrap();
    api.replace("race", &PostParams::default(), &cm("race", "x"))
        .await
        .unwrap();
    stale.data = Some([("k".to_string(), "y".to_string())].into());
    match api.replace("race", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }
}
