//! The Job controller, as upstream's: runs pods until `completions` succeed
//! (NonIndexed or Indexed), at most `parallelism` at a time, failing the Job
//! past `backoffLimit` or `activeDeadlineSeconds`; honours `suspend`; tracks
//! finished pods with the `batch.kubernetes.io/job-tracking` finalizer and
//! `status.uncountedTerminatedPods` so that no pod is counted twice; and
//! deletes finished Jobs after `ttlSecondsAfterFinished` (upstream's
//! ttl-after-finished controller, folded in here).
//!
//! The API server does not default `spec.selector` (upstream's Job strategy
//! does, on create); the controller does it the first time it sees the Job.

pub(crate) mod common;
mod decide;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use serde_json::json;

use crate::{Context, ControllerError};
use common::Expectations;
use controller_runtime::{Informer, Queue, key_of, owner_keys, split_key};
pub use decide::{Outcome, decide, format_indexes, parse_indexes};

/// Finalizer that keeps a finished pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Label/annotation carrying an Indexed Job pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
const UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_UID_LABEL: &str = "controller-uid";
const LEGACY_NAME_LABEL: &str = "job-name";

struct Ctl {
    client: kube::Client,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    exp: Expectations,
    rec: controller_runtime::events::Recorder,
    /// Per Job: failures seen and when the count last grew (pod backoff).
    failures: Mutex<HashMap<String, (i32, Instant)>>,
    /// Jobs whose selector defaulting was refused (warned once).
    refused: Mutex<BTreeSet<String>>,
    /// Per Job: pods already counted whose finalizer removal the pod cache
    /// may not show yet (upstream's finalizer expectations). Without this a
    /// pod cache lagging the Job cache gets a pod counted twice.
    counted: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Per Job: the resourceVersion of our last status write. A sync on a
    /// cached Job older than that would count from a stale status (and, say,
    /// create a pod for a completion already counted); it waits for the
    /// informer to bring the write back instead.
    written: Mutex<HashMap<String, i64>>,
}

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let jobs = ctx.informers.get::<Job>();
    let pods = ctx.informers.get::<Pod>();
    common::wait_ready(&jobs).await;
    common::wait_ready(&pods).await;
    let q = Queue::named("job");
    q.watch(&jobs, |j: &Job| vec![key_of(j)]);
    q.watch(&pods, |p: &Pod| owner_keys(p, "Job", true));
    let c = Arc::new(Ctl {
        client: ctx.client.clone(),
        jobs,
        pods,
        exp: Expectations::default(),
        rec: ctx.recorder("job-controller"),
        failures: Mutex::default(),
        refused: Mutex::default(),
        counted: Mutex::default(),
        written: Mutex::default(),
    });
    q.run(ctx.opts.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

/// The labels every pod of `job` carries (and its default selector uses).
fn job_labels(job: &Job) -> BTreeMap<String, String> {
    let uid = job.uid().unwrap_or_default();
    let name = job.name_any();
    [
        (UID_LABEL, uid.clone()),
        (NAME_LABEL, name.clone()),
        (LEGACY_UID_LABEL, uid),
        (LEGACY_NAME_LABEL, name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The selector a Job gets when it has none (upstream's generateSelector).
fn default_selector(job: &Job) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            [(UID_LABEL.to_string(), job.uid().unwrap_or_default())]
                .into_iter()
                .collect(),
        ),
        match_expressions: None,
    }
}

fn condition_true(job: &Job, type_: &str) -> Option<JobCondition> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
        .cloned()
}

/// Sets (or adds) a condition, keeping its transition time when unchanged.
fn set_condition(st: &mut JobStatus, type_: &str, status: &str, reason: &str, msg: &str) {
    let now = Time(common::now());
    let cs = st.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = cs.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(now.clone());
        }
        c.status = status.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(msg.to_string());
        c.last_probe_time = Some(now);
        return;
    }
    cs.push(JobCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(msg.to_string()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
}

/// A pod's completion index, if valid for `completions`.
fn pod_index(p: &Pod, completions: i32) -> Option<i32> {
    p.annotations()
        .get(INDEX_KEY)
        .or_else(|| p.labels().get(INDEX_KEY))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|i| *i >= 0 && *i < completions)
}

fn has_tracking(p: &Pod) -> bool {
    p.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

/// Whether a pod counts as failed (upstream: failed phase, or deleted
/// before succeeding).
fn pod_failed(p: &Pod) -> bool {
    common::pod_phase(p) == "Failed"
        || (p.metadata.deletion_timestamp.is_some() && common::pod_phase(p) != "Succeeded")
}

impl Ctl {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, ControllerError> {
        let (Some(ns), name) = split_key(key) else {
            return Ok(None);
        };
        let Some(cached) = self.jobs.get(Some(ns), name) else {
            self.exp.forget(key);
            self.counted_lock().remove(key);
            self.written_lock().remove(key);
            // The Job is gone: its pods must not keep the finalizer (the
            // garbage collector could never delete them).
            let orphans: Vec<Arc<Pod>> =
                self.pods
                    .list_ns(ns)
                    .into_iter()
                    .filter(|p| {
                        p.owner_references().iter().any(|r| {
                            r.kind == "Job" && r.name == name && r.controller == Some(true)
                        }) && has_tracking(p)
                    })
                    .collect();
            self.release(ns, orphans.iter().map(|p| p.as_ref())).await?;
            return Ok(None);
        };
        let job: Job = (*cached).clone();
        let cached_rv = job.resource_version().and_then(|v| v.parse::<i64>().ok());
        if let (Some(have), Some(wrote)) = (cached_rv, self.written_lock().get(key).copied())
            && have < wrote
        {
            // The informer brings our write back and re-queues the key.
            return Ok(None);
        }
        let uid = job.uid().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let pods = common::owned_pods(&self.pods, ns, &uid);
        if job.metadata.deletion_timestamp.is_some() {
            self.release(ns, pods.iter().map(|p| p.as_ref())).await?;
            return Ok(None);
        }
        let selector = match job.spec.as_ref().and_then(|s| s.selector.clone()) {
            Some(s) => s,
            None => {
                if self.default_selector(&api, &job).await {
                    // The update comes back through the informer.
                    return Ok(None);
                }
                default_selector(&job)
            }
        };
        let pods: Vec<Arc<Pod>> = pods
            .into_iter()
            .filter(|p| common::selector_matches(&selector, p.labels()))
            .collect();

        if condition_true(&job, "Complete").is_some() || condition_true(&job, "Failed").is_some() {
            self.release(ns, pods.iter().map(|p| p.as_ref())).await?;
            return self.ttl(&api, &job).await;
        }
        let spec = job.spec.clone().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let mut st = job.status.clone().unwrap_or_default();
        let old_st = st.clone();
        let unc = st.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_s: Vec<String> = unc.succeeded.unwrap_or_default();
        let mut unc_f: Vec<String> = unc.failed.unwrap_or_default();
        let mut succeeded = st.succeeded.unwrap_or(0);
        let mut failed = st.failed.unwrap_or(0);
        let mut completed: BTreeSet<i32> =
            parse_indexes(st.completed_indexes.as_deref().unwrap_or(""));
        let by_uid: HashMap<String, &Pod> = pods
            .iter()
            .map(|p| (p.uid().unwrap_or_default(), p.as_ref()))
            .collect();

        // Newly finished pods still holding the finalizer: record them as
        // uncounted first, so that a crash after removing the finalizer
        // cannot lose or double-count them.
        let mut added = false;
        let deciding = condition_true(&job, "FailureTarget").is_some()
            || condition_true(&job, "SuccessCriteriaMet").is_some();
        let mut no_count: Vec<&Pod> = Vec::new();
        let already: BTreeSet<String> = {
            let mut all = self.counted_lock();
            let set = all.entry(key.to_string()).or_default();
            // Once the cache shows a pod without the finalizer (or not at
            // all) it no longer needs remembering.
            set.retain(|u| by_uid.get(u).is_some_and(|p| has_tracking(p)));
            set.clone()
        };
        for p in &pods {
            let puid = p.uid().unwrap_or_default();
            if !has_tracking(p)
                || unc_s.contains(&puid)
                || unc_f.contains(&puid)
                || already.contains(&puid)
            {
                continue;
            }
            if common::pod_phase(p) == "Succeeded" {
                if indexed {
                    match pod_index(p, completions.unwrap_or(0)) {
                        Some(i) if !completed.contains(&i) => {
                            completed.insert(i);
                        }
                        // A second success for one index counts once.
                        _ => continue,
                    }
                }
                unc_s.push(puid);
                added = true;
            } else if pod_failed(p) {
                if deciding && common::pod_phase(p) != "Failed" {
                    // Removed because the Job already met its end: not a
                    // failure (upstream counts none once finished).
                    no_count.push(p.as_ref());
                    continue;
                }
                unc_f.push(puid);
                added = true;
            }
        }
        self.release(ns, no_count.into_iter()).await?;
        if indexed {
            st.completed_indexes = Some(format_indexes(&completed));
        }
        if added {
            st.uncounted_terminated_pods = Some(UncountedTerminatedPods {
                succeeded: Some(unc_s.clone()),
                failed: Some(unc_f.clone()),
            });
            // The status update comes back through the informer.
            self.write_status(&api, &job, &st).await?;
            return Ok(None);
        }
        // Pods recorded as uncounted: drop their finalizers, then count.
        let mut release: Vec<&Pod> = Vec::new();
        for u in unc_s.iter().chain(unc_f.iter()) {
            if let Some(p) = by_uid.get(u)
                && has_tracking(p)
            {
                release.push(p);
            }
        }
        self.release(ns, release.into_iter()).await?;
        self.counted_lock()
            .entry(key.to_string())
            .or_default()
            .extend(unc_s.iter().chain(unc_f.iter()).cloned());
        succeeded += unc_s.len() as i32;
        failed += unc_f.len() as i32;
        unc_s.clear();
        unc_f.clear();
        // Pods finished without our finalizer and never counted cannot be
        // told apart from counted ones; upstream ignores them too.

        let active: Vec<&Pod> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| common::pod_active(p))
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && !common::pod_terminal(p))
            .count() as i32;
        let ready = active.iter().filter(|p| common::pod_ready(p)).count() as i32;
        let now = common::now();
        let suspended = spec.suspend == Some(true);

        // Start time: set when the Job first runs, reset on resume.
        if suspended {
            if condition_true(&job, "Suspended").is_none() {
                set_condition(
                    &mut st,
                    "Suspended",
                    "True",
                    "JobSuspended",
                    "Job suspended",
                );
                st.start_time = None;
                self.rec.normal(&job, "Suspended", "Job suspended".into());
            }
        } else {
            if condition_true(&job, "Suspended").is_some() {
                set_condition(&mut st, "Suspended", "False", "JobResumed", "Job resumed");
                st.start_time = None;
                self.rec.normal(&job, "Resumed", "Job resumed".into());
            }
            if st.start_time.is_none() {
                st.start_time = Some(Time(now));
            }
        }
        let start = st.start_time.as_ref().map(|t| t.0);
        let outcome = decide(
            &spec,
            &decide::Counts {
                succeeded,
                failed,
                active: active.len() as i32,
                completed_indexes: completed.len() as i32,
                start,
                now,
                failure_target: condition_true(&job, "FailureTarget")
                    .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default())),
                success_met: condition_true(&job, "SuccessCriteriaMet").is_some(),
            },
        );

        let mut requeue: Option<Duration> = None;
        let key_owned = key.to_string();
        match &outcome {
            Outcome::Fail { reason, message } => {
                if condition_true(&job, "FailureTarget").is_none() {
                    set_condition(&mut st, "FailureTarget", "True", reason, message);
                    self.rec.warning(&job, reason, message.clone());
                }
                self.delete_pods(ns, &key_owned, &active, false).await?;
                if active.is_empty() && terminating == 0 {
                    set_condition(&mut st, "Failed", "True", reason, message);
                }
            }
            Outcome::Succeed => {
                if condition_true(&job, "SuccessCriteriaMet").is_none() {
                    set_condition(
                        &mut st,
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    );
                }
                self.delete_pods(ns, &key_owned, &active, false).await?;
                if active.is_empty() && terminating == 0 {
                    set_condition(
                        &mut st,
                        "Complete",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    );
                    st.completion_time = Some(Time(now));
                    self.rec.normal(&job, "Completed", "Job completed".into());
                }
            }
            Outcome::Run {
                want_active,
                deadline_in,
            } => {
                requeue = *deadline_in;
                if suspended {
                    self.delete_pods(ns, &key_owned, &active, true).await?;
                } else if self.exp.satisfied(key, |n| {
                    self.pods
                        .get(Some(ns), n)
                        .map(|p| p.metadata.deletion_timestamp.is_some())
                }) {
                    let wait = self.backoff(key, failed);
                    if let Some(w) = wait {
                        requeue = Some(requeue.map_or(w, |r| r.min(w)));
                    }
                    self.manage(
                        &job,
                        &key_owned,
                        &active,
                        *want_active,
                        indexed,
                        &completed,
                        wait.is_some(),
                    )
                    .await?;
                }
            }
        }
        st.active = Some(active.len() as i32);
        st.ready = Some(ready);
        st.terminating = Some(terminating);
        st.succeeded = Some(succeeded);
        st.failed = Some(failed);
        st.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(Vec::new()),
            failed: Some(Vec::new()),
        });
        if st != old_st {
            self.write_status(&api, &job, &st).await?;
        }
        Ok(requeue)
    }

    /// How long to wait before replacing failed pods (10 s doubling, capped
    /// at 6 min, as upstream's pod failure backoff); None when no wait.
    fn backoff(&self, key: &str, failed: i32) -> Option<Duration> {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(key.to_string()).or_insert((0, Instant::now()));
        if failed > e.0 {
            *e = (failed, Instant::now());
        }
        if failed == 0 {
            return None;
        }
        let delay = Duration::from_secs(10)
            .saturating_mul(1u32 << (failed - 1).clamp(0, 6))
            .min(Duration::from_secs(360));
        let elapsed = e.1.elapsed();
        (elapsed < delay).then(|| delay - elapsed)
    }

    /// Creates or deletes pods towards `want` active ones.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        job: &Job,
        key: &str,
        active: &[&Pod],
        want: i32,
        indexed: bool,
        completed: &BTreeSet<i32>,
        hold_creates: bool,
    ) -> Result<(), ControllerError> {
        let ns = job.namespace().unwrap_or_default();
        let have = active.len() as i32;
        if indexed {
            let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
            // Active pods by index; duplicates and completed indexes go.
            let mut by_index: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
            let mut excess: Vec<&Pod> = Vec::new();
            for p in active {
                match pod_index(p, completions) {
                    Some(i) if !completed.contains(&i) => by_index.entry(i).or_default().push(p),
                    _ => excess.push(p),
                }
            }
            for v in by_index.values_mut() {
                while v.len() > 1 {
                    excess.extend(v.pop());
                }
            }
            while by_index.len() as i32 > want {
                if let Some((_, v)) = by_index.pop_last() {
                    excess.extend(v);
                }
            }
            self.delete_pods(&ns, key, &excess, true).await?;
            if hold_creates {
                return Ok(());
            }
            let mut room = want - by_index.len() as i32;
            for i in 0..completions {
                if room <= 0 {
                    break;
                }
                if completed.contains(&i) || by_index.contains_key(&i) {
                    continue;
                }
                self.create_pod(job, key, Some(i)).await?;
                room -= 1;
            }
            return Ok(());
        }
        if have > want {
            // Delete not-ready (then newest) pods first, as upstream ranks.
            let mut v: Vec<&Pod> = active.to_vec();
            v.sort_by_key(|p| {
                (
                    common::pod_ready(p),
                    std::cmp::Reverse(p.creation_timestamp().map(|t| t.0)),
                )
            });
            v.truncate((have - want) as usize);
            self.delete_pods(&ns, key, &v, true).await?;
        } else if !hold_creates {
            for _ in have..want {
                self.create_pod(job, key, None).await?;
            }
        }
        Ok(())
    }

    async fn create_pod(
        &self,
        job: &Job,
        key: &str,
        index: Option<i32>,
    ) -> Result<(), ControllerError> {
        let ns = job.namespace().unwrap_or_default();
        let pod = build_pod(job, index)?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                self.exp.created(key, &p.name_any());
                self.rec.normal(
                    job,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
                Ok(())
            }
            Err(e) => {
                self.rec
                    .warning(job, "FailedCreate", format!("Error creating: {e}"));
                Err(e.into())
            }
        }
    }

    /// Deletes pods. With `release`, their tracking finalizer goes first so
    /// they are never counted as failed: excess pods and pods of a suspended
    /// Job are the controller's own doing (upstream's `deleteJobPods`);
    /// without it (`deleteActivePods`), a Job that failed counts them.
    async fn delete_pods(
        &self,
        ns: &str,
        key: &str,
        pods: &[&Pod],
        release: bool,
    ) -> Result<(), ControllerError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for p in pods {
            let name = p.name_any();
            if release {
                self.release(ns, std::iter::once(*p)).await?;
            }
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    self.exp.deleted(key, &name);
                    if let Some(job) = self.jobs.get(Some(ns), split_key(key).1) {
                        self.rec.normal(
                            job.as_ref(),
                            "SuccessfulDelete",
                            format!("Deleted pod: {name}"),
                        );
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn written_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counted_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.counted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the tracking finalizer from pods.
    async fn release<'a>(
        &self,
        ns: &str,
        pods: impl Iterator<Item = &'a Pod>,
    ) -> Result<(), ControllerError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for p in pods.filter(|p| has_tracking(p)) {
            let fins: Vec<&String> = p
                .finalizers()
                .iter()
                .filter(|f| *f != TRACKING_FINALIZER)
                .collect();
            let patch =
                json!({"metadata": {"finalizers": fins, "resourceVersion": p.resource_version()}});
            match api
                .patch(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes the status (optimistic concurrency on the cached version:
    /// a stale cache gets a 409 and the key is retried).
    async fn write_status(
        &self,
        api: &Api<Job>,
        job: &Job,
        st: &JobStatus,
    ) -> Result<(), ControllerError> {
        let mut j = job.clone();
        j.status = Some(st.clone());
        let out = api
            .replace_status(&job.name_any(), &PostParams::default(), &j)
            .await?;
        if let Some(rv) = out.resource_version().and_then(|v| v.parse::<i64>().ok()) {
            self.written_lock().insert(key_of(job), rv);
        }
        Ok(())
    }

    /// Sets the default selector and template labels. Returns whether the
    /// Job was changed.
    async fn default_selector(&self, api: &Api<Job>, job: &Job) -> bool {
        let key = key_of(job);
        if self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return false;
        }
        let patch = json!({
            "metadata": {"resourceVersion": job.resource_version()},
            "spec": {
                "selector": default_selector(job),
                "template": {"metadata": {"labels": job_labels(job)}},
            }
        });
        match api
            .patch(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 409 => true,
            Err(e) => {
                tracing::warn!(job = %key, error = %e, "API server refused the default Job selector; using it in memory");
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key);
                false
            }
        }
    }

    /// Deletes a finished Job once its TTL has passed.
    async fn ttl(&self, api: &Api<Job>, job: &Job) -> Result<Option<Duration>, ControllerError> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        let finished = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref().map(|t| t.0))
            .or_else(|| {
                condition_true(job, "Complete")
                    .or_else(|| condition_true(job, "Failed"))
                    .and_then(|c| c.last_transition_time.map(|t| t.0))
            })
            .unwrap_or_else(common::now);
        let left = finished.as_second() + i64::from(ttl) - common::now().as_second();
        if left > 0 {
            return Ok(Some(Duration::from_secs(left as u64)));
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: job.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&job.name_any(), &dp).await {
            Ok(_) => {
                tracing::info!(job = %key_of(job), "deleted finished job after its TTL");
                Ok(None)
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The pod a Job runs (for one index when Indexed).
pub fn build_pod(job: &Job, index: Option<i32>) -> Result<Pod, ControllerError> {
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| ControllerError::Invalid("job has no spec".into()))?;
    let mut tpl = spec.template.clone();
    let mut meta = tpl.metadata.take().unwrap_or_default();
    let name = job.name_any();
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(job_labels(job));
    if let Some(i) = index {
        labels.insert(INDEX_KEY.to_string(), i.to_string());
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(INDEX_KEY.to_string(), i.to_string());
    }
    meta.name = None;
    meta.generate_name = Some(match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    });
    meta.namespace = job.namespace();
    meta.owner_references = Some(vec![common::controller_ref(job)]);
    meta.finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.to_string());
    let mut pspec = tpl
        .spec
        .take()
        .ok_or_else(|| ControllerError::Invalid("job template has no pod spec".into()))?;
    if index.is_some() {
        if pspec.hostname.is_none() {
            pspec.hostname = Some(format!("{name}-{}", index.unwrap_or(0)));
        }
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                }),
                ..Default::default()
            }),
        };
        let add = |c: &mut k8s_openapi::api::core::v1::Container| {
            let v = c.env.get_or_insert_with(Vec::new);
            if !v.iter().any(|e| e.name == env.name) {
                v.push(env.clone());
            }
        };
        pspec.containers.iter_mut().for_each(add);
        pspec.init_containers.iter_mut().flatten().for_each(add);
    }
    Ok(Pod {
        metadata: meta,
        spec: Some(pspec),
        status: None,
    })
}
