//! CronJob controller against a real API server, with a clock running ahead
//! of real time so that a schedule time passes at once.

use apiserver::testing::wait_for;
use std::sync::Arc;
use std::time::Duration;

use apiserver::testing::TestServer;
use controllers::cronjob::{Clock, SCHEDULED_TIMESTAMP};
use controllers::{Context, Options};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Real time plus a fixed offset.
struct Ahead(i64);

impl Clock for Ahead {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_minute_cronjob_creates_a_job_and_tracks_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    tokio::spawn(controllers::cronjob::run_with_clock(
        Context::new(client.clone(), Options::default()),
        Arc::new(Ahead(65)),
    ));
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "tick", "namespace": "default"},
        "spec": {
            "schedule": "*/1 * * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"labels": {"app": "tick"}},
                "spec": {"template": {"spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [{"name": "c", "image": "busybox"}]
                }}}
            }
        }
    }))
    .unwrap();
    let cj = cjs.create(&PostParams::default(), &cj).await.unwrap();

    let job = wait_for(15, "a job", || async {
        jobs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    // Named <cronjob>-<scheduled minute since epoch>, annotated, owned.
    let stamp = job.annotations()[SCHEDULED_TIMESTAMP].clone();
    let scheduled: jiff::Timestamp = stamp.parse().unwrap();
    assert_eq!(scheduled.as_second() % 60, 0);
    assert_eq!(
        job.name_any(),
        format!("tick-{}", scheduled.as_second() / 60)
    );
    assert_eq!(job.labels().get("app").map(String::as_str), Some("tick"));
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("CronJob", cj.uid().unwrap().as_str(), Some(true))
    );
    assert!(scheduled > cj.creation_timestamp().unwrap().0);

    let st = wait_for(10, "status.active", || async {
        let st = cjs.get("tick").await.unwrap().status?;
        st.active.as_ref().filter(|a| !a.is_empty())?;
        Some(st)
    })
    .await;
    assert_eq!(
        st.active.unwrap()[0].name.as_deref(),
        Some(job.name_any().as_str())
    );
    assert_eq!(st.last_schedule_time.unwrap().0, scheduled);

    // Forbid: while the job runs, no second job even as time passes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    // The job completes: it leaves status.active; lastSuccessfulTime is set.
    let now = jiff::Timestamp::now().to_string();
    jobs.patch_status(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "startTime": now, "completionTime": now, "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "lastTransitionTime": now}
            ]
        }})),
    )
    .await
    .unwrap();
    wait_for(10, "completed job leaves status.active", || async {
        let st = cjs.get("tick").await.unwrap().status?;
        // (With the clock ahead, the next minute's job may already run.)
        let gone = st
            .active
            .iter()
            .flatten()
            .all(|r| r.name.as_deref() != Some(job.name_any().as_str()));
        (gone && st.last_successful_time.is_some()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_cronjob_creates_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    tokio::spawn(controllers::cronjob::run_with_clock(
        Context::new(client.clone(), Options::default()),
        Arc::new(Ahead(125)),
    ));
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "off", "namespace": "default"},
        "spec": {
            "schedule": "@hourly", "suspend": true,
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]
            }}}}
        }
    }))
    .unwrap();
    cjs.create(&PostParams::default(), &cj).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        jobs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
