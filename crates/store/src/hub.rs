//! Fan-out of committed events to live watchers, shared by both backends.
//!
//! Each watcher owns a bounded buffer. Publishing never blocks the writer:
//! when a watcher's buffer is full it is marked lagged and dropped, and its
//! stream ends with [`StoreError::WatcherLagged`] so it can never silently
//! miss an event.
//!
//! The hub also records the latest published revision under the same lock
//! that guards subscription, so a new subscriber learns exactly which
//! revision its live feed starts after: no gap and no duplicate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::{Event, Revision, StoreError};

/// Default per-watcher buffer, in events.
pub const DEFAULT_WATCH_BUFFER: usize = 16 * 1024;

/// The revision an event happened at.
pub(crate) fn event_revision(ev: &Event) -> Revision {
    ev.kv.mod_revision
}

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

struct HubState {
    revision: Revision,
    subscribers: Vec<Subscriber>,
}

/// Live event fan-out.
pub(crate) struct Hub {
    state: Mutex<HubState>,
    buffer: usize,
}

/// The receiving half of a subscription.
pub(crate) struct Live {
    rx: mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    /// A hub whose last published revision is `revision`.
    pub(crate) fn new(revision: Revision, buffer: usize) -> Self {
        Hub {
            state: Mutex::new(HubState {
                revision,
                subscribers: Vec::new(),
            }),
            buffer: buffer.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the state torn (every
        // mutation is a single push/retain/assignment), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last published revision.
    pub(crate) fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Subscribes to events under `prefix`; returns the feed and the revision
    /// it starts after (every event later than it will be delivered).
    pub(crate) fn subscribe(&self, prefix: &str) -> (Live, Revision) {
        let (tx, rx) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut st = self.lock();
        st.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            tx,
            lagged: lagged.clone(),
        });
        (Live { rx, lagged }, st.revision)
    }

    /// Ends every live feed (the store is going away).
    pub(crate) fn close(&self) {
        self.lock().subscribers.clear();
    }

    /// Publishes the events of one commit (in revision order) and records
    /// `revision` as the latest.
    pub(crate) fn publish(&self, revision: Revision, events: &[Event]) {
        let mut st = self.lock();
        st.revision = st.revision.max(revision);
        st.subscribers.retain(|sub| {
            if sub.tx.is_closed() {
                return false;
            }
            for ev in events.iter().filter(|e| e.kv.key.starts_with(&sub.prefix)) {
                match sub.tx.try_send(ev.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(prefix = %sub.prefix, "watcher fell behind; closing it");
                        sub.lagged.store(true, Ordering::Release);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }
}

impl Live {
    /// Receives the next live event; `Err(WatcherLagged)` once if the
    /// watcher was dropped for falling behind, `None` when the feed ended.
    pub(crate) async fn recv(&mut self) -> Option<Result<Event, StoreError>> {
        match self.rx.recv().await {
            Some(ev) => Some(Ok(ev)),
            None if self.lagged.swap(false, Ordering::AcqRel) => {
                Some(Err(StoreError::WatcherLagged))
            }
            None => None,
        }
    }

    /// Turns the feed into a stream, skipping events at or before `skip_through`
    /// (already delivered by a replay) and ending after a lag error.
    pub(crate) fn into_stream(
        self,
        skip_through: Revision,
    ) -> BoxStream<'static, Result<Event, StoreError>> {
        futures::stream::unfold(Some(self), move |live| async move {
            let mut live = live?;
            loop {
                match live.recv().await {
                    Some(Ok(ev)) if event_revision(&ev) <= skip_through => continue,
                    Some(Ok(ev)) => return Some((Ok(ev), Some(live))),
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => return None,
                }
            }
        })
        .boxed()
    }
}
