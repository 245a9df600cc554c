//! r8s controllers. Each controller is an API client (kube-rs), exactly like
//! a third-party controller: it works the same in-process or remote. They
//! share one informer per kind ([`controller_runtime::Informers`]) and each
//! owns a work queue keyed by object ([`controller_runtime::Queue`]).

pub mod clusterautoscaler;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
mod resources;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod volume;

use std::sync::Arc;
use std::time::Duration;

/// Controller failures (transient API errors are retried by the queues).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The API answered with an error.
    #[error("API error: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be used as it is (bad template, selector, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Tunables shared by the controllers.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the garbage collector rescans (it also reacts at once to
    /// deletions it is told about through the namespace controller).
    pub gc_interval: Duration,
    /// How often a terminating namespace is re-checked for leftover content.
    pub namespace_resync: Duration,
    /// How long a node may go without a heartbeat before it is marked
    /// NotReady/Unknown (upstream's node-monitor-grace-period is 40 s; r8s
    /// uses 20 s so that replacements run elsewhere in under a minute).
    pub node_monitor_grace_period: Duration,
    /// Worker tasks per controller queue.
    pub workers: usize,
    /// Controllers not to run (names as in [`CONTROLLERS`]).
    pub disabled: Vec<String>,
    /// The cluster CA (PEM) that the root-ca-cert-publisher puts into every
    /// namespace as ConfigMap `kube-root-ca.crt`.
    pub root_ca_pem: Option<String>,
    /// The pod range node IPAM hands /24s out of (`--cluster-cidr`); None
    /// leaves nodes to claim their own.
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    /// The HorizontalPodAutoscaler controller's flags.
    pub hpa: podautoscaler::Settings,
    /// The cluster autoscaler's flags and providers.
    pub autoscaler: clusterautoscaler::Settings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gc_interval: Duration::from_secs(2),
            namespace_resync: Duration::from_millis(500),
            node_monitor_grace_period: Duration::from_secs(20),
            workers: 4,
            disabled: Vec::new(),
            root_ca_pem: None,
            cluster_cidr: None,
            hpa: podautoscaler::Settings::default(),
            autoscaler: clusterautoscaler::Settings::default(),
        }
    }
}

/// What every controller gets: the client, the shared informers, options.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Shared caches, one watch per kind.
    pub informers: controller_runtime::Informers,
    /// Tunables.
    pub opts: Options,
}

impl Context {
    /// A context on `client`.
    pub fn new(client: kube::Client, opts: Options) -> Arc<Self> {
        Arc::new(Context {
            informers: controller_runtime::Informers::new(client.clone()),
            client,
            opts,
        })
    }

    /// An event recorder for one controller.
    pub fn recorder(&self, component: &str) -> controller_runtime::events::Recorder {
        controller_runtime::events::Recorder::new(self.client.clone(), component)
    }
}

/// The controllers `r8s server` runs, by name (`--disable` takes these).
pub const CONTROLLERS: &[&str] = &[
    "namespace",
    "garbagecollector",
    "replicaset",
    "replicationcontroller",
    "deployment",
    "daemonset",
    "statefulset",
    "job",
    "cronjob",
    "serviceaccount",
    "root-ca-cert-publisher",
    "endpointslice",
    "endpoints",
    "disruption",
    "resourcequota",
    "nodelifecycle",
    "podgc",
    "persistentvolume-binder",
    "nodeipam",
    "servicelb",
    "horizontalpodautoscaling",
    "cluster-autoscaler",
];

/// The controller manager's `/metrics` text: its work queues and lease.
pub fn render_metrics() -> String {
    controller_runtime::metrics::render(&[], |name| name != "kube-scheduler")
}

/// Runs every enabled controller until the task is dropped.
pub async fn run(client: kube::Client, opts: Options) {
    let ctx = Context::new(client.clone(), opts.clone());
    let on = |name: &str| !opts.disabled.iter().any(|d| d == name);
    let mut tasks = Vec::new();
    let mut spawn = |name: &str, fut: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
        if on(name) {
            tasks.push(tokio::spawn(fut));
        }
    };
    spawn(
        "namespace",
        Box::pin(namespace::run(client.clone(), opts.clone())),
    );
    spawn(
        "garbagecollector",
        Box::pin(gc::run(client.clone(), opts.clone())),
    );
    spawn("replicaset", Box::pin(replicaset::run(ctx.clone())));
    spawn(
        "replicationcontroller",
        Box::pin(replicaset::run_replication_controllers(ctx.clone())),
    );
    spawn("deployment", Box::pin(deployment::run(ctx.clone())));
    spawn("daemonset", Box::pin(daemonset::run(ctx.clone())));
    spawn("statefulset", Box::pin(statefulset::run(ctx.clone())));
    spawn("job", Box::pin(job::run(ctx.clone())));
    spawn("cronjob", Box::pin(cronjob::run(ctx.clone())));
    spawn("serviceaccount", Box::pin(serviceaccount::run(ctx.clone())));
    spawn(
        "root-ca-cert-publisher",
        Box::pin(serviceaccount::run_root_ca_publisher(
            ctx.clone(),
            opts.root_ca_pem.clone(),
        )),
    );
    spawn(
        "endpointslice",
        Box::pin(endpoints::run_slices(ctx.clone())),
    );
    spawn("endpoints", Box::pin(endpoints::run_endpoints(ctx.clone())));
    spawn("disruption", Box::pin(disruption::run(ctx.clone())));
    spawn("resourcequota", Box::pin(resourcequota::run(ctx.clone())));
    spawn("nodelifecycle", Box::pin(nodelifecycle::run(ctx.clone())));
    spawn("podgc", Box::pin(podgc::run(ctx.clone())));
    spawn(
        "persistentvolume-binder",
        Box::pin(volume::run(ctx.clone())),
    );
    spawn("nodeipam", Box::pin(nodeipam::run(ctx.clone())));
    spawn("servicelb", Box::pin(servicelb::run(ctx.clone())));
    spawn(
        "horizontalpodautoscaling",
        Box::pin(podautoscaler::run(ctx.clone())),
    );
    spawn(
        "cluster-autoscaler",
        Box::pin(clusterautoscaler::run(ctx.clone())),
    );
    for t in tasks {
        let _ = t.await;
    }
}
