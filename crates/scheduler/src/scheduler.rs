//! The running scheduler: informer events feed the cache and the queue; one
//! loop makes decisions; bindings, status updates and evictions run
//! concurrently in the background.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use controller_runtime::Change;
use controller_runtime::events::Recorder;
use controller_runtime::{Informer, Informers, key_of};
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::Options;
use crate::cache::Cache;
use crate::framework::fit_message;
use crate::nodeinfo::PodInfo;
use crate::plugins::CycleState;
use crate::plugins::interpodaffinity::NamespaceLabels;
use crate::preemption;
use crate::queue::{Popped, QueueConfig, SchedulingQueue};
use crate::schedule::{Picker, schedule};

/// Binding requests in flight at most.
const MAX_BINDINGS_IN_FLIGHT: usize = 512;

/// Shared scheduler state.
pub struct Scheduler {
    client: kube::Client,
    opts: Options,
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
    namespaces: Mutex<Arc<NamespaceLabels>>,
    pods: Informer<Pod>,
    priority_classes: Informer<PriorityClass>,
    pdbs: Informer<PodDisruptionBudget>,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    recorder: Recorder,
    bindings: tokio::sync::Semaphore,
}

/// What happened to a pod, as far as unschedulable pods care.
enum Moved {
    /// Resources or ports were freed: anything may fit now.
    Freed,
    /// A pod was added to a node: only affinity/spread rejections may change.
    Added,
}

impl Scheduler {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts informers and runs the scheduling loop forever.
    pub async fn start(client: kube::Client, opts: Options) {
        let informers = Informers::new(client.clone());
        let pods = informers.get::<Pod>();
        let nodes = informers.get::<Node>();
        let pcs = informers.get::<PriorityClass>();
        let nss = informers.get::<Namespace>();
        let pdbs = informers.get::<PodDisruptionBudget>();
        let claims = informers.get::<PersistentVolumeClaim>();
        let volumes = informers.get::<PersistentVolume>();
        let (claim_rx, volume_rx) = (claims.subscribe(), volumes.subscribe());
        let (pod_rx, node_rx, ns_rx) = (pods.subscribe(), nodes.subscribe(), nss.subscribe());
        let s = Arc::new(Scheduler {
            recorder: Recorder::new(client.clone(), &opts.scheduler_name),
            queue: SchedulingQueue::new(QueueConfig {
                initial_backoff: opts.initial_backoff,
                max_backoff: opts.max_backoff,
                max_unschedulable: opts.max_unschedulable,
            }),
            client,
            opts,
            cache: Mutex::new(Cache::new()),
            namespaces: Mutex::default(),
            pods: pods.clone(),
            priority_classes: pcs.clone(),
            pdbs: pdbs.clone(),
            claims: claims.clone(),
            volumes: volumes.clone(),
            bindings: tokio::sync::Semaphore::new(MAX_BINDINGS_IN_FLIGHT),
        });
        let weak = Arc::downgrade(&s);
        crate::metrics::set_queue_lens(Box::new(move || weak.upgrade().map(|s| s.queue.lens())));
        pcs.ready().await;
        pdbs.ready().await;
        claims.ready().await;
        volumes.ready().await;
        nss.ready().await;
        s.sync_namespaces(&nss);
        nodes.ready().await;
        for n in nodes.list() {
            s.cache().upsert_node(n);
        }
        pods.ready().await;
        for p in pods.list() {
            s.on_pod(&Change::Apply(p));
        }
        tracing::info!(
            nodes = s.cache().num_nodes(),
            pending = s.queue.lens().0,
            "scheduler caches synced"
        );
        let handlers = [
            tokio::spawn(node_events(s.clone(), nodes, node_rx)),
            tokio::spawn(pod_events(s.clone(), pods, pod_rx)),
            tokio::spawn(namespace_events(s.clone(), nss, ns_rx)),
            tokio::spawn(storage_events(s.clone(), claim_rx)),
            tokio::spawn(storage_events(s.clone(), volume_rx)),
        ];
        let mut picker = Picker::new(s.opts.percentage_of_nodes_to_score);
        let _guard = AbortOnDrop(handlers.into_iter().collect());
        loop {
            let p = s.queue.pop().await;
            s.schedule_one(p, &mut picker);
            tokio::task::yield_now().await;
        }
    }

    fn sync_namespaces(&self, nss: &Informer<Namespace>) {
        let map: NamespaceLabels = nss
            .list()
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect();
        *self.namespaces.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    /// The pod's priority: spec.priority as set by admission, else its
    /// PriorityClass (or the global default class), else 0.
    fn priority(&self, pod: &Pod) -> i32 {
        let spec = pod.spec.as_ref();
        if let Some(p) = spec.and_then(|s| s.priority) {
            return p;
        }
        if let Some(name) = spec.and_then(|s| s.priority_class_name.as_deref())
            && let Some(pc) = self.priority_classes.get(None, name)
        {
            return pc.value;
        }
        self.priority_classes
            .list()
            .iter()
            .filter(|pc| pc.global_default == Some(true))
            .map(|pc| pc.value)
            .max()
            .unwrap_or(0)
    }

    fn responsible_for(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("");
        name.is_empty() || name == self.opts.scheduler_name
    }

    /// Applies one pod change to the cache and the queue.
    fn on_pod(&self, ch: &Change<Pod>) {
        let moved = match ch {
            Change::Resync => {
                for p in self.pods.list() {
                    self.on_pod(&Change::Apply(p));
                }
                return;
            }
            Change::Delete(pod) => {
                let key = key_of(pod.as_ref());
                self.queue.delete(&key);
                let mut cache = self.cache();
                cache.clear_nominated(&key);
                cache
                    .remove_pod(&key, pod.metadata.uid.as_deref().unwrap_or(""))
                    .then_some(Moved::Freed)
            }
            Change::Apply(pod) => self.on_pod_apply(pod),
        };
        match moved {
            Some(Moved::Freed) => self.queue.move_unschedulable(|_| true),
            Some(Moved::Added) => self.queue.move_unschedulable(|r| {
                r.contains(crate::plugins::interpodaffinity::NAME)
                    || r.contains(crate::plugins::podtopologyspread::NAME)
            }),
            None => {}
        }
    }

    fn on_pod_apply(&self, pod: &Arc<Pod>) -> Option<Moved> {
        let key = key_of(pod.as_ref());
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            self.queue.delete(&key);
            let mut cache = self.cache();
            cache.clear_nominated(&key);
            return cache.remove_pod(&key, uid).then_some(Moved::Freed);
        }
        if let Some(node) = node {
            self.queue.delete(&key);
            let info = Arc::new(PodInfo::new(pod.clone(), self.priority(pod)));
            let mut cache = self.cache();
            cache.clear_nominated(&key);
            // A newly bound pod, or a label change, can satisfy (or stop
            // violating) affinity and spreading of parked pods.
            let changed = match cache.bound_labels(&key) {
                None => true,
                Some(old) => &old != info.labels(),
            };
            cache.add_bound_pod(info, node);
            return changed.then_some(Moved::Added);
        }
        let gated = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        // Gated pods wait outside the queue until their gates are removed.
        if pod.metadata.deletion_timestamp.is_some() || !self.responsible_for(pod) || gated {
            self.queue.delete(&key);
            return None;
        }
        let priority = self.priority(pod);
        {
            let mut cache = self.cache();
            if cache.is_assumed(&key) {
                return None;
            }
            let nominated = pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref());
            match nominated {
                Some(n) if !n.is_empty() => {
                    cache.set_nominated(Arc::new(PodInfo::new(pod.clone(), priority)), Some(n))
                }
                _ => cache.clear_nominated(&key),
            }
        }
        self.queue.add(&key, pod.clone(), priority);
        None
    }

    /// One attempt for one pod: assume and bind, or report and maybe preempt.
    fn schedule_one(self: &Arc<Self>, p: Popped, picker: &mut Picker) {
        let pod = p.pod.clone();
        let mut info = PodInfo::new(pod.clone(), self.priority(&pod));
        if info.preemption_policy.is_none() {
            // Admission would have copied the class's policy into the pod.
            info.preemption_policy = pod
                .spec
                .as_ref()
                .and_then(|s| s.priority_class_name.as_deref())
                .and_then(|n| self.priority_classes.get(None, n))
                .and_then(|pc| pc.preemption_policy.clone());
        }
        let info = Arc::new(info);
        // VolumeBinding's pre-filter: claims must exist and be bound.
        let volume_affinity = match crate::plugins::volumebinding::prefilter(
            &pod,
            |ns, name| self.claims.get(Some(ns), name),
            |name| self.volumes.get(None, name),
        ) {
            Ok(t) => t,
            Err(why) => {
                let n = self.cache().num_nodes();
                let msg = format!(
                    "0/{n} nodes are available: {why}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
                );
                self.fail(
                    &p,
                    &info,
                    msg,
                    None,
                    HashSet::from([crate::plugins::volumebinding::NAME]),
                );
                return;
            }
        };
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut cache = self.cache();
        let mut state = CycleState::new(&cache, info.clone(), namespaces);
        state.volume_affinity = volume_affinity;
        match schedule(&cache, &state, picker) {
            Ok(node) => {
                cache.clear_nominated(&info.key);
                cache.assume(info.clone(), &node);
                drop(cache);
                self.queue.done(&p.key);
                tracing::debug!(pod = %p.key, %node, "assumed");
                let me = self.clone();
                let (attempts, queued, started) = (p.attempts, p.queued, p.popped);
                tokio::spawn(async move {
                    let bound = me.clone().bind(info, node, attempts).await;
                    me.observe(bound, started, Some((attempts, queued)));
                });
            }
            Err(nofit) if nofit.num_nodes == 0 => {
                drop(cache);
                self.fail(
                    &p,
                    &info,
                    "no nodes available to schedule pods".into(),
                    None,
                    HashSet::new(),
                );
            }
            Err(nofit) => {
                let mut msg = fit_message(nofit.num_nodes, nofit.statuses.values());
                let rejected: HashSet<&'static str> =
                    nofit.statuses.values().map(|s| s.plugin).collect();
                let pdbs = self.pdbs.list();
                crate::metrics::PREEMPTION_ATTEMPTS.inc();
                let outcome = preemption::preempt(&cache, &state, &nofit.statuses, &pdbs);
                let had_nomination = info
                    .pod
                    .status
                    .as_ref()
                    .and_then(|s| s.nominated_node_name.as_deref())
                    .is_some_and(|n| !n.is_empty());
                let mut demoted = Vec::new();
                let nominate = match outcome {
                    Ok(c) => {
                        // Lower-priority pods nominated there must look elsewhere.
                        demoted = cache
                            .nominated_on(&c.node)
                            .iter()
                            .filter(|p| p.priority < info.priority)
                            .cloned()
                            .collect();
                        for d in &demoted {
                            cache.clear_nominated(&d.key);
                        }
                        cache.set_nominated(info.clone(), Some(&c.node));
                        Some(c)
                    }
                    Err(why) => {
                        msg.push_str(&format!(" preemption: {}", why.message));
                        if why.clear_nomination {
                            cache.clear_nominated(&info.key);
                        }
                        None
                    }
                };
                drop(cache);
                for d in demoted {
                    let me = self.clone();
                    tokio::spawn(async move { me.clear_nomination(&d).await });
                }
                let node = match &nominate {
                    Some(c) => {
                        self.evict(&info, c);
                        Some(c.node.clone())
                    }
                    // An empty name clears a stale nomination.
                    None if had_nomination => Some(String::new()),
                    None => None,
                };
                self.fail(&p, &info, msg, node, rejected);
            }
        }
    }

    /// Removes a pod's status.nominatedNodeName.
    async fn clear_nomination(&self, p: &PodInfo) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &p.namespace);
        let name = p.pod.metadata.name.as_deref().unwrap_or_default();
        let patch = Patch::Merge(json!({"status": {"nominatedNodeName": null}}));
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
        {
            tracing::debug!(pod = %p.key, error = %e, "clearing nominatedNodeName");
        }
    }

    /// Counts one attempt: `Some(true)` bound, `Some(false)`
    /// unschedulable, `None` an error; a bound pod's SLI runs from when it
    /// was first queued.
    fn observe(
        &self,
        outcome: Option<bool>,
        started: tokio::time::Instant,
        bound: Option<(u32, tokio::time::Instant)>,
    ) {
        let result = match outcome {
            Some(true) => "scheduled",
            Some(false) => "unschedulable",
            None => "error",
        };
        let profile = self.opts.scheduler_name.as_str();
        crate::metrics::ATTEMPTS
            .with_label_values(&[profile, result])
            .inc();
        crate::metrics::ATTEMPT_DURATION
            .with_label_values(&[profile, result])
            .observe(started.elapsed().as_secs_f64());
        if let (Some(true), Some((attempts, queued))) = (outcome, bound) {
            let label = if attempts >= 15 {
                "15+".to_string()
            } else {
                attempts.to_string()
            };
            crate::metrics::SLI_DURATION
                .with_label_values(&[&label])
                .observe(queued.elapsed().as_secs_f64());
            crate::metrics::POD_ATTEMPTS.observe(f64::from(attempts));
        }
    }

    /// Reports a failed attempt (event, PodScheduled=False, nominated node)
    /// and parks the pod.
    fn fail(
        self: &Arc<Self>,
        p: &Popped,
        info: &Arc<PodInfo>,
        msg: String,
        nominated: Option<String>,
        rejected: HashSet<&'static str>,
    ) {
        tracing::debug!(pod = %p.key, %msg, "unschedulable");
        self.observe(Some(false), p.popped, None);
        self.recorder
            .warning(info.pod.as_ref(), "FailedScheduling", msg.clone());
        self.queue.failed(&p.key, p.cycle, rejected);
        let me = self.clone();
        let pod = info.pod.clone();
        tokio::spawn(async move { me.update_status(pod, msg, nominated).await });
    }

    /// Sets PodScheduled=False/Unschedulable with the message (and the
    /// nominated node; empty clears it), skipping the write when nothing changed.
    async fn update_status(&self, pod: Arc<Pod>, msg: String, nominated: Option<String>) {
        let status = pod.status.as_ref();
        let current = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let same = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(msg.as_str())
        });
        let nominated_same = nominated.is_none()
            || status
                .and_then(|s| s.nominated_node_name.as_deref())
                .unwrap_or("")
                == nominated.as_deref().unwrap_or("");
        if same && nominated_same {
            return;
        }
        let transition = match current {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
        let mut st = json!({"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": msg,
            "lastProbeTime": null,
            "lastTransitionTime": transition,
        }]});
        match nominated.as_deref() {
            Some("") => st["nominatedNodeName"] = Value::Null,
            Some(n) => st["nominatedNodeName"] = json!(n),
            None => {}
        }
        let (ns, name) = (
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default(),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if let Err(e) = api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"status": st})),
            )
            .await
        {
            tracing::debug!(pod = %name, error = %e, "updating PodScheduled condition");
        }
    }

    /// Deletes preemption victims gracefully, with a DisruptionTarget
    /// condition and a Preempted event, as upstream.
    fn evict(&self, preemptor: &PodInfo, c: &preemption::Candidate) {
        for v in &c.victims {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &v.namespace);
            let name = v.pod.metadata.name.clone().unwrap_or_default();
            let note = format!("Preempted by pod {} on node {}", preemptor.uid, c.node);
            self.recorder.normal(v.pod.as_ref(), "Preempted", note);
            let cond = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{}: preempting to accommodate a higher priority pod", self.opts.scheduler_name),
                "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
            }]}});
            tracing::info!(victim = %v.key, preemptor = %preemptor.key, node = %c.node, "preempting");
            tokio::spawn(async move {
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(cond))
                    .await
                {
                    tracing::debug!(pod = %name, error = %e, "setting DisruptionTarget");
                }
                if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                    tracing::debug!(pod = %name, error = %e, "deleting preemption victim");
                }
            });
        }
    }

    /// POSTs the binding; on failure forgets the assumed pod and retries.
    /// Returns `Some(true)` once bound, `None` when binding failed.
    async fn bind(
        self: Arc<Self>,
        info: Arc<PodInfo>,
        node: String,
        attempts: u32,
    ) -> Option<bool> {
        // Many bindings run at once (the decision loop never waits for
        // them), bounded so a burst cannot open unbounded requests.
        let Ok(_permit) = self.bindings.acquire().await else {
            return None;
        };
        let name = info.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &info.namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(info.namespace.clone()),
                uid: info.pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..Default::default()
            },
        };
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                self.recorder.normal(
                    info.pod.as_ref(),
                    "Scheduled",
                    format!(
                        "Successfully assigned {}/{} to {}",
                        info.namespace, name, node
                    ),
                );
                Some(true)
            }
            Err(e) => {
                self.cache().forget(&info.key);
                let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
                let bound_elsewhere = matches!(&e, kube::Error::Api(s) if s.code == 409);
                tracing::debug!(pod = %info.key, %node, error = %e, "binding failed");
                if gone || bound_elsewhere {
                    return None;
                }
                self.recorder.warning(
                    info.pod.as_ref(),
                    "FailedScheduling",
                    format!("Binding rejected: {e}"),
                );
                // The freed resources may let other parked pods fit.
                self.queue.move_unschedulable(|_| true);
                if let Some(cur) = self.pods.get(Some(&info.namespace), &name)
                    && cur.metadata.uid == info.pod.metadata.uid
                    && cur
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_none()
                {
                    self.queue.retry(&info.key, cur, info.priority, attempts);
                }
                None
            }
        }
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn pod_events(
    s: Arc<Scheduler>,
    _inf: Informer<Pod>,
    mut rx: tokio::sync::broadcast::Receiver<Change<Pod>>,
) {
    loop {
        match rx.recv().await {
            Ok(ch) => s.on_pod(&ch),
            Err(RecvError::Lagged(_)) => s.on_pod(&Change::Resync),
            Err(RecvError::Closed) => return,
        }
    }
}

async fn node_events(
    s: Arc<Scheduler>,
    inf: Informer<Node>,
    mut rx: tokio::sync::broadcast::Receiver<Change<Node>>,
) {
    loop {
        let changed = match rx.recv().await {
            Ok(Change::Apply(n)) => s.cache().upsert_node(n),
            Ok(Change::Delete(n)) => {
                s.cache()
                    .remove_node(n.metadata.name.as_deref().unwrap_or_default());
                false
            }
            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                let mut changed = false;
                for n in inf.list() {
                    changed |= s.cache().upsert_node(n);
                }
                changed
            }
            Err(RecvError::Closed) => return,
        };
        if changed {
            s.queue.move_unschedulable(|_| true);
        }
    }
}

/// Claims and volumes that change may let a parked pod through
/// VolumeBinding.
async fn storage_events<K: Clone>(
    s: Arc<Scheduler>,
    mut rx: tokio::sync::broadcast::Receiver<Change<K>>,
) {
    loop {
        match rx.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => s.queue.move_unschedulable(|_| true),
            Err(RecvError::Closed) => return,
        }
    }
}

async fn namespace_events(
    s: Arc<Scheduler>,
    inf: Informer<Namespace>,
    mut rx: tokio::sync::broadcast::Receiver<Change<Namespace>>,
) {
    loop {
        match rx.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => s.sync_namespaces(&inf),
            Err(RecvError::Closed) => return,
        }
    }
}
