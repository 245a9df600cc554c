//! One metric of an HPA, measured and turned into a replica proposal:
//! the metric source's client, the pods' facts, the calculator, and the
//! status entry upstream reports for it.

use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::MetricSpec;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::replicas::PodFacts;
use super::{Shared, api_resource, metrics};

/// The pod facts the calculator needs, for the pods `selector` picks.
pub(super) fn pod_facts(
    pods: &[Arc<Pod>],
    selector: &api::selector::LabelSelector,
    resource: &str,
    container: Option<&str>,
) -> Vec<PodFacts> {
    pods.iter()
        .filter(|p| {
            let empty = std::collections::BTreeMap::new();
            selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty))
        })
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let status = p.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .map(|c| {
                    (
                        c.status == "True",
                        c.last_transition_time.as_ref().map(|t| t.0),
                    )
                });
            let mut request: Result<i64, String> = Ok(0);
            for c in p
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or(&[])
            {
                if container.is_some_and(|want| want != c.name) {
                    continue;
                }
                let q = c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(resource))
                    .and_then(|q| controller_runtime::quantity::parse_scaled(&q.0, 1000));
                request = match (request, q) {
                    (Ok(sum), Some(v)) => Ok(sum + v),
                    (Ok(_), None) => Err(format!(
                        "missing request for {resource} in container {} of Pod {name}",
                        c.name
                    )),
                    (e, _) => e,
                };
            }
            PodFacts {
                ignored: p.metadata.deletion_timestamp.is_some() || phase == "Failed",
                pending: phase == "Pending",
                start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
                ready,
                request,
                name,
            }
        })
        .collect()
}

/// A milli-value as a quantity (`250m`, or whole units).
pub(super) fn milli_quantity(v: i64) -> String {
    if v % 1000 == 0 {
        (v / 1000).to_string()
    } else {
        format!("{v}m")
    }
}

/// One metric's proposal: replicas, the metric's name for messages, and
/// its status entry.
pub(super) struct Proposal {
    pub(super) replicas: i32,
    pub(super) name: String,
    pub(super) status: Value,
    /// When the metric's next sample is due (its newest sample plus its
    /// window): the next sync follows it, so a change is acted on within
    /// a second of being measured rather than up to a sync period later.
    pub(super) next_sample: Option<Timestamp>,
}

/// A metric that could not be evaluated: the condition reason and the
/// error, and whatever status entry it still has.
pub(super) struct Failure {
    pub(super) reason: &'static str,
    pub(super) error: String,
    pub(super) status: Value,
}

pub(super) async fn compute_metric(
    shared: &Shared,
    ns: &str,
    spec: &MetricSpec,
    current: i32,
    selector_text: &str,
    selector: &api::selector::LabelSelector,
    pods: &[Arc<Pod>],
) -> Result<Proposal, Failure> {
    let calc = shared.settings.calculator;
    let now = Timestamp::now();
    let fail = |reason: &'static str, error: String| Failure {
        reason,
        error,
        status: json!({"type": spec.type_}),
    };
    match spec.type_.as_str() {
        "Resource" | "ContainerResource" => {
            let (res, target, container) = match (&spec.resource, &spec.container_resource) {
                (Some(r), _) if spec.type_ == "Resource" => {
                    (r.name.clone(), r.target.clone(), None)
                }
                (_, Some(c)) => (c.name.clone(), c.target.clone(), Some(c.container.clone())),
                _ => {
                    return Err(fail(
                        "InvalidMetricSourceType",
                        format!("metric of type {} has no source", spec.type_),
                    ));
                }
            };
            let (reason, label, field) = if container.is_some() {
                (
                    "FailedGetContainerResourceMetric",
                    "container resource",
                    "containerResource",
                )
            } else {
                ("FailedGetResourceMetric", "resource", "resource")
            };
            let samples = metrics::pod_resource(&shared.client, ns, selector_text, &res, container.as_deref())
                .await
                .map_err(|e| {
                    fail(
                        reason,
                        format!("failed to get {res} utilization: unable to get metrics for resource {res}: {e}"),
                    )
                })?;
            let next_sample = samples
                .values()
                .map(|s| s.at.as_second() + s.window_secs.max(1))
                .max()
                .and_then(|t| Timestamp::from_second(t).ok());
            let facts = pod_facts(pods, selector, &res, container.as_deref());
            let cpu = res == "cpu";
            let mut src = json!({"name": res});
            if let Some(c) = &container {
                src["container"] = json!(c);
            }
            if let Some(u) = target.average_utilization {
                let r = calc
                    .resource_utilization(current, u, cpu, samples, &facts, now)
                    .map_err(|e| fail(reason, format!("failed to get {res} utilization: {e}")))?;
                src["current"] = json!({"averageUtilization": r.utilization, "averageValue": milli_quantity(r.raw)});
                return Ok(Proposal {
                    replicas: r.replicas,
                    name: format!("{res} {label} utilization (percentage of request)"),
                    status: json!({"type": spec.type_, field: src}),
                    next_sample,
                });
            }
            let Some(avg) = target
                .average_value
                .as_ref()
                .and_then(|q| controller_runtime::quantity::parse_scaled(&q.0, 1000))
            else {
                return Err(fail(
                    reason,
                    format!(
                        "invalid {label} metric source: neither a utilization target nor a value target was set"
                    ),
                ));
            };
            let (n, usage) = calc
                .plain(current, avg, cpu, samples, &facts, now)
                .map_err(|e| fail(reason, format!("failed to get {res} usage: {e}")))?;
            src["current"] = json!({"averageValue": milli_quantity(usage)});
            Ok(Proposal {
                replicas: n,
                name: format!("{res} {label}"),
                status: json!({"type": spec.type_, field: src}),
                next_sample,
            })
        }
        "Pods" => {
            let Some(p) = &spec.pods else {
                return Err(fail(
                    "InvalidMetricSourceType",
                    "metric of type Pods has no source".into(),
                ));
            };
            let metric = &p.metric;
            let samples = metrics::pods_custom(&shared.client, ns, selector_text, metric)
                .await
                .map_err(|e| {
                    fail(
                        "FailedGetPodsMetric",
                        format!("unable to get metric {}: {e}", metric.name),
                    )
                })?;
            let target = p
                .target
                .average_value
                .as_ref()
                .and_then(|q| controller_runtime::quantity::parse_scaled(&q.0, 1000))
                .ok_or_else(|| {
                    fail(
                        "FailedGetPodsMetric",
                        "a Pods metric needs an averageValue target".into(),
                    )
                })?;
            let facts = pod_facts(pods, selector, "", None);
            let (n, usage) = calc
                .plain(current, target, false, samples, &facts, now)
                .map_err(|e| {
                    fail(
                        "FailedGetPodsMetric",
                        format!("unable to get metric {}: {e}", metric.name),
                    )
                })?;
            Ok(Proposal {
                replicas: n,
                name: format!("pods metric {}", metric.name),
                status: json!({"type": "Pods", "pods": {"metric": metric, "current": {"averageValue": milli_quantity(usage)}}}),
                next_sample: None,
            })
        }
        "Object" | "External" => {
            let external = spec.type_ == "External";
            let reason = if external {
                "FailedGetExternalMetric"
            } else {
                "FailedGetObjectMetric"
            };
            let (metric, target, described) = match (&spec.object, &spec.external) {
                (Some(o), _) if !external => (
                    o.metric.clone(),
                    o.target.clone(),
                    Some(o.described_object.clone()),
                ),
                (_, Some(e)) if external => (e.metric.clone(), e.target.clone(), None),
                _ => {
                    return Err(fail(
                        "InvalidMetricSourceType",
                        format!("metric of type {} has no source", spec.type_),
                    ));
                }
            };
            let usage = match &described {
                Some(d) => {
                    let ar =
                        api_resource(shared, d.api_version.as_deref().unwrap_or("v1"), &d.kind)
                            .await
                            .map_err(|e| fail(reason, e))?;
                    metrics::object_custom(&shared.client, ns, &ar, &d.name, &metric).await
                }
                None => metrics::external(&shared.client, ns, &metric).await,
            }
            .map_err(|e| {
                fail(
                    reason,
                    format!(
                        "unable to get {} metric {}: {e}",
                        if external { "external" } else { "object" },
                        metric.name
                    ),
                )
            })?;
            let q = |v: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                v.as_ref()
                    .and_then(|q| controller_runtime::quantity::parse_scaled(&q.0, 1000))
            };
            let facts = pod_facts(pods, selector, "", None);
            let (n, current_json) = if let Some(v) = q(&target.value) {
                let n = calc
                    .object_value(current, usage, v, &facts)
                    .map_err(|e| fail(reason, e))?;
                (n, json!({"value": milli_quantity(usage)}))
            } else if let Some(avg) = q(&target.average_value) {
                let n = calc.per_pod(current, usage, avg);
                (
                    n,
                    json!({"averageValue": milli_quantity(usage / i64::from(current.max(1)))}),
                )
            } else {
                return Err(fail(
                    reason,
                    "the metric target has neither value nor averageValue".into(),
                ));
            };
            let (name, status) = match described {
                Some(d) => (
                    format!("{} metric {}", d.kind, metric.name),
                    json!({"type": "Object", "object": {"describedObject": d, "metric": metric, "current": current_json}}),
                ),
                None => (
                    format!("external metric {}", metric.name),
                    json!({"type": "External", "external": {"metric": metric, "current": current_json}}),
                ),
            };
            Ok(Proposal {
                replicas: n,
                name,
                status,
                next_sample: None,
            })
        }
        other => Err(fail(
            "InvalidMetricSourceType",
            format!("unknown metric source type {other:?}"),
        )),
    }
}
