//! endpoints controller (being written this session).

use std::sync::Arc;

use crate::Context;

/// Runs the controller until the task is dropped.
pub async fn run_slices(ctx: Arc<Context>) {
    let _ = ctx;
}

/// Runs the controller until the task is dropped.
pub async fn run_endpoints(ctx: Arc<Context>) {
    let _ = ctx;
}
