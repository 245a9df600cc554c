//! The watch cache: one store watch feeds a ring of recent, already-decoded
//! events and a broadcast channel, so that any number of API watchers cost
//! one decode per event. Watchers asking for history older than the ring
//! fall back to a direct store watch (which answers 410 once compacted).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::Value;
use store::{EventType, Revision, SharedStore, StoreError};
use tokio::sync::broadcast;

/// One decoded change.
#[derive(Debug, Clone)]
pub struct CachedEvent {
    /// Put or delete.
    pub kind: EventType,
    /// True when the put created the key.
    pub created: bool,
    /// Store key.
    pub key: String,
    /// The object with its resourceVersion set (for a delete: its last state
    /// with the delete's revision).
    pub object: Arc<Value>,
    /// The object before the change, for selector transitions.
    pub prev: Option<Arc<Value>>,
    /// The event's revision.
    pub revision: Revision,
    /// The object serialised once, shared by every watcher that wants it
    /// as stored (the common case), so fan-out costs no re-encoding.
    pub encoded: std::sync::OnceLock<bytes::Bytes>,
}

impl CachedEvent {
    /// The object as JSON bytes, encoded on first use.
    pub fn encoded(&self) -> &bytes::Bytes {
        self.encoded.get_or_init(|| {
            bytes::Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default())
        })
    }
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// Every event with revision > `start` is in `events` (or later).
    start: Revision,
    /// The newest revision seen.
    last: Revision,
}

/// The shared cache of recent events.
pub struct WatchCache {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<CachedEvent>>,
    capacity: usize,
    store: SharedStore,
}

/// Where a watcher's events come from.
pub enum Source {
    /// Replayed history followed by live broadcast events.
    Cache {
        /// Events already past, in order.
        replay: Vec<Arc<CachedEvent>>,
        /// Live events; skip those at or below `after`.
        live: broadcast::Receiver<Arc<CachedEvent>>,
        /// The last revision in `replay` (or the requested one).
        after: Revision,
    },
    /// A direct store watch, for history the ring no longer holds.
    Store(store::WatchStream),
}

/// Decodes a stored object and stamps its resourceVersion.
pub fn decode_object(value: &[u8], revision: Revision) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(value).ok()?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Some(v)
}

/// Turns a store event into a cached event.
pub fn from_store_event(ev: &store::Event) -> Option<CachedEvent> {
    let object = decode_object(&ev.kv.value, ev.kv.mod_revision)?;
    let prev = ev
        .prev
        .as_ref()
        .and_then(|p| decode_object(&p.value, p.mod_revision));
    Some(CachedEvent {
        kind: ev.kind,
        created: ev.kind == EventType::Put && ev.prev.is_none(),
        key: ev.kv.key.clone(),
        object: Arc::new(object),
        prev: prev.map(Arc::new),
        revision: ev.kv.mod_revision,
        encoded: std::sync::OnceLock::new(),
    })
}

impl WatchCache {
    /// Starts the cache at the store's current revision and spawns the task
    /// that feeds it.
    pub async fn start(store: SharedStore, capacity: usize) -> Result<Arc<Self>, StoreError> {
        let rev = store.current_revision().await?;
        let (tx, _) = broadcast::channel(capacity.max(16));
        let cache = Arc::new(WatchCache {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity),
                start: rev,
                last: rev,
            }),
            tx,
            capacity,
            store,
        });
        let feeder = cache.clone();
        tokio::spawn(async move { feeder.feed(rev).await });
        Ok(cache)
    }

    /// The newest revision the cache has seen.
    pub fn last_revision(&self) -> Revision {
        self.ring.lock().map(|r| r.last).unwrap_or(0)
    }

    async fn feed(self: Arc<Self>, mut after: Revision) {
        loop {
            let mut stream = match self.store.watch("/registry/", after).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, after, "watch cache: store watch failed; retrying");
                    if matches!(e, StoreError::Compacted { .. }) {
                        // History we never saw is gone: restart the ring
                        // from now so watchers relist (410) rather than miss.
                        if let Ok(now) = self.store.current_revision().await {
                            self.reset(now);
                            after = now;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        after = ev.kv.mod_revision;
                        if let Some(ce) = from_store_event(&ev) {
                            self.push(Arc::new(ce));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, after, "watch cache: store watch ended; resuming");
                        break;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn reset(&self, now: Revision) {
        if let Ok(mut ring) = self.ring.lock() {
            ring.events.clear();
            ring.start = now;
            ring.last = now;
        }
    }

    fn push(&self, ev: Arc<CachedEvent>) {
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        if ring.events.len() >= self.capacity
            && let Some(old) = ring.events.pop_front()
        {
            ring.start = old.revision;
        }
        ring.last = ev.revision;
        ring.events.push_back(ev.clone());
        // Sent under the lock so that a subscriber that replays the ring
        // under the same lock sees each event exactly once.
        let _ = self.tx.send(ev);
    }

    /// Waits until the cache has seen `revision` (so that a watch started
    /// right after a write sees everything up to it), for at most a moment.
    pub async fn wait_for(&self, revision: Revision) {
        for _ in 0..200 {
            if self.last_revision() >= revision {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Events with revision strictly greater than `after`, under `prefix`.
    pub async fn subscribe(&self, prefix: &str, after: Revision) -> Result<Source, StoreError> {
        {
            let ring = self
                .ring
                .lock()
                .map_err(|_| StoreError::Backend("watch cache poisoned".into()))?;
            if after >= ring.start {
                let live = self.tx.subscribe();
                let replay: Vec<_> = ring
                    .events
                    .iter()
                    .filter(|e| e.revision > after && e.key.starts_with(prefix))
                    .cloned()
                    .collect();
                let after = ring.last.max(after);
                return Ok(Source::Cache {
                    replay,
                    live,
                    after,
                });
            }
        }
        Ok(Source::Store(self.store.watch(prefix, after).await?))
    }
}
