//! NetworkPolicy enforcement on one node, in nftables: watches
//! NetworkPolicies, Pods and Namespaces and keeps one table in step, as
//! kube-router's and Calico's policy agents do.
//!
//! Each node filters its own pods' traffic: egress where a local pod
//! sends, ingress where a local pod receives, so a connection between
//! nodes is checked once on each side. Return traffic of an allowed
//! connection passes by conntrack. A pod is isolated before its first
//! packet: the node agent asks the [`Gate`] to program a new pod's address
//! before its containers start.

pub mod model;
pub mod render;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, oneshot};

use crate::NetworkError;
use crate::proxy::{Cache, nft};
use model::{Desired, PodInfo, World};

/// The policy table for a node bridge (unique per node, so that several
/// nodes can share a host in tests).
pub fn table_name(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("r8s-pol-{safe}")
}

/// How long a pod's start waits for its rules before going ahead (a
/// broken policy agent must not stop every pod on the node).
const GATE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an address a pod was given is kept without the pod showing it
/// in its status (a pod deleted before it reported one).
const GATE_TTL: Duration = Duration::from_secs(120);
/// How long without events ends a batch.
const BATCH_QUIET: Duration = Duration::from_millis(2);
/// The longest a batch gathers before its changes are applied.
const BATCH_MAX: Duration = Duration::from_millis(100);

struct Admit {
    pod: Box<Pod>,
    ip: Ipv4Addr,
    done: oneshot::Sender<()>,
}

/// Where the node agent announces a pod's address before its containers
/// start, and waits until the pod's policies are in force for it.
#[derive(Debug)]
pub struct Gate {
    tx: mpsc::UnboundedSender<Admit>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Admit>>>,
}

impl Gate {
    /// A gate for one node's policy agent.
    pub fn new() -> Arc<Gate> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Gate {
            tx,
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Tells the agent `pod` has `ip` and waits until its rules are in the
    /// table (at most [`GATE_TIMEOUT`]).
    pub async fn admit(&self, pod: &Pod, ip: Ipv4Addr) {
        let (done, wait) = oneshot::channel();
        let msg = Admit {
            pod: Box::new(pod.clone()),
            ip,
            done,
        };
        if self.tx.send(msg).is_err() {
            return;
        }
        if tokio::time::timeout(GATE_TIMEOUT, wait).await.is_err() {
            tracing::warn!(
                pod = %pod.name_any(),
                "network policies not in force within {GATE_TIMEOUT:?}; starting the pod anyway"
            );
        }
    }

    fn take(&self) -> Option<mpsc::UnboundedReceiver<Admit>> {
        self.rx.lock().ok()?.take()
    }
}

/// Settings of one node's policy agent.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The node's name: its pods are the ones filtered here.
    pub node_name: String,
    /// The nftables table.
    pub table: String,
    /// Where the node agent announces new pods' addresses.
    pub gate: Option<Arc<Gate>>,
    /// Told of every change applied (`r8s bench network`).
    pub observer: Option<mpsc::UnboundedSender<SyncReport>>,
}

/// One applied transaction.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Local pods with an ingress or egress chain now.
    pub isolated: usize,
    /// How long computing and `nft` took.
    pub took: Duration,
    /// How long computing alone took.
    pub compute: Duration,
    /// When it was in place.
    pub at: Instant,
}

enum Ev {
    Policy(Box<watcher::Event<NetworkPolicy>>),
    Pod(Box<watcher::Event<Pod>>),
    Ns(Box<watcher::Event<Namespace>>),
    Admit(Admit),
}

struct Agent {
    cfg: PolicyConfig,
    policies: Cache<NetworkPolicy>,
    pods: Cache<Pod>,
    namespaces: Cache<Namespace>,
    /// What policies see of each pod (`namespace/name`).
    infos: BTreeMap<String, PodInfo>,
    /// Namespace labels by name.
    ns_labels: HashMap<String, BTreeMap<String, String>>,
    /// Addresses the node agent gave pods before their status shows them.
    early: HashMap<String, (Box<Pod>, Ipv4Addr, Instant)>,
    /// Gate callers waiting for the next sync.
    waiting: Vec<oneshot::Sender<()>>,
    /// What the table holds (None: to be rebuilt whole).
    applied: Option<Desired>,
    dirty: bool,
}

impl Agent {
    fn info_of(&self, key: &str) -> Option<PodInfo> {
        let node = &self.cfg.node_name;
        match (self.pods.objs.get(key), self.early.get(key)) {
            (Some(p), early) => {
                // The address the agent gave this very pod, until its
                // status carries one.
                let ip = early
                    .filter(|(e, _, _)| e.metadata.uid == p.metadata.uid)
                    .map(|(_, ip, _)| *ip);
                PodInfo::from_pod(p, node, None).or_else(|| PodInfo::from_pod(p, node, ip))
            }
            (None, Some((p, ip, _))) => PodInfo::from_pod(p, node, Some(*ip)),
            (None, None) => None,
        }
    }

    fn refresh(&mut self, key: &str) {
        let info = self.info_of(key);
        if self.infos.get(key) != info.as_ref() {
            match info {
                Some(i) => self.infos.insert(key.to_string(), i),
                None => self.infos.remove(key),
            };
            self.dirty = true;
        }
    }

    fn on(&mut self, ev: Ev) {
        match ev {
            Ev::Policy(e) => {
                self.policies.apply(*e);
                self.dirty = true;
            }
            Ev::Pod(e) => {
                let touched = self.pods.apply(*e);
                let mut keys: Vec<String> = touched.iter().map(Cache::key).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    // Status carries the address now: the early one is done.
                    if self.pods.objs.get(&k).is_some_and(|p| {
                        p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
                    }) {
                        self.early.remove(&k);
                    }
                    self.refresh(&k);
                }
                // A relist may have dropped pods no event named.
                if self.pods.synced {
                    let stale: Vec<String> = self
                        .infos
                        .keys()
                        .filter(|k| {
                            !self.pods.objs.contains_key(*k) && !self.early.contains_key(*k)
                        })
                        .cloned()
                        .collect();
                    for k in stale {
                        self.refresh(&k);
                    }
                }
            }
            Ev::Ns(e) => {
                self.namespaces.apply(*e);
                let labels: HashMap<String, BTreeMap<String, String>> = self
                    .namespaces
                    .objs
                    .values()
                    .map(|n| (n.name_any(), n.labels().clone()))
                    .collect();
                if labels != self.ns_labels {
                    self.ns_labels = labels;
                    self.dirty = true;
                }
            }
            Ev::Admit(a) => {
                let key = format!(
                    "{}/{}",
                    a.pod.metadata.namespace.as_deref().unwrap_or(""),
                    a.pod.metadata.name.as_deref().unwrap_or("")
                );
                // Only a pod some policy selects has anything to wait for
                // (peers learning its address may follow a moment later).
                if self.synced() && !self.isolates(&a.pod) {
                    let _ = a.done.send(());
                } else {
                    self.waiting.push(a.done);
                }
                self.early
                    .insert(key.clone(), (a.pod, a.ip, Instant::now()));
                self.refresh(&key);
            }
        }
    }

    /// Whether any policy selects `pod`.
    fn isolates(&self, pod: &Pod) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let none = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&none);
        self.policies.objs.values().any(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && p.spec.as_ref().is_some_and(|s| {
                    controller_runtime::objects::selector_matches(
                        &s.pod_selector.clone().unwrap_or_default(),
                        labels,
                    )
                })
        })
    }

    fn synced(&self) -> bool {
        self.policies.synced && self.pods.synced && self.namespaces.synced
    }

    /// Forgets early addresses of pods that never showed one.
    fn expire_early(&mut self) {
        let old: Vec<String> = self
            .early
            .iter()
            .filter(|(_, (_, _, at))| at.elapsed() > GATE_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            self.early.remove(&k);
            self.refresh(&k);
        }
    }

    async fn sync(&mut self) -> Result<(), NetworkError> {
        let started = Instant::now();
        self.dirty = false;
        let policies: Vec<NetworkPolicy> = self.policies.objs.values().cloned().collect();
        let pods: Vec<PodInfo> = self.infos.values().cloned().collect();
        let next = model::desired(&World {
            policies: &policies,
            pods: &pods,
            namespaces: &self.ns_labels,
        });
        let script = render::transaction(&self.cfg.table, self.applied.as_ref(), &next);
        let compute = started.elapsed();
        let result = if script.is_empty() {
            Ok(())
        } else {
            nft(&script).await
        };
        match result {
            Ok(()) => {
                let isolated = next
                    .ingress
                    .keys()
                    .chain(next.egress.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                self.applied = Some(next);
                if !script.is_empty() {
                    tracing::debug!(
                        isolated,
                        took_us = started.elapsed().as_micros() as u64,
                        "network policy rules synced"
                    );
                    if let Some(obs) = &self.cfg.observer {
                        let _ = obs.send(SyncReport {
                            isolated,
                            took: started.elapsed(),
                            compute,
                            at: Instant::now(),
                        });
                    }
                }
                for w in self.waiting.drain(..) {
                    let _ = w.send(());
                }
                Ok(())
            }
            Err(e) => {
                self.applied = None;
                self.dirty = true;
                Err(e)
            }
        }
    }
}

/// Runs the node's policy agent until the process ends.
pub async fn run(client: kube::Client, cfg: PolicyConfig) -> Result<(), NetworkError> {
    let wc = watcher::Config::default;
    let policies = watcher(Api::<NetworkPolicy>::all(client.clone()), wc())
        .default_backoff()
        .map(|e| e.map(|e| Ev::Policy(Box::new(e))));
    let pods = watcher(Api::<Pod>::all(client.clone()), wc())
        .default_backoff()
        .map(|e| e.map(|e| Ev::Pod(Box::new(e))));
    let namespaces = watcher(Api::<Namespace>::all(client.clone()), wc())
        .default_backoff()
        .map(|e| e.map(|e| Ev::Ns(Box::new(e))));
    let mut streams = vec![policies.boxed(), pods.boxed(), namespaces.boxed()];
    if let Some(rx) = cfg.gate.as_ref().and_then(|g| g.take()) {
        let admits = tokio_stream_from(rx).map(|a| Ok(Ev::Admit(a)));
        streams.push(admits.boxed());
    }
    let mut events = futures::stream::select_all(streams);
    let mut agent = Agent {
        cfg,
        policies: Cache::new(),
        pods: Cache::new(),
        namespaces: Cache::new(),
        infos: BTreeMap::new(),
        ns_labels: HashMap::new(),
        early: HashMap::new(),
        waiting: Vec::new(),
        applied: None,
        dirty: true,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Ok(ev) => agent.on(ev),
                    Err(e) => tracing::warn!(error = %e, "network policy watch failed; retrying"),
                }
                // A burst goes into one transaction. The watch bodies are
                // read only as fast as they are consumed, so what "has
                // arrived" is one event: keep reading while events keep
                // coming (a short quiet ends it, a cap bounds the delay).
                let until = Instant::now() + BATCH_MAX;
                while let Ok(Some(ev)) = tokio::time::timeout(BATCH_QUIET, events.next()).await {
                    if let Ok(ev) = ev {
                        agent.on(ev);
                    }
                    if Instant::now() > until {
                        break;
                    }
                }
            }
            _ = tick.tick() => agent.expire_early(),
        }
        if !agent.synced() {
            continue;
        }
        if !agent.dirty {
            // Gate callers whose pod changed nothing need not wait.
            for w in agent.waiting.drain(..) {
                let _ = w.send(());
            }
            continue;
        }
        if let Err(e) = agent.sync().await {
            tracing::warn!(error = %e, "programming network policy rules failed; rebuilding");
        }
    }
}

/// An unbounded receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
