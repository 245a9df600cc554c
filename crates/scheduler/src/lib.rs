//! r8s scheduler (being written this session).

/// Scheduler tunables.
#[derive(Debug, Clone, Default)]
pub struct Options {}

/// Runs the scheduler until the task is dropped.
pub async fn run(client: kube::Client, opts: Options) {
    let _ = (client, opts);
}
