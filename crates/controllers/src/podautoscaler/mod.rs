//! The HorizontalPodAutoscaler controller (autoscaling/v2), as upstream's
//! `pkg/controller/podautoscaler`: every sync period each HPA reads its
//! target's scale subresource (any kind that has one: Deployments,
//! StatefulSets, ReplicaSets, custom resources), measures its metrics
//! (the resource metrics API for Resource and ContainerResource;
//! `custom.metrics.k8s.io` for Pods and Object; `external.metrics.k8s.io`
//! for External, when an adapter serves them), computes the replicas each
//! metric asks for ([`replicas`]), takes the largest, stabilizes and
//! rate-limits it ([`normalize`]), scales the target and reports status,
//! conditions and events in upstream's words.

mod compute;
pub mod metrics;
pub mod normalize;
pub mod replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::{Context, ControllerError};
use compute::{Failure, Proposal, compute_metric};
use controller_runtime::{Queue, key_of, split_key};
use normalize::{Behavior, History, Policy, Rules};
use replicas::Calculator;

/// The controller manager's HPA flags.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--horizontal-pod-autoscaler-sync-period` (15 s).
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (5 min): the
    /// window of an HPA without `behavior`.
    pub downscale_stabilization: Duration,
    /// Tolerance and readiness periods.
    pub calculator: Calculator,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            calculator: Calculator::default(),
        }
    }
}

struct Shared {
    client: kube::Client,
    settings: Settings,
    history: Mutex<History>,
    /// (apiVersion, kind) -> resource, from discovery.
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
    recorder: controller_runtime::events::Recorder,
}

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let hpas = ctx.informers.get::<HorizontalPodAutoscaler>();
    let pods = ctx.informers.get::<Pod>();
    let queue = Queue::named("horizontalpodautoscaler");
    queue.watch(&hpas, |h| vec![key_of(h)]);
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        settings: ctx.opts.hpa,
        history: Mutex::default(),
        kinds: Mutex::default(),
        recorder: ctx.recorder("horizontal-pod-autoscaler"),
    });
    let period = ctx.opts.hpa.sync_period;
    queue
        .run(ctx.opts.workers, move |key| {
            let (hpas, pods, shared) = (hpas.clone(), pods.clone(), shared.clone());
            async move {
                let (ns, name) = split_key(&key);
                let Some(hpa) = hpas.get(ns, name) else {
                    if let Ok(mut h) = shared.history.lock() {
                        h.forget(&key);
                    }
                    return Ok(None);
                };
                pods.ready().await;
                let pods_in_ns = pods.list_ns(ns.unwrap_or("default"));
                let next = sync(&shared, &key, &hpa, &pods_in_ns).await?;
                Ok::<_, ControllerError>(Some(next_sync(next, period)))
            }
        })
        .await;
}

/// When to look again: a second after the metrics' next sample is due
/// (so a measured change is acted on at once), never later than the sync
/// period and never sooner than a second from now.
fn next_sync(next_sample: Option<Timestamp>, period: Duration) -> Duration {
    let Some(t) = next_sample else {
        return period;
    };
    let wait = t.as_second() + 1 - Timestamp::now().as_second();
    Duration::from_secs(wait.max(1) as u64).min(period)
}

/// The conditions and metric statuses one sync produces.
struct Status {
    conditions: Vec<Value>,
    metrics: Vec<Value>,
}

impl Status {
    fn set(&mut self, (type_, status, reason, message): (&str, &str, &str, &str)) {
        self.set_owned(type_, status, reason, message.to_string());
    }

    fn set_owned(&mut self, type_: &str, status: &str, reason: &str, message: String) {
        let now = Timestamp::now().to_string();
        match self.conditions.iter_mut().find(|c| c["type"] == type_) {
            Some(c) => {
                if c["status"] != status {
                    c["lastTransitionTime"] = json!(now);
                }
                c["status"] = json!(status);
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            None => self.conditions.push(json!({
                "type": type_, "status": status, "lastTransitionTime": now,
                "reason": reason, "message": message,
            })),
        }
    }
}

/// The `behavior` with upstream's defaults for what it leaves out (the
/// API server defaults the same on write; this covers objects stored
/// before), the scale-down window falling back to the controller's.
fn behavior_of(hpa: &HorizontalPodAutoscaler, settings: &Settings) -> Option<Behavior> {
    let b = hpa.spec.as_ref()?.behavior.as_ref()?;
    let rules = |r: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>,
                 window: i64,
                 defaults: Vec<Policy>| {
        Rules {
            window_secs: r
                .and_then(|r| r.stabilization_window_seconds)
                .map_or(window, i64::from),
            select: r
                .and_then(|r| r.select_policy.clone())
                .unwrap_or_else(|| "Max".into()),
            policies: r
                .and_then(|r| r.policies.as_ref())
                .map(|ps| {
                    ps.iter()
                        .map(|p| Policy {
                            kind: p.type_.clone(),
                            value: p.value,
                            period_secs: i64::from(p.period_seconds),
                        })
                        .collect()
                })
                .unwrap_or(defaults),
        }
    };
    let policy = |kind: &str, value, period_secs| Policy {
        kind: kind.into(),
        value,
        period_secs,
    };
    Some(Behavior {
        up: rules(
            b.scale_up.as_ref(),
            0,
            vec![policy("Pods", 4, 15), policy("Percent", 100, 15)],
        ),
        down: rules(
            b.scale_down.as_ref(),
            settings.downscale_stabilization.as_secs() as i64,
            vec![policy("Percent", 100, 15)],
        ),
    })
}

async fn api_resource(
    shared: &Shared,
    api_version: &str,
    kind: &str,
) -> Result<ApiResource, String> {
    let key = (api_version.to_string(), kind.to_string());
    if let Some(ar) = shared.kinds.lock().ok().and_then(|k| k.get(&key).cloned()) {
        return Ok(ar);
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (ar, _) = kube::discovery::pinned_kind(&shared.client, &gvk)
        .await
        .map_err(|e| format!("unable to find the resource of {kind} in {api_version}: {e}"))?;
    if let Ok(mut k) = shared.kinds.lock() {
        k.insert(key, ar.clone());
    }
    Ok(ar)
}

/// One sync of one HPA.
async fn sync(
    shared: &Shared,
    key: &str,
    hpa: &HorizontalPodAutoscaler,
    pods: &[Arc<Pod>],
) -> Result<Option<Timestamp>, ControllerError> {
    let mut next_sample: Option<Timestamp> = None;
    let ns = hpa.metadata.namespace.as_deref().unwrap_or("default");
    let name = hpa.metadata.name.as_deref().unwrap_or("");
    let Some(spec) = hpa.spec.as_ref() else {
        return Ok(None);
    };
    let old_status = hpa
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .unwrap_or(json!({}));
    let mut st = Status {
        conditions: old_status["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        metrics: Vec::new(),
    };
    let target = &spec.scale_target_ref;
    let reference = format!("{}/{}", target.kind, target.name);
    let api_version = target.api_version.clone().unwrap_or_else(|| "v1".into());
    let scale = match api_resource(shared, &api_version, &target.kind).await {
        Ok(ar) => Api::<DynamicObject>::namespaced_with(shared.client.clone(), ns, &ar)
            .get_scale(&target.name)
            .await
            .map(|s| (ar, s))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let (ar, scale) = match scale {
        Ok(s) => s,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            shared.recorder.warning(hpa, "FailedGetScale", e.clone());
            st.set_owned("AbleToScale", "False", "FailedGetScale", msg);
            write_status(shared, hpa, &old_status, &st, None, None, None).await?;
            return Ok(None);
        }
    };
    st.set((
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    ));
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let status_replicas = scale.status.as_ref().map(|s| s.replicas).unwrap_or(0);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut desired;
    let mut reason = String::new();
    let behavior = behavior_of(hpa, &shared.settings);
    if current == 0 && min != 0 {
        desired = 0;
        st.set((
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        let selector_text = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let selector = if selector_text.is_empty() {
            None
        } else {
            api::selector::LabelSelector::parse(&selector_text).ok()
        };
        let Some(selector) = selector else {
            let (r, m) = if selector_text.is_empty() {
                (
                    "InvalidSelector",
                    "the HPA target's scale is missing a selector".to_string(),
                )
            } else {
                (
                    "InvalidSelector",
                    format!(
                        "couldn't convert selector into a corresponding internal selector object: {selector_text}"
                    ),
                )
            };
            shared
                .recorder
                .warning(hpa, "SelectorRequired", "selector is required".into());
            st.set_owned("ScalingActive", "False", r, m);
            write_status(
                shared,
                hpa,
                &old_status,
                &st,
                Some(status_replicas),
                None,
                None,
            )
            .await?;
            return Ok(None);
        };
        let mut best: Option<Proposal> = None;
        let mut soonest: Option<Timestamp> = None;
        let mut first_failure: Option<Failure> = None;
        let mut invalid = 0;
        let specs = spec.metrics.clone().unwrap_or_default();
        for m in &specs {
            match compute_metric(shared, ns, m, current, &selector_text, &selector, pods).await {
                Ok(p) => {
                    st.metrics.push(p.status.clone());
                    if let Some(t) = p.next_sample {
                        soonest = Some(soonest.map_or(t, |s| s.min(t)));
                    }
                    if best.as_ref().is_none_or(|b| p.replicas > b.replicas) {
                        best = Some(p);
                    }
                }
                Err(f) => {
                    st.metrics.push(f.status.clone());
                    shared.recorder.warning(hpa, f.reason, f.error.clone());
                    invalid += 1;
                    if first_failure.is_none() {
                        first_failure = Some(f);
                    }
                }
            }
        }
        let proposed = best.as_ref().map_or(0, |b| b.replicas);
        next_sample = soonest;
        if invalid > 0 && (invalid >= specs.len() || proposed < current) {
            let f = first_failure.expect("an invalid metric was recorded");
            let err = format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                specs.len(),
                f.error
            );
            st.set_owned(
                "ScalingActive",
                "False",
                f.reason,
                format!(
                    "the HPA was unable to compute the replica count: {}",
                    f.error
                ),
            );
            shared
                .recorder
                .warning(hpa, "FailedComputeMetricsReplicas", err);
            write_status(shared, hpa, &old_status, &st, Some(current), None, None).await?;
            return Ok(None);
        }
        let best = best.expect("a valid metric");
        st.set_owned(
            "ScalingActive",
            "True",
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {}",
                best.name
            ),
        );
        if best.replicas > current {
            reason = format!("{} above target", best.name);
        } else if best.replicas < current {
            reason = "All metrics below target".into();
        }
        let now = Instant::now();
        let n = {
            let mut h = shared
                .history
                .lock()
                .map_err(|_| ControllerError::Invalid("HPA history poisoned".into()))?;
            let ask = normalize::Ask {
                current,
                recommended: best.replicas,
                min,
                max,
            };
            match &behavior {
                None => h.normalize(key, ask, shared.settings.downscale_stabilization, now),
                Some(b) => h.normalize_with_behavior(key, ask, b, now),
            }
        };
        st.set(n.able);
        st.set(n.limited);
        desired = n.replicas;
    }
    let mut last_scale = None;
    if desired != current && !(current == 0 && min != 0) {
        let patch = json!({"spec": {"replicas": desired}});
        let res = Api::<DynamicObject>::namespaced_with(shared.client.clone(), ns, &ar)
            .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match res {
            Ok(_) => {
                shared.recorder.normal(
                    hpa,
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {reason}"),
                );
                st.set_owned(
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                );
                if let (Some(b), Ok(mut h)) = (&behavior, shared.history.lock()) {
                    h.record_scale(key, current, desired, b, Instant::now());
                }
                last_scale = Some(Timestamp::now().to_string());
                tracing::info!(hpa = %format!("{ns}/{name}"), %reference, from = current, to = desired, %reason, "rescaled");
            }
            Err(e) => {
                shared.recorder.warning(
                    hpa,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {e}"),
                );
                st.set_owned(
                    "AbleToScale",
                    "False",
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                write_status(
                    shared,
                    hpa,
                    &old_status,
                    &st,
                    Some(current),
                    Some(current),
                    None,
                )
                .await?;
                return Err(ControllerError::Kube(e));
            }
        }
    } else {
        desired = current;
    }
    write_status(
        shared,
        hpa,
        &old_status,
        &st,
        Some(current),
        Some(desired),
        last_scale,
    )
    .await?;
    Ok(next_sample)
}

/// Writes the status when it changed (conditions keep their transition
/// times unless their status moved).
async fn write_status(
    shared: &Shared,
    hpa: &HorizontalPodAutoscaler,
    old: &Value,
    st: &Status,
    current: Option<i32>,
    desired: Option<i32>,
    last_scale: Option<String>,
) -> Result<(), ControllerError> {
    let mut status = old.clone();
    if !status.is_object() {
        status = json!({});
    }
    status["conditions"] = json!(st.conditions);
    if !st.metrics.is_empty() {
        status["currentMetrics"] = json!(st.metrics);
    } else if let Some(o) = status.as_object_mut() {
        o.remove("currentMetrics");
    }
    if let Some(c) = current {
        status["currentReplicas"] = json!(c);
    }
    status["desiredReplicas"] =
        json!(desired.unwrap_or_else(|| old["desiredReplicas"].as_i64().unwrap_or(0) as i32));
    if let Some(t) = last_scale {
        status["lastScaleTime"] = json!(t);
    }
    if let Some(g) = hpa.metadata.generation {
        status["observedGeneration"] = json!(g);
    }
    if &status == old {
        return Ok(());
    }
    let ns = hpa.metadata.namespace.as_deref().unwrap_or("default");
    let name = hpa.metadata.name.as_deref().unwrap_or("");
    // A merge patch replaces the lists whole, as an update would.
    Api::<HorizontalPodAutoscaler>::namespaced(shared.client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::compute::{milli_quantity, pod_facts};
    use super::*;

    #[test]
    fn behavior_defaults_are_upstreams() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h"},
            "spec": {"maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "d"},
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}},
        }))
        .unwrap();
        let b = behavior_of(&hpa, &Settings::default()).unwrap();
        assert_eq!(b.down.window_secs, 10);
        assert_eq!(b.up.window_secs, 0);
        assert_eq!(b.up.policies.len(), 2);
        assert_eq!(b.up.select, "Max");
        assert_eq!(
            b.down.policies,
            vec![Policy {
                kind: "Percent".into(),
                value: 100,
                period_secs: 15
            }]
        );
        let plain: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h"},
            "spec": {"maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "d"}},
        }))
        .unwrap();
        assert!(behavior_of(&plain, &Settings::default()).is_none());
        assert_eq!(milli_quantity(250), "250m");
        assert_eq!(milli_quantity(2000), "2");
    }

    #[test]
    fn pod_requests_are_summed_and_a_missing_one_named() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "0.2"}}},
            ]},
            "status": {"phase": "Running"},
        }))
        .unwrap();
        let sel = api::selector::LabelSelector::parse("app=web").unwrap();
        let f = pod_facts(&[Arc::new(pod.clone())], &sel, "cpu", None);
        assert_eq!(f[0].request, Ok(300));
        let f = pod_facts(&[Arc::new(pod.clone())], &sel, "cpu", Some("b"));
        assert_eq!(f[0].request, Ok(200));
        let f = pod_facts(&[Arc::new(pod.clone())], &sel, "memory", None);
        assert_eq!(
            f[0].request,
            Err("missing request for memory in container a of Pod p".into())
        );
        let other = api::selector::LabelSelector::parse("app=db").unwrap();
        assert!(pod_facts(&[Arc::new(pod)], &other, "cpu", None).is_empty());
    }
}
