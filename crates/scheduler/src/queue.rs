//! Scheduling queue as upstream's: an active heap (higher priority first,
//! then FIFO), a backoff queue (1s doubling to 10s per failed attempt), and
//! an unschedulable set that cluster events move back (or a 5 min timeout).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Queue tunables.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Backoff after the first failure.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// How long a pod may stay unschedulable without an event before retry.
    pub max_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(300),
        }
    }
}

/// Where a queued pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    priority: i32,
    attempts: u32,
    /// Order within a priority (lower is earlier); bumped on every re-add.
    seq: u64,
    last_failure: Option<Instant>,
    at: Where,
    /// Plugins that rejected the pod last time (for event filtering).
    rejected_by: HashSet<&'static str>,
    /// When the pod entered the unschedulable set.
    unschedulable_since: Option<Instant>,
    /// The pod changed while it was being scheduled.
    updated_in_flight: bool,
    /// When the pod was first queued (the scheduling SLI starts here).
    queued: Instant,
}

impl Entry {
    fn backoff_until(&self, cfg: &QueueConfig) -> Option<Instant> {
        let last = self.last_failure?;
        let mut d = cfg.initial_backoff;
        for _ in 1..self.attempts {
            d = d.saturating_mul(2);
            if d >= cfg.max_backoff {
                d = cfg.max_backoff;
                break;
            }
        }
        Some(last + d.min(cfg.max_backoff))
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    key: String,
}

impl Ord for ActiveItem {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    cycle: u64,
    move_request_cycle: u64,
    /// Keys of the pods in the unschedulable set.
    parked: HashSet<String>,
    /// When the unschedulable set was last scanned for timeouts.
    last_timeout_scan: Option<Instant>,
}

/// A pod handed out for one scheduling attempt.
#[derive(Debug, Clone)]
pub struct Popped {
    /// Queue key (`ns/name`).
    pub key: String,
    /// The pod as last seen.
    pub pod: Arc<Pod>,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// The scheduling cycle of this attempt.
    pub cycle: u64,
    /// When the pod was first queued.
    pub queued: Instant,
    /// When this attempt began (the pod left the queue).
    pub popped: Instant,
}

/// The scheduling queue.
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    cfg: QueueConfig,
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new(cfg: QueueConfig) -> Self {
        SchedulingQueue {
            inner: Mutex::default(),
            notify: Notify::new(),
            cfg,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a pending pod or updates the queued copy. An update that may
    /// change the outcome moves an unschedulable pod back.
    pub fn add(&self, key: &str, pod: Arc<Pod>, priority: i32) {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.seq += 1;
        let seq = inner.seq;
        match inner.pods.get_mut(key) {
            None => {
                inner.pods.insert(
                    key.to_string(),
                    Entry {
                        pod,
                        priority,
                        attempts: 0,
                        seq,
                        last_failure: None,
                        at: Where::Active,
                        rejected_by: HashSet::new(),
                        unschedulable_since: None,
                        updated_in_flight: false,
                        queued: Instant::now(),
                    },
                );
                inner.active.push(ActiveItem {
                    priority,
                    seq,
                    key: key.to_string(),
                });
                drop(g);
                self.notify.notify_one();
            }
            Some(e) => {
                let changed = spec_changed(&e.pod, &pod);
                e.pod = pod;
                e.priority = priority;
                if e.at == Where::Active {
                    // Priority may have changed: re-push; stale items are skipped.
                    e.seq = seq;
                    inner.active.push(ActiveItem {
                        priority,
                        seq,
                        key: key.to_string(),
                    });
                } else if e.at == Where::InFlight && changed {
                    e.updated_in_flight = true;
                } else if e.at == Where::Unschedulable && changed {
                    Self::requeue(inner, &self.cfg, key, Instant::now());
                    drop(g);
                    self.notify.notify_one();
                }
            }
        }
    }

    /// Drops a pod (deleted, or bound by someone else).
    pub fn delete(&self, key: &str) {
        let mut g = self.lock();
        g.pods.remove(key);
        g.parked.remove(key);
    }

    /// Whether the queue holds the pod.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().pods.contains_key(key)
    }

    /// Moves one entry to active or backoff (by its backoff deadline).
    fn requeue(inner: &mut Inner, cfg: &QueueConfig, key: &str, now: Instant) {
        inner.parked.remove(key);
        inner.seq += 1;
        let seq = inner.seq;
        let Some(e) = inner.pods.get_mut(key) else {
            return;
        };
        e.seq = seq;
        e.unschedulable_since = None;
        match e.backoff_until(cfg) {
            Some(t) if t > now => {
                e.at = Where::Backoff;
                inner.backoff.push(Reverse((t, seq, key.to_string())));
            }
            _ => {
                e.at = Where::Active;
                inner.active.push(ActiveItem {
                    priority: e.priority,
                    seq,
                    key: key.to_string(),
                });
            }
        }
    }

    /// Moves expired backoff entries and timed-out unschedulable pods to active.
    fn flush(inner: &mut Inner, cfg: &QueueConfig, now: Instant) -> Option<Instant> {
        while let Some(Reverse((t, seq, key))) = inner.backoff.peek().cloned() {
            if t > now {
                break;
            }
            inner.backoff.pop();
            if let Some(e) = inner.pods.get_mut(&key)
                && e.at == Where::Backoff
                && e.seq == seq
            {
                inner.seq += 1;
                e.seq = inner.seq;
                e.at = Where::Active;
                inner.active.push(ActiveItem {
                    priority: e.priority,
                    seq: e.seq,
                    key,
                });
            }
        }
        // Scanning for timeouts once a second is enough (upstream flushes
        // every 30 s) and keeps pops O(1) with many parked pods.
        if inner
            .last_timeout_scan
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            inner.last_timeout_scan = Some(now);
            let stale: Vec<String> = inner
                .parked
                .iter()
                .filter_map(|k| inner.pods.get(k).map(|e| (k, e)))
                .filter(|(_, e)| {
                    e.at == Where::Unschedulable
                        && e.unschedulable_since
                            .is_some_and(|s| now.duration_since(s) >= cfg.max_unschedulable)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                Self::requeue(inner, cfg, &k, now);
            }
        }
        inner.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Takes the next pod without waiting.
    pub fn try_pop(&self) -> Result<Popped, Option<Instant>> {
        let mut g = self.lock();
        let inner = &mut *g;
        let next = Self::flush(inner, &self.cfg, Instant::now());
        while let Some(item) = inner.active.pop() {
            let Some(e) = inner.pods.get_mut(&item.key) else {
                continue;
            };
            if e.at != Where::Active || e.seq != item.seq {
                continue;
            }
            inner.cycle += 1;
            e.at = Where::InFlight;
            e.attempts += 1;
            return Ok(Popped {
                key: item.key,
                pod: e.pod.clone(),
                attempts: e.attempts,
                cycle: inner.cycle,
                queued: e.queued,
                popped: Instant::now(),
            });
        }
        Err(next)
    }

    /// Waits for the next pod to schedule.
    pub async fn pop(&self) -> Popped {
        loop {
            let notified = self.notify.notified();
            match self.try_pop() {
                Ok(p) => return p,
                Err(next) => {
                    // The unschedulable timeout is checked at least every second.
                    let wake = next
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
                        .min(Instant::now() + Duration::from_secs(1));
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(wake) => {}
                    }
                }
            }
        }
    }

    /// The pod was assumed on a node: it leaves the queue.
    pub fn done(&self, key: &str) {
        let mut g = self.lock();
        if g.pods.get(key).is_some_and(|e| e.at == Where::InFlight) {
            g.pods.remove(key);
            g.parked.remove(key);
        }
    }

    /// The attempt failed. If a cluster event arrived during the attempt (or
    /// the failure was an error rather than a plugin rejection), the pod backs
    /// off; otherwise it waits in the unschedulable set.
    pub fn failed(&self, key: &str, cycle: u64, rejected_by: HashSet<&'static str>) {
        let mut g = self.lock();
        let inner = &mut *g;
        let now = Instant::now();
        let Some(e) = inner.pods.get_mut(key) else {
            return;
        };
        if e.at != Where::InFlight {
            return;
        }
        let to_backoff = inner.move_request_cycle >= cycle
            || rejected_by.is_empty()
            || std::mem::take(&mut e.updated_in_flight);
        e.last_failure = Some(now);
        e.rejected_by = rejected_by;
        if to_backoff {
            Self::requeue(inner, &self.cfg, key, now);
        } else {
            e.at = Where::Unschedulable;
            e.unschedulable_since = Some(now);
            inner.parked.insert(key.to_string());
        }
        drop(g);
        self.notify.notify_one();
    }

    /// A binding failed after the pod left the queue: retry with backoff.
    pub fn retry(&self, key: &str, pod: Arc<Pod>, priority: i32, attempts: u32) {
        let mut g = self.lock();
        let inner = &mut *g;
        let now = Instant::now();
        inner.pods.insert(
            key.to_string(),
            Entry {
                pod,
                priority,
                attempts,
                seq: 0,
                last_failure: Some(now),
                at: Where::Backoff,
                rejected_by: HashSet::new(),
                unschedulable_since: None,
                updated_in_flight: false,
                queued: now,
            },
        );
        Self::requeue(inner, &self.cfg, key, now);
        drop(g);
        self.notify.notify_one();
    }

    /// A cluster event: unschedulable pods rejected by a plugin that
    /// `relevant` accepts go back to active (or backoff).
    pub fn move_unschedulable(&self, relevant: impl Fn(&HashSet<&'static str>) -> bool) {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.move_request_cycle = inner.cycle;
        let now = Instant::now();
        if inner.parked.is_empty() {
            return;
        }
        let keys: Vec<String> = inner
            .parked
            .iter()
            .filter(|k| {
                inner
                    .pods
                    .get(*k)
                    .is_some_and(|e| e.at == Where::Unschedulable && relevant(&e.rejected_by))
            })
            .cloned()
            .collect();
        let moved = !keys.is_empty();
        for k in keys {
            Self::requeue(inner, &self.cfg, &k, now);
        }
        drop(g);
        if moved {
            self.notify.notify_one();
        }
    }

    /// Counts of (active, backoff, unschedulable) pods, for tests and logs.
    pub fn lens(&self) -> (usize, usize, usize) {
        let g = self.lock();
        let n = |w: Where| g.pods.values().filter(|e| e.at == w).count();
        (n(Where::Active), n(Where::Backoff), n(Where::Unschedulable))
    }
}

/// Whether a pending pod's update may change scheduling (labels,
/// annotations, spec; status and bookkeeping are ignored as upstream).
fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
        || old.spec != new.spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}})).unwrap(),
        )
    }

    fn rejected(p: &'static str) -> HashSet<&'static str> {
        [p].into_iter().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn priority_then_fifo() {
        let q = SchedulingQueue::new(QueueConfig::default());
        q.add("d/low", pod("low"), 0);
        q.add("d/high", pod("high"), 100);
        q.add("d/low2", pod("low2"), 0);
        assert_eq!(q.pop().await.key, "d/high");
        assert_eq!(q.pop().await.key, "d/low");
        assert_eq!(q.pop().await.key, "d/low2");
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_waits_for_event_then_backs_off() {
        let q = SchedulingQueue::new(QueueConfig::default());
        q.add("d/p", pod("p"), 0);
        let p = q.pop().await;
        q.failed(&p.key, p.cycle, rejected("NodeResourcesFit"));
        assert_eq!(q.lens(), (0, 0, 1));
        // An event irrelevant to the rejecting plugin leaves it alone.
        q.move_unschedulable(|r| r.contains("InterPodAffinity"));
        assert_eq!(q.lens(), (0, 0, 1));
        q.move_unschedulable(|_| true);
        // Still inside the 1s backoff of its first failure.
        assert_eq!(q.lens(), (0, 1, 0));
        let start = Instant::now();
        let p = q.pop().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(p.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_ten_seconds() {
        let q = SchedulingQueue::new(QueueConfig::default());
        q.add("d/p", pod("p"), 0);
        let mut p = q.pop().await;
        let mut waits = Vec::new();
        for _ in 0..6 {
            // An error (no rejecting plugin) sends the pod straight to backoff.
            q.failed(&p.key, p.cycle, HashSet::new());
            let t = Instant::now();
            p = q.pop().await;
            waits.push(t.elapsed().as_secs());
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_times_out_after_five_minutes() {
        let q = SchedulingQueue::new(QueueConfig::default());
        q.add("d/p", pod("p"), 0);
        let p = q.pop().await;
        q.failed(&p.key, p.cycle, rejected("TaintToleration"));
        let start = Instant::now();
        let _ = q.pop().await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(300) && waited <= Duration::from_secs(302));
    }

    #[tokio::test(start_paused = true)]
    async fn update_during_attempt_skips_the_unschedulable_set() {
        let q = SchedulingQueue::new(QueueConfig::default());
        q.add("d/p", pod("p"), 0);
        let p = q.pop().await;
        let mut changed = (*pod("p")).clone();
        changed.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        q.add("d/p", Arc::new(changed), 0);
        q.failed(&p.key, p.cycle, rejected("NodeAffinity"));
        assert_eq!(q.lens(), (0, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn spec_update_moves_unschedulable_pod() {
        let q = SchedulingQueue::new(QueueConfig::default());
        q.add("d/p", pod("p"), 0);
        let p = q.pop().await;
        q.failed(&p.key, p.cycle, rejected("NodeAffinity"));
        q.add("d/p", pod("p"), 0);
        assert_eq!(q.lens(), (0, 0, 1), "status-only update keeps it parked");
        let mut changed = (*pod("p")).clone();
        changed.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        q.add("d/p", Arc::new(changed), 0);
        assert_eq!(q.lens(), (0, 1, 0));
    }
}
