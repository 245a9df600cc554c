//! Helpers shared by the batch and apps workload controllers (job, cronjob,
//! daemonset, statefulset): selectors, pod state, owner references,
//! creation/deletion expectations and revision hashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::{Resource, ResourceExt};

/// Whether `labels` match a label selector (an empty selector matches all).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    for e in sel.match_expressions.iter().flatten() {
        let val = labels.get(&e.key);
        let vals = e.values.as_deref().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => val.is_some_and(|v| vals.contains(v)),
            "NotIn" => val.is_none_or(|v| !vals.contains(v)),
            "Exists" => val.is_some(),
            "DoesNotExist" => val.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a pod reached Succeeded or Failed.
pub fn pod_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The pod's phase ("" when unset).
pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether a pod is running or pending and not being deleted.
pub fn pod_active(p: &Pod) -> bool {
    !pod_terminal(p) && p.metadata.deletion_timestamp.is_none()
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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
pub async fn wait_ready<K: crate::runtime::informer::Kind>(inf: &crate::runtime::Informer<K>) {
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
    pods: &crate::runtime::Informer<Pod>,
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let mut sel = LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        };
        assert!(selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "Exists".into(),
            values: None,
        }]);
        assert!(!selector_matches(&sel, &labels));
    }

    #[test]
    fn hashes_are_stable_and_vowel_free() {
        let a = hash_value(&serde_json::json!({"a": 1}), None);
        assert_eq!(a, hash_value(&serde_json::json!({"a": 1}), None));
        assert_ne!(a, hash_value(&serde_json::json!({"a": 2}), None));
        assert!(!a.contains(['a', 'e', 'i', 'o', 'u']));
    }
}
