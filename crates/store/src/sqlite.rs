//! The embedded SQLite backend: an etcd-style revision log with group commit.
//!
//! Data model (like kine):
//! - `log`: one row per write, keyed by its revision (the rowid). A delete is
//!   a tombstone row (`deleted = 1`, empty value; the last value is found
//!   through `prev_revision`). An index on `(key, revision)` serves reads at
//!   old revisions and compaction.
//! - `current`: key → revision of its live row, so `get` and `range` at the
//!   latest revision are index lookups that never touch history.
//! - `meta`: the current revision (so the counter never goes backwards when
//!   compaction removes the newest rows) and the compact revision.
//!
//! Writes go through one writer thread that owns the only write connection.
//! It drains every pending request, applies them in one transaction (each
//! checks its own precondition against the state left by the earlier ones and
//! gets its own revision), commits once — one fsync for the whole batch —
//! and only then publishes the events and acknowledges the callers. Reads use
//! a small pool of read-only connections on the blocking thread pool; WAL
//! mode lets them run concurrently with the writer.
//!
//! A maintenance thread periodically asks the writer to checkpoint the WAL
//! (so it cannot grow without bound under constant reads) and, if
//! configured, to compact history; going through the writer keeps the write
//! connection single-owner.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use crate::hub::{DEFAULT_WATCH_BUFFER, Hub, event_revision};
use crate::{
    Deleted, Event, EventType, KeyValue, RangeResult, Revision, Store, StoreError, WatchStream,
};

/// How long a connection waits for a lock before failing (only matters when
/// another process, e.g. a backup, holds the database).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Events read per query when a watcher replays history.
const REPLAY_PAGE: usize = 1000;
/// How long a checkpoint waits for readers to leave the WAL: it runs on the
/// writer thread, so waiting longer would stall every write.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Tunables for [`SqliteStore::open_with`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Undelivered events a watcher may buffer before it is closed as lagged.
    pub watch_buffer: usize,
    /// Idle read connections kept for reuse.
    pub read_connections: usize,
    /// Most write requests applied in one transaction.
    pub max_batch: usize,
    /// Pending write requests before callers wait (backpressure).
    pub queue: usize,
    /// Cap on the database size in pages (a quota); writes that would grow
    /// it further fail with a `Backend` "database or disk is full" error.
    pub max_pages: Option<u64>,
    /// How often the WAL is checkpointed and truncated (`None`: only
    /// SQLite's automatic passive checkpoints).
    pub checkpoint_interval: Option<Duration>,
    /// How often history is compacted, each time to the revision seen one
    /// interval earlier, as upstream does with etcd (`None`: only on request,
    /// e.g. by [`crate::spawn_compactor`], which the r8s server runs).
    pub compact_interval: Option<Duration>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            watch_buffer: DEFAULT_WATCH_BUFFER,
            read_connections: 8,
            max_batch: 1024,
            queue: 8192,
            max_pages: None,
            checkpoint_interval: Some(Duration::from_secs(60)),
            compact_interval: None,
        }
    }
}

/// Counters of the group-commit writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (each one fsync).
    pub commits: u64,
    /// Write requests processed (including those whose precondition failed).
    pub writes: u64,
}

/// A write request for the writer thread.
enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Revision,
    },
    Compact {
        revision: Revision,
    },
    /// Checkpoint and truncate the WAL (outside any transaction).
    Checkpoint,
}

/// The writer's answer to one request.
enum Reply {
    Kv(KeyValue),
    Deleted(Deleted),
    Compacted,
    Checkpointed,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// State shared by the store handle, the writer thread and watch streams.
struct Shared {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    hub: Hub,
    commits: AtomicU64,
    writes: AtomicU64,
}

/// The SQLite store.
pub struct SqliteStore {
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Dropping this wakes the maintenance thread and makes it exit.
    stop: Option<std::sync::mpsc::Sender<()>>,
    maintenance: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// Maps a SQLite error to a backend error naming what was being done.
fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend(format!("sqlite: {context}: {e}"))
}

fn key_string(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes)
        .map_err(|e| StoreError::Backend(format!("sqlite: stored key is not UTF-8: {e}")))
}

/// The exclusive upper bound of keys starting with `prefix`: keys are UTF-8,
/// which never contains the byte 0xFF, so `prefix + 0xFF` sorts after every
/// key with that prefix and before every greater key without it.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    end.push(0xFF);
    end
}

/// The lower bound of a range: the comparison operator and its operand.
fn range_start<'a>(prefix: &'a str, start_after: Option<&'a str>) -> (&'static str, &'a [u8]) {
    match start_after {
        Some(s) if s >= prefix => (">", s.as_bytes()),
        _ => (">=", prefix.as_bytes()),
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db("setting busy timeout"))?;
    // Room for every statement this module prepares (the default is 16).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS current (
    key BLOB PRIMARY KEY,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compact', 0);
";

/// Reads (current revision, compact revision) inside a transaction.
fn meta(conn: &Connection) -> Result<(Revision, Revision), StoreError> {
    conn.prepare_cached(
        "SELECT (SELECT value FROM meta WHERE name = 'revision'), (SELECT value FROM meta WHERE name = 'compact')",
    )
    .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
    .map_err(db("reading meta"))
}

/// The live value of `key` at the latest revision.
fn current_kv(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached(
        "SELECT l.revision, l.value, l.create_revision FROM current c JOIN log l ON l.revision = c.revision
         WHERE c.key = ?1",
    )?
    .query_row([key.as_bytes()], |r| {
        Ok(KeyValue {
            key: key.to_string(),
            mod_revision: r.get(0)?,
            value: r.get(1)?,
            create_revision: r.get(2)?,
        })
    })
    .optional()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with(
        path: impl AsRef<Path>,
        opts: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)
            .map_err(|e| StoreError::Backend(format!("sqlite: opening {}: {e}", path.display())))?;
        configure(&conn)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "sqlite: {} does not support WAL mode (got {mode})",
                path.display()
            )));
        }
        // FULL: every commit fsyncs the WAL, so an acknowledged write
        // survives power loss, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("setting synchronous=FULL"))?;
        conn.execute_batch(SCHEMA).map_err(db("creating schema"))?;
        if let Some(pages) = opts.max_pages {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(db("setting max_page_count"))?;
        }
        let (meta_rev, _) = meta(&conn)?;
        let log_rev: Option<Revision> = conn
            .query_row("SELECT MAX(revision) FROM log", [], |r| r.get(0))
            .map_err(db("reading latest revision"))?;
        let revision = meta_rev.max(log_rev.unwrap_or(0));
        tracing::info!(path = %path.display(), revision, "opened SQLite store");

        let shared = Arc::new(Shared {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: opts.read_connections,
            hub: Hub::new(revision, opts.watch_buffer),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let maintenance = Maintenance {
            // Weak, so the maintenance thread never keeps the writer alive.
            tx: tx.downgrade(),
            shared: shared.clone(),
            checkpoint: opts.checkpoint_interval.filter(|d| !d.is_zero()),
            compact: opts.compact_interval.filter(|d| !d.is_zero()),
        };
        let writer = Writer {
            conn,
            rx,
            shared: shared.clone(),
            revision,
            max_batch: opts.max_batch.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(format!("sqlite: starting writer thread: {e}")))?;
        let mut store = SqliteStore {
            tx: Some(tx),
            writer: Some(handle),
            stop: None,
            maintenance: None,
            shared,
        };
        if maintenance.checkpoint.is_some() || maintenance.compact.is_some() {
            let (stop, stopped) = std::sync::mpsc::channel();
            // On failure `store` is dropped here, which stops the writer.
            let handle = std::thread::Builder::new()
                .name("store-maintenance".into())
                .spawn(move || maintenance.run(stopped))
                .map_err(|e| {
                    StoreError::Backend(format!("sqlite: starting maintenance thread: {e}"))
                })?;
            store.stop = Some(stop);
            store.maintenance = Some(handle);
        }
        Ok(store)
    }

    /// Transactions committed so far (each one fsync); see [`Self::stats`].
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Checkpoints the WAL into the database file and truncates it. A no-op
    /// (not an error) when readers keep part of the WAL in use.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.submit(Op::Checkpoint).await.map(|_| ())
    }

    /// Group-commit counters: under concurrency `commits` stays well below `writes`.
    pub fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    async fn submit(&self, op: Op) -> Result<Reply, StoreError> {
        let stopped = || StoreError::Backend("sqlite: writer thread has stopped".into());
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Request { op, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The maintenance thread only holds a weak sender (upgraded for the
        // duration of one request), so stopping it cannot deadlock with the
        // writer shutting down.
        self.stop.take();
        // Closing the channel lets the writer finish its current batch and
        // exit; waiting for it means a reopen of the same file sees every
        // acknowledged write and no lingering writer.
        self.tx.take();
        if let Some(handle) = self.maintenance.take()
            && handle.join().is_err()
        {
            tracing::error!("sqlite maintenance thread panicked");
        }
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!("sqlite writer thread panicked");
        }
        // Watch streams keep the shared state alive; end them now rather
        // than leaving them waiting for events that can no longer come.
        self.shared.hub.close();
    }
}

impl Shared {
    fn take_conn(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open(&self.path).map_err(db("opening read connection"))?;
        configure(&conn)?;
        // Reads must never write, even by accident.
        conn.pragma_update(None, "query_only", "ON")
            .map_err(db("setting query_only"))?;
        Ok(conn)
    }

    fn put_conn(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Runs `f` in a read transaction (one consistent snapshot) on the
    /// blocking pool, so SQLite never blocks the async runtime.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.take_conn()?;
            let res = {
                match conn.transaction() {
                    Ok(tx) => f(&tx),
                    Err(e) => Err(db("beginning read transaction")(e)),
                }
            };
            shared.put_conn(conn);
            res
        })
        .await
        .map_err(|e| StoreError::Backend(format!("sqlite: read task failed: {e}")))?
    }
}

/// The single owner of the write connection.
struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    /// The last revision handed out in a committed transaction.
    revision: Revision,
    max_batch: usize,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            // Everything that queued up while the previous batch was being
            // committed rides along in this one: that is the group commit.
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            // A checkpoint cannot run inside a transaction: run it after the
            // batch, which also lets it include the batch's pages.
            let (checkpoints, batch): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|r| matches!(r.op, Op::Checkpoint));
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            for req in checkpoints {
                let _ = req
                    .reply
                    .send(self.checkpoint().map(|()| Reply::Checkpointed));
            }
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(CHECKPOINT_BUSY_TIMEOUT)
            .map_err(db("setting checkpoint busy timeout"))?;
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db("checkpointing WAL"));
        // Restore the long timeout even when the checkpoint failed.
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(db("restoring busy timeout"))?;
        let (busy, log, checkpointed) = result?;
        if busy != 0 {
            // Readers still use part of the WAL; the next one will catch up.
            tracing::debug!(
                log,
                checkpointed,
                "WAL checkpoint incomplete: readers active"
            );
        } else {
            tracing::debug!(log, checkpointed, "WAL checkpointed");
        }
        Ok(())
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let start = self.revision;
        let mut events = Vec::new();
        let outcome = apply_batch(&mut self.conn, &mut self.revision, &batch, &mut events);
        let n = batch.len() as u64;
        match outcome {
            Ok(results) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared.writes.fetch_add(n, Ordering::Relaxed);
                tracing::trace!(requests = n, revision = self.revision, "committed batch");
                // Publish before replying so that a caller that saw its write
                // acknowledged also finds it in current_revision().
                self.shared.hub.publish(self.revision, &events);
                for (req, res) in batch.into_iter().zip(results) {
                    // The caller may have given up waiting; the write stands.
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                // Nothing of this batch was committed, so its revisions were
                // never observed and can be handed out again.
                self.revision = start;
                tracing::error!(error = %e, requests = n, "sqlite write batch failed");
                // Dropping the transaction rolled it back; if even that
                // failed, retry so the next batch does not start inside a
                // dead transaction.
                if !self.conn.is_autocommit()
                    && let Err(e) = self.conn.execute_batch("ROLLBACK")
                {
                    tracing::error!(error = %e, "sqlite rollback failed");
                }
                for req in batch {
                    let _ = req.reply.send(Err(clone_backend(&e)));
                }
            }
        }
    }
}

/// Periodic background work, run as requests to the writer.
struct Maintenance {
    tx: mpsc::WeakSender<Request>,
    shared: Arc<Shared>,
    checkpoint: Option<Duration>,
    compact: Option<Duration>,
}

impl Maintenance {
    fn run(self, stop: std::sync::mpsc::Receiver<()>) {
        let now = Instant::now();
        let mut next_checkpoint = self.checkpoint.map(|d| now + d);
        let mut next_compact = self.compact.map(|d| now + d);
        // The revision seen at the previous compaction tick: compacting to
        // it keeps about one interval of history for watchers to resume.
        let mut previous: Option<Revision> = None;
        loop {
            let Some(deadline) = next_checkpoint.into_iter().chain(next_compact).min() else {
                return;
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            match stop.recv_timeout(wait) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // The store was dropped.
                _ => return,
            }
            let now = Instant::now();
            if let (Some(at), Some(every)) = (next_checkpoint, self.checkpoint)
                && now >= at
            {
                if !self.request(Op::Checkpoint) {
                    return;
                }
                next_checkpoint = Some(now + every);
            }
            if let (Some(at), Some(every)) = (next_compact, self.compact)
                && now >= at
            {
                if let Some(revision) = previous
                    && !self.request(Op::Compact { revision })
                {
                    return;
                }
                previous = Some(self.shared.hub.revision());
                next_compact = Some(now + every);
            }
        }
    }

    /// Sends one request and waits for it; false once the writer is gone.
    fn request(&self, op: Op) -> bool {
        let what = match &op {
            Op::Checkpoint => "checkpoint",
            _ => "compaction",
        };
        let Some(tx) = self.tx.upgrade() else {
            return false;
        };
        let (reply, rx) = oneshot::channel();
        if tx.blocking_send(Request { op, reply }).is_err() {
            return false;
        }
        // Drop the strong sender before waiting, so it never delays shutdown.
        drop(tx);
        match rx.blocking_recv() {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                // Retried on the next tick.
                tracing::warn!(error = %e, "periodic {what} failed");
                true
            }
            Err(_) => false,
        }
    }
}

/// A copy of a batch failure for each of its requests.
fn clone_backend(e: &StoreError) -> StoreError {
    StoreError::Backend(match e {
        StoreError::Backend(m) => m.clone(),
        other => other.to_string(),
    })
}

/// Applies a batch in one transaction. The outer error aborts the whole batch
/// (a database failure); the inner results are per-request outcomes.
fn apply_batch(
    conn: &mut Connection,
    revision: &mut Revision,
    batch: &[Request],
    events: &mut Vec<Event>,
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    let start = *revision;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("beginning write transaction"))?;
    let mut results = Vec::with_capacity(batch.len());
    for req in batch {
        results.push(apply_op(&tx, revision, &req.op, events)?);
    }
    if *revision != start {
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")
            .and_then(|mut s| s.execute([*revision]))
            .map_err(db("recording revision"))?;
    }
    tx.commit().map_err(db("committing"))?;
    Ok(results)
}

fn insert_row(
    tx: &Transaction<'_>,
    revision: Revision,
    key: &str,
    value: &[u8],
    create_revision: Revision,
    prev_revision: Revision,
    deleted: bool,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO log (revision, key, value, create_revision, prev_revision, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            revision,
            key.as_bytes(),
            value,
            create_revision,
            prev_revision,
            deleted
        ])
    })
    .map_err(db("appending to log"))?;
    if deleted {
        tx.prepare_cached("DELETE FROM current WHERE key = ?1")
            .and_then(|mut s| s.execute([key.as_bytes()]))
            .map_err(db("removing current row"))?;
    } else {
        tx.prepare_cached("INSERT OR REPLACE INTO current (key, revision) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![key.as_bytes(), revision]))
            .map_err(db("updating current row"))?;
    }
    Ok(())
}

fn check_expected(
    key: &str,
    expected: Revision,
    current: Option<KeyValue>,
) -> Result<KeyValue, StoreError> {
    let cur = current.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
    if expected != 0 && expected != cur.mod_revision {
        return Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            current: Box::new(cur),
        });
    }
    Ok(cur)
}

/// Applies one request inside the batch transaction.
fn apply_op(
    tx: &Transaction<'_>,
    revision: &mut Revision,
    op: &Op,
    events: &mut Vec<Event>,
) -> Result<Result<Reply, StoreError>, StoreError> {
    match op {
        Op::Create { key, value } => {
            if current_kv(tx, key).map_err(db("reading key"))?.is_some() {
                return Ok(Err(StoreError::AlreadyExists(key.clone())));
            }
            let rev = *revision + 1;
            insert_row(tx, rev, key, value, rev, 0, false)?;
            *revision = rev;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            };
            events.push(Event {
                kind: EventType::Put,
                kv: kv.clone(),
                prev: None,
            });
            Ok(Ok(Reply::Kv(kv)))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let cur = match check_expected(
                key,
                *expected,
                current_kv(tx, key).map_err(db("reading key"))?,
            ) {
                Ok(cur) => cur,
                Err(e) => return Ok(Err(e)),
            };
            let rev = *revision + 1;
            insert_row(
                tx,
                rev,
                key,
                value,
                cur.create_revision,
                cur.mod_revision,
                false,
            )?;
            *revision = rev;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: cur.create_revision,
                mod_revision: rev,
            };
            events.push(Event {
                kind: EventType::Put,
                kv: kv.clone(),
                prev: Some(cur),
            });
            Ok(Ok(Reply::Kv(kv)))
        }
        Op::Delete { key, expected } => {
            let cur = match check_expected(
                key,
                *expected,
                current_kv(tx, key).map_err(db("reading key"))?,
            ) {
                Ok(cur) => cur,
                Err(e) => return Ok(Err(e)),
            };
            let rev = *revision + 1;
            insert_row(
                tx,
                rev,
                key,
                &[],
                cur.create_revision,
                cur.mod_revision,
                true,
            )?;
            *revision = rev;
            events.push(Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    mod_revision: rev,
                    ..cur.clone()
                },
                prev: Some(cur.clone()),
            });
            Ok(Ok(Reply::Deleted(Deleted {
                prev: cur,
                revision: rev,
            })))
        }
        // Split off by the writer loop before a batch is applied.
        Op::Checkpoint => Ok(Ok(Reply::Checkpointed)),
        Op::Compact { revision: target } => {
            let target = *target;
            if target > *revision {
                return Ok(Err(StoreError::FutureRevision {
                    requested: target,
                    current: *revision,
                }));
            }
            let (_, compacted) = meta(tx)?;
            if target <= compacted {
                return Ok(Ok(Reply::Compacted));
            }
            // Keep, per key, the newest row at or before `target` (reads at
            // `target` need it, and it is the `prev` of the next change);
            // drop older rows, and tombstones at or before `target`, which no
            // permitted read or watch can reach any more.
            let dropped = tx
                .prepare_cached(
                    "DELETE FROM log WHERE revision <= ?1 AND (deleted = 1 OR EXISTS (
                        SELECT 1 FROM log n WHERE n.key = log.key AND n.revision > log.revision AND n.revision <= ?1))",
                )
                .and_then(|mut s| s.execute([target]))
                .map_err(db("compacting log"))?;
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compact'")
                .and_then(|mut s| s.execute([target]))
                .map_err(db("recording compact revision"))?;
            tracing::info!(revision = target, dropped, "compacted SQLite store");
            Ok(Ok(Reply::Compacted))
        }
    }
}

fn check_revision(
    requested: Revision,
    current: Revision,
    compacted: Revision,
) -> Result<Revision, StoreError> {
    if requested == 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(StoreError::FutureRevision { requested, current });
    }
    if requested < compacted {
        return Err(StoreError::Compacted {
            requested,
            compacted,
        });
    }
    Ok(requested)
}

fn range_in(
    tx: &Transaction<'_>,
    prefix: &str,
    start_after: Option<&str>,
    limit: i64,
    revision: Revision,
) -> Result<RangeResult, StoreError> {
    let (current, compacted) = meta(tx)?;
    let at = check_revision(revision, current, compacted)?;
    let (op, lo) = range_start(prefix, start_after);
    let hi = prefix_end(prefix);
    // One extra row tells whether there are more; -1 is SQLite's "no limit".
    let fetch = if limit > 0 {
        limit.saturating_add(1)
    } else {
        -1
    };
    // At the latest revision the `current` table answers directly; at an
    // older one, take the newest row of each key at or before `at` unless it
    // is a tombstone (this walks only the history of keys under the prefix).
    let historical = at != current;
    let (rows_sql, count_sql) = if historical {
        // Walks the key index in key order, so a page stops after `limit`
        // keys instead of materializing the whole prefix.
        let newest = format!(
            "FROM log l WHERE l.key {op} ?1 AND l.key < ?2 AND l.revision <= ?3 AND l.deleted = 0
             AND l.revision = (SELECT MAX(x.revision) FROM log x WHERE x.key = l.key AND x.revision <= ?3)"
        );
        (
            format!(
                "SELECT l.key, l.value, l.create_revision, l.revision {newest} ORDER BY l.key LIMIT ?4"
            ),
            format!("SELECT COUNT(*) {newest}"),
        )
    } else {
        (
            format!(
                "SELECT c.key, l.value, l.create_revision, l.revision FROM current c
                 JOIN log l ON l.revision = c.revision
                 WHERE c.key {op} ?1 AND c.key < ?2 ORDER BY c.key LIMIT ?3"
            ),
            format!("SELECT COUNT(*) FROM current WHERE key {op} ?1 AND key < ?2"),
        )
    };
    let mut kvs = tx
        .prepare_cached(&rows_sql)
        .and_then(|mut s| {
            let map = |r: &rusqlite::Row<'_>| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            };
            if historical {
                s.query_map(params![lo, hi, at, fetch], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            } else {
                s.query_map(params![lo, hi, fetch], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
        })
        .map_err(db("reading range"))?
        .into_iter()
        .map(|(key, value, create_revision, mod_revision)| {
            Ok(KeyValue {
                key: key_string(key)?,
                value,
                create_revision,
                mod_revision,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let more = limit > 0 && kvs.len() as i64 > limit;
    let count = if more {
        kvs.truncate(limit as usize);
        tx.prepare_cached(&count_sql)
            .and_then(|mut s| {
                if historical {
                    s.query_row(params![lo, hi, at], |r| r.get(0))
                } else {
                    s.query_row(params![lo, hi], |r| r.get(0))
                }
            })
            .map_err(db("counting range"))?
    } else {
        kvs.len() as i64
    };
    Ok(RangeResult {
        kvs,
        more,
        count,
        revision: at,
    })
}

/// Events under `prefix` with revision in `(after, upto]`, oldest first, at
/// most `limit` (-1 = all). Fails with `Compacted` when `after` is no longer
/// retained.
fn replay_in(
    tx: &Transaction<'_>,
    prefix: &str,
    after: Revision,
    upto: Revision,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let (_, compacted) = meta(tx)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let rows = tx
        .prepare_cached(
            "SELECT l.revision, l.key, l.value, l.create_revision, l.deleted, p.revision, p.value, p.create_revision
             FROM log AS l NOT INDEXED LEFT JOIN log p ON p.revision = l.prev_revision AND l.prev_revision > 0
             WHERE l.revision > ?1 AND l.revision <= ?2 AND l.key >= ?3 AND l.key < ?4
             ORDER BY l.revision LIMIT ?5",
            // NOT INDEXED: walk the log by revision (the rowid) from `after`;
            // the key index would visit the prefix's whole history instead.
        )
        .and_then(|mut s| {
            s.query_map(params![after, upto, prefix.as_bytes(), prefix_end(prefix), limit], |r| {
                Ok((
                    r.get::<_, Revision>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Revision>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, Option<Revision>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, Option<Revision>>(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("replaying log"))?;
    let mut events = Vec::with_capacity(rows.len());
    for (rev, key, value, create_revision, deleted, p_rev, p_value, p_create) in rows {
        let key = key_string(key)?;
        let prev = match (p_rev, p_value, p_create) {
            (Some(mod_revision), Some(value), Some(create_revision)) => Some(KeyValue {
                key: key.clone(),
                value,
                create_revision,
                mod_revision,
            }),
            _ => None,
        };
        let event = if deleted {
            Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    key,
                    value: prev.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
                    create_revision,
                    mod_revision: rev,
                },
                prev,
            }
        } else {
            Event {
                kind: EventType::Put,
                kv: KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: rev,
                },
                prev,
            }
        };
        events.push(event);
    }
    Ok(events)
}

/// Where a watch stream is: replaying history, or following live events.
enum Phase {
    Replay(Revision),
    Live(BoxStream<'static, Result<Event, StoreError>>),
    Done,
}

struct WatchState {
    shared: Arc<Shared>,
    prefix: String,
    buf: VecDeque<Event>,
    phase: Phase,
}

impl WatchState {
    /// Reads a slice of history; returns a future that does not borrow
    /// `self` (which holds a non-`Sync` stream) so it stays `Send`.
    fn replay(
        &self,
        after: Revision,
        upto: Revision,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send + 'static {
        let prefix = self.prefix.clone();
        let shared = self.shared.clone();
        async move {
            shared
                .read(move |tx| replay_in(tx, &prefix, after, upto, limit))
                .await
        }
    }

    /// The next item of the stream. History is replayed page by page until
    /// caught up; only then does the watcher subscribe to live events (so a
    /// long replay cannot overflow its live buffer), read the few events
    /// committed in between, and follow the live feed from there, skipping
    /// what the replay already delivered.
    async fn next(mut self) -> Option<(Result<Event, StoreError>, Self)> {
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return Some((Ok(ev), self));
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Live(mut live) => {
                    let item = live.next().await?;
                    if item.is_ok() {
                        self.phase = Phase::Live(live);
                    }
                    return Some((item, self));
                }
                Phase::Replay(last) => {
                    let page = match self.replay(last, Revision::MAX, REPLAY_PAGE as i64).await {
                        Ok(page) => page,
                        Err(e) => return Some((Err(e), self)),
                    };
                    let full = page.len() == REPLAY_PAGE;
                    let mut last = page.last().map(event_revision).unwrap_or(last);
                    self.buf.extend(page);
                    if full {
                        self.phase = Phase::Replay(last);
                        continue;
                    }
                    let (live, published) = self.shared.hub.subscribe(&self.prefix);
                    if published > last {
                        match self.replay(last, published, -1).await {
                            Ok(gap) => self.buf.extend(gap),
                            Err(e) => return Some((Err(e), self)),
                        }
                    }
                    last = last.max(published);
                    self.phase = Phase::Live(live.into_stream(last));
                }
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.shared
            .read(move |tx| current_kv(tx, &key).map_err(db("reading key")))
            .await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: i64,
        revision: Revision,
    ) -> Result<RangeResult, StoreError> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.shared
            .read(move |tx| range_in(tx, &prefix, start_after.as_deref(), limit, revision))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        match self
            .submit(Op::Create {
                key: key.to_string(),
                value,
            })
            .await?
        {
            Reply::Kv(kv) => Ok(kv),
            _ => Err(StoreError::Backend(
                "sqlite: unexpected writer reply".into(),
            )),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        match self
            .submit(Op::Update {
                key: key.to_string(),
                value,
                expected,
            })
            .await?
        {
            Reply::Kv(kv) => Ok(kv),
            _ => Err(StoreError::Backend(
                "sqlite: unexpected writer reply".into(),
            )),
        }
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Deleted, StoreError> {
        match self
            .submit(Op::Delete {
                key: key.to_string(),
                expected,
            })
            .await?
        {
            Reply::Deleted(d) => Ok(d),
            _ => Err(StoreError::Backend(
                "sqlite: unexpected writer reply".into(),
            )),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let phase = if after == 0 {
            let (live, published) = self.shared.hub.subscribe(prefix);
            Phase::Live(live.into_stream(published))
        } else {
            // Fail the call itself (not the first item) when history is gone.
            let (_, compacted) = self.shared.read(|tx| meta(tx)).await?;
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted,
                });
            }
            Phase::Replay(after)
        };
        let state = WatchState {
            shared: self.shared.clone(),
            prefix: prefix.to_string(),
            buf: VecDeque::new(),
            phase,
        };
        Ok(futures::stream::unfold(state, WatchState::next).boxed())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.hub.revision())
    }

    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.read(|tx| meta(tx)).await?.1)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}
