//! The ReplicaSet and ReplicationController controllers (upstream's
//! `replicaset` package, which serves both kinds): keep `spec.replicas`
//! active pods from the pod template, adopt matching orphans, release pods
//! that stop matching, and report counts in status.
//!
//! Both kinds run the same code through the [`Replicated`] trait; the
//! pieces the deployment controller also needs (label selectors, pod
//! readiness, controller references) are `pub(crate)`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Context, ControllerError};
use controller_runtime::Expectations;
use controller_runtime::events::Recorder;
use controller_runtime::{Change, Queue, key_of, split_key};
pub(crate) use controller_runtime::{
    controller_ref, owner_ref, pod_active as is_active, pod_ready as is_ready,
    pod_ready_since as ready_since, selector_is_empty, selector_matches,
};

/// Most pods created or deleted in one sync (upstream's burstReplicas).
const BURST_REPLICAS: usize = 500;
/// Annotation lowering/raising the cost of deleting a pod on scale-down.
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A kind managed by this controller: ReplicaSet or ReplicationController.
pub trait Replicated:
    controller_runtime::informer::Kind + Resource<Scope = NamespaceResourceScope> + Serialize
{
    /// Pod selector (None selects nothing).
    fn selector(&self) -> Option<LabelSelector>;
    /// Desired pod count.
    fn desired(&self) -> i32;
    /// Pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// Seconds a pod must be ready before it counts as available.
    fn min_ready_seconds(&self) -> i32;
    /// Controller name for events.
    const COMPONENT: &'static str;
    /// The work queue's name in metrics (upstream's).
    const QUEUE: &'static str;
}

impl Replicated for ReplicaSet {
    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    const COMPONENT: &'static str = "replicaset-controller";
    const QUEUE: &'static str = "replicaset";
}

impl Replicated for ReplicationController {
    fn selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        // The API server defaults an empty selector to the template labels.
        let labels = spec
            .selector
            .clone()
            .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone())?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    const COMPONENT: &'static str = "replication-controller";
    const QUEUE: &'static str = "replicationmanager";
}

/// Whether a pod has been ready for at least `min_ready` seconds at `now`.
pub(crate) fn is_available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t.as_second() + i64::from(min_ready) <= now.as_second(),
    }
}

fn max_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn deletion_cost(p: &Pod) -> i32 {
    p.annotations()
        .get(DELETION_COST)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// upstream's logarithmicRankDiff: compares ages in powers of two, so pods
/// of about the same age count as equally old.
fn log_rank_diff(t1: Timestamp, t2: Timestamp, now: Timestamp) -> i64 {
    let rank = |t: Timestamp| {
        let d = now.as_nanosecond() - t.as_nanosecond();
        if d > 0 { (d as f64).log2() as i64 } else { -1 }
    };
    rank(t1) - rank(t2)
}

/// Whether `a` should be deleted before `b` (upstream's ActivePodsWithRanks
/// order, with LogarithmicScaleDown and PodDeletionCost on, as in 1.33).
/// `rank_*` is the number of related pods on the same node.
pub(crate) fn delete_before(
    a: &Pod,
    rank_a: usize,
    b: &Pod,
    rank_b: usize,
    now: Timestamp,
) -> bool {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let (na, nb) = (node(a), node(b));
    // 1. Unassigned before assigned.
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return na.is_empty();
    }
    // 2. Pending before Unknown before Running.
    let ord = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    if ord(a) != ord(b) {
        return ord(a) < ord(b);
    }
    // 3. Not ready before ready.
    if is_ready(a) != is_ready(b) {
        return !is_ready(a);
    }
    // 4. Lower deletion cost first.
    if deletion_cost(a) != deletion_cost(b) {
        return deletion_cost(a) < deletion_cost(b);
    }
    // 5. Pods doubled up on a node first.
    if rank_a != rank_b {
        return rank_a > rank_b;
    }
    let uid_less = || a.metadata.uid < b.metadata.uid;
    // 6. Ready for less time first.
    if let (Some(ra), Some(rb)) = (ready_since(a), ready_since(b))
        && ra != rb
    {
        return match (ra, rb) {
            (Some(ta), Some(tb)) => match log_rank_diff(ta, tb, now) {
                0 => uid_less(),
                d => d < 0,
            },
            (ta, _) => ta.is_none(),
        };
    }
    // 7. More restarts first.
    if max_restarts(a) != max_restarts(b) {
        return max_restarts(a) > max_restarts(b);
    }
    // 8. Newer first.
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if created(a) != created(b) {
        return match (created(a), created(b)) {
            (Some(ta), Some(tb)) => match log_rank_diff(ta, tb, now) {
                0 => uid_less(),
                d => d < 0,
            },
            (ta, _) => ta.is_none(),
        };
    }
    false
}

/// The `n` pods to delete first, in upstream's order.
pub(crate) fn pods_to_delete(pods: &[Arc<Pod>], n: usize, now: Timestamp) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| per_node.get(n).copied())
            .unwrap_or(0)
    };
    let mut ranked: Vec<(Arc<Pod>, usize)> = pods.iter().map(|p| (p.clone(), rank(p))).collect();
    ranked.sort_by(|(a, ra), (b, rb)| {
        if delete_before(a, *ra, b, *rb, now) {
            Ordering::Less
        } else if delete_before(b, *rb, a, *ra, now) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    });
    ranked.into_iter().take(n).map(|(p, _)| p).collect()
}

/// Batch sizes for creating `n` objects in upstream's slow start: 1, 2, 4...
pub(crate) fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut batch) = (n, 1usize);
    while left > 0 {
        let b = batch.min(left);
        out.push(b);
        left -= b;
        batch *= 2;
    }
    out
}

/// A status as both kinds serialise it (same JSON field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    replicas: i32,
    #[serde(default)]
    fully_labeled_replicas: i32,
    #[serde(default)]
    ready_replicas: i32,
    #[serde(default)]
    available_replicas: i32,
    #[serde(default)]
    observed_generation: i64,
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_transition_time: Option<Time>,
}

fn current_status<K: Serialize>(o: &K) -> Status {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// Waits for an informer's first list. kube's `Store::wait_until_ready`
/// wakes only the last of several concurrent waiters, so poll it: once one
/// waiter sees it ready, every later call returns at once (and the queue's
/// own waits, started after this, cannot hang).
pub(crate) async fn wait_ready<K: controller_runtime::informer::Kind>(
    inf: &controller_runtime::Informer<K>,
) {
    while tokio::time::timeout(Duration::from_millis(50), inf.ready())
        .await
        .is_err()
    {}
}

/// One controller instance for kind `K`.
struct Ctl<K: Replicated> {
    ctx: Arc<Context>,
    rec: Recorder,
    exp: Arc<Expectations>,
    _k: std::marker::PhantomData<fn() -> K>,
}

/// Runs the ReplicaSet controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    run_kind::<ReplicaSet>(ctx).await
}

/// Runs the ReplicationController controller until the task is dropped.
pub async fn run_replication_controllers(ctx: Arc<Context>) {
    run_kind::<ReplicationController>(ctx).await
}

async fn run_kind<K: Replicated>(ctx: Arc<Context>) {
    let owners = ctx.informers.get::<K>();
    let pods = ctx.informers.get::<Pod>();
    wait_ready(&owners).await;
    wait_ready(&pods).await;
    let q = Queue::named(K::QUEUE);
    let exp = Arc::new(Expectations::default());
    q.watch(&owners, |o: &K| vec![key_of(o)]);
    {
        let exp = exp.clone();
        let owners = owners.clone();
        q.watch_changes(&pods, move |ch: &Change<Pod>| {
            let (p, deleted) = match ch {
                Change::Apply(p) => (p, false),
                Change::Delete(p) => (p, true),
                Change::Resync => return vec![],
            };
            let gone = deleted || p.metadata.deletion_timestamp.is_some();
            if let Some(r) = controller_ref(&p.metadata) {
                if r.kind != K::kind(&()) {
                    return vec![];
                }
                let key = format!("{}/{}", p.namespace().unwrap_or_default(), r.name);
                exp.observe(&key, &p.name_any(), gone);
                return vec![key];
            }
            if deleted {
                return vec![];
            }
            // An orphan: every owner whose selector matches may adopt it.
            let ns = p.namespace().unwrap_or_default();
            owners
                .list_ns(&ns)
                .iter()
                .filter(|o| {
                    o.selector()
                        .is_some_and(|s| !selector_is_empty(&s) && selector_matches(&s, p.labels()))
                })
                .map(|o| key_of(o.as_ref()))
                .collect()
        });
    }
    let ctl = Arc::new(Ctl::<K> {
        rec: ctx.recorder(K::COMPONENT),
        ctx: ctx.clone(),
        exp,
        _k: std::marker::PhantomData,
    });
    let workers = ctx.opts.workers;
    q.run(workers, move |key| {
        let ctl = ctl.clone();
        async move { ctl.sync(&key).await }
    })
    .await;
}

impl<K: Replicated> Ctl<K> {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, ControllerError> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(owner) = self.ctx.informers.get::<K>().get(Some(ns), name) else {
            self.exp.forget(key);
            return Ok(None);
        };
        let pods_inf = self.ctx.informers.get::<Pod>();
        // An owner's first sync waits (briefly) for the pod cache to reach
        // the owner's own revision: the pods and the owners arrive on
        // separate watches, and an orphan created just before the owner
        // must be adopted, not duplicated.
        if serde_json::to_value(owner.as_ref())
            .is_ok_and(|v| v["status"]["observedGeneration"].is_null())
            && let Some(rv) = owner
                .meta()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<i64>().ok())
        {
            pods_inf.wait_seen(rv, Duration::from_millis(100)).await;
        }
        let all = pods_inf.list_ns(ns);
        let by_name: HashMap<&str, bool> = all
            .iter()
            .map(|p| {
                (
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.metadata.deletion_timestamp.is_some(),
                )
            })
            .collect();
        let needs_sync = self.exp.satisfied(key, |n| by_name.get(n).copied())
            && owner.meta().deletion_timestamp.is_none();
        let active: Vec<Arc<Pod>> = all.iter().filter(|p| is_active(p)).cloned().collect();
        let owned = claim_pods(&self.ctx.client, owner.as_ref(), active).await?;

        let mut manage_err = None;
        if needs_sync {
            manage_err = self.manage(key, owner.as_ref(), &owned).await.err();
        }
        let requeue = self
            .update_status(owner.as_ref(), &owned, manage_err.as_ref())
            .await?;
        match manage_err {
            Some(e) => Err(e),
            None => Ok(requeue),
        }
    }

    /// Creates or deletes pods so that `owned` reaches the desired count.
    async fn manage(
        &self,
        key: &str,
        owner: &K,
        owned: &[Arc<Pod>],
    ) -> Result<(), ControllerError> {
        let ns = owner.namespace().unwrap_or_default();
        let desired = owner.desired().max(0) as usize;
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        if owned.len() < desired {
            let n = (desired - owned.len()).min(BURST_REPLICAS);
            let pod = pod_from_template(owner)?;
            let pp = PostParams::default();
            for batch in slow_start_batches(n) {
                let results = join_all((0..batch).map(|_| pods.create(&pp, &pod))).await;
                let mut first_err = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            self.exp.created(key, &p.name_any());
                            self.rec.normal(
                                owner,
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.name_any()),
                            );
                        }
                        Err(e) => {
                            // A terminating namespace refuses creates: nothing to report.
                            if !matches!(&e, kube::Error::Api(s) if s.code == 403 && s.message.contains("terminat"))
                            {
                                self.rec.warning(
                                    owner,
                                    "FailedCreate",
                                    format!("Error creating: {}", api_message(&e)),
                                );
                            }
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e.into());
                }
            }
            tracing::debug!(kind = %K::kind(&()), key, created = n, "scaled up");
        } else if owned.len() > desired {
            let n = (owned.len() - desired).min(BURST_REPLICAS);
            let victims = pods_to_delete(owned, n, Timestamp::now());
            for v in &victims {
                self.exp.deleted(key, &v.name_any());
            }
            let results = join_all(victims.iter().map(|v| {
                let pods = pods.clone();
                async move {
                    (
                        v,
                        pods.delete(&v.name_any(), &DeleteParams::default()).await,
                    )
                }
            }))
            .await;
            let mut first_err = None;
            for (v, r) in results {
                match r {
                    Ok(_) => self.rec.normal(
                        owner,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", v.name_any()),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        self.exp.unexpect_delete(key, &v.name_any());
                        self.rec.warning(
                            owner,
                            "FailedDelete",
                            format!("Error deleting: {}", api_message(&e)),
                        );
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Writes status if it changed; asks to come back when a ready pod is
    /// about to become available.
    async fn update_status(
        &self,
        owner: &K,
        owned: &[Arc<Pod>],
        manage_err: Option<&ControllerError>,
    ) -> Result<Option<Duration>, ControllerError> {
        let now = Timestamp::now();
        let min_ready = owner.min_ready_seconds();
        let tmpl_labels = owner
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let old = current_status(owner);
        let mut st = Status {
            replicas: owned.len() as i32,
            fully_labeled_replicas: owned
                .iter()
                .filter(|p| {
                    tmpl_labels
                        .iter()
                        .all(|(k, v)| p.labels().get(k) == Some(v))
                })
                .count() as i32,
            ready_replicas: owned.iter().filter(|p| is_ready(p)).count() as i32,
            available_replicas: owned
                .iter()
                .filter(|p| is_available(p, min_ready, now))
                .count() as i32,
            observed_generation: owner.meta().generation.unwrap_or(0),
            conditions: old.conditions.clone(),
        };
        let has_failure = st.conditions.iter().any(|c| c.type_ == "ReplicaFailure");
        match manage_err {
            Some(e) if !has_failure => {
                let reason = if (owned.len() as i32) < owner.desired() {
                    "FailedCreate"
                } else {
                    "FailedDelete"
                };
                st.conditions.push(Condition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(err_message(e)),
                    last_transition_time: Some(Time(now)),
                });
            }
            None if has_failure => st.conditions.retain(|c| c.type_ != "ReplicaFailure"),
            _ => {}
        }
        if st != old {
            let api: Api<K> = Api::namespaced(
                self.ctx.client.clone(),
                &owner.namespace().unwrap_or_default(),
            );
            let patch = json!({ "status": st });
            match api
                .patch_status(
                    &owner.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        if manage_err.is_none() && min_ready > 0 && st.available_replicas < st.ready_replicas {
            return Ok(Some(Duration::from_secs(min_ready as u64)));
        }
        Ok(None)
    }
}

/// The API's message for an error (what users see in conditions/events).
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

fn err_message(e: &ControllerError) -> String {
    match e {
        ControllerError::Kube(k) => api_message(k),
        e => e.to_string(),
    }
}

/// The pod `owner` creates (upstream's GetPodFromTemplate).
fn pod_from_template<K: Replicated>(owner: &K) -> Result<Pod, ControllerError> {
    let t = owner.template().ok_or_else(|| {
        ControllerError::Invalid(format!("{} has no pod template", key_of(owner)))
    })?;
    let tm = t.metadata.clone().unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref(owner)]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    })
}

/// Adopts active orphans matching `owner`'s selector and releases owned
/// pods that no longer match (upstream's ControllerRefManager); returns the
/// pods `owner` now controls.
pub(crate) async fn claim_pods<K: Replicated>(
    client: &kube::Client,
    owner: &K,
    active: Vec<Arc<Pod>>,
) -> Result<Vec<Arc<Pod>>, ControllerError> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let Some(sel) = owner.selector() else {
        return Ok(vec![]);
    };
    let owner_deleting = owner.meta().deletion_timestamp.is_some();
    let api: Api<Pod> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let mut out = Vec::new();
    let mut can_adopt: Option<bool> = None;
    for p in active {
        let matches = !selector_is_empty(&sel) && selector_matches(&sel, p.labels());
        match controller_ref(&p.metadata) {
            Some(r) if r.uid != uid => {}
            Some(_) if matches || owner_deleting => out.push(p),
            Some(_) => match release(&api, &p.metadata, &uid).await {
                Ok(()) => {}
                Err(e) => return Err(e.into()),
            },
            None if matches && !owner_deleting && p.metadata.deletion_timestamp.is_none() => {
                if can_adopt.is_none() {
                    can_adopt = Some(fresh_owner_alive(client, owner).await?);
                }
                if can_adopt != Some(true) {
                    continue;
                }
                match adopt(&api, &p.metadata, owner_ref(owner)).await {
                    Ok(()) => out.push(p),
                    // Gone or changed meanwhile: the next sync sees it again.
                    Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            None => {}
        }
    }
    Ok(out)
}

/// Re-reads the owner from the API (not the cache) before adopting, as
/// upstream's RecheckDeletionTimestamp: never adopt for a deleted owner.
async fn fresh_owner_alive<K: Replicated>(
    client: &kube::Client,
    owner: &K,
) -> Result<bool, ControllerError> {
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    match api.get_opt(&owner.name_any()).await? {
        Some(f) => Ok(f.meta().uid == owner.meta().uid && f.meta().deletion_timestamp.is_none()),
        None => Ok(false),
    }
}

/// Adds a controller reference to an object, guarded by its resourceVersion.
pub(crate) async fn adopt<T>(
    api: &Api<T>,
    meta: &ObjectMeta,
    r: OwnerReference,
) -> Result<(), kube::Error>
where
    T: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut refs: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
    refs.push(r);
    let patch =
        json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}});
    api.patch(
        meta.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Removes the reference to owner `uid` from an object.
pub(crate) async fn release<T>(
    api: &Api<T>,
    meta: &ObjectMeta,
    uid: &str,
) -> Result<(), kube::Error>
where
    T: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kept: Vec<&OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != uid)
        .collect();
    let patch =
        json!({"metadata": {"ownerReferences": kept, "resourceVersion": meta.resource_version}});
    match api
        .patch(
            meta.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Arc<Pod> {
        let conditions = ready_at.map(|t| {
            vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                ..Default::default()
            }]
        });
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions,
                ..Default::default()
            }),
        })
    }

    fn names(v: &[Arc<Pod>]) -> Vec<String> {
        v.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn deletes_unscheduled_then_pending_then_unready_then_newest_ready() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let pods = vec![
            pod("old-ready", "n1", "Running", Some(1_000), 100),
            pod("new-ready", "n2", "Running", Some(999_990), 999_980),
            pod("unready", "n3", "Running", None, 500),
            pod("pending", "n4", "Pending", None, 600),
            pod("unscheduled", "", "Pending", None, 700),
        ];
        assert_eq!(
            names(&pods_to_delete(&pods, 5, now)),
            [
                "unscheduled",
                "pending",
                "unready",
                "new-ready",
                "old-ready"
            ]
        );
        assert_eq!(
            names(&pods_to_delete(&pods, 2, now)),
            ["unscheduled", "pending"]
        );
    }

    #[test]
    fn doubled_up_pods_go_before_lonely_ones_and_restarts_count() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let a = pod("alone", "n1", "Running", Some(1_000), 100);
        let b = pod("shared1", "n2", "Running", Some(1_000), 100);
        let c = pod("shared2", "n2", "Running", Some(1_000), 100);
        let got = pods_to_delete(&[a.clone(), b, c], 1, now);
        assert_ne!(names(&got), ["alone"]);
        let mut restarted = (*a).clone();
        restarted.metadata.name = Some("restarted".into());
        restarted.metadata.uid = Some("restarted".into());
        restarted.status.as_mut().unwrap().container_statuses =
            Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                restart_count: 3,
                ..Default::default()
            }]);
        let other = pod("calm", "n3", "Running", Some(1_000), 100);
        assert_eq!(
            names(&pods_to_delete(&[other, Arc::new(restarted)], 1, now)),
            ["restarted"]
        );
    }

    #[test]
    fn slow_start_doubles_batches() {
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(1), [1]);
        assert!(slow_start_batches(0).is_empty());
    }

    #[test]
    fn selectors_match_expressions() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let l = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(selector_matches(&sel, &l(&[("app", "web")])));
        assert!(!selector_matches(
            &sel,
            &l(&[("app", "web"), ("tier", "db")])
        ));
        assert!(!selector_matches(&sel, &l(&[("app", "api")])));
    }
}
