//! r8s scheduler: watches pending pods, filters and scores nodes like
//! upstream's default profile, preempts lower-priority pods when nothing
//! fits, and binds through `pods/binding`. Talks to the API only via kube-rs.

#[cfg(test)]
mod bench;
pub mod cache;
pub mod framework;
pub mod metrics;
pub mod nodeinfo;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod schedule;
mod scheduler;
pub mod selector;
pub mod simulate;

use std::time::Duration;

/// Scheduler tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pods with this spec.schedulerName (or none) are ours.
    pub scheduler_name: String,
    /// percentageOfNodesToScore; 0 means upstream's adaptive default.
    pub percentage_of_nodes_to_score: u32,
    /// Backoff after a pod's first failed attempt (upstream 1s).
    pub initial_backoff: Duration,
    /// Backoff cap (upstream 10s).
    pub max_backoff: Duration,
    /// How long an unschedulable pod waits for a cluster event before it is
    /// retried anyway (upstream 5 min).
    pub max_unschedulable: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scheduler_name: "default-scheduler".into(),
            percentage_of_nodes_to_score: 0,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(300),
        }
    }
}

/// Runs the scheduler until the task is dropped.
pub async fn run(client: kube::Client, opts: Options) {
    scheduler::Scheduler::start(client, opts).await
}
