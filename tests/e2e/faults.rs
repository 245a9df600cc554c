//! Fault tests: acknowledged writes survive a SIGKILL of the server, on
//! SQLite and on a real etcd, and the revision counter never goes back;
//! with etcd killed under r8s, requests fail cleanly instead of hanging,
//! and r8s recovers by itself when etcd returns.

mod common;
#[path = "../../crates/store/tests/etcd_harness/mod.rs"]
#[allow(dead_code)]
mod etcd_harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(c: &Cluster) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.read_timeout = Some(Duration::from_secs(10));
    cfg.connect_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(cfg).unwrap()
}

fn cm(name: &str, v: u32) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"v": v.to_string()},
    }))
    .unwrap()
}

/// Per object: (last acknowledged value, highest value attempted).
type Acked = Arc<Mutex<BTreeMap<String, (u32, u32)>>>;

/// Clients create and update ConfigMaps until the server dies under them.
async fn churn(api: Api<ConfigMap>, client_no: usize, acked: Acked, max_rv: Arc<Mutex<u64>>) {
    for i in 0.. {
        let name = format!("c{client_no}-{i}");
        acked.lock().unwrap().insert(name.clone(), (0, 0));
        let mut obj = match api.create(&PostParams::default(), &cm(&name, 0)).await {
            Ok(o) => o,
            Err(_) => {
                // Unacknowledged: it may or may not exist.
                acked.lock().unwrap().insert(name.clone(), (u32::MAX, 0));
                return;
            }
        };
        for v in 1..=3u32 {
            let rv: u64 = obj
                .metadata
                .resource_version
                .as_deref()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            {
                let mut m = max_rv.lock().unwrap();
                *m = (*m).max(rv);
            }
            acked.lock().unwrap().get_mut(&name).unwrap().1 = v;
            let mut next = obj.clone();
            next.data = Some(BTreeMap::from([("v".to_string(), v.to_string())]));
            match api.replace(&name, &PostParams::default(), &next).await {
                Ok(o) => {
                    acked.lock().unwrap().get_mut(&name).unwrap().0 = v;
                    obj = o;
                }
                Err(_) => return,
            }
        }
    }
}

/// Runs churn, kills the server at a random moment, restarts it and
/// checks every acknowledged write.
fn kill_during_churn(mut c: Cluster) {
    let rt = rt();
    let acked: Acked = Arc::default();
    let max_rv = Arc::new(Mutex::new(0u64));
    let ns = "default";
    let handles = rt.block_on(async {
        let cl = client(&c).await;
        (0..16)
            .map(|n| {
                let api: Api<ConfigMap> = Api::namespaced(cl.clone(), ns);
                tokio::spawn(churn(api, n, acked.clone(), max_rv.clone()))
            })
            .collect::<Vec<_>>()
    });
    // A "random" moment between 1.5 and 2.5 s into the churn.
    let jitter = Instant::now().elapsed().subsec_nanos() as u64 % 1000;
    std::thread::sleep(Duration::from_millis(1500 + jitter));
    c.kill();
    rt.block_on(async {
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
    });
    let before = *max_rv.lock().unwrap();
    let acked = acked.lock().unwrap().clone();
    let writes: u32 = acked
        .values()
        .map(|(a, _)| if *a == u32::MAX { 0 } else { a + 1 })
        .sum();
    assert!(
        writes > 50,
        "the churn made only {writes} acknowledged writes before the kill"
    );
    c.restart();
    rt.block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&c).await, ns);
        let stored: BTreeMap<String, u32> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|o| {
                let v = o.data?.get("v")?.parse().ok()?;
                Some((o.metadata.name?, v))
            })
            .collect();
        let mut lost = Vec::new();
        for (name, (ack, tried)) in &acked {
            if *ack == u32::MAX {
                continue; // the create itself was never acknowledged
            }
            match stored.get(name) {
                None => lost.push(format!("{name} (acknowledged v{ack}) is gone")),
                Some(v) if v < ack || v > tried => lost.push(format!(
                    "{name} holds v{v}, acknowledged v{ack}, tried up to v{tried}"
                )),
                Some(_) => {}
            }
        }
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        let after = api
            .create(&PostParams::default(), &cm("after-restart", 0))
            .await
            .unwrap();
        let rv: u64 = after.metadata.resource_version.unwrap().parse().unwrap();
        assert!(rv > before, "revision went back: {rv} after {before}");
        eprintln!("{writes} acknowledged writes survived the kill; revision {before} -> {rv}");
    });
}

#[test]
fn acknowledged_writes_survive_sigkill_on_sqlite() {
    kill_during_churn(Cluster::start());
}

#[test]
fn acknowledged_writes_survive_sigkill_on_etcd() {
    let rt = rt();
    let etcd = rt.block_on(etcd_harness::EtcdServer::start());
    let spec = format!("etcd://{}", etcd.url().trim_start_matches("http://"));
    kill_during_churn(Cluster::start_in(
        tempfile::tempdir().unwrap(),
        &["--datastore", &spec],
    ));
    drop(etcd);
}

#[test]
fn etcd_outage_fails_requests_cleanly_and_recovers() {
    let rt = rt();
    let mut etcd = rt.block_on(etcd_harness::EtcdServer::start());
    let spec = format!("etcd://{}", etcd.url().trim_start_matches("http://"));
    let c = Cluster::start_in(tempfile::tempdir().unwrap(), &["--datastore", &spec]);
    c.create_cm(Some("default"), "before", &[("k", "v")]);
    etcd.kill();
    // A write fails with a server error in bounded time, never hangs.
    let started = Instant::now();
    let out = c.kubectl(&["create", "configmap", "during", "--request-timeout=30s"]);
    assert!(!out.status.success(), "a write succeeded with etcd down");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the write hung for {:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InternalError")
            || err.contains("ServiceUnavailable")
            || err.contains("Internal error")
            || err.contains("etcd")
            || err.contains("unavailable"),
        "the error says what failed: {err}"
    );
    rt.block_on(etcd.restart());
    // r8s recovers without a restart: writes work and the earlier data is there.
    c.wait_for("writes to work again", Duration::from_secs(60), || {
        c.kubectl(&["create", "configmap", "after"])
            .status
            .success()
            .then_some(())
    });
    let v = c.get_json(&["configmap", "before"]);
    assert_eq!(v["data"]["k"], "v");
    // And watches resume: a change after the outage reaches a new watcher.
    let w = c.watch_log(&["configmaps"]);
    c.ok(&["label", "configmap", "after", "x=y"]);
    c.wait_for(
        "the watch to see the change",
        Duration::from_secs(30),
        || {
            w.events()
                .iter()
                .any(|e| e["object"]["metadata"]["labels"]["x"] == "y")
                .then_some(())
        },
    );
}

/// One watcher's record: (event type, name, resourceVersion).
type Seen = Vec<(String, String, u64)>;

fn rv_of(o: &ConfigMap) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Watches from `from`, dropping the connection every few events and
/// resuming from the last resourceVersion seen, until `until` is seen.
async fn choppy_watch(api: Api<ConfigMap>, from: u64, until: Arc<Mutex<u64>>, seed: u64) -> Seen {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let mut seen: Seen = Vec::new();
    let mut last = from;
    let mut round = seed;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        round = round
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let chunk = 5 + (round >> 33) % 40;
        let stream = match api
            .watch(&WatchParams::default().timeout(20), &last.to_string())
            .await
        {
            Ok(s) => s,
            Err(e) => panic!("watch from {last}: {e}"),
        };
        let mut stream = std::pin::pin!(stream);
        let mut n = 0;
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                // An idle watch can hit the client's read timeout: that is
                // one more disconnect, resumed from the last revision.
                Err(_) => break,
            };
            let (kind, o) = match ev {
                WatchEvent::Added(o) => ("ADDED", o),
                WatchEvent::Modified(o) => ("MODIFIED", o),
                WatchEvent::Deleted(o) => ("DELETED", o),
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(e) => panic!("watch error from {last}: {e:?}"),
            };
            let rv = rv_of(&o);
            last = rv;
            seen.push((kind.to_string(), o.metadata.name.unwrap_or_default(), rv));
            n += 1;
            if n >= chunk {
                break; // drop the connection and resume from `last`
            }
        }
        let target = *until.lock().unwrap();
        if target > 0 && last >= target {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "watcher stuck at {last}, writes went to {target}"
        );
    }
}

/// Writers churn ConfigMaps through `write`; watchers on `read` must each
/// see every change exactly once, in revision order.
fn watch_history_is_exact(write: &Cluster, read: &Cluster) {
    let rt = rt();
    rt.block_on(async {
        let wc = client(write).await;
        let rc = client(read).await;
        let ns = "default";
        let wapi: Api<ConfigMap> = Api::namespaced(wc, ns);
        let rapi: Api<ConfigMap> = Api::namespaced(rc, ns);
        let start = rv_of(
            &wapi
                .create(&PostParams::default(), &cm("start", 0))
                .await
                .unwrap(),
        );
        let until = Arc::new(Mutex::new(0u64));
        let watchers: Vec<_> = (0..3)
            .map(|i| tokio::spawn(choppy_watch(rapi.clone(), start, until.clone(), i + 7)))
            .collect();
        // The model: every acknowledged create and update.
        let model: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::default();
        let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let api = wapi.clone();
                let model = model.clone();
                let deleted = deleted.clone();
                tokio::spawn(async move {
                    for i in 0..40 {
                        let name = format!("w{w}-{i}");
                        let o = api
                            .create(&PostParams::default(), &cm(&name, 0))
                            .await
                            .unwrap();
                        model
                            .lock()
                            .unwrap()
                            .push(("ADDED".into(), name.clone(), rv_of(&o)));
                        let mut next = o.clone();
                        next.data = Some(BTreeMap::from([("v".to_string(), "1".to_string())]));
                        let o = api
                            .replace(&name, &PostParams::default(), &next)
                            .await
                            .unwrap();
                        model
                            .lock()
                            .unwrap()
                            .push(("MODIFIED".into(), name.clone(), rv_of(&o)));
                        if i % 3 == 0 {
                            api.delete(&name, &Default::default()).await.unwrap();
                            deleted.lock().unwrap().push(name);
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let end = rv_of(
            &wapi
                .create(&PostParams::default(), &cm("end", 0))
                .await
                .unwrap(),
        );
        *until.lock().unwrap() = end;
        let mut histories = Vec::new();
        for w in watchers {
            histories.push(w.await.unwrap());
        }
        let model = model.lock().unwrap().clone();
        let deleted = deleted.lock().unwrap().clone();
        for (i, h) in histories.iter().enumerate() {
            for pair in h.windows(2) {
                assert!(
                    pair[0].2 < pair[1].2,
                    "watcher {i}: {:?} then {:?} (duplicate or reordered)",
                    pair[0],
                    pair[1]
                );
            }
            for m in &model {
                assert!(h.contains(m), "watcher {i} missed {m:?}");
            }
            for name in &deleted {
                let del = h
                    .iter()
                    .filter(|e| e.0 == "DELETED" && &e.1 == name)
                    .count();
                assert_eq!(del, 1, "watcher {i}: {del} DELETED events for {name}");
            }
            assert_eq!(h, &histories[0], "watchers {i} and 0 disagree");
        }
        eprintln!(
            "{} watchers each saw the same {} events ({} writes, {} deletes) with reconnects",
            histories.len(),
            histories[0].len(),
            model.len(),
            deleted.len()
        );
    });
}

#[test]
fn watchers_that_reconnect_miss_nothing_on_sqlite() {
    let c = Cluster::start();
    watch_history_is_exact(&c, &c);
}

#[test]
fn watchers_on_another_server_miss_nothing_on_etcd() {
    let rt = rt();
    let etcd = rt.block_on(etcd_harness::EtcdServer::start());
    let spec = format!("etcd://{}", etcd.url().trim_start_matches("http://"));
    let a = Cluster::start_in(tempfile::tempdir().unwrap(), &["--datastore", &spec]);
    let b = Cluster::start_in(tempfile::tempdir().unwrap(), &["--datastore", &spec]);
    watch_history_is_exact(&a, &b);
    drop((a, b, etcd));
}

/// A watcher that fell behind both the watch cache and compaction gets
/// 410 Gone, relists, and from the list's resourceVersion sees every later
/// change: the list matches the model of acknowledged writes exactly.
fn behind_compaction_gets_410_and_relists(write: &Cluster, read: &Cluster) {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let rt = rt();
    rt.block_on(async {
        let wapi: Api<ConfigMap> = Api::namespaced(client(write).await, "default");
        let rapi: Api<ConfigMap> = Api::namespaced(client(read).await, "default");
        const KEYS: u32 = 32;
        for k in 0..KEYS {
            wapi.create(&PostParams::default(), &cm(&format!("k{k}"), 0))
                .await
                .unwrap();
        }
        let stale = rapi.list(&ListParams::default()).await.unwrap();
        let stale_rv: u64 = stale.metadata.resource_version.unwrap().parse().unwrap();
        // More updates than the server's watch cache holds (16384 events),
        // so the stale watch must be served by the (compacted) store.
        const UPDATES: u32 = 17_000;
        let writers: Vec<_> = (0..16u32)
            .map(|w| {
                let api = wapi.clone();
                tokio::spawn(async move {
                    let mut mine = BTreeMap::new();
                    for i in 0..UPDATES / 16 {
                        let k = w * 2 + i % 2; // each writer owns two keys
                        let name = format!("k{k}");
                        let v = i + 1;
                        let mut obj = cm(&name, v);
                        obj.metadata.resource_version = None;
                        api.replace(&name, &PostParams::default(), &obj)
                            .await
                            .unwrap_or_else(|e| panic!("update {name}={v}: {e}"));
                        mine.insert(name, v);
                    }
                    mine
                })
            })
            .collect();
        let mut model = BTreeMap::new();
        for w in writers {
            model.extend(w.await.unwrap());
        }
        // Two compaction ticks (1 s apart) after the writes moved on.
        tokio::time::sleep(Duration::from_millis(2500)).await;

        let stream = rapi
            .watch(&WatchParams::default().timeout(10), &stale_rv.to_string())
            .await;
        let first = match stream {
            Ok(s) => std::pin::pin!(s).next().await,
            Err(e) => panic!("watch from {stale_rv} failed outright: {e}"),
        };
        match first {
            Some(Ok(WatchEvent::Error(e))) => {
                assert_eq!(e.code, 410, "watch from compacted {stale_rv}: {e:?}");
                assert_eq!(e.reason, "Expired", "{e:?}");
            }
            other => panic!("watch from compacted rv {stale_rv}: expected 410, got {other:?}"),
        }

        // Relist: exactly the acknowledged state.
        let fresh = rapi.list(&ListParams::default()).await.unwrap();
        let got: BTreeMap<String, u32> = fresh
            .items
            .iter()
            // Not the controllers' kube-root-ca.crt.
            .filter(|o| o.metadata.name.as_deref() != Some("kube-root-ca.crt"))
            .map(|o| {
                let v = o.data.as_ref().unwrap()["v"].parse().unwrap();
                (o.metadata.name.clone().unwrap(), v)
            })
            .collect();
        assert_eq!(got, model, "relist after 410 differs from the acked writes");
        // And a watch from the relist's revision sees what follows.
        let rv = fresh.metadata.resource_version.unwrap();
        let mut stream = std::pin::pin!(
            rapi.watch(&WatchParams::default().timeout(10), &rv)
                .await
                .unwrap()
        );
        wapi.replace("k0", &PostParams::default(), &cm("k0", 999_999))
            .await
            .unwrap();
        match stream.next().await {
            Some(Ok(WatchEvent::Modified(o))) => {
                assert_eq!(o.metadata.name.as_deref(), Some("k0"));
                assert_eq!(o.data.unwrap()["v"], "999999");
            }
            other => panic!("watch after relist: expected k0 MODIFIED, got {other:?}"),
        }
        eprintln!("watch from {stale_rv} got 410 after {UPDATES} updates; relist matched");
    });
}

#[test]
fn watcher_behind_compaction_gets_410_and_relists_on_sqlite() {
    let c = Cluster::start_in(
        tempfile::tempdir().unwrap(),
        &["--etcd-compaction-interval", "1s"],
    );
    behind_compaction_gets_410_and_relists(&c, &c);
}

#[test]
fn watcher_behind_compaction_gets_410_and_relists_on_etcd() {
    let rt = rt();
    let etcd = rt.block_on(etcd_harness::EtcdServer::start());
    let spec = format!("etcd://{}", etcd.url().trim_start_matches("http://"));
    let args = ["--datastore", &spec, "--etcd-compaction-interval", "1s"];
    let a = Cluster::start_in(tempfile::tempdir().unwrap(), &args);
    let b = Cluster::start_in(tempfile::tempdir().unwrap(), &args);
    behind_compaction_gets_410_and_relists(&a, &b);
    drop((a, b, etcd));
}
