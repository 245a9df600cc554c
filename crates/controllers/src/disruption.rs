//! The disruption controller: keeps each PodDisruptionBudget's status
//! (healthy counts, allowed disruptions, the DisruptionAllowed condition and
//! the disruptedPods map) current, as upstream's disruption controller.
//!
//! The eviction subresource in the API server reads this status: it refuses
//! evictions while `disruptionsAllowed` is 0 and records evicted pods in
//! `disruptedPods`, which this controller drops once the pod is gone or
//! after [`DELETION_TIMEOUT`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::{Context, ControllerError};
use controller_runtime::pod_ready as is_ready;
pub use controller_runtime::selector_matches;
use controller_runtime::{Change, Informer, Queue, key_of, split_key};

/// How long an eviction recorded in `disruptedPods` counts the pod as gone
/// before the controller concludes it was not deleted (upstream: 2 min).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let pdbs = ctx.informers.get::<PodDisruptionBudget>();
    let pods = ctx.informers.get::<Pod>();
    let q = Queue::named("disruption");
    q.watch(&pdbs, |p: &PodDisruptionBudget| vec![key_of(p)]);
    {
        let pdbs = pdbs.clone();
        q.watch_changes(&pods, move |ch: &Change<Pod>| match ch {
            Change::Apply(p) | Change::Delete(p) => budgets_for(&pdbs, p),
            Change::Resync => Vec::new(),
        });
    }
    // Scale changes move expectedPods even before any pod changes.
    watch_scalers::<ReplicaSet>(&ctx, &q, &pdbs);
    watch_scalers::<Deployment>(&ctx, &q, &pdbs);
    watch_scalers::<StatefulSet>(&ctx, &q, &pdbs);
    watch_scalers::<ReplicationController>(&ctx, &q, &pdbs);
    let recorder = ctx.recorder("controllermanager");
    let workers = ctx.opts.workers;
    q.run(workers, move |key| {
        let ctx = ctx.clone();
        let recorder = recorder.clone();
        async move { sync(&ctx, &recorder, &key).await }
    })
    .await;
}

fn watch_scalers<K: controller_runtime::informer::Kind>(
    ctx: &Context,
    q: &Queue,
    pdbs: &Informer<PodDisruptionBudget>,
) {
    let inf = ctx.informers.get::<K>();
    let pdbs = pdbs.clone();
    q.watch(&inf, move |o: &K| {
        let ns = o.meta().namespace.clone().unwrap_or_default();
        pdbs.list_ns(&ns).iter().map(|p| key_of(&**p)).collect()
    });
}

/// Keys of the budgets in the pod's namespace whose selector matches it.
fn budgets_for(pdbs: &Informer<PodDisruptionBudget>, pod: &Pod) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    pdbs.list_ns(ns)
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|s| selector_matches(s, labels))
        })
        .map(|p| key_of(&**p))
        .collect()
}

/// Upstream's GetScaledValueFromIntOrPercent with rounding up.
pub fn scaled_value(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let n = (pct * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(n).unwrap_or(i32::MAX))
        }
    }
}

/// Counts the budget needs: `(expectedPods, desiredHealthy)`.
/// `expected_scale` is the pods' controllers' total scale (only consulted
/// when the budget is relative to it, as upstream).
pub fn expected_and_desired(
    min_available: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    pods: i32,
    expected_scale: impl FnOnce() -> Result<i32, String>,
) -> Result<(i32, i32), String> {
    if let Some(mu) = max_unavailable {
        let expected = expected_scale()?;
        let max = scaled_value(mu, expected)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match min_available {
        Some(IntOrString::Int(i)) => Ok((pods, *i)),
        Some(p @ IntOrString::String(_)) => {
            let expected = expected_scale()?;
            Ok((expected, scaled_value(p, expected)?))
        }
        // Validation requires one of the two; treat neither as "keep none".
        None => Ok((pods, 0)),
    }
}

/// The allowed disruptions for the counts (upstream: never negative, and 0
/// when nothing is expected).
pub fn disruptions_allowed(current_healthy: i32, desired_healthy: i32, expected: i32) -> i32 {
    let d = current_healthy - desired_healthy;
    if expected <= 0 || d <= 0 { 0 } else { d }
}

/// The summed replicas of the pods' controllers (each counted once).
fn expected_scale(ctx: &Context, ns: &str, pods: &[Arc<Pod>]) -> Result<i32, String> {
    let mut seen = HashSet::new();
    let mut total = 0i32;
    for pod in pods {
        let Some(owner) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
        else {
            // Unmanaged pods are not part of any scale (upstream warns).
            continue;
        };
        if !seen.insert(owner.uid.clone()) {
            continue;
        }
        let scale = match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = ctx.informers.get::<ReplicaSet>().get(Some(ns), &owner.name);
                match rs {
                    Some(rs) => {
                        let dep = rs
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .find(|o| o.controller == Some(true) && o.kind == "Deployment");
                        match dep {
                            Some(d) => {
                                if !seen.insert(d.uid.clone()) {
                                    continue;
                                }
                                ctx.informers
                                    .get::<Deployment>()
                                    .get(Some(ns), &d.name)
                                    .map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
                            }
                            None => rs.spec.as_ref().and_then(|s| s.replicas).or(Some(1)),
                        }
                    }
                    None => None,
                }
            }
            "StatefulSet" => ctx
                .informers
                .get::<StatefulSet>()
                .get(Some(ns), &owner.name)
                .map(|s| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
            "ReplicationController" => ctx
                .informers
                .get::<ReplicationController>()
                .get(Some(ns), &owner.name)
                .map(|s| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
            _ => None,
        };
        match scale {
            Some(s) => total += s,
            None => {
                return Err(format!(
                    "found no controllers for pod {:?}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    Ok(total)
}

async fn sync(
    ctx: &Context,
    recorder: &controller_runtime::events::Recorder,
    key: &str,
) -> Result<Option<Duration>, ControllerError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or_default();
    let pdbs = ctx.informers.get::<PodDisruptionBudget>();
    let podinf = ctx.informers.get::<Pod>();
    pdbs.ready().await;
    podinf.ready().await;
    let Some(pdb) = pdbs.get(Some(ns), name) else {
        return Ok(None);
    };
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = match &spec.selector {
        None => Vec::new(),
        Some(sel) => {
            let empty = BTreeMap::new();
            podinf
                .list_ns(ns)
                .into_iter()
                .filter(|p| selector_matches(sel, p.metadata.labels.as_ref().unwrap_or(&empty)))
                .collect()
        }
    };
    if pods.is_empty() {
        recorder.normal(&*pdb, "NoPods", "No matching pods found".into());
    }
    let now = Timestamp::now();
    let counts = expected_and_desired(
        spec.min_available.as_ref(),
        spec.max_unavailable.as_ref(),
        i32::try_from(pods.len()).unwrap_or(i32::MAX),
        || expected_scale(ctx, ns, &pods),
    );
    let old = pdb.status.clone().unwrap_or_default();
    let (disrupted, recheck) = build_disrupted(&pods, &old, now, |p| {
        recorder.warning(
            &*pdb,
            "NotDeleted",
            format!(
                "Pod was expected by PDB {ns}/{name} to be deleted but it wasn't: {}",
                p.metadata.name.as_deref().unwrap_or_default()
            ),
        );
    });
    let generation = pdb.metadata.generation;
    let status = match counts {
        Ok((expected, desired)) => {
            let healthy = count_healthy(&pods, &disrupted, now);
            let allowed = disruptions_allowed(healthy, desired, expected);
            let mut st = PodDisruptionBudgetStatus {
                current_healthy: healthy,
                desired_healthy: desired,
                expected_pods: expected,
                disruptions_allowed: allowed,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                observed_generation: generation,
                conditions: old.conditions.clone(),
            };
            let (status, reason) = if allowed > 0 {
                ("True", "SufficientPods")
            } else {
                ("False", "InsufficientPods")
            };
            set_condition(&mut st, status, reason, "", now);
            st
        }
        Err(msg) => {
            // Fail safe: no disruptions while the budget cannot be computed.
            recorder.warning(&*pdb, "CalculateExpectedPodCountFailed", msg.clone());
            let mut st = PodDisruptionBudgetStatus {
                disruptions_allowed: 0,
                observed_generation: generation,
                ..old.clone()
            };
            set_condition(&mut st, "False", "SyncFailed", &msg, now);
            st
        }
    };
    if status != old {
        let mut new = (*pdb).clone();
        new.status = Some(status);
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
        match api.replace_status(name, &PostParams::default(), &new).await {
            Ok(_) => {}
            // A stale cache: the informer will deliver the newer object.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(recheck.map(|t| {
        let d = t.duration_since(now);
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(0).max(100))
    }))
}

/// Sets the DisruptionAllowed condition, moving lastTransitionTime only when
/// the status flips (as meta.SetStatusCondition).
fn set_condition(
    st: &mut PodDisruptionBudgetStatus,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    let observed = st.observed_generation;
    match conds.iter_mut().find(|c| c.type_ == "DisruptionAllowed") {
        Some(c) => {
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = Time(now);
            }
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = observed;
        }
        None => conds.push(Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(now),
            observed_generation: observed,
        }),
    }
}

/// Keeps the recorded evictions still pending (pod present, not yet
/// terminating, within [`DELETION_TIMEOUT`]); returns them and when to look
/// again. `expired` is told about pods that outlived their eviction.
fn build_disrupted(
    pods: &[Arc<Pod>],
    old: &PodDisruptionBudgetStatus,
    now: Timestamp,
    mut expired: impl FnMut(&Pod),
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let mut out = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    let Some(recorded) = &old.disrupted_pods else {
        return (out, None);
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let Some(at) = recorded.get(name) else {
            continue;
        };
        let Ok(deadline) = at.0.checked_add(DELETION_TIMEOUT) else {
            continue;
        };
        if deadline < now {
            expired(pod);
            continue;
        }
        out.insert(name.to_string(), at.clone());
        recheck = Some(recheck.map_or(deadline, |r| r.min(deadline)));
    }
    (out, recheck)
}

/// Ready pods not being deleted and not recently evicted.
fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let n = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            disrupted
                .get(name)
                .and_then(|t| t.0.checked_add(DELETION_TIMEOUT).ok())
                .is_none_or(|deadline| deadline <= now)
        })
        .filter(|p| is_ready(p))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn percentages_round_up_as_upstream() {
        assert_eq!(scaled_value(&pct("50%"), 3), Ok(2));
        assert_eq!(scaled_value(&pct("10%"), 5), Ok(1));
        assert_eq!(scaled_value(&pct("100%"), 7), Ok(7));
        assert_eq!(scaled_value(&pct("0%"), 7), Ok(0));
        assert_eq!(scaled_value(&IntOrString::Int(4), 7), Ok(4));
        assert!(scaled_value(&pct("x"), 7).is_err());
    }

    #[test]
    fn min_available_int_counts_pods_not_scale() {
        let r = expected_and_desired(Some(&IntOrString::Int(2)), None, 3, || {
            panic!("scale not needed")
        });
        assert_eq!(r, Ok((3, 2)));
    }

    #[test]
    fn percent_and_max_unavailable_use_the_controller_scale() {
        // minAvailable 50% of 5 replicas rounds up to 3.
        assert_eq!(
            expected_and_desired(Some(&pct("50%")), None, 4, || Ok(5)),
            Ok((5, 3))
        );
        // maxUnavailable 30% of 5 rounds up to 2 unavailable: 3 desired.
        assert_eq!(
            expected_and_desired(None, Some(&pct("30%")), 4, || Ok(5)),
            Ok((5, 3))
        );
        assert_eq!(
            expected_and_desired(None, Some(&IntOrString::Int(9)), 4, || Ok(5)),
            Ok((5, 0))
        );
    }

    #[test]
    fn allowed_disruptions_are_never_negative() {
        assert_eq!(disruptions_allowed(3, 2, 3), 1);
        assert_eq!(disruptions_allowed(1, 2, 3), 0);
        assert_eq!(disruptions_allowed(3, 0, 0), 0);
    }

    #[test]
    fn recent_evictions_are_not_healthy_and_old_ones_expire() {
        let now = Timestamp::now();
        let mk = |name: &str| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            Arc::new(p)
        };
        let pods = vec![mk("a"), mk("b"), mk("c")];
        let old = PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                ("a".to_string(), Time(now)),
                ("b".to_string(), Time(now - Duration::from_secs(600))),
            ])),
            ..Default::default()
        };
        let mut gone = Vec::new();
        let (kept, recheck) = build_disrupted(&pods, &old, now, |p| {
            gone.push(p.metadata.name.clone().unwrap_or_default())
        });
        assert_eq!(kept.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(gone, vec!["b"]);
        assert_eq!(recheck, Some(now + DELETION_TIMEOUT));
        assert_eq!(count_healthy(&pods, &kept, now), 2);
    }
}
