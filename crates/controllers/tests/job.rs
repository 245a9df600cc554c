//! Job controller against a real API server; the test plays the kubelet by
//! patching pod status.

use apiserver::testing::wait_for;

use apiserver::testing::TestServer;
use controllers::{Context, Options};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn setup() -> (TestServer, kube::Client) {
    let server = TestServer::start().await;
    let client = server.client().await;
    tokio::spawn(controllers::job::run(Context::new(
        client.clone(),
        Options::default(),
    )));
    (server, client)
}

fn job(name: &str, extra: serde_json::Value) -> Job {
    let mut v = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]
            }}
        }
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            spec.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).unwrap()
}

/// Ends a pod as the kubelet would: Succeeded (exit 0) or Failed (exit 1).
async fn finish(pods: &Api<Pod>, name: &str, ok: bool) {
    let code = if ok { 0 } else { 1 };
    let st = json!({"status": {
        "phase": if ok { "Succeeded" } else { "Failed" },
        "containerStatuses": [{
            "name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": if ok { "Completed" } else { "Error" }}}
        }]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
}

fn running(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    ) && p.metadata.deletion_timestamp.is_none()
}

fn job_pods(all: Vec<Pod>, job: &str) -> Vec<Pod> {
    all.into_iter()
        .filter(|p| {
            p.labels()
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str)
                == Some(job)
        })
        .collect()
}

fn cond(j: &Job, t: &str) -> Option<String> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_completes_three_pods_at_most_two_at_a_time() {
    let (_s, client) = setup().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("pi", json!({"completions": 3, "parallelism": 2})),
    )
    .await
    .unwrap();

    // The controller defaults the selector and template labels.
    let j = wait_for(10, "defaulted selector", || async {
        let j = jobs.get("pi").await.unwrap();
        j.spec.as_ref()?.selector.as_ref()?;
        Some(j)
    })
    .await;
    let uid = j.uid().unwrap();
    let sel = j.spec.as_ref().unwrap().selector.clone().unwrap();
    assert_eq!(
        sel.match_labels
            .unwrap()
            .get("batch.kubernetes.io/controller-uid"),
        Some(&uid)
    );

    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    wait_for(30, "job Complete", || {
        let (jobs, pods, uid) = (jobs.clone(), pods.clone(), uid.clone());
        let finished = finished.clone();
        async move {
            let all = job_pods(pods.list(&ListParams::default()).await.unwrap().items, "pi");
            let active: Vec<&Pod> = all.iter().filter(|p| running(p)).collect();
            assert!(
                active.len() <= 2,
                "parallelism 2 exceeded: {}",
                active.len()
            );
            for p in &all {
                assert_eq!(
                    p.labels().get("batch.kubernetes.io/controller-uid"),
                    Some(&uid)
                );
                assert_eq!(p.labels().get("controller-uid"), Some(&uid));
                assert_eq!(p.labels().get("job-name").map(String::as_str), Some("pi"));
            }
            // Finish one running pod per round.
            if let Some(p) = active.first() {
                finish(&pods, &p.name_any(), true).await;
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let j = jobs.get("pi").await.unwrap();
            cond(&j, "Complete").map(|_| j)
        }
    })
    .await;
    assert_eq!(
        finished.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "exactly three pods were run"
    );
    let j = wait_for(10, "final counts", || async {
        let j = jobs.get("pi").await.unwrap();
        (j.status.as_ref()?.succeeded == Some(3)).then_some(j)
    })
    .await;
    let st = j.status.clone().unwrap();
    assert_eq!(st.active, Some(0));
    assert_eq!(st.failed, Some(0));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert_eq!(
        cond(&j, "SuccessCriteriaMet").as_deref(),
        Some("CompletionsReached")
    );
    // Every tracking finalizer is gone once counted.
    let all = job_pods(pods.list(&ListParams::default()).await.unwrap().items, "pi");
    assert_eq!(all.len(), 3);
    assert!(
        all.iter().all(|p| p.finalizers().is_empty()),
        "{:?}",
        all.iter()
            .map(|p| p.finalizers().to_vec())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_fails_past_backoff_limit() {
    let (_s, client) = setup().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("bad", json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    // Each attempt fails; the second failure exceeds backoffLimit 1 (the
    // replacement waits out the 10 s pod backoff).
    let j = wait_for(40, "job Failed", || {
        let (jobs, pods) = (jobs.clone(), pods.clone());
        async move {
            let all = job_pods(
                pods.list(&ListParams::default()).await.unwrap().items,
                "bad",
            );
            assert!(all.len() <= 2, "no pod after the limit: {}", all.len());
            for p in all.iter().filter(|p| running(p)) {
                finish(&pods, &p.name_any(), false).await;
            }
            let j = jobs.get("bad").await.unwrap();
            cond(&j, "Failed").map(|r| (j, r))
        }
    })
    .await;
    assert_eq!(j.1, "BackoffLimitExceeded");
    assert_eq!(
        cond(&j.0, "FailureTarget").as_deref(),
        Some("BackoffLimitExceeded")
    );
    let st = j.0.status.unwrap();
    assert_eq!(st.failed, Some(2));
    assert_eq!(st.succeeded, Some(0));
    assert!(st.completion_time.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_runs_each_index_once_and_ttl_deletes_it() {
    let (_s, client) = setup().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "ttlSecondsAfterFinished": 1}),
        ),
    )
    .await
    .unwrap();
    let all = wait_for(10, "three indexed pods", || async {
        let all = job_pods(
            pods.list(&ListParams::default()).await.unwrap().items,
            "idx",
        );
        (all.len() == 3).then_some(all)
    })
    .await;
    let mut idx: Vec<String> = Vec::new();
    for p in &all {
        let i = p.annotations()["batch.kubernetes.io/job-completion-index"].clone();
        assert_eq!(p.labels()["batch.kubernetes.io/job-completion-index"], i);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        let env = spec.containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
        assert!(
            p.finalizers()
                .iter()
                .any(|f| f == "batch.kubernetes.io/job-tracking")
        );
        assert!(p.name_any().starts_with(&format!("idx-{i}-")));
        idx.push(i);
    }
    idx.sort();
    assert_eq!(idx, ["0", "1", "2"]);
    for p in &all {
        finish(&pods, &p.name_any(), true).await;
    }
    let j = wait_for(10, "indexed job Complete", || async {
        let j = jobs.get("idx").await.ok()?;
        cond(&j, "Complete").map(|_| j)
    })
    .await;
    let st = j.status.unwrap();
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(st.succeeded, Some(3));
    // ttlSecondsAfterFinished: 1 — the Job goes away.
    wait_for(10, "job deleted after TTL", || async {
        jobs.get_opt("idx").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_job_runs_nothing_until_resumed() {
    let (_s, client) = setup().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("sus", json!({"suspend": true})),
    )
    .await
    .unwrap();
    wait_for(10, "Suspended condition", || async {
        cond(&jobs.get("sus").await.unwrap(), "Suspended")
    })
    .await;
    assert!(
        job_pods(
            pods.list(&ListParams::default()).await.unwrap().items,
            "sus"
        )
        .is_empty()
    );
    jobs.patch(
        "sus",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    wait_for(10, "pod after resume", || async {
        let n = job_pods(
            pods.list(&ListParams::default()).await.unwrap().items,
            "sus",
        )
        .len();
        (n == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_releases_its_pods_finalizers() {
    let (_s, client) = setup().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(&PostParams::default(), &job("gone", json!({})))
        .await
        .unwrap();
    let p = wait_for(10, "a pod", || async {
        job_pods(
            pods.list(&ListParams::default()).await.unwrap().items,
            "gone",
        )
        .into_iter()
        .next()
    })
    .await;
    assert!(!p.finalizers().is_empty());
    jobs.delete("gone", &Default::default()).await.unwrap();
    wait_for(10, "finalizer released", || async {
        let p = pods.get_opt(&p.name_any()).await.unwrap();
        p.is_none_or(|p| p.finalizers().is_empty()).then_some(())
    })
    .await;
}

/// Pods the controller removes itself (parallelism lowered, Job suspended)
/// are not failures: upstream drops their tracking finalizer before
/// deleting them, so `status.failed` stays 0 and no pod lingers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_removed_by_the_controller_are_not_failures() {
    let (_s, client) = setup().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("wide", json!({"completions": 10, "parallelism": 3})),
    )
    .await
    .unwrap();
    let list = || async {
        job_pods(
            pods.list(&ListParams::default()).await.unwrap().items,
            "wide",
        )
    };
    wait_for(10, "three pods", || async {
        (list().await.len() == 3).then_some(())
    })
    .await;

    jobs.patch(
        "wide",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"parallelism": 1}})),
    )
    .await
    .unwrap();
    // Without a kubelet nothing holds the pods once their finalizer is gone.
    wait_for(10, "one pod left", || async {
        (list().await.len() == 1).then_some(())
    })
    .await;
    let j = wait_for(10, "active 1", || async {
        let j = jobs.get("wide").await.unwrap();
        (j.status.as_ref()?.active == Some(1)).then_some(j)
    })
    .await;
    assert_eq!(
        j.status.as_ref().unwrap().failed.unwrap_or(0),
        0,
        "{:?}",
        j.status
    );

    jobs.patch(
        "wide",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    wait_for(10, "no pods while suspended", || async {
        list().await.is_empty().then_some(())
    })
    .await;
    let j = wait_for(10, "active 0", || async {
        let j = jobs.get("wide").await.unwrap();
        (j.status.as_ref()?.active == Some(0)).then_some(j)
    })
    .await;
    let st = j.status.unwrap();
    assert_eq!(st.failed.unwrap_or(0), 0, "{st:?}");
    assert_eq!(st.succeeded.unwrap_or(0), 0, "{st:?}");
}
