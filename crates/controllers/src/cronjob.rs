//! The CronJob controller, as upstream's (cronjob_controllerv2): creates a
//! Job per schedule time (named `<cronjob>-<minutes since epoch>`), honours
//! `timeZone`, `startingDeadlineSeconds`, `concurrencyPolicy`, `suspend`,
//! keeps `status.active`, `lastScheduleTime`, `lastSuccessfulTime`, prunes
//! finished Jobs past the history limits, and requeues each CronJob for
//! exactly its next schedule time instead of polling.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};

use crate::job::common;
use crate::{Context, ControllerError};
use controller_runtime::{Informer, Queue, key_of, owner_keys, split_key};
pub use schedule::{Due, Schedule, due};

/// Annotation with the schedule time a Job was created for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Where the controller gets the time (injectable for tests).
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Timestamp;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

struct Ctl {
    client: kube::Client,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    rec: controller_runtime::events::Recorder,
    clock: Arc<dyn Clock>,
}

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    run_with_clock(ctx, Arc::new(SystemClock)).await
}

/// Runs the controller with a given clock.
pub async fn run_with_clock(ctx: Arc<Context>, clock: Arc<dyn Clock>) {
    let cronjobs = ctx.informers.get::<CronJob>();
    let jobs = ctx.informers.get::<Job>();
    common::wait_ready(&cronjobs).await;
    common::wait_ready(&jobs).await;
    let q = Queue::named("cronjob");
    q.watch(&cronjobs, |c: &CronJob| vec![key_of(c)]);
    q.watch(&jobs, |j: &Job| owner_keys(j, "CronJob", true));
    let c = Arc::new(Ctl {
        client: ctx.client.clone(),
        cronjobs,
        jobs,
        rec: ctx.recorder("cronjob-controller"),
        clock,
    });
    q.run(ctx.opts.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

/// Whether a Job finished, and if so whether it completed.
fn finished(j: &Job) -> Option<bool> {
    let cs = j.status.as_ref()?.conditions.as_ref()?;
    cs.iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(true),
            "Failed" => Some(false),
            _ => None,
        })
}

/// The name of the Job for one schedule time.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

fn until(t: Timestamp, now: Timestamp) -> Duration {
    // A little past the schedule time, as upstream (nextScheduleTimeDuration).
    let ms = (t.as_millisecond() - now.as_millisecond()).max(0) as u64;
    Duration::from_millis(ms + 100)
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        field_path: None,
    }
}

impl Ctl {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, ControllerError> {
        let (Some(ns), name) = split_key(key) else {
            return Ok(None);
        };
        let Some(cached) = self.cronjobs.get(Some(ns), name) else {
            return Ok(None);
        };
        let cj: CronJob = (*cached).clone();
        let uid = cj.uid().unwrap_or_default();
        let api: Api<CronJob> = Api::namespaced(self.client.clone(), ns);
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let children: Vec<Arc<Job>> = self
            .jobs
            .list_ns(ns)
            .into_iter()
            .filter(|j| common::controlled_by(j.as_ref(), &uid))
            .collect();
        let mut st = cj.status.clone().unwrap_or_default();
        let old = st.clone();

        // status.active: drop finished or vanished Jobs, add running ones.
        let mut active: Vec<ObjectReference> = Vec::new();
        for j in &children {
            match finished(j) {
                None if j.metadata.deletion_timestamp.is_none() => active.push(job_ref(j)),
                Some(ok) => {
                    let was_active = st.active.iter().flatten().any(|r| r.uid == j.metadata.uid);
                    if was_active {
                        self.rec.normal(
                            &cj,
                            "SawCompletedJob",
                            format!(
                                "Saw completed job: {}, condition: {}",
                                j.name_any(),
                                if ok { "Complete" } else { "Failed" }
                            ),
                        );
                    }
                    if ok {
                        let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                        if let Some(t) = done
                            && st.last_successful_time.as_ref().is_none_or(|l| l.0 < t.0)
                        {
                            st.last_successful_time = Some(t);
                        }
                    }
                }
                None => {}
            }
        }
        // Listed as active but not cached: the cache may lag our create;
        // ask the API server before dropping it (as upstream does).
        for r in st.active.iter().flatten() {
            let cached = children.iter().any(|j| j.metadata.uid == r.uid);
            let Some(n) = r.name.as_deref() else { continue };
            if cached {
                continue;
            }
            match jobs_api.get_opt(n).await? {
                Some(j) if j.metadata.uid == r.uid && finished(&j).is_none() => {
                    active.push(r.clone())
                }
                _ => {}
            }
        }
        active.sort_by(|a, b| a.name.cmp(&b.name));
        st.active = (!active.is_empty()).then_some(active);

        let requeue = self.schedule(&cj, &children, &mut st, &jobs_api).await?;
        self.prune(&cj, &children, &jobs_api).await;
        if st != old {
            let mut c = cj.clone();
            c.status = Some(st);
            api.replace_status(&cj.name_any(), &PostParams::default(), &c)
                .await?;
        }
        Ok(requeue)
    }

    /// Creates the Job due now, if any; returns when to look again.
    async fn schedule(
        &self,
        cj: &CronJob,
        children: &[Arc<Job>],
        st: &mut k8s_openapi::api::batch::v1::CronJobStatus,
        jobs_api: &Api<Job>,
    ) -> Result<Option<Duration>, ControllerError> {
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(spec) = cj.spec.as_ref() else {
            return Ok(None);
        };
        let tz = match spec.time_zone.as_deref() {
            None => TimeZone::system(),
            Some(name) => match TimeZone::get(name) {
                Ok(tz) => tz,
                Err(e) => {
                    self.rec.warning(
                        cj,
                        "UnknownTimeZone",
                        format!("invalid timeZone: {name:?}: {e}"),
                    );
                    return Ok(None);
                }
            },
        };
        if spec.suspend == Some(true) {
            return Ok(None);
        }
        let sched = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.rec.warning(cj, "InvalidSchedule", e.to_string());
                return Ok(None);
            }
        };
        let now = self.clock.now();
        let mut earliest = st
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| cj.creation_timestamp().map(|t| t.0))
            .unwrap_or(now);
        if let Some(sds) = spec.starting_deadline_seconds {
            let floor = now
                .checked_sub(jiff::SignedDuration::from_secs(sds))
                .unwrap_or(now);
            earliest = earliest.max(floor);
        }
        let d = due(&sched, &tz, earliest, now);
        let next = d.next.map(|n| until(n, now));
        let Some(scheduled) = d.most_recent else {
            return Ok(next);
        };
        if d.missed > 100 {
            self.rec.warning(
                cj,
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
            );
        }
        if let Some(sds) = spec.starting_deadline_seconds
            && scheduled.as_second() + sds < now.as_second()
        {
            self.rec.warning(
                cj,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {scheduled}"),
            );
            return Ok(next);
        }
        let name = job_name(&cj.name_any(), scheduled);
        let already = children.iter().any(|j| j.name_any() == name)
            || st
                .last_schedule_time
                .as_ref()
                .is_some_and(|t| t.0 >= scheduled);
        if already {
            return Ok(next);
        }
        let running: Vec<ObjectReference> = st.active.clone().unwrap_or_default();
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !running.is_empty() => {
                tracing::debug!(cronjob = %key_of(cj), "not starting job: previous still active (Forbid)");
                // Look again when the running Job finishes (its update
                // requeues us) or at the next schedule time.
                return Ok(next);
            }
            Some("Replace") => {
                for r in &running {
                    let Some(n) = r.name.as_deref() else { continue };
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..Default::default()
                    };
                    match jobs_api.delete(n, &dp).await {
                        Ok(_) => {
                            self.rec
                                .normal(cj, "SuccessfulDelete", format!("Deleted job {n}"))
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                st.active = None;
            }
            _ => {}
        }
        let job = build_job(cj, &name, scheduled, &tz);
        let created = match jobs_api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.rec
                    .normal(cj, "SuccessfulCreate", format!("Created job {name}"));
                j
            }
            Err(kube::Error::Api(e)) if e.code == 409 => match jobs_api.get(&name).await {
                // Ours already (the cache lagged): nothing more to do.
                Ok(j) if common::controlled_by(&j, &cj.uid().unwrap_or_default()) => j,
                _ => {
                    self.rec.warning(
                        cj,
                        "FailedCreate",
                        format!("Error creating job: {name} already exists"),
                    );
                    return Ok(next);
                }
            },
            Err(e) => {
                self.rec
                    .warning(cj, "FailedCreate", format!("Error creating job: {e}"));
                return Err(e.into());
            }
        };
        let mut active = st.active.take().unwrap_or_default();
        if !active.iter().any(|r| r.uid == created.metadata.uid) {
            active.push(job_ref(&created));
        }
        st.active = Some(active);
        st.last_schedule_time = Some(Time(scheduled));
        Ok(next)
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn prune(&self, cj: &CronJob, children: &[Arc<Job>], jobs_api: &Api<Job>) {
        let spec = cj.spec.clone().unwrap_or_default();
        for (ok, limit) in [
            (true, spec.successful_jobs_history_limit.unwrap_or(3)),
            (false, spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut done: Vec<&Arc<Job>> = children
                .iter()
                .filter(|j| finished(j) == Some(ok) && j.metadata.deletion_timestamp.is_none())
                .collect();
            if done.len() <= limit.max(0) as usize {
                continue;
            }
            done.sort_by_key(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref().map(|t| t.0))
                    .or_else(|| j.creation_timestamp().map(|t| t.0))
            });
            let extra = done.len() - limit.max(0) as usize;
            for j in done.into_iter().take(extra) {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                };
                match jobs_api.delete(&j.name_any(), &dp).await {
                    Ok(_) => self.rec.normal(
                        cj,
                        "SuccessfulDelete",
                        format!("Deleted job {}", j.name_any()),
                    ),
                    Err(e) => {
                        tracing::debug!(job = %j.name_any(), error = %e, "pruning finished job")
                    }
                }
            }
        }
    }
}

/// The Job a CronJob runs for one schedule time.
pub fn build_job(cj: &CronJob, name: &str, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let tpl = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = tpl.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let stamp = scheduled
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    // RFC 3339 spells UTC as "Z".
    let stamp = stamp.replace("+00:00", "Z");
    annotations.insert(SCHEDULED_TIMESTAMP.to_string(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![common::controller_ref(cj)]),
            ..Default::default()
        },
        spec: tpl.spec,
        status: None,
    }
}
