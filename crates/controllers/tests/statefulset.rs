//! StatefulSet controller against a real API server; the test plays the
//! kubelet by patching pod status to Running and Ready.

use apiserver::testing::wait_for;
use std::time::Duration;

use apiserver::testing::TestServer;
use controllers::{Context, Options};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

async fn make_ready(pods: &Api<Pod>, name: &str) {
    let now = jiff::Timestamp::now().to_string();
    let st = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now}
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
}

async fn names(pods: &Api<Pod>) -> Vec<String> {
    let mut v: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_in_order_and_scales_down_in_reverse() {
    let server = TestServer::start().await;
    let client = server.client().await;
    tokio::spawn(controllers::statefulset::run(Context::new(
        client.clone(),
        Options::default(),
    )));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3, "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &sts).await.unwrap();

    for i in 0..3 {
        let want: Vec<String> = (0..=i).map(|j| format!("web-{j}")).collect();
        wait_for(10, &format!("web-{i}"), || async {
            (names(&pods).await == want).then_some(())
        })
        .await;
        // The next pod waits for this one to be Running and Ready.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            names(&pods).await,
            want,
            "web-{} created before web-{i} was Ready",
            i + 1
        );
        let pvc = pvcs.get(&format!("data-web-{i}")).await.unwrap();
        assert_eq!(pvc.labels().get("app").map(String::as_str), Some("web"));
        let p = pods.get(&format!("web-{i}")).await.unwrap();
        assert_eq!(
            p.labels()["statefulset.kubernetes.io/pod-name"],
            format!("web-{i}")
        );
        assert_eq!(p.labels()["apps.kubernetes.io/pod-index"], i.to_string());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("web-{i}").as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            vol.persistent_volume_claim.as_ref().unwrap().claim_name,
            format!("data-web-{i}")
        );
        make_ready(&pods, &format!("web-{i}")).await;
    }

    let s = wait_for(10, "status readyReplicas 3", || async {
        let s = sets.get("web").await.unwrap();
        (s.status.as_ref()?.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    let st = s.status.unwrap();
    assert_eq!(st.replicas, 3);
    assert_eq!(st.current_replicas, Some(3));
    assert_eq!(st.updated_replicas, Some(3));
    assert_eq!(st.current_revision, st.update_revision);
    assert_eq!(st.observed_generation, s.metadata.generation);
    let rev = st.update_revision.unwrap();
    assert!(rev.starts_with("web-"));
    let p0 = pods.get("web-0").await.unwrap();
    assert_eq!(p0.labels()["controller-revision-hash"], rev);
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    assert_eq!(revs.get(&rev).await.unwrap().revision, 1);

    // Scale down to 1: web-2 goes first, then web-1 (watched in order).
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    let mut order: Vec<String> = Vec::new();
    while order.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .expect("pod deletions")
            .expect("watch open")
            .unwrap();
        let gone = match ev {
            WatchEvent::Deleted(p) => Some(p),
            WatchEvent::Modified(p) if p.metadata.deletion_timestamp.is_some() => Some(p),
            _ => None,
        };
        if let Some(p) = gone
            && !order.contains(&p.name_any())
        {
            order.push(p.name_any());
        }
    }
    assert_eq!(order, ["web-2", "web-1"]);
    wait_for(10, "only web-0 left", || async {
        (names(&pods).await == ["web-0"]).then_some(())
    })
    .await;
    // PVCs are retained (whenScaled: Retain by default).
    assert!(pvcs.get_opt("data-web-2").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_from_the_highest_ordinal() {
    let server = TestServer::start().await;
    let client = server.client().await;
    tokio::spawn(controllers::statefulset::run(Context::new(
        client.clone(),
        Options::default(),
    )));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "replicas": 2, "serviceName": "db", "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
            "volumeClaimTemplates": [{
                "metadata": {"name": "d"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }],
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "v1"}]}}
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &sts).await.unwrap();
    // Parallel: both at once, without waiting for readiness.
    wait_for(10, "db-0 and db-1", || async {
        (names(&pods).await == ["db-0", "db-1"]).then_some(())
    })
    .await;
    for n in ["db-0", "db-1"] {
        make_ready(&pods, n).await;
    }
    sets.patch(
        "db",
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
    // db-1 is replaced first; db-0 keeps v1 until db-1 is Ready again.
    wait_for(15, "db-1 at v2", || async {
        let p = pods.get_opt("db-1").await.unwrap()?;
        (image(&p) == "v2").then_some(())
    })
    .await;
    assert_eq!(image(&pods.get("db-0").await.unwrap()), "v1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        image(&pods.get("db-0").await.unwrap()),
        "v1",
        "db-0 updated before db-1 was Ready"
    );
    make_ready(&pods, "db-1").await;
    wait_for(15, "db-0 at v2", || async {
        let p = pods.get_opt("db-0").await.unwrap()?;
        (image(&p) == "v2").then_some(())
    })
    .await;
    make_ready(&pods, "db-0").await;
    wait_for(10, "currentRevision == updateRevision", || async {
        let st = sets.get("db").await.unwrap().status?;
        (st.updated_replicas == Some(2)
            && st.current_revision == st.update_revision
            && st.ready_replicas == Some(2))
        .then_some(())
    })
    .await;
    // Retention policy Delete: PVCs are owned by the set, and a scaled-away
    // pod's PVCs by the pod too (the garbage collector does the rest).
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvc = pvcs.get("d-db-0").await.unwrap();
    assert!(
        pvc.owner_references()
            .iter()
            .any(|r| r.kind == "StatefulSet" && r.name == "db")
    );
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_for(10, "d-db-1 owned by pod db-1", || async {
        let pvc = pvcs.get("d-db-1").await.unwrap();
        pvc.owner_references()
            .iter()
            .any(|r| r.kind == "Pod" && r.name == "db-1")
            .then_some(())
    })
    .await;
}
