//! r8s hollow nodes: thousands of simulated nodes (like kwok/kubemark) in
//! one process, over the public API.
//!
//! Each hollow node registers a Node, renews its Lease in `kube-node-lease`
//! and reports status heartbeats like a kubelet, and moves the pods bound to
//! it through their lifecycle (Running after `pod_start_delay`, terminal per
//! the `r8s.io/hollow-*` annotations, finalised deletion). The work is driven
//! by three loops shared by all nodes — one heartbeat ticker, one Node watch,
//! one Pod watch — and requests go out through bounded-concurrency permits,
//! so there is no per-node task.
//!
//! Addressing (documented so tests and users can rely on it): node `i`
//! (0-based) gets `spec.podCIDR` `10.<64 + i/256>.<i%256>.0/24` (room for
//! 49 152 nodes) and InternalIP `10.200.<(i+1)/256>.<(i+1)%256>`. Pods get
//! `.2`–`.254` of their node's /24.

mod addressing;
mod heartbeat;
mod node;
mod pods;
mod shared;
mod status;

use std::sync::Arc;
use std::time::Duration;

pub use addressing::{node_name, pod_cidr};
pub use node::{HOLLOW_ANNOTATION, STOP_ANNOTATION};
pub use status::{EXIT_CODE_ANNOTATION, RUN_DURATION_ANNOTATION};

/// Hollow node failures.
#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    /// The API answered with an error.
    #[error("API error: {0}")]
    Kube(#[from] kube::Error),
    /// The options cannot work.
    #[error("invalid options: {0}")]
    Invalid(String),
    /// A background loop ended unexpectedly.
    #[error("hollow loop ended: {0}")]
    Stopped(String),
}

/// Hollow node tunables.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// How many nodes.
    pub nodes: usize,
    /// Zones to spread them over.
    pub zones: Vec<String>,
    /// Name prefix.
    pub name_prefix: String,
    /// Delay between binding and Running.
    pub pod_start_delay: Duration,
    /// CPU capacity per node.
    pub cpu: String,
    /// Memory capacity per node.
    pub memory: String,
    /// Pod capacity per node.
    pub max_pods: u32,
    /// Lease renewal period per node (zero: 10 s, the kubelet's).
    pub lease_interval: Duration,
    /// Node status heartbeat period per node (zero: 60 s).
    pub status_interval: Duration,
    /// Most API requests in flight at once (zero: 128).
    pub concurrency: usize,
    /// The index of the first node (names, addresses): a run that adds
    /// nodes beside others (the cluster autoscaler's) starts past them.
    pub first_index: usize,
    /// Labels beyond the ones every hollow node carries.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The nodes' taints (`spec.taints` entries).
    pub taints: Vec<serde_json::Value>,
}

/// Most nodes the addressing scheme has room for.
pub const MAX_NODES: usize = 192 * 256;

/// Runs the hollow nodes until the future is dropped (or a loop fails).
pub async fn run(client: kube::Client, opts: Options) -> Result<(), HollowError> {
    if opts.nodes == 0 {
        return Err(HollowError::Invalid("--nodes must be at least 1".into()));
    }
    if opts.first_index + opts.nodes > MAX_NODES {
        return Err(HollowError::Invalid(format!(
            "at most {MAX_NODES} hollow nodes fit the address plan (asked for {} from index {})",
            opts.nodes, opts.first_index
        )));
    }
    if opts.name_prefix.is_empty() {
        return Err(HollowError::Invalid(
            "the name prefix must not be empty".into(),
        ));
    }
    let shared = shared::Shared::new(client, opts);
    node::register_all(&shared).await?;
    tracing::info!(nodes = shared.nodes.len(), "hollow nodes registered");

    let (revive_tx, revive_rx) = tokio::sync::mpsc::unbounded_channel();
    // Aborted when this future is dropped, so the loops stop with it.
    let mut tasks = Tasks(
        shared.clone(),
        vec![
            tokio::spawn(heartbeat::run(shared.clone())),
            tokio::spawn(node::watch(shared.clone(), revive_tx)),
            tokio::spawn(pods::run(shared.clone(), revive_rx)),
        ],
    );
    let (res, idx, _) = futures::future::select_all(tasks.1.iter_mut()).await;
    let which = ["heartbeat", "node watch", "pod watch"][idx];
    match res {
        Ok(Ok(())) => Err(HollowError::Stopped(format!("{which} loop returned"))),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(HollowError::Stopped(format!("{which} loop: {e}"))),
    }
}

/// The loops, aborted on drop; closing the permits then makes queued
/// requests give up, so nothing keeps talking to the server afterwards.
struct Tasks(
    Arc<shared::Shared>,
    Vec<tokio::task::JoinHandle<Result<(), HollowError>>>,
);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.1 {
            t.abort();
        }
        self.0.pod_permits.close();
        self.0.heartbeat_permits.close();
    }
}
