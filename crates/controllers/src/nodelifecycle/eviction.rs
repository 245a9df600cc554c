//! Taint-based eviction (upstream's taint-eviction-controller): a pod on a
//! node with a NoExecute taint it does not tolerate is deleted at once; one
//! tolerating it for `tolerationSeconds` is deleted that long after the taint
//! was added (or the pod created, if later); one tolerating it without a
//! limit stays.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};

use crate::{Context, ControllerError};
use controller_runtime::{Queue, key_of, split_key};

/// When a pod must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No NoExecute taint applies, or every one is tolerated forever.
    Stay,
    /// Delete now.
    Now,
    /// Delete after this long (from the `now` given).
    After(Duration),
}

/// Whether `t` tolerates `taint` (upstream's ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// What to do with a pod given its node's taints, at wall time `now`.
pub fn verdict(pod: &Pod, taints: &[Taint], now: Timestamp) -> Verdict {
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut due: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Verdict::Now;
        }
        // The shortest limited toleration wins; unlimited ones never evict.
        let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        if secs <= 0 {
            return Verdict::Now;
        }
        let start = match (taint.time_added.as_ref().map(|t| t.0), created) {
            (Some(a), Some(c)) => a.max(c),
            (Some(a), None) => a,
            (None, Some(c)) => c,
            (None, None) => now,
        };
        let at = start
            .checked_add(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(now);
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    match due {
        None => Verdict::Stay,
        Some(at) if at <= now => Verdict::Now,
        Some(at) => Verdict::After(
            at.duration_since(now)
                .try_into()
                .unwrap_or(Duration::from_secs(1)),
        ),
    }
}

/// The node's NoExecute taints.
fn no_execute(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Runs the taint-based eviction loop until dropped.
pub async fn run(ctx: Arc<Context>) {
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    let q = Queue::named("node_lifecycle_controller_pods");
    q.watch(&pods, |p: &Pod| {
        if node_of(p).is_some() {
            vec![key_of(p)]
        } else {
            Vec::new()
        }
    });
    {
        let pods = pods.clone();
        q.watch(&nodes, move |n: &Node| {
            if no_execute(n).is_empty() {
                return Vec::new();
            }
            let name = n.metadata.name.as_deref().unwrap_or_default();
            pods.list()
                .iter()
                .filter(|p| node_of(p) == Some(name))
                .map(|p| key_of(&**p))
                .collect()
        });
    }
    let recorder = ctx.recorder("taint-eviction-controller");
    let workers = ctx.opts.workers;
    q.run(workers, move |key| {
        let ctx = ctx.clone();
        let recorder = recorder.clone();
        async move { sync(&ctx, &recorder, &key).await }
    })
    .await;
}

async fn sync(
    ctx: &Context,
    recorder: &controller_runtime::events::Recorder,
    key: &str,
) -> Result<Option<Duration>, ControllerError> {
    let (ns, name) = split_key(key);
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    let Some(pod) = pods.get(ns, name) else {
        return Ok(None);
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some(node) = node_of(&pod).and_then(|n| nodes.get(None, n)) else {
        return Ok(None);
    };
    match verdict(&pod, &no_execute(&node), Timestamp::now()) {
        Verdict::Stay => Ok(None),
        Verdict::After(d) => Ok(Some(d)),
        Verdict::Now => {
            let ns = ns.unwrap_or("default");
            tracing::info!(pod = %key, node = ?node.metadata.name, "evicting pod from tainted node");
            recorder.normal(
                &*pod,
                "TaintManagerEviction",
                format!("Marking for deletion Pod {ns}/{name}"),
            );
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            let mut dp = DeleteParams::default();
            if let Some(uid) = pod.metadata.uid.clone() {
                dp = dp.preconditions(kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                });
            }
            match api.delete(name, &dp).await {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, effect: &str, added: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: Some(Time(added)),
            value: None,
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

    #[test]
    fn untolerated_no_execute_evicts_now_and_no_schedule_does_not() {
        let t0 = Timestamp::now();
        assert_eq!(
            verdict(&pod(vec![]), &[taint(UNREACHABLE, "NoExecute", t0)], t0),
            Verdict::Now
        );
        assert_eq!(
            verdict(&pod(vec![]), &[taint(UNREACHABLE, "NoSchedule", t0)], t0),
            Verdict::Stay
        );
    }

    #[test]
    fn toleration_seconds_count_from_time_added() {
        let t0 = Timestamp::now();
        let p = pod(vec![tol(UNREACHABLE, Some(30))]);
        let taints = [taint(UNREACHABLE, "NoExecute", t0)];
        assert_eq!(
            verdict(&p, &taints, t0 + Duration::from_secs(10)),
            Verdict::After(Duration::from_secs(20))
        );
        assert_eq!(
            verdict(&p, &taints, t0 + Duration::from_secs(30)),
            Verdict::Now
        );
    }

    #[test]
    fn forever_tolerations_stay_and_wildcards_match() {
        let t0 = Timestamp::now();
        let taints = [taint(UNREACHABLE, "NoExecute", t0)];
        let forever = pod(vec![tol(UNREACHABLE, None)]);
        assert_eq!(
            verdict(&forever, &taints, t0 + Duration::from_secs(3600)),
            Verdict::Stay
        );
        let wildcard = pod(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert_eq!(verdict(&wildcard, &taints, t0), Verdict::Stay);
        // A toleration for another key does not help.
        let other = pod(vec![tol("node.kubernetes.io/not-ready", None)]);
        assert_eq!(verdict(&other, &taints, t0), Verdict::Now);
    }

    #[test]
    fn the_shortest_limit_wins_across_taints() {
        let t0 = Timestamp::now();
        let taints = [
            taint(UNREACHABLE, "NoExecute", t0),
            taint("example.com/x", "NoExecute", t0),
        ];
        let p = pod(vec![
            tol(UNREACHABLE, Some(100)),
            tol("example.com/x", Some(5)),
        ]);
        assert_eq!(
            verdict(&p, &taints, t0),
            Verdict::After(Duration::from_secs(5))
        );
    }

    #[test]
    fn equal_operator_compares_values() {
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let mut tl = Toleration {
            key: Some("k".into()),
            operator: Some("Equal".into()),
            value: Some("v".into()),
            ..Default::default()
        };
        assert!(tolerates(&tl, &t));
        tl.value = Some("w".into());
        assert!(!tolerates(&tl, &t));
    }
}
