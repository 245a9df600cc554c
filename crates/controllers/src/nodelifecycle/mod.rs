//! Node lifecycle, as upstream's node-lifecycle-controller plus
//! taint-eviction-controller:
//!
//! - A node whose heartbeat (its Lease in `kube-node-lease`, or its Ready
//!   condition's lastHeartbeatTime) has not moved for
//!   `node_monitor_grace_period` gets its Ready/MemoryPressure/DiskPressure/
//!   PIDPressure conditions set to Unknown, and its pods are marked not
//!   Ready.
//! - Nodes are tainted from their conditions: Ready=Unknown gives
//!   `node.kubernetes.io/unreachable`, Ready=False gives
//!   `node.kubernetes.io/not-ready` (NoSchedule and NoExecute), pressure
//!   conditions and `spec.unschedulable` their NoSchedule taints. The taints
//!   go when the condition clears.
//! - [`eviction`] deletes pods from NoExecute-tainted nodes.
//!
//! Heartbeats are timed on the controller's own (tokio) clock from when it
//! saw them change, as upstream does, so clock skew between nodes and the
//! controller does not matter and tests can pause time.

pub mod eviction;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use crate::Context;

/// Taint for a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint for a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Conditions the controller sets to Unknown on a silent node (upstream).
const MONITORED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let evictor = tokio::spawn(eviction::run(ctx.clone()));
    monitor(ctx).await;
    evictor.abort();
}

/// What the controller last saw of one node's heartbeat.
#[derive(Debug, Clone)]
struct Seen {
    beat: (Option<Timestamp>, Option<Timestamp>),
    at: Instant,
}

/// Heartbeat bookkeeping on the controller's clock.
#[derive(Debug, Default)]
pub struct Heartbeats {
    seen: HashMap<String, Seen>,
}

impl Heartbeats {
    /// Records the node's current heartbeat values (lease renewTime, Ready
    /// lastHeartbeatTime) at `now`; returns whether they have not changed
    /// for longer than `grace`.
    pub fn stale(
        &mut self,
        node: &str,
        beat: (Option<Timestamp>, Option<Timestamp>),
        now: Instant,
        grace: Duration,
    ) -> bool {
        let s = self
            .seen
            .entry(node.to_string())
            .or_insert(Seen { beat, at: now });
        if s.beat != beat {
            s.beat = beat;
            s.at = now;
        }
        now.duration_since(s.at) > grace
    }

    /// Forgets nodes not in `live`.
    pub fn retain(&mut self, live: &[String]) {
        self.seen.retain(|k, _| live.contains(k));
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
}

/// Sets the monitored conditions to Unknown (upstream wording); returns
/// whether anything changed.
pub fn mark_unknown(
    conds: &mut Vec<NodeCondition>,
    now: Timestamp,
    created: Option<&Time>,
) -> bool {
    let mut changed = false;
    for ty in MONITORED {
        match conds.iter_mut().find(|c| c.type_ == ty) {
            Some(c) => {
                if c.status != "Unknown" {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(Time(now));
                    changed = true;
                }
            }
            None => {
                conds.push(NodeCondition {
                    type_: ty.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.cloned(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed
}

/// The taints the node's conditions call for: `(key, effect)`.
fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let status = |ty: &str| {
        conds
            .iter()
            .find(|c| c.type_ == ty)
            .map(|c| c.status.as_str())
    };
    match status("Ready") {
        Some("False") => {
            out.push((TAINT_NOT_READY, "NoSchedule"));
            out.push((TAINT_NOT_READY, "NoExecute"));
        }
        Some("Unknown") => {
            out.push((TAINT_UNREACHABLE, "NoSchedule"));
            out.push((TAINT_UNREACHABLE, "NoExecute"));
        }
        _ => {}
    }
    for (ty, key) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        (
            "NetworkUnavailable",
            "node.kubernetes.io/network-unavailable",
        ),
    ] {
        if status(ty) == Some("True") {
            out.push((key, "NoSchedule"));
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        out.push(("node.kubernetes.io/unschedulable", "NoSchedule"));
    }
    out
}

/// Taint keys this controller owns (it adds and removes only these).
const MANAGED: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/unschedulable",
];

/// The node's taints with the managed ones brought in line with its
/// conditions, or None when nothing changes. Kept taints keep timeAdded.
pub fn reconcile_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = wanted_taints(node);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !MANAGED.contains(&t.key.as_str())
                || wanted.iter().any(|(k, e)| *k == t.key && *e == t.effect)
        })
        .cloned()
        .collect();
    for (k, e) in &wanted {
        if !out.iter().any(|t| t.key == *k && t.effect == *e) {
            out.push(Taint {
                key: (*k).into(),
                effect: (*e).into(),
                time_added: Some(Time(now)),
                value: None,
            });
        }
    }
    (out != current).then_some(out)
}

/// How often nodes are checked (upstream's node-monitor-period is 5 s).
fn monitor_period(grace: Duration) -> Duration {
    (grace / 8).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

async fn monitor(ctx: Arc<Context>) {
    let nodes = ctx.informers.get::<Node>();
    let leases = ctx.informers.get::<Lease>();
    let pods = ctx.informers.get::<Pod>();
    // Re-arm each wait now and then: a wait started at the very moment the
    // informer starts has been seen to miss its wake-up.
    loop {
        let ready = async {
            nodes.ready().await;
            leases.ready().await;
            pods.ready().await;
        };
        if tokio::time::timeout(Duration::from_secs(1), ready)
            .await
            .is_ok()
        {
            break;
        }
    }
    let recorder = ctx.recorder("node-controller");
    let grace = ctx.opts.node_monitor_grace_period;
    let mut beats = Heartbeats::default();
    let mut tick = tokio::time::interval(monitor_period(grace));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let all = nodes.list();
        let names: Vec<String> = all.iter().filter_map(|n| n.metadata.name.clone()).collect();
        beats.retain(&names);
        for node in all {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let renew = leases
                .get(Some(LEASE_NAMESPACE), &name)
                .and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.clone()))
                .map(|t| t.0);
            let hb = ready_condition(&node)
                .and_then(|c| c.last_heartbeat_time.clone())
                .map(|t| t.0);
            let stale = beats.stale(&name, (renew, hb), Instant::now(), grace);
            let unknown = ready_condition(&node).is_some_and(|c| c.status == "Unknown");
            if stale && !unknown {
                if let Err(e) = set_unknown(&ctx, &name).await {
                    tracing::debug!(node = %name, error = %e, "marking node Unknown");
                    continue;
                }
                tracing::info!(node = %name, "node stopped posting status: Ready=Unknown");
                recorder.normal(
                    &*node,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
            }
            if unknown {
                mark_pods_not_ready(&ctx, &recorder, &pods.list(), &name).await;
            }
            if reconcile_taints(&node, Timestamp::now()).is_some()
                && let Err(e) = update_taints(&ctx, &name).await
            {
                tracing::debug!(node = %name, error = %e, "updating node taints");
            }
        }
    }
}

/// Sets the node's monitored conditions to Unknown (read-modify-write on
/// the status, retried on conflict).
async fn set_unknown(ctx: &Context, name: &str) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    for _ in 0..3 {
        let mut node = api.get(name).await?;
        let created = node.metadata.creation_timestamp.clone();
        let status = node.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        if !mark_unknown(conds, Timestamp::now(), created.as_ref()) {
            return Ok(());
        }
        match api
            .replace_status(name, &PostParams::default(), &node)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn update_taints(ctx: &Context, name: &str) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    for _ in 0..3 {
        let mut node = api.get(name).await?;
        let Some(taints) = reconcile_taints(&node, Timestamp::now()) else {
            return Ok(());
        };
        tracing::info!(node = %name, taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "node taints");
        node.spec.get_or_insert_with(Default::default).taints = Some(taints);
        match api.replace(name, &PostParams::default(), &node).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Upstream's MarkPodsNotReady: pods on an unreachable node get Ready=False.
async fn mark_pods_not_ready(
    ctx: &Context,
    recorder: &controller_runtime::events::Recorder,
    pods: &[Arc<Pod>],
    node: &str,
) {
    for pod in pods {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
            continue;
        }
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        if ready.is_none_or(|c| c.status == "False") {
            continue;
        }
        let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let now = Time(Timestamp::now());
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now}
        ]}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => recorder.warning(&**pod, "NodeNotReady", "Node is not ready".into()),
            Err(e) => tracing::debug!(pod = %name, error = %e, "marking pod not ready"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_with(ready: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_is_stale_only_after_the_grace_period_without_change() {
        let grace = Duration::from_secs(20);
        let mut hb = Heartbeats::default();
        let t0 = Timestamp::now();
        let beat = (Some(t0), None);
        assert!(!hb.stale("n1", beat, Instant::now(), grace));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(!hb.stale("n1", beat, Instant::now(), grace));
        // A renewal restarts the clock.
        let renewed = (Some(t0 + Duration::from_secs(10)), None);
        assert!(!hb.stale("n1", renewed, Instant::now(), grace));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(!hb.stale("n1", renewed, Instant::now(), grace));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(hb.stale("n1", renewed, Instant::now(), grace));
    }

    #[test]
    fn unknown_uses_upstream_wording_and_fills_missing_conditions() {
        let mut conds = node_with("True").status.unwrap().conditions.unwrap();
        assert!(mark_unknown(&mut conds, Timestamp::now(), None));
        assert_eq!(conds.len(), 4);
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert!(!mark_unknown(&mut conds, Timestamp::now(), None));
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let now = Timestamp::now();
        let t = reconcile_taints(&node_with("Unknown"), now).unwrap();
        let keys: Vec<_> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
        assert!(t.iter().all(|t| t.time_added.is_some()));
        let mut n = node_with("False");
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(t.clone()),
            ..Default::default()
        });
        let t2 = reconcile_taints(&n, now).unwrap();
        assert!(t2.iter().all(|t| t.key == TAINT_NOT_READY));
        // Recovery removes managed taints and keeps foreign ones.
        let mut n = node_with("True");
        let mut kept = t.clone();
        kept.push(Taint {
            key: "example.com/dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(kept),
            ..Default::default()
        });
        let t3 = reconcile_taints(&n, now).unwrap();
        assert_eq!(t3.len(), 1);
        assert_eq!(t3[0].key, "example.com/dedicated");
        assert!(reconcile_taints(&node_with("True"), now).is_none());
    }
}
