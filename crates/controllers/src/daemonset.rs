//! daemonset controller (being written this session).

use std::sync::Arc;

use crate::Context;

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let _ = ctx;
}
