//! `r8s bench density` (being written this session).

/// Density benchmark arguments.
#[derive(clap::Args)]
pub struct DensityArgs {
    /// Hollow nodes to register.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to create.
    #[arg(long, default_value_t = 30000)]
    pods: usize,
}

/// Runs the density benchmark.
pub async fn run(args: DensityArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "bench density ({} nodes, {} pods) is not built yet",
        args.nodes,
        args.pods
    )
}
