//! `r8s server`'s metrics and autoscaling flags, named as metrics-server's,
//! kube-scheduler's and kube-controller-manager's.

use std::time::Duration;

use crate::parse_duration;

/// The metrics API's and the HorizontalPodAutoscaler's settings.
#[derive(clap::Args, Debug, Clone)]
pub struct AutoscalingArgs {
    /// How often the built-in metrics API (metrics.k8s.io, what
    /// `kubectl top` and HPAs read) scrapes each node, as metrics-server's
    /// flag.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub metric_resolution: Duration,
    /// How often each HorizontalPodAutoscaler is evaluated.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How long an HPA without `behavior` waits before scaling down (the
    /// highest recommendation of this window wins).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// The ratio change within which an HPA does not scale.
    #[arg(long, default_value_t = 0.1)]
    pub horizontal_pod_autoscaler_tolerance: f64,
    /// How long after a pod starts its CPU samples may be skipped while it
    /// is not (or only just) ready.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_cpu_initialization_period: Duration,
    /// How long after a pod starts a readiness change still counts as its
    /// initial one.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_initial_readiness_delay: Duration,
    /// Where the scheduler serves its `/metrics` over HTTPS (as
    /// kube-scheduler's `--secure-port`; 0 turns it off).
    #[arg(long, default_value_t = 10259)]
    pub scheduler_secure_port: u16,
    /// Where the controllers serve their `/metrics` over HTTPS (as
    /// kube-controller-manager's `--secure-port`; 0 turns it off).
    #[arg(long, default_value_t = 10257)]
    pub controller_manager_secure_port: u16,
    /// The address those two listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub components_bind_address: std::net::IpAddr,
}

impl AutoscalingArgs {
    /// The HPA controller's settings.
    pub fn hpa(&self) -> controllers::podautoscaler::Settings {
        controllers::podautoscaler::Settings {
            sync_period: self.horizontal_pod_autoscaler_sync_period,
            downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
            calculator: controllers::podautoscaler::replicas::Calculator {
                tolerance: self.horizontal_pod_autoscaler_tolerance,
                cpu_initialization_secs: self
                    .horizontal_pod_autoscaler_cpu_initialization_period
                    .as_secs() as i64,
                initial_readiness_delay_secs: self
                    .horizontal_pod_autoscaler_initial_readiness_delay
                    .as_secs() as i64,
            },
        }
    }
}

/// Serves a component's `/metrics` on `port` (0: not at all); a port in
/// use is a warning, not a failure (another server on this host has it).
pub fn serve_metrics(
    args: &AutoscalingArgs,
    port: u16,
    component: &'static str,
    ca_pem: &str,
    client: kube::Client,
    render: fn() -> String,
) {
    if port == 0 {
        return;
    }
    let addr = std::net::SocketAddr::new(args.components_bind_address, port);
    let ca = ca_pem.to_string();
    tokio::spawn(async move {
        match controller_runtime::secure::serve_metrics(
            addr,
            &ca,
            client,
            std::sync::Arc::new(render),
        )
        .await
        {
            Ok(a) => tracing::info!(%component, addr = %a, "serving /metrics"),
            Err(e) => tracing::warn!(%component, error = %e, "not serving /metrics"),
        }
    });
}
