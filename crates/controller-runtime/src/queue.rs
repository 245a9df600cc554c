//! A rate-limited work queue keyed by object, as client-go's workqueue: a
//! key is queued at most once, never processed by two workers at once, and
//! re-queued after processing if it changed meanwhile. Failures back off
//! exponentially per key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast};

use super::informer::{Change, Informer, Kind};

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    /// Keys added while being processed: queued again on `done`.
    again: HashSet<String>,
    failures: HashMap<String, u32>,
    /// When each waiting key was queued, and when each active key was
    /// taken (for the queue and work duration metrics).
    since: HashMap<String, Instant>,
    started: HashMap<String, Instant>,
    /// Keys waiting for a delayed add, and when it is due: a key waits
    /// once, for its earliest due time (as client-go's delaying queue).
    delayed: HashMap<String, tokio::time::Instant>,
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    base_delay: Duration,
    max_delay: Duration,
    /// The name the queue's metrics carry (a controller's name); unnamed
    /// queues report none.
    name: Option<Arc<str>>,
}

impl Default for Queue {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    /// A queue with client-go's default per-item backoff (5 ms doubling,
    /// capped here at 5 minutes).
    pub fn new() -> Self {
        Queue {
            state: Arc::default(),
            notify: Arc::new(Notify::new()),
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(300),
            name: None,
        }
    }

    /// A queue whose `workqueue_*` metrics carry `name`, as upstream names
    /// each controller's queue.
    pub fn named(name: &str) -> Self {
        Queue {
            name: Some(Arc::from(name)),
            ..Self::new()
        }
    }

    fn metrics(&self) -> Option<(&'static crate::metrics::Workqueue, &str)> {
        self.name
            .as_deref()
            .map(|n| (&*crate::metrics::WORKQUEUE, n))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a key now.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.again.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            if let Some((m, name)) = self.metrics() {
                m.adds.with_label_values(&[name]).inc();
                m.depth
                    .with_label_values(&[name])
                    .set(s.order.len() as i64 + 1);
                s.since.insert(key.clone(), Instant::now());
            }
            s.order.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues a key after a delay. A key already waiting keeps the earlier
    /// of the two times, so repeated delayed adds never pile up.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let key = key.into();
        let due = tokio::time::Instant::now() + delay;
        {
            let mut s = self.lock();
            match s.delayed.get(&key) {
                Some(&at) if at <= due => return,
                _ => {
                    s.delayed.insert(key.clone(), due);
                }
            }
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let fire = {
                let mut s = q.lock();
                // Superseded by an earlier add_after: that timer adds it.
                if s.delayed.get(&key) == Some(&due) {
                    s.delayed.remove(&key);
                    true
                } else {
                    false
                }
            };
            if fire {
                q.add(key);
            }
        });
    }

    /// Queues a key after its per-key backoff, and lengthens the backoff.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let n = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if let Some((m, name)) = self.metrics() {
            m.retries.with_label_values(&[name]).inc();
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (n - 1).min(20))
            .min(self.max_delay);
        self.add_after(key, exp);
    }

    /// Clears a key's backoff (after a success).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// Number of keys waiting.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the next key and marks it active.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(k) = s.order.pop_front() {
                    s.queued.remove(&k);
                    s.active.insert(k.clone());
                    if let Some((m, name)) = self.metrics() {
                        m.depth.with_label_values(&[name]).set(s.order.len() as i64);
                        if let Some(at) = s.since.remove(&k) {
                            m.queue_duration
                                .with_label_values(&[name])
                                .observe(at.elapsed().as_secs_f64());
                        }
                        s.started.insert(k.clone(), Instant::now());
                    }
                    if !s.order.is_empty() {
                        drop(s);
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    /// Marks a key no longer active, re-queuing it if it was added meanwhile.
    pub fn done(&self, key: &str) {
        let again = {
            let mut s = self.lock();
            s.active.remove(key);
            if let (Some((m, name)), Some(at)) = (self.metrics(), s.started.remove(key)) {
                m.work_duration
                    .with_label_values(&[name])
                    .observe(at.elapsed().as_secs_f64());
            }
            s.again.remove(key)
        };
        if again {
            self.add(key.to_string());
        }
    }

    /// Feeds an informer's changes into the queue, mapping each object to
    /// the keys it affects. On (re)sync every cached object is mapped again.
    pub fn watch<K, F>(&self, informer: &Informer<K>, map: F)
    where
        K: Kind,
        F: Fn(&K) -> Vec<String> + Send + Sync + 'static,
    {
        let q = self.clone();
        let inf = informer.clone();
        let mut rx = inf.subscribe();
        tokio::spawn(async move {
            inf.ready().await;
            let resync = |q: &Queue| {
                for o in inf.list() {
                    for k in map(&o) {
                        q.add(k);
                    }
                }
            };
            resync(&q);
            loop {
                match rx.recv().await {
                    Ok(Change::Apply(o)) | Ok(Change::Delete(o)) => {
                        for k in map(&o) {
                            q.add(k);
                        }
                    }
                    Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => resync(&q),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Like [`Queue::watch`], but the mapping sees the old state of an
    /// updated object too (`None` for adds, deletes and resyncs), for
    /// controllers that must react to what an object used to match.
    pub fn watch_changes<K, F>(&self, informer: &Informer<K>, map: F)
    where
        K: Kind,
        F: Fn(&Change<K>) -> Vec<String> + Send + Sync + 'static,
    {
        let q = self.clone();
        let inf = informer.clone();
        let mut rx = inf.subscribe();
        tokio::spawn(async move {
            inf.ready().await;
            let resync = |q: &Queue| {
                for o in inf.list() {
                    for k in map(&Change::Apply(o)) {
                        q.add(k);
                    }
                }
            };
            resync(&q);
            loop {
                match rx.recv().await {
                    Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => resync(&q),
                    Ok(ch) => {
                        for k in map(&ch) {
                            q.add(k);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Runs `workers` tasks that take keys and reconcile them. `Ok(Some(d))`
    /// asks for the key again after `d`; an error retries with backoff.
    pub async fn run<F, Fut, E>(&self, workers: usize, reconcile: F)
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Duration>, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let mut tasks = Vec::new();
        for _ in 0..workers.max(1) {
            let q = self.clone();
            let r = reconcile.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let key = q.next().await;
                    match r(key.clone()).await {
                        Ok(requeue) => {
                            q.forget(&key);
                            if let Some(d) = requeue {
                                q.add_after(key.clone(), d);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(key = %key, error = %e, "reconcile failed; retrying");
                            q.add_rate_limited(key.clone());
                        }
                    }
                    q.done(&key);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_of_a_key_keep_the_earliest_and_do_not_pile_up() {
        let q = Queue::new();
        for _ in 0..5 {
            q.add_after("k", Duration::from_secs(10));
        }
        q.add_after("k", Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(q.len(), 1, "due at the earliest time");
        assert_eq!(q.next().await, "k");
        q.done("k");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(q.len(), 0, "the later timers were superseded");
    }

    #[tokio::test]
    async fn a_key_is_queued_once_and_requeued_if_added_while_active() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a"); // changed while being processed
        assert_eq!(q.len(), 1, "not queued twice while active");
        q.done("a");
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially() {
        let q = Queue::new();
        for _ in 0..4 {
            q.add_rate_limited("k");
        }
        // Delays 5, 10, 20, 40 ms: after 6 ms only the first has fired.
        tokio::time::sleep(Duration::from_millis(6)).await;
        assert_eq!(q.len(), 1);
        q.forget("k");
        assert!(q.lock().failures.is_empty());
    }
}
