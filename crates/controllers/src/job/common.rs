//! Helpers shared by the batch and apps workload controllers (job, cronjob,
//! daemonset, statefulset): selectors, pod state, owner references,
//! creation/deletion expectations and revision hashes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use controller_runtime::{pod_active, pod_ready, pod_terminal, selector_matches};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

/// The pod's phase ("" when unset).
pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// When the pod's Ready condition last became True.
pub fn pod_ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
        })
}

/// Whether a pod has been Ready for at least `min_ready` seconds at `now`.
pub fn pod_available(p: &Pod, min_ready: i32, now: jiff::Timestamp) -> bool {
    if !pod_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    match pod_ready_since(p) {
        Some(t) => now.as_second() - t.as_second() >= i64::from(min_ready),
        None => false,
    }
}

/// The controller ownerReference pointing at `owner`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `obj`'s controller ownerReference has this uid.
pub fn controlled_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Waits until an informer has loaded, safely with other waiters.
///
/// `Informer::ready` wraps kube's `Store::wait_until_ready`, whose oneshot
/// keeps only the last waiter's waker: with two tasks waiting at once one
/// may never wake. Re-polling on a short timer side-steps that; once the
/// store is ready every later call returns at once, so queues are attached
/// (`Queue::watch`, which also waits) only after this returns.
pub async fn wait_ready<K: controller_runtime::informer::Kind>(
    inf: &controller_runtime::Informer<K>,
) {
    while tokio::time::timeout(Duration::from_millis(50), inf.ready())
        .await
        .is_err()
    {}
}

/// The current time.
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// How long expectations are trusted before the cache is believed anyway
/// (client-go's ExpectationsTimeout).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    create: HashSet<String>,
    delete: HashSet<String>,
    since: Option<Instant>,
}

/// What a controller created or deleted and has not yet seen in its cache
/// (client-go's ControllerExpectations, by object name instead of counts,
/// so that it needs no event hooks: it is checked against the cache).
#[derive(Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `name` was created for `key`.
    pub fn created(&self, key: &str, name: &str) {
        let mut m = self.lock();
        let p = m.entry(key.to_string()).or_default();
        p.create.insert(name.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// Records that `name` was deleted for `key`.
    pub fn deleted(&self, key: &str, name: &str) {
        let mut m = self.lock();
        let p = m.entry(key.to_string()).or_default();
        p.delete.insert(name.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// Whether the cache has caught up with everything done for `key`;
    /// `cached(name)` says whether a live (not deleting) object is cached.
    pub fn satisfied(&self, key: &str, cached: impl Fn(&str) -> Option<bool>) -> bool {
        let mut m = self.lock();
        let Some(p) = m.get_mut(key) else {
            return true;
        };
        // `cached` returns None when absent, Some(deleting) when present.
        p.create.retain(|n| cached(n).is_none());
        p.delete.retain(|n| cached(n) == Some(false));
        let timed_out = p.since.is_some_and(|s| s.elapsed() > EXPECTATIONS_TIMEOUT);
        if (p.create.is_empty() && p.delete.is_empty()) || timed_out {
            m.remove(key);
            return true;
        }
        false
    }

    /// Forgets everything about `key` (its owner is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// A short, stable hash of a JSON value, spelled like upstream's
/// `rand.SafeEncodeString` (no vowels, so it never forms words): used for
/// `controller-revision-hash`.
pub fn hash_value(v: &serde_json::Value, collisions: Option<i32>) -> String {
    // FNV-1a, 32 bits, as upstream's ComputeHash uses.
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |b: &[u8]| {
        for x in b {
            h ^= u32::from(*x);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(v.to_string().as_bytes());
    if let Some(c) = collisions {
        feed(c.to_string().as_bytes());
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHA[usize::from(d) % ALPHA.len()] as char)
        .collect()
}

/// Pods in `ns` cached by `pods` that `uid` controls.
pub fn owned_pods(
    pods: &controller_runtime::Informer<Pod>,
    ns: &str,
    uid: &str,
) -> Vec<std::sync::Arc<Pod>> {
    pods.list_ns(ns)
        .into_iter()
        .filter(|p| controlled_by(p.as_ref(), uid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_vowel_free() {
        let a = hash_value(&serde_json::json!({"a": 1}), None);
        assert_eq!(a, hash_value(&serde_json::json!({"a": 1}), None));
        assert_ne!(a, hash_value(&serde_json::json!({"a": 2}), None));
        assert!(!a.contains(['a', 'e', 'i', 'o', 'u']));
    }
}
