//! The scheduler's Prometheus metrics, in kube-scheduler's names:
//! `scheduler_schedule_attempts_total{profile,result}`,
//! `scheduler_scheduling_attempt_duration_seconds{profile,result}`,
//! `scheduler_pod_scheduling_sli_duration_seconds{attempts}` (from first
//! queued to bound), `scheduler_pod_scheduling_attempts`,
//! `scheduler_pending_pods{queue}` and
//! `scheduler_preemption_attempts_total`.

use std::sync::{LazyLock, Mutex};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

/// The scheduler's registry.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = REGISTRY.register(Box::new(c.clone()));
    c
}

/// `scheduler_schedule_attempts_total`.
pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "scheduler_schedule_attempts_total",
                "[STABLE] Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            ),
            &["profile", "result"],
        )
        .expect("a valid metric"),
    )
});

/// `scheduler_scheduling_attempt_duration_seconds`.
pub static ATTEMPT_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "[STABLE] Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            )
            .buckets(exponential_buckets(0.001, 2.0, 15).expect("valid buckets")),
            &["profile", "result"],
        )
        .expect("a valid metric"),
    )
});

/// `scheduler_pod_scheduling_sli_duration_seconds`.
pub static SLI_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "scheduler_pod_scheduling_sli_duration_seconds",
                "[BETA] E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue and might involve multiple scheduling attempts.",
            )
            .buckets(exponential_buckets(0.01, 2.0, 20).expect("valid buckets")),
            &["attempts"],
        )
        .expect("a valid metric"),
    )
});

/// `scheduler_pod_scheduling_attempts`.
pub static POD_ATTEMPTS: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "scheduler_pod_scheduling_attempts",
                "[STABLE] Number of attempts to successfully schedule a pod.",
            )
            .buckets(exponential_buckets(1.0, 2.0, 5).expect("valid buckets")),
        )
        .expect("a valid metric"),
    )
});

/// `scheduler_pending_pods`.
pub static PENDING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "scheduler_pending_pods",
                "[STABLE] Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the number of unschedulable pods that the scheduler never attempted to schedule because they are gated.",
            ),
            &["queue"],
        )
        .expect("a valid metric"),
    )
});

/// `scheduler_preemption_attempts_total`.
pub static PREEMPTION_ATTEMPTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "scheduler_preemption_attempts_total",
            "[STABLE] Total preemption attempts in the cluster till now",
        )
        .expect("a valid metric"),
    )
});

type Lens = Box<dyn Fn() -> Option<(usize, usize, usize)> + Send + Sync>;

/// Where the pending counts come from: the running scheduler's queue.
static QUEUE_LENS: Mutex<Option<Lens>> = Mutex::new(None);

/// Tells the metrics how to count the queue (set when a scheduler starts).
pub fn set_queue_lens(f: Lens) {
    if let Ok(mut q) = QUEUE_LENS.lock() {
        *q = Some(f);
    }
}

/// The scheduler's `/metrics` text (its own and its lease's).
pub fn render() -> String {
    LazyLock::force(&ATTEMPTS);
    LazyLock::force(&ATTEMPT_DURATION);
    LazyLock::force(&SLI_DURATION);
    LazyLock::force(&POD_ATTEMPTS);
    LazyLock::force(&PREEMPTION_ATTEMPTS);
    let lens = QUEUE_LENS
        .lock()
        .ok()
        .and_then(|q| q.as_ref().and_then(|f| f()));
    if let Some((active, backoff, unschedulable)) = lens {
        PENDING.with_label_values(&["active"]).set(active as i64);
        PENDING.with_label_values(&["backoff"]).set(backoff as i64);
        PENDING
            .with_label_values(&["unschedulable"])
            .set(unschedulable as i64);
        PENDING.with_label_values(&["gated"]).set(0);
    }
    controller_runtime::metrics::render(&[&REGISTRY], |name| name == "kube-scheduler")
}
