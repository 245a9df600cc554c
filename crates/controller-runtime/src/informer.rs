//! Shared informers: one watch and one cache per kind for every controller
//! in the process (client-go's SharedInformerFactory). Controllers read the
//! cache and subscribe to changes; a subscriber that falls behind is told to
//! resync instead of blocking the others.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// What happened to an object in the cache.
#[derive(Debug)]
pub enum Change<K> {
    /// Added or modified; the object as now cached.
    Apply(Arc<K>),
    /// Deleted; the last known state.
    Delete(Arc<K>),
    /// The cache was rebuilt or the subscriber lagged: re-read everything.
    Resync,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Apply(k) => Change::Apply(k.clone()),
            Change::Delete(k) => Change::Delete(k.clone()),
            Change::Resync => Change::Resync,
        }
    }
}

/// Bounds every informed kind satisfies.
pub trait Kind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
}

/// One kind's cache and change feed.
pub struct Informer<K: Kind> {
    store: Store<K>,
    tx: broadcast::Sender<Change<K>>,
    // Set once the first list is in the cache. kube's own readiness signal
    // wakes only one of several waiters, so informers keep their own.
    synced: tokio::sync::watch::Receiver<bool>,
    // The highest resourceVersion of an event applied to the cache (the
    // API server's revisions are one ordered space).
    seen: Arc<std::sync::atomic::AtomicI64>,
}

impl<K: Kind> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            tx: self.tx.clone(),
            synced: self.synced.clone(),
            seen: self.seen.clone(),
        }
    }
}

impl<K: Kind> Informer<K> {
    /// The cache (may lag the API server slightly).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Waits until the first list has been loaded.
    pub async fn ready(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Waits (at most `max`) until the cache has applied an event at or
    /// after revision `rv`: a change made after another the caller has
    /// seen (an owner created after the pods it should adopt) is then in
    /// the cache, whichever watch delivered first.
    pub async fn wait_seen(&self, rv: i64, max: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while self.seen.load(std::sync::atomic::Ordering::Acquire) < rv
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A cached object by namespace (None for cluster-scoped) and name.
    pub fn get(&self, ns: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::<K>::new(name);
        if let Some(ns) = ns {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// Cached objects in one namespace.
    pub fn list_ns(&self, ns: &str) -> Vec<Arc<K>> {
        self.store
            .state_filter(|o| o.meta().namespace.as_deref() == Some(ns))
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.tx.subscribe()
    }
}

/// Capacity of each kind's change feed before slow subscribers resync.
const FEED: usize = 16 * 1024;

/// Creates informers on demand, one per kind, all on one client.
#[derive(Clone)]
pub struct Informers {
    client: kube::Client,
    kinds: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Informers {
    /// A factory on `client`.
    pub fn new(client: kube::Client) -> Self {
        Informers {
            client,
            kinds: Arc::default(),
        }
    }

    /// The client the informers watch through.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The informer for `K`, starting its watch on first use.
    pub fn get<K: Kind>(&self) -> Informer<K> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = kinds
            .get(&TypeId::of::<K>())
            .and_then(|i| i.downcast_ref::<Informer<K>>())
        {
            return i.clone();
        }
        let (store, writer) = reflector::store::<K>();
        let (tx, _) = broadcast::channel(FEED);
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let inf = Informer {
            store,
            tx,
            synced,
            seen: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        };
        kinds.insert(TypeId::of::<K>(), Box::new(inf.clone()));
        tokio::spawn(feed(
            Api::<K>::all(self.client.clone()),
            writer,
            inf.clone(),
            synced_tx,
        ));
        inf
    }
}

/// Drives one watch into the cache and the change feed.
async fn feed<K: Kind>(
    api: Api<K>,
    mut writer: reflector::store::Writer<K>,
    inf: Informer<K>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let cfg = watcher::Config::default().any_semantic();
    // No control loop reads managedFields; dropping them (as
    // kube-controller-manager's informers do) roughly halves what a cached
    // pod costs, which at 30,000 pods is most of the process's memory.
    let mut stream = watcher::watcher(api, cfg)
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .boxed();
    // Objects present before a relist, to report the ones that vanished.
    let mut before: Option<Vec<Arc<K>>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(kind = %K::kind(&()), error = %e, "informer watch error");
                continue;
            }
        };
        if let watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) =
            &ev
            && let Some(rv) = o
                .meta()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<i64>().ok())
        {
            inf.seen.fetch_max(rv, std::sync::atomic::Ordering::AcqRel);
        }
        match &ev {
            watcher::Event::Init => before = Some(inf.store.state()),
            watcher::Event::InitDone => {
                writer.apply_watcher_event(&ev);
                synced.send_replace(true);
                if let Some(old) = before.take() {
                    for o in old {
                        if inf.store.get(&ObjectRef::from_obj(o.as_ref())).is_none() {
                            let _ = inf.tx.send(Change::Delete(o));
                        }
                    }
                }
                let _ = inf.tx.send(Change::Resync);
                continue;
            }
            watcher::Event::Delete(o) => {
                let last = inf
                    .store
                    .get(&ObjectRef::from_obj(o))
                    .unwrap_or_else(|| Arc::new(o.clone()));
                writer.apply_watcher_event(&ev);
                let _ = inf.tx.send(Change::Delete(last));
                continue;
            }
            _ => {}
        }
        writer.apply_watcher_event(&ev);
        if let watcher::Event::Apply(o) = &ev
            && let Some(cached) = inf.store.get(&ObjectRef::from_obj(o))
        {
            let _ = inf.tx.send(Change::Apply(cached));
        }
    }
}

/// The work-queue key of an object: `namespace/name` or `name`.
pub fn key_of<K: Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", o.meta().name.as_deref().unwrap_or_default()),
        None => o.meta().name.clone().unwrap_or_default(),
    }
}

/// Splits a key back into namespace and name.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// Keys of the owners of kind `owner_kind` named in `o`'s ownerReferences
/// (controller reference only when `controller_only`).
pub fn owner_keys<K: Resource>(o: &K, owner_kind: &str, controller_only: bool) -> Vec<String> {
    let ns = o.meta().namespace.as_deref();
    o.owner_references()
        .iter()
        .filter(|r| r.kind == owner_kind && (!controller_only || r.controller == Some(true)))
        .map(|r| match ns {
            Some(ns) => format!("{ns}/{}", r.name),
            None => r.name.clone(),
        })
        .collect()
}
