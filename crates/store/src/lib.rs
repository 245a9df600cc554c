//! A revisioned key-value store with watch: the etcd v3 data model.
//!
//! Every write bumps one global revision counter. Each key carries the
//! revision that created it and the revision that last modified it; writes
//! can be made conditional on the latter (compare-and-swap). History is kept
//! until compacted, so reads at an old revision and watches from an old
//! revision work exactly as they do on etcd. Backends: [`memory`] for tests,
//! [`sqlite`] as the embedded default, and [`etcd`] for a real etcd v3
//! cluster (`--datastore etcd://host:2379`).

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub mod encrypted;
pub mod etcd;
mod hub;
pub mod memory;
pub mod sqlite;

pub use etcd::{EtcdStore, EtcdTls};
pub use hub::DEFAULT_WATCH_BUFFER;
pub use memory::MemoryStore;
pub use sqlite::{SqliteOptions, SqliteStore, WriteStats};

/// A store revision; 0 means "latest" where a revision is requested.
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web`.
    pub key: String,
    /// The stored bytes (JSON for the API server).
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventType,
    /// For a put: the new value. For a delete: the key with its last value,
    /// and `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The value before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

/// The answer to a range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// Matching keys in key order, at most `limit` of them.
    pub kvs: Vec<KeyValue>,
    /// True when more keys matched than were returned.
    pub more: bool,
    /// Number of keys matching the prefix (after `start_after`) in total.
    pub count: i64,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// The result of a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The key as it was just before the delete.
    pub prev: KeyValue,
    /// The revision of the delete itself.
    pub revision: Revision,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Create of a key that exists.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// Update or delete of a key that does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// A compare-and-swap failed; carries the current value.
    #[error("key {key} was modified (expected revision {expected}, found {})", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The value as it is now.
        current: Box<KeyValue>,
    },
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compact revision.
        compacted: Revision,
    },
    /// The requested revision is in the future.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A watcher fell too far behind and was dropped; restart it from the
    /// last revision it saw.
    #[error("watcher fell behind and was closed")]
    WatcherLagged,
    /// The backend failed (I/O, disk full, database error).
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// A stream of events in revision order.
pub type WatchStream = BoxStream<'static, Result<Event, StoreError>>;

/// The etcd v3 data model behind a trait, so that backends are interchangeable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads keys starting with `prefix`, in key order, strictly after
    /// `start_after` when given, at most `limit` (0 = no limit), at `revision`
    /// (0 = latest). Fails with `Compacted` or `FutureRevision` for a revision
    /// outside the retained history.
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: i64,
        revision: Revision,
    ) -> Result<RangeResult, StoreError>;

    /// Creates a key that must not exist.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces a key whose `mod_revision` must equal `expected` (0 = any
    /// existing value). Fails with `NotFound` or `Conflict`.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes a key whose `mod_revision` must equal `expected` (0 = any).
    async fn delete(&self, key: &str, expected: Revision) -> Result<Deleted, StoreError>;

    /// Streams every change to keys under `prefix` with revision strictly
    /// greater than `after` (0 = changes from now on), in revision order.
    /// Fails with `Compacted` when `after` is older than the retained history.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The current (latest) revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The oldest revision still readable (the compact revision).
    async fn compact_revision(&self) -> Result<Revision, StoreError>;

    /// Drops history older than `revision`: values superseded before it can
    /// no longer be read or watched.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}

/// A shared, dynamically chosen store.
pub type SharedStore = Arc<dyn Store>;

/// Compacts `store` periodically, keeping about one `interval` of history:
/// each tick compacts to the revision observed at the previous tick (as the
/// Kubernetes API server does with etcd). Failures are logged and retried on
/// the next tick; the task runs until aborted.
pub fn spawn_compactor(
    store: SharedStore,
    interval: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Revision> = None;
        loop {
            ticker.tick().await;
            if let Some(rev) = previous
                && let Err(e) = store.compact(rev).await
            {
                tracing::warn!(revision = rev, error = %e, "periodic compaction failed");
            }
            match store.current_revision().await {
                Ok(rev) => previous = Some(rev),
                Err(e) => tracing::warn!(error = %e, "reading revision for compaction failed"),
            }
        }
    })
}
