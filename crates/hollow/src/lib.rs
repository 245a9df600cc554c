//! r8s hollow nodes (being written this session).

use std::time::Duration;

/// Hollow node failures.
#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    /// The API answered with an error.
    #[error("API error: {0}")]
    Kube(#[from] kube::Error),
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
}

/// Runs the hollow nodes until the task is dropped.
pub async fn run(client: kube::Client, opts: Options) -> Result<(), HollowError> {
    let _ = (client, opts);
    Ok(())
}
