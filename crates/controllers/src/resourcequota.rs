//! ResourceQuota controller: keeps each quota's `status.hard` equal to its
//! `spec.hard` and `status.used` equal to what its namespace consumes of
//! every resource named there. Changes to the tracked kinds mark their
//! namespace dirty; dirty namespaces are recomputed at most twice a second
//! (debounce), and every quota is recomputed every 5 minutes regardless.
//! Enforcement happens at admission, in the API server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::broadcast;

use api::quota::{Qty, Snapshot, compute_used, count_key, qty_of};

use crate::endpoints::wait_ready;
use crate::resources::{self, Res};
use crate::{Context, ControllerError};
use controller_runtime::informer::Kind;
use controller_runtime::{Change, Informer, Queue, key_of, split_key};

/// How often every quota is recomputed even without changes.
const RESYNC: Duration = Duration::from_secs(300);
/// How long changes in a namespace are collected before recomputing.
const DEBOUNCE: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------- controller

/// Namespaces with changes not yet recomputed (`None`: all of them).
#[derive(Clone, Default)]
struct Dirty(Arc<Mutex<Option<HashSet<String>>>>);

impl Dirty {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashSet<String>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn mark(&self, ns: &str) {
        if let Some(s) = self.lock().as_mut() {
            s.insert(ns.to_string());
        }
    }
    fn mark_all(&self) {
        *self.lock() = None;
    }
    fn take(&self) -> Option<HashSet<String>> {
        self.lock().replace(HashSet::new())
    }
}

/// Whether a change may have freed quota (upstream's replenishment): a
/// deletion, an object being deleted, a pod that finished. Creations are
/// charged by the API server's quota admission before they are stored;
/// recounting on them would race with creations admitted but not yet
/// stored (the caches lag), and could hand out the same room twice.
fn replenishes<K: Kind>(o: &K) -> bool {
    if o.meta().deletion_timestamp.is_some() {
        return true;
    }
    (o as &dyn std::any::Any)
        .downcast_ref::<Pod>()
        .and_then(|p| p.status.as_ref()?.phase.as_deref())
        .is_some_and(|phase| matches!(phase, "Succeeded" | "Failed"))
}

/// Marks namespaces dirty from one kind's change feed.
fn track<K: Kind>(inf: &Informer<K>, dirty: &Dirty) {
    let mut rx = inf.subscribe();
    let dirty = dirty.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Change::Apply(o)) if !replenishes(o.as_ref()) => {}
                Ok(Change::Apply(o)) | Ok(Change::Delete(o)) => {
                    if let Some(ns) = o.meta().namespace.as_deref() {
                        dirty.mark(ns);
                    }
                }
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    dirty.mark_all()
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Object counts per namespace from a cache.
type Counter = Arc<dyn Fn(&str) -> i64 + Send + Sync>;

fn counter<K: Kind>(inf: Informer<K>) -> Counter {
    Arc::new(move |ns: &str| inf.list_ns(ns).len() as i64)
}

/// Discovered resources, refreshed at most once a minute, for counting
/// kinds without a cache here (`count/widgets.example.com`).
#[derive(Clone, Default)]
struct Discovered(Arc<tokio::sync::Mutex<Option<Found>>>);

/// When resources were discovered, and what was found.
type Found = (Instant, Vec<Res>);

impl Discovered {
    async fn find(&self, client: &kube::Client, name: &str) -> Result<Option<Res>, kube::Error> {
        let (plural, group) = name.split_once('.').unwrap_or((name, ""));
        let mut g = self.0.lock().await;
        let stale = g
            .as_ref()
            .is_none_or(|(t, _)| t.elapsed() > Duration::from_secs(60));
        if stale {
            *g = Some((Instant::now(), resources::discover(client).await?));
        }
        Ok(g.as_ref().and_then(|(_, rs)| {
            rs.iter()
                .find(|r| r.ar.plural == plural && r.ar.group == group && r.namespaced())
                .cloned()
        }))
    }
}

/// Runs the ResourceQuota controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let inf = &ctx.informers;
    let quotas = inf.get::<ResourceQuota>();
    let pods = inf.get::<Pod>();
    let services = inf.get::<Service>();
    let pvcs = inf.get::<PersistentVolumeClaim>();
    let dirty = Dirty::default();
    let mut counters: HashMap<String, Counter> = HashMap::new();
    macro_rules! counted {
        ($k:ty, $name:expr) => {{
            let i = inf.get::<$k>();
            wait_ready(&i).await;
            track(&i, &dirty);
            counters.insert(format!("count/{}", $name), counter(i));
        }};
    }
    counted!(Pod, "pods");
    counted!(Service, "services");
    counted!(PersistentVolumeClaim, "persistentvolumeclaims");
    counted!(ConfigMap, "configmaps");
    counted!(Secret, "secrets");
    counted!(ReplicationController, "replicationcontrollers");
    counted!(ResourceQuota, "resourcequotas");
    counted!(Deployment, "deployments.apps");
    counted!(ReplicaSet, "replicasets.apps");
    counted!(StatefulSet, "statefulsets.apps");
    counted!(DaemonSet, "daemonsets.apps");
    counted!(Job, "jobs.batch");
    counted!(CronJob, "cronjobs.batch");
    let counters = Arc::new(counters);
    let q = Queue::named("resourcequota_primary");
    // A quota is recounted when its spec.hard is not yet its status.hard
    // (new or changed); the admission's charges to status.used are not
    // reasons to recount, as upstream.
    q.watch(&quotas, |r: &ResourceQuota| {
        let hard = r.spec.as_ref().and_then(|s| s.hard.as_ref());
        let status_hard = r.status.as_ref().and_then(|s| s.hard.as_ref());
        let used = r.status.as_ref().and_then(|s| s.used.as_ref());
        if hard != status_hard || used.is_none() {
            vec![key_of(r)]
        } else {
            Vec::new()
        }
    });
    // Debounce: recompute the quotas of the namespaces changed lately.
    {
        let (q, quotas, dirty) = (q.clone(), quotas.clone(), dirty.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DEBOUNCE);
            let mut last_full = Instant::now();
            loop {
                tick.tick().await;
                // The periodic full recount catches what no event reported
                // (kinds counted through discovery, missed changes).
                if last_full.elapsed() >= RESYNC {
                    last_full = Instant::now();
                    dirty.mark_all();
                }
                let list = match dirty.take() {
                    None => quotas.list(),
                    Some(ns) if ns.is_empty() => continue,
                    Some(ns) => quotas
                        .list()
                        .into_iter()
                        .filter(|r| {
                            r.metadata
                                .namespace
                                .as_ref()
                                .is_some_and(|n| ns.contains(n))
                        })
                        .collect(),
                };
                for r in list {
                    q.add(key_of(r.as_ref()));
                }
            }
        });
    }
    let client = ctx.client.clone();
    let discovered = Discovered::default();
    q.run(ctx.opts.workers, move |key: String| {
        let (quotas, pods, services, pvcs, counters, client, discovered) = (
            quotas.clone(),
            pods.clone(),
            services.clone(),
            pvcs.clone(),
            counters.clone(),
            client.clone(),
            discovered.clone(),
        );
        async move {
            let (Some(ns), name) = split_key(&key) else {
                return Ok::<_, ControllerError>(None);
            };
            let Some(quota) = quotas.get(Some(ns), name) else {
                return Ok(None);
            };
            let hard = quota
                .spec
                .as_ref()
                .and_then(|s| s.hard.clone())
                .unwrap_or_default();
            let mut snap = Snapshot {
                pods: pods.list_ns(ns),
                services: services.list_ns(ns),
                pvcs: pvcs.list_ns(ns),
                counts: HashMap::new(),
            };
            for k in hard.keys() {
                let Some(ck) = count_key(k) else { continue };
                if let Some(c) = counters.get(&ck) {
                    snap.counts.insert(ck, c(ns));
                } else if let Some(res) = discovered.find(&client, &ck["count/".len()..]).await? {
                    let n = res
                        .api(&client, Some(ns))
                        .list_metadata(&ListParams::default())
                        .await?
                        .items
                        .len();
                    snap.counts.insert(ck, n as i64);
                }
            }
            let used = compute_used(&quota, &snap, k8s_openapi::jiff::Timestamp::now());
            let status = quota.status.clone().unwrap_or_default();
            let same = |a: Option<&BTreeMap<String, Quantity>>, b: &BTreeMap<String, Qty>| {
                let a = a.cloned().unwrap_or_default();
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| qty_of(v).is_some_and(|v| b.get(k) == Some(&v)))
            };
            let hard_q: BTreeMap<String, Qty> = hard
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), qty_of(v)?)))
                .collect();
            if same(status.hard.as_ref(), &hard_q) && same(status.used.as_ref(), &used) {
                return Ok(None);
            }
            let mut next = (*quota).clone();
            let st = next.status.get_or_insert_with(Default::default);
            st.hard = Some(hard);
            st.used = Some(
                used.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.canonical())))
                    .collect(),
            );
            match Api::<ResourceQuota>::namespaced(client, ns)
                .replace_status(name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => Ok(None),
                // Changed meanwhile: the cache will show the new version.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::from_millis(100))),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await;
}
