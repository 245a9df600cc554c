//! A store prefix cached in memory and kept in step by a watch: the
//! registered admission configurations and APIServices that every request
//! consults without a store read.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use store::{Revision, SharedStore};

/// The objects under one store prefix (one kind), cached and kept in step
/// with the store by a watch.
pub struct Watched {
    prefix: String,
    items: RwLock<Arc<Vec<Value>>>,
    synced: tokio::sync::watch::Sender<Revision>,
    kick: tokio::sync::Notify,
    started: std::sync::atomic::AtomicBool,
}

impl Watched {
    /// The cache of one built-in kind (`group`, `v1`, `plural`).
    pub fn of(group: &str, plural: &str) -> Arc<Watched> {
        let prefix = api::catalogue::find(group, "v1", plural)
            .map(|i| i.storage_prefix())
            .unwrap_or_else(|| format!("/registry/{plural}/"));
        Arc::new(Watched {
            prefix,
            items: RwLock::new(Arc::new(Vec::new())),
            synced: tokio::sync::watch::channel(0).0,
            kick: tokio::sync::Notify::new(),
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The objects now, in name order.
    pub fn items(&self) -> Arc<Vec<Value>> {
        self.items.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A receiver that sees the store revision of every reload.
    pub fn updates(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.synced.subscribe()
    }

    /// Starts keeping the cache in step with `store`.
    pub fn spawn(self: Arc<Self>, store: SharedStore) {
        self.started
            .store(true, std::sync::atomic::Ordering::Release);
        tokio::spawn(self.run(store));
    }

    async fn run(self: Arc<Self>, store: SharedStore) {
        loop {
            let rev = match store.range(&self.prefix, None, 0, 0).await {
                Ok(res) => {
                    let mut items: Vec<Value> = res
                        .kvs
                        .iter()
                        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                        .collect();
                    items.sort_by(|a: &Value, b: &Value| {
                        a["metadata"]["name"]
                            .as_str()
                            .cmp(&b["metadata"]["name"].as_str())
                    });
                    *self.items.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(items);
                    res.revision
                }
                Err(e) => {
                    tracing::warn!(prefix = %self.prefix, error = %e, "cache read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.synced.send_replace(rev);
            let mut watch = store.watch(&self.prefix, rev).await.ok();
            let next = async {
                match watch.as_mut() {
                    Some(w) => {
                        let _ = w.next().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = next => {}
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    /// After a write of `info` at `revision`: when it is this cache's
    /// kind, waits until the cache has it.
    pub async fn written(&self, info: &api::catalogue::ResourceInfo, revision: Revision) {
        if info.storage_prefix() == self.prefix {
            self.wait_synced(revision).await;
        }
    }

    /// Waits (at most 2 s) until the cache has seen the store at
    /// `revision`.
    pub async fn wait_synced(&self, revision: Revision) {
        // Writes before the cache runs (bootstrap) have nothing to wait for.
        if !self.started.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut rx = self.synced.subscribe();
        self.kick.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|r| *r >= revision)).await;
    }
}
