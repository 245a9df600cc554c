//! Conformance suite: every backend must behave like etcd v3 does.
//!
//! Each check is a function over a `SharedStore`; the `backends!` macro runs
//! it against the memory, the SQLite and the etcd backend. Each etcd test
//! gets its own `etcd` process (revisions are global to an etcd, and the
//! checks assert exact revisions); a missing `etcd` binary fails them.

mod etcd_harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use store::{
    EventType, MemoryStore, SharedStore, SqliteOptions, SqliteStore, Store, StoreError, WatchStream,
};
use tempfile::TempDir;

use etcd_harness::EtcdServer;

/// A store under test plus whatever must live as long as it.
struct Backend {
    store: SharedStore,
    _dir: Option<TempDir>,
    _etcd: Option<EtcdServer>,
}

fn memory(watch_buffer: usize) -> Backend {
    Backend {
        store: Arc::new(MemoryStore::with_watch_buffer(watch_buffer)),
        _dir: None,
        _etcd: None,
    }
}

/// A fresh etcd process and a store connected to it.
async fn etcd() -> Backend {
    let server = EtcdServer::start().await;
    Backend {
        store: Arc::new(server.store(Duration::from_secs(10)).await),
        _dir: None,
        _etcd: Some(server),
    }
}

fn sqlite(watch_buffer: usize) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        watch_buffer,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(dir.path().join("state.db"), opts).unwrap();
    Backend {
        store: Arc::new(s),
        _dir: Some(dir),
        _etcd: None,
    }
}

const BUFFER: usize = 1 << 16;

/// Next watch item, failing the test if none arrives in time.
async fn next(w: &mut WatchStream) -> store::Event {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Asserts that nothing arrives on the watch for a short while.
async fn quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::memory(super::BUFFER);
                    super::$name(b.store.clone()).await;
                }
            )*
        }
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::sqlite(super::BUFFER);
                    super::$name(b.store.clone()).await;
                }
            )*
        }
        mod etcd_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::etcd().await;
                    super::$name(b.store.clone()).await;
                }
            )*
        }
    };
}

backends!(
    create_get_update_delete,
    cas_conflicts,
    range_prefix_limit_pagination,
    range_at_old_revision,
    paginated_list_is_consistent,
    revision_is_monotonic,
    watch_from_now,
    watch_replays_history,
    watch_prefix_filter,
    watch_event_contents,
    compaction,
    compaction_keeps_what_reads_need,
    future_revision,
    concurrent_writers_and_watcher,
    watch_replay_joins_live_without_gap,
    concurrent_cas_has_one_winner,
);

async fn create_get_update_delete(s: SharedStore) {
    assert_eq!(s.get("/k").await.unwrap(), None);
    let c = s.create("/k", b"v1".to_vec()).await.unwrap();
    assert_eq!(c.key, "/k");
    assert_eq!(c.value, b"v1");
    assert_eq!(c.create_revision, c.mod_revision);
    assert_eq!(s.get("/k").await.unwrap(), Some(c.clone()));

    match s.create("/k", b"again".to_vec()).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, "/k"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    let u = s
        .update("/k", b"v2".to_vec(), c.mod_revision)
        .await
        .unwrap();
    assert_eq!(u.create_revision, c.create_revision);
    assert!(u.mod_revision > c.mod_revision);
    assert_eq!(u.value, b"v2");
    // expected = 0: unconditional.
    let u2 = s.update("/k", b"v3".to_vec(), 0).await.unwrap();
    assert!(u2.mod_revision > u.mod_revision);
    assert_eq!(s.get("/k").await.unwrap(), Some(u2.clone()));

    match s.update("/missing", b"x".to_vec(), 0).await {
        Err(StoreError::NotFound(k)) => assert_eq!(k, "/missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    let d = s.delete("/k", u2.mod_revision).await.unwrap();
    assert_eq!(d.prev, u2);
    assert!(d.revision > u2.mod_revision);
    assert_eq!(s.current_revision().await.unwrap(), d.revision);
    assert_eq!(s.get("/k").await.unwrap(), None);
    assert!(matches!(
        s.delete("/k", 0).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.update("/k", b"x".to_vec(), 0).await,
        Err(StoreError::NotFound(_))
    ));

    // Re-creation starts a new lifetime.
    let again = s.create("/k", b"new".to_vec()).await.unwrap();
    assert_eq!(again.create_revision, again.mod_revision);
    assert!(again.create_revision > d.revision);
    // Unconditional delete.
    let d2 = s.delete("/k", 0).await.unwrap();
    assert_eq!(d2.prev, again);
}

async fn cas_conflicts(s: SharedStore) {
    let c = s.create("/cas", b"1".to_vec()).await.unwrap();
    let u = s
        .update("/cas", b"2".to_vec(), c.mod_revision)
        .await
        .unwrap();
    match s.update("/cas", b"3".to_vec(), c.mod_revision).await {
        Err(StoreError::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!(key, "/cas");
            assert_eq!(expected, c.mod_revision);
            assert_eq!(*current, u);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    match s.delete("/cas", c.mod_revision).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(*current, u),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // A failed precondition consumes no revision and changes nothing.
    assert_eq!(s.current_revision().await.unwrap(), u.mod_revision);
    assert_eq!(s.get("/cas").await.unwrap(), Some(u));
}

async fn range_prefix_limit_pagination(s: SharedStore) {
    for k in [
        "/a/1", "/a/2", "/a/3", "/a/4", "/a/5", "/a", "/ab", "/b/1", "/a/3/x",
    ] {
        s.create(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let all = s.range("/a/", None, 0, 0).await.unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/1", "/a/2", "/a/3", "/a/3/x", "/a/4", "/a/5"]);
    assert!(!all.more);
    assert_eq!(all.count, 6);
    assert_eq!(all.revision, s.current_revision().await.unwrap());
    assert_eq!(all.kvs[0].value, b"/a/1");

    let page = s.range("/a/", None, 2, 0).await.unwrap();
    assert_eq!(page.kvs.len(), 2);
    assert!(page.more);
    assert_eq!(page.count, 6);

    // Paginate with start_after at the first page's revision.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = s
            .range("/a/", after.as_deref(), 2, page.revision)
            .await
            .unwrap();
        assert_eq!(p.revision, page.revision);
        assert_eq!(p.count, 6 - seen.len() as i64);
        seen.extend(p.kvs.iter().map(|kv| kv.key.clone()));
        if !p.more {
            break;
        }
        after = p.kvs.last().map(|kv| kv.key.clone());
    }
    assert_eq!(seen, keys);

    let exact = s.range("/a/", None, 6, 0).await.unwrap();
    assert_eq!(exact.kvs.len(), 6);
    assert!(!exact.more);
    assert_eq!(exact.count, 6);

    let end = s.range("/a/", Some("/a/5"), 10, 0).await.unwrap();
    assert!(end.kvs.is_empty());
    assert!(!end.more);
    assert_eq!(end.count, 0);

    // start_after before the prefix is harmless.
    let before = s.range("/a/", Some("/0"), 0, 0).await.unwrap();
    assert_eq!(before.count, 6);

    // The empty prefix is everything.
    assert_eq!(s.range("", None, 0, 0).await.unwrap().count, 9);
    assert_eq!(s.range("/zzz", None, 0, 0).await.unwrap().count, 0);
}

async fn range_at_old_revision(s: SharedStore) {
    let x1 = s.create("/p/x", b"x1".to_vec()).await.unwrap();
    let x2 = s.update("/p/x", b"x2".to_vec(), 0).await.unwrap();
    let y1 = s.create("/p/y", b"y1".to_vec()).await.unwrap();
    let dx = s.delete("/p/x", 0).await.unwrap();
    let z1 = s.create("/p/z", b"z1".to_vec()).await.unwrap();

    let at = |rev| {
        let s = s.clone();
        async move {
            let r = s.range("/p/", None, 0, rev).await.unwrap();
            assert_eq!(r.revision, rev);
            r.kvs
        }
    };
    assert_eq!(at(x1.mod_revision).await, vec![x1.clone()]);
    assert_eq!(at(x2.mod_revision).await, vec![x2.clone()]);
    assert_eq!(at(y1.mod_revision).await, vec![x2.clone(), y1.clone()]);
    assert_eq!(at(dx.revision).await, vec![y1.clone()]);
    assert_eq!(at(z1.mod_revision).await, vec![y1.clone(), z1.clone()]);

    let limited = s.range("/p/", None, 1, y1.mod_revision).await.unwrap();
    assert_eq!(limited.kvs, vec![x2]);
    assert!(limited.more);
    assert_eq!(limited.count, 2);
    let rest = s
        .range("/p/", Some("/p/x"), 1, y1.mod_revision)
        .await
        .unwrap();
    assert_eq!(rest.kvs, vec![y1]);
    assert!(!rest.more);
    assert_eq!(rest.count, 1);
}

async fn paginated_list_is_consistent(s: SharedStore) {
    for i in 0..20 {
        s.create(&format!("/list/{i:02}"), b"v".to_vec())
            .await
            .unwrap();
    }
    let first = s.range("/list/", None, 5, 0).await.unwrap();
    // Writes between pages must not show up in later pages.
    s.delete("/list/07", 0).await.unwrap();
    s.create("/list/99", b"late".to_vec()).await.unwrap();
    s.update("/list/10", b"changed".to_vec(), 0).await.unwrap();
    let mut all = first.kvs.clone();
    let mut last = first.kvs.last().map(|kv| kv.key.clone());
    while let Some(after) = last.take() {
        let p = s
            .range("/list/", Some(&after), 5, first.revision)
            .await
            .unwrap();
        all.extend(p.kvs.iter().cloned());
        if p.more {
            last = p.kvs.last().map(|kv| kv.key.clone());
        }
    }
    assert_eq!(all.len(), 20);
    assert!(all.iter().all(|kv| kv.value == b"v"));
    assert!(all.iter().any(|kv| kv.key == "/list/07"));
}

async fn revision_is_monotonic(s: SharedStore) {
    let start = s.current_revision().await.unwrap();
    let mut last = start;
    for i in 0..20 {
        let key = format!("/m/{}", i % 3);
        let rev = match s.get(&key).await.unwrap() {
            None => s.create(&key, vec![i]).await.unwrap().mod_revision,
            Some(kv) if i % 2 == 0 => s.delete(&key, kv.mod_revision).await.unwrap().revision,
            Some(kv) => {
                s.update(&key, vec![i], kv.mod_revision)
                    .await
                    .unwrap()
                    .mod_revision
            }
        };
        assert_eq!(rev, last + 1, "each write takes exactly the next revision");
        last = rev;
        assert_eq!(s.current_revision().await.unwrap(), rev);
    }
}

async fn watch_from_now(s: SharedStore) {
    s.create("/w/old", b"old".to_vec()).await.unwrap();
    let mut w = s.watch("/w/", 0).await.unwrap();
    quiet(&mut w).await;
    let c = s.create("/w/new", b"new".to_vec()).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(ev.kind, EventType::Put);
    assert_eq!(ev.kv, c);
    assert_eq!(ev.prev, None);
}

async fn watch_replays_history(s: SharedStore) {
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            s.create(&format!("/h/{i}"), vec![i])
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let mut w = s.watch("/h/", revs[1]).await.unwrap();
    for (i, rev) in revs.iter().enumerate().skip(2) {
        let ev = next(&mut w).await;
        assert_eq!(ev.kv.mod_revision, *rev);
        assert_eq!(ev.kv.key, format!("/h/{i}"));
    }
    let live = s.create("/h/live", b"l".to_vec()).await.unwrap();
    assert_eq!(next(&mut w).await.kv, live);
    quiet(&mut w).await;

    // Watching from the current revision replays nothing.
    let mut w2 = s.watch("/h/", live.mod_revision).await.unwrap();
    quiet(&mut w2).await;
    // Watching from a future revision waits for it.
    let mut w3 = s.watch("/h/", live.mod_revision + 1).await.unwrap();
    let a = s.create("/h/a", vec![]).await.unwrap();
    let b = s.create("/h/b", vec![]).await.unwrap();
    assert_eq!(next(&mut w2).await.kv, a);
    assert_eq!(next(&mut w2).await.kv, b);
    assert_eq!(next(&mut w3).await.kv, b);
}

async fn watch_prefix_filter(s: SharedStore) {
    // (after = 0 means "from now", so make sure the history starts later.)
    s.create("/pre", vec![]).await.unwrap();
    let base = s.create("/f/x/0", vec![]).await.unwrap().mod_revision;
    s.create("/f/y/0", vec![]).await.unwrap();
    s.create("/f/x/1", vec![]).await.unwrap();
    let mut past = s.watch("/f/x/", base - 1).await.unwrap();
    let mut live = s.watch("/f/x/", 0).await.unwrap();
    s.create("/f/y/1", vec![]).await.unwrap();
    s.create("/f/xx", vec![]).await.unwrap();
    s.create("/f/x/2", vec![]).await.unwrap();
    for k in ["/f/x/0", "/f/x/1", "/f/x/2"] {
        assert_eq!(next(&mut past).await.kv.key, k);
    }
    assert_eq!(next(&mut live).await.kv.key, "/f/x/2");
    quiet(&mut past).await;
    quiet(&mut live).await;
}

async fn watch_event_contents(s: SharedStore) {
    s.create("/pre", vec![]).await.unwrap();
    let start = s.current_revision().await.unwrap();
    let mut live = s.watch("/e/", 0).await.unwrap();
    let c = s.create("/e/k", b"v1".to_vec()).await.unwrap();
    let u = s
        .update("/e/k", b"v2".to_vec(), c.mod_revision)
        .await
        .unwrap();
    let d = s.delete("/e/k", u.mod_revision).await.unwrap();
    let mut replay = s.watch("/e/", start).await.unwrap();
    for w in [&mut live, &mut replay] {
        let e1 = next(w).await;
        assert_eq!((e1.kind, &e1.kv, &e1.prev), (EventType::Put, &c, &None));
        let e2 = next(w).await;
        assert_eq!(
            (e2.kind, &e2.kv, e2.prev.as_ref()),
            (EventType::Put, &u, Some(&c))
        );
        let e3 = next(w).await;
        assert_eq!(e3.kind, EventType::Delete);
        assert_eq!(e3.kv.key, "/e/k");
        assert_eq!(e3.kv.value, b"v2", "a delete event carries the last value");
        assert_eq!(e3.kv.mod_revision, d.revision);
        assert_eq!(e3.kv.create_revision, c.create_revision);
        assert_eq!(e3.prev.as_ref(), Some(&u));
    }
}

async fn compaction(s: SharedStore) {
    let a1 = s.create("/c/a", b"1".to_vec()).await.unwrap();
    let a2 = s.update("/c/a", b"2".to_vec(), 0).await.unwrap();
    let b1 = s.create("/c/b", b"1".to_vec()).await.unwrap();
    let db = s.delete("/c/b", 0).await.unwrap();
    let a3 = s.update("/c/a", b"3".to_vec(), 0).await.unwrap();
    assert_eq!(s.compact_revision().await.unwrap(), 0);

    s.compact(db.revision).await.unwrap();
    assert_eq!(s.compact_revision().await.unwrap(), db.revision);
    // Compacting to an older revision again is a no-op.
    s.compact(a1.mod_revision).await.unwrap();
    assert_eq!(s.compact_revision().await.unwrap(), db.revision);

    match s.watch("/c/", b1.mod_revision).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (b1.mod_revision, db.revision));
        }
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    match s.range("/c/", None, 0, a2.mod_revision).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (a2.mod_revision, db.revision));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The compact revision itself and later stay readable.
    assert_eq!(
        s.range("/c/", None, 0, db.revision).await.unwrap().kvs,
        vec![a2.clone()]
    );
    assert_eq!(
        s.range("/c/", None, 0, 0).await.unwrap().kvs,
        vec![a3.clone()]
    );
    let mut w = s.watch("/c/", db.revision).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(ev.kv, a3);
    assert_eq!(ev.prev, Some(a2));
    // The revision counter is unaffected.
    assert_eq!(s.current_revision().await.unwrap(), a3.mod_revision);
    assert_eq!(
        s.create("/c/n", vec![]).await.unwrap().mod_revision,
        a3.mod_revision + 1
    );
}

async fn compaction_keeps_what_reads_need(s: SharedStore) {
    // A key deleted at the compact revision, one deleted after it, and one
    // updated after it: reads and watches from the compact revision on must
    // still see the right values and prev values.
    let x = s.create("/k/x", b"x".to_vec()).await.unwrap();
    let y = s.create("/k/y", b"y".to_vec()).await.unwrap();
    let z = s.create("/k/z", b"z".to_vec()).await.unwrap();
    let dx = s.delete("/k/x", 0).await.unwrap();
    s.compact(dx.revision).await.unwrap();
    let dy = s.delete("/k/y", 0).await.unwrap();
    let z2 = s.update("/k/z", b"z2".to_vec(), 0).await.unwrap();
    let at = s.range("/k/", None, 0, dx.revision).await.unwrap();
    assert_eq!(at.kvs, vec![y.clone(), z.clone()]);
    let mut w = s.watch("/k/", dx.revision).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.mod_revision, e.kv.value.as_slice()),
        (EventType::Delete, dy.revision, &b"y"[..])
    );
    assert_eq!(e.prev, Some(y));
    let e = next(&mut w).await;
    assert_eq!(e.kv, z2);
    assert_eq!(e.prev, Some(z));
    // Compacting everything leaves only live keys.
    s.compact(z2.mod_revision).await.unwrap();
    assert_eq!(
        s.range("/k/", None, 0, 0).await.unwrap().kvs,
        vec![z2.clone()]
    );
    assert_eq!(
        s.range("/k/", None, 0, z2.mod_revision).await.unwrap().kvs,
        vec![z2]
    );
    assert!(x.mod_revision < dx.revision);
}

async fn future_revision(s: SharedStore) {
    let c = s.create("/fut", vec![]).await.unwrap();
    match s.range("/", None, 0, c.mod_revision + 1).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (c.mod_revision + 1, c.mod_revision));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
    assert!(matches!(
        s.compact(c.mod_revision + 5).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

async fn concurrent_writers_and_watcher(s: SharedStore) {
    const TASKS: usize = 64;
    const WRITES: usize = 50;
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch("/conc/", 0).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/conc/{t:02}");
            let mut kv = s.create(&key, b"0".to_vec()).await.unwrap();
            let mut revs = vec![kv.mod_revision];
            for i in 1..WRITES {
                kv = s
                    .update(&key, i.to_string().into_bytes(), kv.mod_revision)
                    .await
                    .unwrap();
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let mut acked: HashMap<i64, usize> = HashMap::new();
    for (t, task) in tasks.into_iter().enumerate() {
        for rev in task.await.unwrap() {
            assert!(
                acked.insert(rev, t).is_none(),
                "revision {rev} handed out twice"
            );
        }
    }
    let total = (TASKS * WRITES) as i64;
    assert_eq!(s.current_revision().await.unwrap(), start + total);
    let all = s.range("/conc/", None, 0, 0).await.unwrap();
    assert_eq!(all.count, TASKS as i64);
    for kv in &all.kvs {
        assert_eq!(kv.value, (WRITES - 1).to_string().into_bytes());
    }
    // The watcher sees every write, in order, no gap, no duplicate.
    for expected in start + 1..=start + total {
        let ev = next(&mut w).await;
        assert_eq!(ev.kv.mod_revision, expected);
        let t = acked[&expected];
        assert_eq!(ev.kv.key, format!("/conc/{t:02}"));
    }
    quiet(&mut w).await;
}

async fn watch_replay_joins_live_without_gap(s: SharedStore) {
    // Start watchers from past revisions while writes are in flight; each
    // must see a contiguous sequence of revisions.
    let start = s.current_revision().await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..1500 {
                s.create(&format!("/gap/{i:05}"), vec![]).await.unwrap();
            }
        })
    };
    let mut watchers = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let from = s.current_revision().await.unwrap().max(start + 1) - 1;
        watchers.push((from, s.watch("/gap/", from).await.unwrap()));
    }
    writer.await.unwrap();
    for (from, mut w) in watchers {
        for expected in from + 1..=start + 1500 {
            assert_eq!(next(&mut w).await.kv.mod_revision, expected);
        }
        quiet(&mut w).await;
    }
}

async fn concurrent_cas_has_one_winner(s: SharedStore) {
    // Racing writers with the same expected revision usually land in one
    // SQLite batch: each must be checked against the earlier ones.
    for round in 0..10 {
        let key = format!("/race/{round}");
        let base = s.create(&key, b"base".to_vec()).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..16u8 {
            let s = s.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                if t % 2 == 0 {
                    s.update(&key, vec![t], base.mod_revision).await.map(|_| ())
                } else {
                    s.delete(&key, base.mod_revision).await.map(|_| ())
                }
            }));
        }
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => winners += 1,
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
        assert_eq!(
            s.current_revision().await.unwrap(),
            base.mod_revision + 1,
            "losers consume no revision"
        );
    }
}

// ---- Lagging watchers (both backends, small buffers) ----

async fn lagging_watcher_is_closed(s: SharedStore) {
    let mut w = s.watch("/lag/", 0).await.unwrap();
    let mut quiet_w = s.watch("/other/", 0).await.unwrap();
    for i in 0..100 {
        s.create(&format!("/lag/{i}"), vec![]).await.unwrap();
    }
    let mut got = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
        {
            Some(Ok(_)) => got += 1,
            Some(Err(StoreError::WatcherLagged)) => break,
            other => panic!("expected WatcherLagged, got {other:?}"),
        }
    }
    assert!(got <= 8, "delivered {got} events from an 8-event buffer");
    assert!(
        w.next().await.is_none(),
        "the stream ends after the lag error"
    );
    // A watcher on an untouched prefix is unaffected.
    s.create("/other/x", vec![]).await.unwrap();
    assert_eq!(next(&mut quiet_w).await.kv.key, "/other/x");
}

#[tokio::test]
async fn memory_lagging_watcher_is_closed() {
    lagging_watcher_is_closed(memory(8).store).await;
}

#[tokio::test]
async fn sqlite_lagging_watcher_is_closed() {
    let b = sqlite(8);
    lagging_watcher_is_closed(b.store.clone()).await;
}

// ---- SQLite specifics ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (kept, last) = {
        let s = SqliteStore::open(&path).unwrap();
        let kept = s.create("/r/kept", b"v".to_vec()).await.unwrap();
        s.create("/r/gone", b"v".to_vec()).await.unwrap();
        // The newest write is a tombstone that compaction removes: the
        // revision counter must still not go backwards.
        let d = s.delete("/r/gone", 0).await.unwrap();
        s.compact(d.revision).await.unwrap();
        (kept, d.revision)
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), last);
    assert_eq!(s.compact_revision().await.unwrap(), last);
    assert_eq!(s.get("/r/kept").await.unwrap(), Some(kept));
    assert_eq!(s.get("/r/gone").await.unwrap(), None);
    let next_kv = s.create("/r/next", vec![]).await.unwrap();
    assert_eq!(next_kv.mod_revision, last + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open(dir.path().join("state.db")).unwrap());
    let before = s.stats();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                s.create(&format!("/g/{t}/{i}"), vec![]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = s.stats();
    let writes = after.writes - before.writes;
    let commits = after.commits - before.commits;
    eprintln!("group commit: {writes} writes in {commits} commits");
    assert_eq!(writes, 64 * 20);
    assert!(
        commits < writes / 4,
        "{commits} commits for {writes} writes: not batching"
    );
    assert_eq!(s.range("/g/", None, 0, 0).await.unwrap().count, 64 * 20);
}

#[tokio::test]
async fn sqlite_open_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    match SqliteStore::open(dir.path().join("no/such/dir/state.db")) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("sqlite"), "{msg}"),
        Err(e) => panic!("expected Backend, got {e:?}"),
        Ok(_) => panic!("opening in a missing directory succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_drop_ends_watch_streams() {
    let b = sqlite(BUFFER);
    let mut w = b.store.watch("/", 0).await.unwrap();
    drop(b.store);
    let end = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap();
    assert!(end.is_none(), "expected the stream to end, got {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_compactor_compacts() {
    let s: SharedStore = Arc::new(MemoryStore::new());
    let c = s.create("/pc", vec![]).await.unwrap();
    let task = store::spawn_compactor(s.clone(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    assert_eq!(s.compact_revision().await.unwrap(), c.mod_revision);
}

/// Env var that turns `kill_child` into the writer process of `sqlite_acknowledged_writes_survive_kill`.
const KILL_CHILD_DB: &str = "STORE_CONFORMANCE_KILL_CHILD_DB";

/// Child half of the kill -9 test: writes concurrently forever and prints
/// every acknowledged write. A no-op when run as an ordinary test.
#[test]
fn kill_child() {
    let Ok(path) = std::env::var(KILL_CHILD_DB) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let s = Arc::new(SqliteStore::open(&path).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded so an orphaned child cannot run forever.
                for i in 0..20_000 {
                    let key = format!("/kill/{t}/{i}");
                    let kv = s.create(&key, key.clone().into_bytes()).await.unwrap();
                    println!("ack {key} {}", kv.mod_revision);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_writes_survive_kill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(KILL_CHILD_DB, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ack") {
                continue;
            }
            let key = parts.next().unwrap().to_string();
            let rev: i64 = parts.next().unwrap().parse().unwrap();
            acked.push((key, rev));
            if acked.len() == 500 {
                // SIGKILL mid-stream: writes are in flight right now.
                child.kill().unwrap();
                break;
            }
        }
        child.wait().unwrap();
        acked
    })
    .await
    .unwrap();
    assert_eq!(acked.len(), 500, "child stopped early");
    let s = SqliteStore::open(&path).unwrap();
    let max = acked.iter().map(|(_, r)| *r).max().unwrap();
    assert!(s.current_revision().await.unwrap() >= max);
    for (key, rev) in &acked {
        let kv = s
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(kv.mod_revision, *rev);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let opts = SqliteOptions {
        max_pages: Some(64),
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(&path, opts).unwrap();
    let mut acked = Vec::new();
    let err = loop {
        let key = format!("/full/{}", acked.len());
        match s.create(&key, vec![7; 4096]).await {
            Ok(kv) => acked.push(kv),
            Err(e) => break e,
        }
        assert!(acked.len() < 1000, "the page cap never took effect");
    };
    match &err {
        StoreError::Backend(msg) => assert!(msg.contains("full"), "{msg}"),
        other => panic!("expected Backend, got {other:?}"),
    }
    // The failed write consumed nothing; reads and deletes still work.
    let last = acked.last().unwrap().clone();
    assert_eq!(s.current_revision().await.unwrap(), last.mod_revision);
    assert_eq!(s.get(&last.key).await.unwrap(), Some(last.clone()));
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    for kv in &acked {
        assert_eq!(s.get(&kv.key).await.unwrap().as_ref(), Some(kv));
    }
    let next_kv = s.create("/full/after", vec![]).await.unwrap();
    assert_eq!(next_kv.mod_revision, last.mod_revision + 1);
}

fn wal_len(db: &std::path::Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoint_truncates_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let opts = SqliteOptions {
        checkpoint_interval: None,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(&path, opts).unwrap();
    for i in 0..50 {
        s.create(&format!("/ck/{i}"), vec![1; 1024]).await.unwrap();
    }
    assert!(wal_len(&path) > 0);
    s.checkpoint().await.unwrap();
    assert_eq!(wal_len(&path), 0);
    // Commit counting is unaffected by checkpoints.
    assert_eq!(s.commit_count(), s.stats().commits);
    assert_eq!(s.get("/ck/49").await.unwrap().unwrap().value, vec![1; 1024]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_background_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let opts = SqliteOptions {
        checkpoint_interval: Some(Duration::from_millis(30)),
        compact_interval: Some(Duration::from_millis(30)),
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(&path, opts).unwrap();
    let first = s.create("/bg/a", vec![1; 1024]).await.unwrap();
    s.update("/bg/a", vec![2; 1024], 0).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.compact_revision().await.unwrap() <= first.mod_revision || wal_len(&path) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "background compaction/checkpoint did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        s.range("/bg/", None, 0, first.mod_revision).await,
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(s.get("/bg/a").await.unwrap().unwrap().value, vec![2; 1024]);
    // Dropping the store stops both background threads promptly.
    let t = std::time::Instant::now();
    drop(s);
    assert!(t.elapsed() < Duration::from_secs(2));
}

// ---- etcd specifics ----

/// Runs `fut`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} hung for more than {limit:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_errors_then_reconnects() {
    let mut server = EtcdServer::start().await;
    let timeout = Duration::from_secs(2);
    let s: SharedStore = Arc::new(server.store(timeout).await);
    let a = s.create("/out/a", b"a".to_vec()).await.unwrap();
    let b = s.create("/out/b", b"b".to_vec()).await.unwrap();
    let b2 = s
        .update("/out/b", b"b2".to_vec(), b.mod_revision)
        .await
        .unwrap();
    let mut w = s.watch("/out/", 0).await.unwrap();

    server.kill();

    // The watch ends with an error instead of hanging.
    match within(Duration::from_secs(15), "watch on a dead etcd", w.next()).await {
        Some(Err(StoreError::Backend(msg))) => assert!(msg.contains("etcd"), "{msg}"),
        other => panic!("expected a backend error on the watch, got {other:?}"),
    }
    // Every kind of request fails within the request timeout.
    let limit = timeout + Duration::from_secs(3);
    let started = std::time::Instant::now();
    assert!(matches!(
        within(limit, "get", s.get("/out/a")).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        within(limit, "create", s.create("/out/c", vec![])).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        within(limit, "range", s.range("/out/", None, 0, 0)).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        within(limit, "current_revision", s.current_revision()).await,
        Err(StoreError::Backend(_))
    ));
    match within(limit, "watch", s.watch("/out/", 0)).await {
        Err(StoreError::Backend(_)) => {}
        Err(e) => panic!("expected a backend error, got {e:?}"),
        Ok(_) => panic!("watch on a dead etcd succeeded"),
    }
    eprintln!("5 requests failed in {:?}", started.elapsed());

    server.restart().await;

    // The same store recovers by itself once etcd is back.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        match s.get("/out/a").await {
            Ok(v) => break v,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "store did not reconnect: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(got, Some(a));
    assert_eq!(s.get("/out/b").await.unwrap(), Some(b2.clone()));
    assert_eq!(
        s.get("/out/c").await.unwrap(),
        None,
        "the failed create did not land"
    );
    assert_eq!(s.current_revision().await.unwrap(), b2.mod_revision);
    let mut w = s.watch("/out/", b.mod_revision).await.unwrap();
    assert_eq!(next(&mut w).await.kv, b2);
    let c = s.create("/out/c", b"c".to_vec()).await.unwrap();
    assert_eq!(c.mod_revision, b2.mod_revision + 1);
    assert_eq!(next(&mut w).await.kv, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_by_another_client_is_discovered() {
    let server = EtcdServer::start().await;
    let s = server.store(Duration::from_secs(10)).await;
    let other = server.store(Duration::from_secs(10)).await;
    let mut revs = Vec::new();
    for i in 0..40 {
        revs.push(
            s.create(&format!("/dc/{i}"), vec![])
                .await
                .unwrap()
                .mod_revision,
        );
    }
    assert_eq!(s.compact_revision().await.unwrap(), 0);
    other.compact(revs[23]).await.unwrap();
    // `s` never compacted: it finds the compact revision in etcd.
    assert_eq!(s.compact_revision().await.unwrap(), revs[23]);
    match s.range("/dc/", None, 0, revs[5]).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (revs[5], revs[23]));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    match s.watch("/dc/", revs[22]).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (revs[22], revs[23]));
        }
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let mut w = s.watch("/dc/", revs[23]).await.unwrap();
    assert_eq!(next(&mut w).await.kv.mod_revision, revs[24]);
}

#[tokio::test]
async fn etcd_connect_to_nothing_fails_fast() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = store::etcd::EtcdOptions {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let endpoints = [format!("http://127.0.0.1:{port}")];
    let res = within(
        Duration::from_secs(10),
        "connect",
        store::EtcdStore::connect_with(&endpoints, None, opts),
    )
    .await;
    match res {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("etcd"), "{msg}"),
        Err(e) => panic!("expected Backend, got {e:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_tls_with_client_certificate() {
    let server = EtcdServer::start_tls().await;
    let tls = server.tls().unwrap();
    assert!(server.url().starts_with("https://"));
    let s = store::EtcdStore::connect(&[server.url()], Some(tls.clone()))
        .await
        .unwrap();
    let mut w = s.watch("/tls/", 0).await.unwrap();
    let c = s.create("/tls/k", b"v".to_vec()).await.unwrap();
    assert_eq!(s.get("/tls/k").await.unwrap(), Some(c.clone()));
    assert_eq!(next(&mut w).await.kv, c);

    // The same through an etcd:// spec.
    let spec = format!(
        "etcd://{}?ca={}&cert={}&key={}",
        server.url().trim_start_matches("https://"),
        tls.ca_file.display(),
        tls.cert_file.as_ref().unwrap().display(),
        tls.key_file.as_ref().unwrap().display(),
    );
    let via_spec = store::EtcdStore::connect_spec(&spec).await.unwrap();
    assert_eq!(via_spec.get("/tls/k").await.unwrap(), Some(c));

    // etcd requires a client certificate: without one, connecting fails
    // with a backend error (and does not hang).
    let opts = store::etcd::EtcdOptions {
        request_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let no_cert = store::EtcdTls {
        cert_file: None,
        key_file: None,
        ..tls.clone()
    };
    let res = within(
        Duration::from_secs(15),
        "connect without a client certificate",
        store::EtcdStore::connect_with(&[server.url()], Some(no_cert), opts.clone()),
    )
    .await;
    match res {
        Err(StoreError::Backend(msg)) => eprintln!("without a client certificate: {msg}"),
        Err(e) => panic!("expected Backend, got {e:?}"),
        Ok(_) => panic!("connected without a client certificate"),
    }
    // A missing CA file is reported by path.
    let missing = store::EtcdTls {
        ca_file: "/nonexistent/ca.crt".into(),
        ..tls
    };
    match store::EtcdStore::connect_with(&[server.url()], Some(missing), opts).await {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("/nonexistent/ca.crt"), "{msg}"),
        Err(e) => panic!("expected Backend, got {e:?}"),
        Ok(_) => panic!("connected with a missing CA file"),
    }
}
