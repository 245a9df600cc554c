//! State shared by the heartbeat ticker, the Node watch and the Pod watch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::Semaphore;

use crate::Options;

/// One simulated node.
pub(crate) struct NodeSlot {
    /// Node name.
    pub name: String,
    /// Index in the plan (drives addresses and zone).
    pub index: usize,
    /// Fake InternalIP, also each pod's hostIP.
    pub internal_ip: String,
    /// First three octets of the node's pod /24 (set at registration: a
    /// taken-over node keeps the podCIDR it already had).
    pub pod_net: OnceLock<[u8; 3]>,
    /// The Node's UID, for the Lease's ownerReference.
    pub uid: OnceLock<String>,
    /// Set by the `r8s.io/hollow-stop=true` annotation: the node is dead.
    pub stopped: AtomicBool,
    /// Unix seconds since which the node is Ready (condition transition).
    pub ready_since: AtomicI64,
}

impl NodeSlot {
    /// Whether the node is alive (not stopped by annotation).
    pub fn live(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
    }
}

/// Everything the loops share.
pub(crate) struct Shared {
    /// API client (cheap to clone).
    pub client: kube::Client,
    /// Tunables, with zero values replaced by defaults.
    pub opts: Options,
    /// The nodes, by index.
    pub nodes: Vec<NodeSlot>,
    /// Node name to index.
    pub by_name: HashMap<String, usize>,
    /// Permits for lease and node status requests; separate from pods so a
    /// burst of pod work never delays heartbeats into lease expiry.
    pub heartbeat_permits: Arc<Semaphore>,
    /// Permits for pod status patches and deletes.
    pub pod_permits: Arc<Semaphore>,
}

impl Shared {
    /// Plans the nodes (names, addresses) from the options.
    pub fn new(client: kube::Client, mut opts: Options) -> Arc<Shared> {
        if opts.lease_interval.is_zero() {
            opts.lease_interval = Duration::from_secs(10);
        }
        if opts.status_interval.is_zero() {
            opts.status_interval = Duration::from_secs(60);
        }
        if opts.concurrency == 0 {
            opts.concurrency = 128;
        }
        if opts.cpu.is_empty() {
            opts.cpu = "4".into();
        }
        if opts.memory.is_empty() {
            opts.memory = "16Gi".into();
        }
        if opts.max_pods == 0 {
            opts.max_pods = 110;
        }
        let now = Timestamp::now().as_second();
        let first = opts.first_index;
        let nodes: Vec<NodeSlot> = (first..first + opts.nodes)
            .map(|i| NodeSlot {
                name: crate::addressing::node_name(&opts.name_prefix, i),
                index: i,
                internal_ip: crate::addressing::internal_ip(i),
                pod_net: OnceLock::new(),
                uid: OnceLock::new(),
                stopped: AtomicBool::new(false),
                ready_since: AtomicI64::new(now),
            })
            .collect();
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let heartbeat = (opts.concurrency / 4).max(8);
        Arc::new(Shared {
            client,
            heartbeat_permits: Arc::new(Semaphore::new(heartbeat)),
            pod_permits: Arc::new(Semaphore::new(opts.concurrency)),
            opts,
            nodes,
            by_name,
        })
    }
}

/// RFC 3339 with seconds, as metav1.Time serialises.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 with microseconds, as metav1.MicroTime serialises.
pub(crate) fn rfc3339_micro(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Whether an error is a 404 from the API.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an error is a 409 from the API.
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
