//! In-memory backend with full etcd semantics (history, reads at old
//! revisions, watch replay, compaction). Nothing survives a restart; meant
//! for tests and `memory://`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use futures::StreamExt;

use crate::hub::{DEFAULT_WATCH_BUFFER, Hub};
use crate::{
    Deleted, Event, EventType, KeyValue, RangeResult, Revision, Store, StoreError, WatchStream,
};

/// One write in the history.
#[derive(Clone, Debug)]
struct Row {
    key: String,
    /// Empty for a tombstone (the last value lives in the previous row).
    value: Vec<u8>,
    create_revision: Revision,
    /// Revision of the previous live row of this key, 0 if none.
    prev_revision: Revision,
    deleted: bool,
}

#[derive(Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    /// Every retained row by revision.
    log: BTreeMap<Revision, Row>,
    /// Per key, the retained revisions in ascending order.
    index: BTreeMap<String, Vec<Revision>>,
}

impl State {
    fn kv(&self, rev: Revision) -> Option<KeyValue> {
        let row = self.log.get(&rev)?;
        (!row.deleted).then(|| KeyValue {
            key: row.key.clone(),
            value: row.value.clone(),
            create_revision: row.create_revision,
            mod_revision: rev,
        })
    }

    /// The key's live value at `at`, if any.
    fn at(&self, key: &str, at: Revision) -> Option<KeyValue> {
        let revs = self.index.get(key)?;
        let n = revs.partition_point(|&r| r <= at);
        let rev = *revs.get(n.checked_sub(1)?)?;
        self.kv(rev)
    }

    fn latest(&self, key: &str) -> Option<KeyValue> {
        self.at(key, Revision::MAX)
    }

    fn check_revision(&self, requested: Revision) -> Result<Revision, StoreError> {
        if requested == 0 {
            return Ok(self.revision);
        }
        if requested > self.revision {
            return Err(StoreError::FutureRevision {
                requested,
                current: self.revision,
            });
        }
        if requested < self.compacted {
            return Err(StoreError::Compacted {
                requested,
                compacted: self.compacted,
            });
        }
        Ok(requested)
    }

    fn append(&mut self, row: Row) -> Revision {
        self.revision += 1;
        let rev = self.revision;
        self.index.entry(row.key.clone()).or_default().push(rev);
        self.log.insert(rev, row);
        rev
    }

    /// The watch event for the row at `rev`.
    fn event(&self, rev: Revision) -> Option<Event> {
        let row = self.log.get(&rev)?;
        let prev = self.kv(row.prev_revision);
        if row.deleted {
            let p = prev.clone()?;
            Some(Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    mod_revision: rev,
                    ..p
                },
                prev,
            })
        } else {
            Some(Event {
                kind: EventType::Put,
                kv: self.kv(rev)?,
                prev,
            })
        }
    }
}

/// The in-memory store.
pub struct MemoryStore {
    state: Mutex<State>,
    hub: Hub,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::with_watch_buffer(DEFAULT_WATCH_BUFFER)
    }

    /// An empty store whose watchers buffer at most `events` undelivered events.
    pub fn with_watch_buffer(events: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            hub: Hub::new(0, events),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation completes before any call that could panic, so a
        // poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a row and publishes its event while the state lock is held,
    /// so events reach the hub in revision order.
    fn write(&self, st: &mut State, row: Row) -> Revision {
        let rev = st.append(row);
        if let Some(ev) = st.event(rev) {
            self.hub.publish(rev, std::slice::from_ref(&ev));
        }
        rev
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().latest(key))
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: i64,
        revision: Revision,
    ) -> Result<RangeResult, StoreError> {
        let st = self.lock();
        let at = st.check_revision(revision)?;
        let mut kvs = Vec::new();
        let mut count = 0i64;
        let from = match start_after {
            Some(s) if s >= prefix => std::ops::Bound::Excluded(s.to_string()),
            _ => std::ops::Bound::Included(prefix.to_string()),
        };
        for (key, _) in st
            .index
            .range((from, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if let Some(kv) = st.at(key, at) {
                count += 1;
                if limit <= 0 || (kvs.len() as i64) < limit {
                    kvs.push(kv);
                }
            }
        }
        Ok(RangeResult {
            more: (kvs.len() as i64) < count,
            kvs,
            count,
            revision: at,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let mut st = self.lock();
        if st.latest(key).is_some() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let rev = st.revision + 1;
        let row = Row {
            key: key.to_string(),
            value: value.clone(),
            create_revision: rev,
            prev_revision: 0,
            deleted: false,
        };
        self.write(&mut st, row);
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let mut st = self.lock();
        let cur = st
            .latest(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if expected != 0 && expected != cur.mod_revision {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: Box::new(cur),
            });
        }
        let row = Row {
            key: key.to_string(),
            value: value.clone(),
            create_revision: cur.create_revision,
            prev_revision: cur.mod_revision,
            deleted: false,
        };
        let rev = self.write(&mut st, row);
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: cur.create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Deleted, StoreError> {
        let mut st = self.lock();
        let cur = st
            .latest(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if expected != 0 && expected != cur.mod_revision {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: Box::new(cur),
            });
        }
        let row = Row {
            key: key.to_string(),
            value: Vec::new(),
            create_revision: cur.create_revision,
            prev_revision: cur.mod_revision,
            deleted: true,
        };
        let revision = self.write(&mut st, row);
        Ok(Deleted {
            prev: cur,
            revision,
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let st = self.lock();
        if after != 0 && after < st.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: st.compacted,
            });
        }
        let replay: Vec<Result<Event, StoreError>> = if after == 0 {
            Vec::new()
        } else {
            st.log
                .range(after + 1..)
                .filter(|(_, row)| row.key.starts_with(prefix))
                .filter_map(|(&rev, _)| st.event(rev))
                .map(Ok)
                .collect()
        };
        // Subscribing under the state lock: writers publish under it too, so
        // the live feed starts exactly after the replayed history.
        let (live, published) = self.hub.subscribe(prefix);
        drop(st);
        let skip = published.max(after);
        Ok(futures::stream::iter(replay)
            .chain(live.into_stream(skip))
            .boxed())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }

    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().compacted)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut st = self.lock();
        if revision > st.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: st.revision,
            });
        }
        if revision <= st.compacted {
            return Ok(());
        }
        let st = &mut *st;
        // Only keys with a row at or before `revision` can have something to drop.
        let touched: HashSet<String> = st
            .log
            .range(..=revision)
            .map(|(_, row)| row.key.clone())
            .collect();
        let mut dropped = 0usize;
        for key in touched {
            let Some(revs) = st.index.get_mut(&key) else {
                continue;
            };
            let n = revs.partition_point(|&r| r <= revision);
            // Rows before the newest one at or before `revision` are superseded.
            let mut cut = n.saturating_sub(1);
            // A tombstone at or before `revision` is needed neither by reads
            // at or after it nor by any watch that is still allowed.
            if n > 0 && st.log.get(&revs[n - 1]).is_some_and(|r| r.deleted) {
                cut = n;
            }
            for rev in revs.drain(..cut) {
                st.log.remove(&rev);
                dropped += 1;
            }
            if revs.is_empty() {
                st.index.remove(&key);
            }
        }
        st.compacted = revision;
        tracing::debug!(revision, dropped, "memory store compacted");
        Ok(())
    }
}
