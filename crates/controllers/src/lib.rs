//! r8s controllers. Each controller is an API client (kube-rs), exactly like
//! a third-party controller: it works the same in-process or remote.

pub mod gc;
pub mod namespace;
mod resources;

use std::time::Duration;

/// Controller failures that stop a controller (transient API errors are
/// retried inside the loops).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The API answered with an error.
    #[error("API error: {0}")]
    Kube(#[from] kube::Error),
}

/// Tunables shared by the controllers.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the garbage collector rescans (it also reacts at once to
    /// deletions it is told about through the namespace controller).
    pub gc_interval: Duration,
    /// How often a terminating namespace is re-checked for leftover content.
    pub namespace_resync: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gc_interval: Duration::from_secs(2),
            namespace_resync: Duration::from_millis(500),
        }
    }
}

/// Runs every controller until the task is dropped.
pub async fn run(client: kube::Client, opts: Options) {
    let ns = tokio::spawn(namespace::run(client.clone(), opts.clone()));
    let gc = tokio::spawn(gc::run(client, opts));
    let _ = tokio::join!(ns, gc);
}
