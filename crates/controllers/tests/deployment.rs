//! ReplicaSet and Deployment controllers against a real in-process API
//! server. A tiny simulated kubelet marks pods Running and Ready.

use apiserver::testing::wait_for;
use std::time::Duration;

use apiserver::testing::TestServer;
use controllers::{Context, Options};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const NS: &str = "default";

async fn start() -> (TestServer, Client) {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ctx = Context::new(client.clone(), Options::default());
    tokio::spawn(controllers::replicaset::run(ctx.clone()));
    tokio::spawn(controllers::replicaset::run_replication_controllers(
        ctx.clone(),
    ));
    tokio::spawn(controllers::deployment::run(ctx));
    (server, client)
}

/// Marks every pod Running and Ready, like a kubelet would.
fn kubelet(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, NS);
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list
                    .items
                    .iter()
                    .filter(|p| !ready(p) && p.metadata.deletion_timestamp.is_none())
                {
                    let _ = mark_ready(&pods, &p.name_any()).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn mark_ready(pods: &Api<Pod>, name: &str) -> Result<Pod, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let st = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
        .await
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn active_pods(client: &Client, label: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.list(&ListParams::default().labels(label))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn rs_manifest(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}
    }))
    .unwrap()
}

fn deploy_manifest(name: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"kubernetes.io/change-cause": "first"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}
    }))
    .unwrap()
}

async fn set_image(d: &Api<Deployment>, name: &str, image: &str) {
    let p =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    d.patch(name, &PatchParams::default(), &Patch::Strategic(&p))
        .await
        .unwrap();
}

/// `kubectl rollout status`'s test for a finished rollout.
async fn rolled_out(d: &Api<Deployment>, name: &str, replicas: i32) -> Option<Deployment> {
    let d = d.get(name).await.ok()?;
    let st = d.status.clone()?;
    let done = st.observed_generation >= d.metadata.generation
        && st.updated_replicas == Some(replicas)
        && st.replicas == Some(replicas)
        && st.available_replicas == Some(replicas);
    done.then_some(d)
}

async fn replica_sets(client: &Client, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn annotation(rs: &ReplicaSet, k: &str) -> Option<String> {
    rs.annotations().get(k).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaset_creates_owned_pods_replaces_deleted_and_scales_down_unready_first() {
    let (_s, client) = start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let rs = rss
        .create(&PostParams::default(), &rs_manifest("web", 3))
        .await
        .unwrap();
    let uid = rs.metadata.uid.clone().unwrap();
    let list = wait_for(30, "3 pods", || async {
        let l = active_pods(&client, "app=web").await;
        (l.len() == 3).then_some(l)
    })
    .await;
    for p in &list {
        assert!(p.name_any().starts_with("web-"));
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str()),
            ("ReplicaSet", uid.as_str())
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
    // A deleted pod is replaced.
    let gone = list[0].name_any();
    pods.delete(&gone, &DeleteParams::default()).await.unwrap();
    let list = wait_for(30, "replacement", || async {
        let l = active_pods(&client, "app=web").await;
        (l.len() == 3 && l.iter().all(|p| p.name_any() != gone)).then_some(l)
    })
    .await;
    // Two of three become ready; scaling to 2 deletes the unready one.
    mark_ready(&pods, &list[0].name_any()).await.unwrap();
    mark_ready(&pods, &list[1].name_any()).await.unwrap();
    wait_for(30, "status ready 2", || async {
        let r = rss.get("web").await.ok()?;
        let st = r.status?;
        (st.ready_replicas == Some(2)
            && st.replicas == 3
            && st.observed_generation == r.metadata.generation)
            .then_some(())
    })
    .await;
    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let left = wait_for(30, "scale down to 2", || async {
        let l = active_pods(&client, "app=web").await;
        (l.len() == 2).then_some(l)
    })
    .await;
    let mut names: Vec<String> = left.iter().map(|p| p.name_any()).collect();
    names.sort();
    let mut want = vec![list[0].name_any(), list[1].name_any()];
    want.sort();
    assert_eq!(names, want, "the unready pod goes first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaset_adopts_matching_orphans_without_extra_pods() {
    let (_s, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    rss.create(&PostParams::default(), &rs_manifest("adopt", 2))
        .await
        .unwrap();
    wait_for(30, "adoption and one new pod", || async {
        let l = active_pods(&client, "app=adopt").await;
        let o = pods.get("orphan").await.ok()?;
        (l.len() == 2 && o.owner_references().iter().any(|r| r.name == "adopt")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_rolls_out_updates_and_undoes() {
    let (_s, client) = start().await;
    let _kubelet = kubelet(client.clone());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    deps.create(&PostParams::default(), &deploy_manifest("web", 3, strategy))
        .await
        .unwrap();
    let d = wait_for(30, "rollout 1", || rolled_out(&deps, "web", 3)).await;
    let conds = d.status.unwrap().conditions.unwrap();
    let cond = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap().clone();
    assert_eq!(
        cond("Available").reason.as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        cond("Progressing").reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let first = replica_sets(&client, "web").await;
    assert_eq!(first.len(), 1);
    let rs1 = first[0].clone();
    let hash = rs1.labels()["pod-template-hash"].clone();
    assert_eq!(rs1.name_any(), format!("web-{hash}"));
    assert!(
        hash.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
    );
    assert_eq!(
        annotation(&rs1, "deployment.kubernetes.io/revision").as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(&rs1, "kubernetes.io/change-cause").as_deref(),
        Some("first")
    );
    assert_eq!(
        annotation(&rs1, "deployment.kubernetes.io/desired-replicas").as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(&rs1, "deployment.kubernetes.io/max-replicas").as_deref(),
        Some("4")
    );
    let sel = rs1
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(sel.get("pod-template-hash"), Some(&hash));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let msg = format!("Scaled up replica set web-{hash} from 0 to 3");
    wait_for(30, "scaling event", || async {
        let l = events.list(&ListParams::default()).await.ok()?;
        l.items
            .iter()
            .any(|e| e.note.as_deref() == Some(msg.as_str()))
            .then_some(())
    })
    .await;

    // Rolling update: never more than 4 pods wanted, never fewer than 3 available.
    set_image(&deps, "web", "nginx:2").await;
    wait_for(30, "rollout 2", || async {
        let rs = replica_sets(&client, "web").await;
        let total: i32 = rs.iter().map(spec_replicas).sum();
        assert!(total <= 4, "maxSurge 1 exceeded: {total}");
        let avail: i32 = rs
            .iter()
            .filter_map(|r| r.status.as_ref()?.available_replicas)
            .sum();
        assert!(
            avail >= 3 || rs.len() < 2,
            "maxUnavailable 0 violated: {avail}"
        );
        rolled_out(&deps, "web", 3).await
    })
    .await;
    let rs = replica_sets(&client, "web").await;
    assert_eq!(rs.len(), 2);
    let old = rs.iter().find(|r| r.name_any() == rs1.name_any()).unwrap();
    assert_eq!(spec_replicas(old), 0);
    let new = rs.iter().find(|r| r.name_any() != rs1.name_any()).unwrap();
    assert_eq!(
        annotation(new, "deployment.kubernetes.io/revision").as_deref(),
        Some("2")
    );

    // Undo as kubectl does: patch the old template back; the old RS is reused.
    set_image(&deps, "web", "nginx:1").await;
    wait_for(30, "undo", || async {
        let d = rolled_out(&deps, "web", 3).await?;
        let rs = replica_sets(&client, "web").await;
        let back = rs.iter().find(|r| r.name_any() == rs1.name_any())?;
        (spec_replicas(back) == 3
            && annotation(back, "deployment.kubernetes.io/revision").as_deref() == Some("3")
            && annotation(back, "deployment.kubernetes.io/revision-history").as_deref()
                == Some("1")
            && d.annotations()
                .get("deployment.kubernetes.io/revision")
                .map(String::as_str)
                == Some("3"))
        .then_some(())
    })
    .await;
    assert_eq!(
        replica_sets(&client, "web").await.len(),
        2,
        "no third ReplicaSet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreate_scales_old_to_zero_before_creating_new() {
    let (_s, client) = start().await;
    let _kubelet = kubelet(client.clone());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deps.create(
        &PostParams::default(),
        &deploy_manifest("rec", 2, json!({"type": "Recreate"})),
    )
    .await
    .unwrap();
    wait_for(30, "rollout 1", || rolled_out(&deps, "rec", 2)).await;
    set_image(&deps, "rec", "nginx:2").await;
    wait_for(30, "recreate", || async {
        let rs = replica_sets(&client, "rec").await;
        let busy = rs.iter().filter(|r| spec_replicas(r) > 0).count();
        assert!(busy <= 1, "old and new ReplicaSets both scaled up");
        let d = rolled_out(&deps, "rec", 2).await?;
        (rs.len() == 2 && d.status?.updated_replicas == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_deployment_scales_but_does_not_roll_out() {
    let (_s, client) = start().await;
    let _kubelet = kubelet(client.clone());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deps.create(
        &PostParams::default(),
        &deploy_manifest("p", 2, json!({"type": "RollingUpdate"})),
    )
    .await
    .unwrap();
    wait_for(30, "rollout 1", || rolled_out(&deps, "p", 2)).await;
    deps.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": true, "replicas": 4}})),
    )
    .await
    .unwrap();
    set_image(&deps, "p", "nginx:2").await;
    wait_for(30, "paused condition and scale", || async {
        let d = deps.get("p").await.ok()?;
        let paused = d
            .status?
            .conditions?
            .iter()
            .any(|c| c.reason.as_deref() == Some("DeploymentPaused"));
        let rs = replica_sets(&client, "p").await;
        (paused && rs.len() == 1 && spec_replicas(&rs[0]) == 4).then_some(())
    })
    .await;
    deps.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    wait_for(30, "resumed rollout", || async {
        rolled_out(&deps, "p", 4).await?;
        let rs = replica_sets(&client, "p").await;
        (rs.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_replica_sets_beyond_history_limit_are_deleted() {
    let (_s, client) = start().await;
    let _kubelet = kubelet(client.clone());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let mut d = deploy_manifest("h", 1, json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    deps.create(&PostParams::default(), &d).await.unwrap();
    for v in 2..=4 {
        wait_for(30, "rollout", || rolled_out(&deps, "h", 1)).await;
        set_image(&deps, "h", &format!("nginx:{v}")).await;
    }
    wait_for(30, "history trimmed", || async {
        rolled_out(&deps, "h", 1).await?;
        let rs = replica_sets(&client, "h").await;
        (rs.len() == 2).then_some(rs)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_controller_keeps_its_pods() {
    let (_s, client) = start().await;
    let rcs: Api<k8s_openapi::api::core::v1::ReplicationController> =
        Api::namespaced(client.clone(), NS);
    let rc = serde_json::from_value(json!({
        "metadata": {"name": "rc"},
        "spec": {"replicas": 2, "selector": {"app": "rc"},
            "template": {"metadata": {"labels": {"app": "rc"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}
    }))
    .unwrap();
    rcs.create(&PostParams::default(), &rc).await.unwrap();
    wait_for(30, "rc pods and status", || async {
        let l = active_pods(&client, "app=rc").await;
        let owned = l.iter().all(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.kind == "ReplicationController" && r.controller == Some(true))
        });
        let st = rcs.get("rc").await.ok()?.status?;
        (l.len() == 2 && owned && st.replicas == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stuck_rollout_exceeds_its_progress_deadline() {
    let (_s, client) = start().await;
    // No kubelet: pods never become ready.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let mut d = deploy_manifest("stuck", 1, json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    deps.create(&PostParams::default(), &d).await.unwrap();
    wait_for(30, "ProgressDeadlineExceeded", || async {
        let st = deps.get("stuck").await.ok()?.status?;
        let c = st
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Progressing")?;
        let avail = st.unavailable_replicas == Some(1);
        (c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded") && avail)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_mid_rollout_is_proportional() {
    let (_s, client) = start().await;
    let kubelet = kubelet(client.clone());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deps.create(
        &PostParams::default(),
        &deploy_manifest("prop", 4, json!({"type": "RollingUpdate"})),
    )
    .await
    .unwrap();
    wait_for(30, "rollout 1", || rolled_out(&deps, "prop", 4)).await;
    let old_name = replica_sets(&client, "prop").await[0].name_any();
    // New pods never become ready: the rollout stops at old 3 + new 2
    // (maxSurge 1, maxUnavailable 1).
    kubelet.abort();
    set_image(&deps, "prop", "nginx:2").await;
    let sizes = || async {
        let rs = replica_sets(&client, "prop").await;
        let old = rs
            .iter()
            .find(|r| r.name_any() == old_name)
            .map(spec_replicas)?;
        let new = rs
            .iter()
            .find(|r| r.name_any() != old_name)
            .map(spec_replicas)?;
        Some((old, new))
    };
    wait_for(30, "stalled rollout", || async {
        (sizes().await? == (3, 2)).then_some(())
    })
    .await;
    deps.patch(
        "prop",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 8}})),
    )
    .await
    .unwrap();
    // 8 + surge 2 = 10 pods, split 3:2 as before.
    wait_for(30, "proportional scale", || async {
        (sizes().await? == (6, 4)).then_some(())
    })
    .await;
}
