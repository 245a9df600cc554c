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
    /// How often the cluster autoscaler looks at pending pods and unneeded
    /// nodes (cluster-autoscaler's `--scan-interval`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub cluster_autoscaler_scan_interval: Duration,
    /// How long a node must be unneeded before the autoscaler removes it.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub scale_down_unneeded_time: Duration,
    /// Requested share of a node's allocatable under which it may be
    /// removed.
    #[arg(long, default_value_t = 0.5)]
    pub scale_down_utilization_threshold: f64,
}

impl AutoscalingArgs {
    /// The cluster autoscaler's settings; its hollow nodes use `client`,
    /// its command provider's machines join `server` with `token`.
    pub fn cluster_autoscaler(
        &self,
        client: kube::Client,
        eviction_client: Option<kube::Client>,
        server: &str,
        token: &str,
    ) -> controllers::clusterautoscaler::Settings {
        controllers::clusterautoscaler::Settings {
            scan_interval: self.cluster_autoscaler_scan_interval,
            unneeded_time: self.scale_down_unneeded_time,
            utilization_threshold: self.scale_down_utilization_threshold,
            hollow: Some(controllers::clusterautoscaler::provider::Handle(
                std::sync::Arc::new(HollowProvider::new(client)),
            )),
            join: controllers::clusterautoscaler::provider::JoinInfo {
                server: server.to_string(),
                token: token.to_string(),
            },
            eviction_client: eviction_client.map(controllers::clusterautoscaler::NoRetry),
        }
    }

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

/// The cluster autoscaler's `hollow` provider: each node it adds is a
/// hollow node run in this process (indexes from 40 000 up, so they never
/// meet `r8s hollow`'s), labelled and tainted as the group's template.
pub struct HollowProvider {
    client: kube::Client,
    next: std::sync::atomic::AtomicUsize,
    runs: std::sync::Mutex<std::collections::HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl HollowProvider {
    /// A provider whose nodes talk to the API through `client`.
    pub fn new(client: kube::Client) -> Self {
        HollowProvider {
            client,
            next: std::sync::atomic::AtomicUsize::new(40_000),
            runs: Default::default(),
        }
    }
}

impl controllers::clusterautoscaler::provider::Provider for HollowProvider {
    fn add<'a>(
        &'a self,
        group: &'a controllers::clusterautoscaler::group::NodeGroup,
        count: usize,
    ) -> futures::future::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let mut names = Vec::new();
            for _ in 0..count {
                let index = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut labels = group.template.labels.clone();
                labels.insert(
                    controllers::clusterautoscaler::plan::GROUP_LABEL.to_string(),
                    group.name.clone(),
                );
                let opts = hollow::Options {
                    nodes: 1,
                    name_prefix: group.name.clone(),
                    first_index: index,
                    cpu: group.template.cpu.clone(),
                    memory: group.template.memory.clone(),
                    max_pods: group.template.pods,
                    labels,
                    taints: group.template.taints.clone(),
                    ..Default::default()
                };
                let name = hollow::node_name(&group.name, index);
                let client = self.client.clone();
                let node = name.clone();
                let task = tokio::spawn(async move {
                    if let Err(e) = hollow::run(client, opts).await {
                        tracing::warn!(%node, error = %e, "autoscaled hollow node stopped");
                    }
                });
                if let Ok(mut runs) = self.runs.lock() {
                    runs.insert(name.clone(), task);
                }
                names.push(name);
            }
            Ok(names)
        })
    }

    fn remove<'a>(
        &'a self,
        _group: &'a controllers::clusterautoscaler::group::NodeGroup,
        node: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if let Some(task) = self.runs.lock().ok().and_then(|mut r| r.remove(node)) {
                task.abort();
            }
            Ok(())
        })
    }
}
