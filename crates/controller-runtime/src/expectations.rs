//! What a controller created or deleted and has not yet seen in its
//! cache: client-go's ControllerExpectations, tracked by object name
//! instead of counts so that either a watch event or a look at the cache
//! settles them. A controller acts on an owner only once its expectations
//! are satisfied, so a stale cache never makes it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long expectations are trusted before the controller acts anyway
/// (upstream's ExpectationsTimeout).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Expected creates and deletes per owner key.
#[derive(Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expect(&self, key: &str, name: &str, create: bool) {
        let mut m = self.lock();
        let p = m.entry(key.to_string()).or_default();
        p.since.get_or_insert_with(Instant::now);
        if create {
            p.creates.insert(name.to_string());
        } else {
            p.deletes.insert(name.to_string());
        }
    }

    /// Records that `name` was created for `key`.
    pub fn created(&self, key: &str, name: &str) {
        self.expect(key, name, true);
    }

    /// Records that `name` was deleted for `key`.
    pub fn deleted(&self, key: &str, name: &str) {
        self.expect(key, name, false);
    }

    /// Forgets an expected deletion that did not happen.
    pub fn unexpect_delete(&self, key: &str, name: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.deletes.remove(name);
        }
    }

    /// Notes an object seen in the watch (`gone`: deleted or terminating).
    pub fn observe(&self, key: &str, name: &str, gone: bool) {
        if let Some(p) = self.lock().get_mut(key) {
            p.creates.remove(name);
            if gone {
                p.deletes.remove(name);
            }
        }
    }

    /// Drops everything about `key` (its owner is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Whether the cache has caught up with everything done for `key`;
    /// `cached(name)` is `None` when the object is not cached and
    /// `Some(terminating)` when it is.
    pub fn satisfied(&self, key: &str, cached: impl Fn(&str) -> Option<bool>) -> bool {
        let mut m = self.lock();
        let Some(p) = m.get_mut(key) else {
            return true;
        };
        p.creates.retain(|n| cached(n).is_none());
        p.deletes.retain(|n| cached(n) == Some(false));
        let expired = p.since.is_some_and(|s| s.elapsed() > EXPECTATIONS_TIMEOUT);
        if (p.creates.is_empty() && p.deletes.is_empty()) || expired {
            m.remove(key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_wait_for_the_cache() {
        let e = Expectations::default();
        e.created("ns/rs", "p1");
        e.deleted("ns/rs", "p0");
        assert!(!e.satisfied("ns/rs", |_| None));
        // p1 now cached, p0 terminating.
        assert!(e.satisfied("ns/rs", |n| match n {
            "p1" => Some(false),
            "p0" => Some(true),
            _ => None,
        }));
        e.created("ns/rs", "p2");
        e.observe("ns/rs", "p2", false);
        assert!(e.satisfied("ns/rs", |_| None));
        e.deleted("ns/rs", "p3");
        e.unexpect_delete("ns/rs", "p3");
        assert!(e.satisfied("ns/rs", |_| Some(false)));
        e.created("ns/gone", "x");
        e.forget("ns/gone");
        assert!(e.satisfied("ns/gone", |_| None));
    }
}
