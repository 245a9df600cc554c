//! The metrics every control loop reports, in client-go's names: work
//! queues (`workqueue_depth`, `workqueue_adds_total`,
//! `workqueue_queue_duration_seconds`, `workqueue_work_duration_seconds`,
//! `workqueue_retries_total`, labelled
//! by the queue's `name`, as upstream names each controller's queue) and
//! leader election (`leader_election_master_status`). Components render
//! them with their own metrics through [`render`].

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// client-go's workqueue histogram buckets (1 µs to 10 s, by 10x).
const QUEUE_BUCKETS: &[f64] = &[1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// The work queue metrics.
pub struct Workqueue {
    /// Current depth.
    pub depth: IntGaugeVec,
    /// Adds handled.
    pub adds: IntCounterVec,
    /// Time in the queue before being processed.
    pub queue_duration: HistogramVec,
    /// Time processing takes.
    pub work_duration: HistogramVec,
    /// Retries (rate-limited adds).
    pub retries: IntCounterVec,
}

fn int_gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric")
}

/// The work queue metrics, registered in [`registry`].
pub static WORKQUEUE: LazyLock<Workqueue> = LazyLock::new(|| {
    let w = Workqueue {
        depth: int_gauge(
            "workqueue_depth",
            "[ALPHA] Current depth of workqueue",
            &["name"],
        ),
        adds: IntCounterVec::new(
            Opts::new(
                "workqueue_adds_total",
                "[ALPHA] Total number of adds handled by workqueue",
            ),
            &["name"],
        )
        .expect("a valid metric"),
        queue_duration: HistogramVec::new(
            HistogramOpts::new(
                "workqueue_queue_duration_seconds",
                "[ALPHA] How long in seconds an item stays in workqueue before being requested.",
            )
            .buckets(QUEUE_BUCKETS.to_vec()),
            &["name"],
        )
        .expect("a valid metric"),
        work_duration: HistogramVec::new(
            HistogramOpts::new(
                "workqueue_work_duration_seconds",
                "[ALPHA] How long in seconds processing an item from workqueue takes.",
            )
            .buckets(QUEUE_BUCKETS.to_vec()),
            &["name"],
        )
        .expect("a valid metric"),
        retries: IntCounterVec::new(
            Opts::new(
                "workqueue_retries_total",
                "[ALPHA] Total number of retries handled by workqueue",
            ),
            &["name"],
        )
        .expect("a valid metric"),
    };
    let r = &*REGISTRY;
    let _ = r.register(Box::new(w.depth.clone()));
    let _ = r.register(Box::new(w.adds.clone()));
    let _ = r.register(Box::new(w.queue_duration.clone()));
    let _ = r.register(Box::new(w.work_duration.clone()));
    let _ = r.register(Box::new(w.retries.clone()));
    w
});

/// `leader_election_master_status{name}`: 1 while this process leads.
pub static LEADER: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = int_gauge(
        "leader_election_master_status",
        "[ALPHA] Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
        &["name"],
    );
    let _ = REGISTRY.register(Box::new(g.clone()));
    g
});

/// The registry of the shared metrics (queues, leader election).
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// The Prometheus text of a component: its own `registries`, and the
/// shared series (queues, leases) whose `name` label `owned` accepts, so
/// that each component shows its own queues and lease.
pub fn render(registries: &[&Registry], owned: impl Fn(&str) -> bool) -> String {
    LazyLock::force(&WORKQUEUE);
    LazyLock::force(&LEADER);
    let mut families: Vec<prometheus::proto::MetricFamily> = Vec::new();
    for r in registries {
        families.extend(r.gather());
    }
    families.extend(filter_by_name(REGISTRY.gather(), owned));
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Keeps the series of a family whose `name` label passes `keep`.
pub fn filter_by_name(
    families: Vec<prometheus::proto::MetricFamily>,
    keep: impl Fn(&str) -> bool,
) -> Vec<prometheus::proto::MetricFamily> {
    families
        .into_iter()
        .filter_map(|mut f| {
            let kept: Vec<_> = f
                .take_metric()
                .into_iter()
                .filter(|m| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == "name")
                        .is_none_or(|l| keep(l.value()))
                })
                .collect();
            (!kept.is_empty()).then(|| {
                f.set_metric(kept);
                f
            })
        })
        .collect()
}
