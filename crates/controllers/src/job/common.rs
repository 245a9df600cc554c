//! Helpers shared by the batch and apps workload controllers (job, cronjob,
//! daemonset, statefulset): selectors, pod state, owner references,
//! creation/deletion expectations and revision hashes.

use std::time::Duration;

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
    controller_runtime::pod_ready_since(p).flatten()
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

pub use controller_runtime::Expectations;

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
