//! DefaultTolerationSeconds: new pods tolerate a not-ready or unreachable
//! node for a while before taint-based eviction moves them.

use api::catalogue::ResourceInfo;
use serde_json::{Value, json};

use super::{Context, Operation, Plugin, Request};
use crate::error::ApiError;

/// Upstream's DefaultTolerationSeconds plugin.
pub struct DefaultTolerationSeconds;

#[async_trait::async_trait]
impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool {
        op == Operation::Create && super::is_pods(info)
    }

    async fn admit(
        &self,
        _ctx: &Context<'_>,
        _req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        default_toleration_seconds(obj, DEFAULT_TOLERATION_SECONDS);
        Ok(())
    }
}

/// Seconds a pod tolerates its node being not-ready or unreachable before
/// taint-based eviction deletes it, added by [`default_toleration_seconds`].
/// Upstream's DefaultTolerationSeconds plugin uses 300; r8s uses 30 so that,
/// with the 20 s node-monitor grace period, replacements run elsewhere within
/// a minute of a node dying.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 30;

/// Taint the node lifecycle controller puts on a node whose Ready condition
/// is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint the node lifecycle controller puts on a node that stopped
/// heartbeating.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Adds `not-ready` and `unreachable` NoExecute tolerations for `seconds`
/// to a new pod that does not already tolerate them, as upstream's
/// DefaultTolerationSeconds admission plugin does.
pub fn default_toleration_seconds(pod: &mut Value, seconds: i64) {
    let existing: Vec<Value> = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tolerates = |key: &str| {
        existing.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let mut out = existing.clone();
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        if !tolerates(key) {
            out.push(json!({
                "key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
    if out.len() != existing.len() && pod["spec"].is_object() {
        pod["spec"]["tolerations"] = Value::Array(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tolerations_are_added_once() {
        let mut p = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut p, 30);
        let t = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["key"], TAINT_NOT_READY);
        assert_eq!(t[1]["key"], TAINT_UNREACHABLE);
        assert_eq!(t[1]["tolerationSeconds"], 30);
        assert_eq!(t[1]["effect"], "NoExecute");
        default_toleration_seconds(&mut p, 30);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_wildcard_toleration_suppresses_the_defaults() {
        let mut p = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut p, 30);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut p = json!({"spec": {"tolerations": [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]}});
        default_toleration_seconds(&mut p, 30);
        let t = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1]["key"], TAINT_NOT_READY);
    }
}
