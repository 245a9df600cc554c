//! Upstream's replica calculator (`pkg/controller/podautoscaler/
//! replica_calculator.go`): from per-pod metrics and the pods a target's
//! selector picks, the replica count that brings the metric to its
//! target. Missing metrics and not-yet-ready pods are treated as upstream
//! treats them (they damp a scale in the direction they would exaggerate),
//! and changes within the tolerance are not made.
//!
//! Every value is in milli-units, as upstream's `MilliValue`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

/// A pod as the calculator sees it.
#[derive(Debug, Clone)]
pub struct PodFacts {
    /// The pod's name.
    pub name: String,
    /// Being deleted, or Failed: ignored.
    pub ignored: bool,
    /// Phase Pending.
    pub pending: bool,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
    /// The Ready condition: (status is True, lastTransitionTime).
    pub ready: Option<(bool, Option<Timestamp>)>,
    /// The sum of the containers' requests of the resource (milli), or the
    /// first container without one.
    pub request: Result<i64, String>,
}

/// One pod's metric sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The value (milli-units).
    pub value: i64,
    /// When it was measured.
    pub at: Timestamp,
    /// Over how long (the metric's window).
    pub window_secs: i64,
}

/// Per-pod metrics by pod name.
pub type PodMetrics = BTreeMap<String, Sample>;

/// The calculator's settings (the controller manager's flags).
#[derive(Debug, Clone, Copy)]
pub struct Calculator {
    /// `--horizontal-pod-autoscaler-tolerance` (0.1).
    pub tolerance: f64,
    /// `--horizontal-pod-autoscaler-cpu-initialization-period` (5 min).
    pub cpu_initialization_secs: i64,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay` (30 s).
    pub initial_readiness_delay_secs: i64,
}

impl Default for Calculator {
    fn default() -> Self {
        Calculator {
            tolerance: 0.1,
            cpu_initialization_secs: 300,
            initial_readiness_delay_secs: 30,
        }
    }
}

/// What a resource calculation found.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceResult {
    /// The proposed replica count.
    pub replicas: i32,
    /// Current utilization in percent of the request.
    pub utilization: i32,
    /// Average raw usage per pod (milli).
    pub raw: i64,
}

struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn secs_between(a: Timestamp, b: Timestamp) -> i64 {
    b.as_second() - a.as_second()
}

impl Calculator {
    /// Upstream's `groupPods`: which pods count, which are unready (CPU
    /// only), which have no metric, which are ignored.
    fn group(&self, pods: &[PodFacts], metrics: &PodMetrics, cpu: bool, now: Timestamp) -> Groups {
        let mut g = Groups {
            ready: 0,
            unready: BTreeSet::new(),
            missing: BTreeSet::new(),
            ignored: BTreeSet::new(),
        };
        for p in pods {
            if p.ignored {
                g.ignored.insert(p.name.clone());
                continue;
            }
            if p.pending {
                g.unready.insert(p.name.clone());
                continue;
            }
            let Some(m) = metrics.get(&p.name) else {
                g.missing.insert(p.name.clone());
                continue;
            };
            if cpu {
                let unready = match (p.ready, p.start_time) {
                    (None, _) | (_, None) => true,
                    (Some((ready, transition)), Some(start)) => {
                        if secs_between(start, now) < self.cpu_initialization_secs {
                            // Still initializing: ignore a sample taken
                            // before a whole window passed since it turned
                            // ready.
                            !ready
                                || transition.is_none_or(|t| {
                                    m.at.as_second() < t.as_second() + m.window_secs
                                })
                        } else {
                            // Unready and never ready since its start.
                            !ready
                                && transition.is_some_and(|t| {
                                    secs_between(start, t) < self.initial_readiness_delay_secs
                                })
                        }
                    }
                };
                if unready {
                    g.unready.insert(p.name.clone());
                    continue;
                }
            }
            g.ready += 1;
        }
        g
    }

    /// Replicas for a resource Utilization target (percent of requests).
    pub fn resource_utilization(
        &self,
        current: i32,
        target: i32,
        cpu: bool,
        mut metrics: PodMetrics,
        pods: &[PodFacts],
        now: Timestamp,
    ) -> Result<ResourceResult, String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let g = self.group(pods, &metrics, cpu, now);
        metrics.retain(|k, _| !g.ignored.contains(k) && !g.unready.contains(k));
        if metrics.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
        for p in pods {
            requests.insert(&p.name, p.request.clone()?);
        }
        let (ratio, utilization, raw) = utilization_ratio(&metrics, &requests, target)?;
        let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
        let result = |replicas: i32| ResourceResult {
            replicas,
            utilization,
            raw,
        };
        if !scale_up_with_unready && g.missing.is_empty() {
            if (1.0 - ratio).abs() <= self.tolerance {
                return Ok(result(current));
            }
            return Ok(result((ratio * g.ready as f64).ceil() as i32));
        }
        if !g.missing.is_empty() {
            for name in &g.missing {
                let value = if ratio < 1.0 {
                    // Scaling down: a missing pod counts as using all of
                    // its request (or the target, above 100%).
                    requests.get(name.as_str()).copied().unwrap_or(0) * i64::from(target.max(100))
                        / 100
                } else {
                    0
                };
                metrics.insert(name.clone(), placeholder(value, now));
            }
        }
        if scale_up_with_unready {
            for name in &g.unready {
                metrics.insert(name.clone(), placeholder(0, now));
            }
        }
        let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target)?;
        if (1.0 - new_ratio).abs() <= self.tolerance
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return Ok(result(current));
        }
        let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return Ok(result(current));
        }
        Ok(result(replicas))
    }

    /// Replicas for an average-value target of a per-pod metric (a
    /// resource's AverageValue, or a Pods metric): upstream's
    /// `calcPlainMetricReplicas`. Returns (replicas, average usage).
    pub fn plain(
        &self,
        current: i32,
        target: i64,
        cpu: bool,
        mut metrics: PodMetrics,
        pods: &[PodFacts],
        now: Timestamp,
    ) -> Result<(i32, i64), String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let g = self.group(pods, &metrics, cpu, now);
        metrics.retain(|k, _| !g.ignored.contains(k) && !g.unready.contains(k));
        if metrics.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        let (ratio, usage) = usage_ratio(&metrics, target);
        let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
        if !scale_up_with_unready && g.missing.is_empty() {
            if (1.0 - ratio).abs() <= self.tolerance {
                return Ok((current, usage));
            }
            return Ok(((ratio * g.ready as f64).ceil() as i32, usage));
        }
        for name in &g.missing {
            let v = if ratio < 1.0 { target } else { 0 };
            metrics.insert(name.clone(), placeholder(v, now));
        }
        if scale_up_with_unready {
            for name in &g.unready {
                metrics.insert(name.clone(), placeholder(0, now));
            }
        }
        let (new_ratio, _) = usage_ratio(&metrics, target);
        if (1.0 - new_ratio).abs() <= self.tolerance
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return Ok((current, usage));
        }
        let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return Ok((current, usage));
        }
        Ok((replicas, usage))
    }

    /// An object or external metric against a Value target: the ratio
    /// applied to the running and ready pods (upstream's
    /// `getUsageRatioReplicaCount`).
    pub fn object_value(
        &self,
        current: i32,
        usage: i64,
        target: i64,
        pods: &[PodFacts],
    ) -> Result<i32, String> {
        let ratio = usage as f64 / target as f64;
        if current == 0 {
            return Ok(ratio.ceil() as i32);
        }
        if (1.0 - ratio).abs() <= self.tolerance {
            return Ok(current);
        }
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let ready = pods
            .iter()
            .filter(|p| !p.ignored && !p.pending && p.ready.is_some_and(|(r, _)| r))
            .count();
        Ok((ratio * ready as f64).ceil() as i32)
    }

    /// An object or external metric against an AverageValue target: the
    /// total divided by the per-pod target (upstream's
    /// `GetObjectPerPodMetricReplicas`).
    pub fn per_pod(&self, current: i32, usage: i64, target_average: i64) -> i32 {
        let ratio = usage as f64 / (target_average as f64 * f64::from(current.max(1)));
        if (1.0 - ratio).abs() <= self.tolerance {
            return current;
        }
        (usage as f64 / target_average as f64).ceil() as i32
    }
}

fn placeholder(value: i64, at: Timestamp) -> Sample {
    Sample {
        value,
        at,
        window_secs: 0,
    }
}

/// Upstream's `GetResourceUtilizationRatio`: (ratio to the target,
/// utilization percent, average raw usage).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<&str, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        let Some(r) = requests.get(name.as_str()) else {
            continue;
        };
        used += m.value;
        requested += r;
        n += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        used / n,
    ))
}

/// Upstream's `GetMetricUsageRatio`: (ratio of the average to the target,
/// the average).
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let avg = total / metrics.len().max(1) as i64;
    (avg as f64 / target as f64, avg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn pod(name: &str, request: i64) -> PodFacts {
        PodFacts {
            name: name.into(),
            ignored: false,
            pending: false,
            // Started long ago, ready since.
            start_time: Some(t(-3600)),
            ready: Some((true, Some(t(-3500)))),
            request: Ok(request),
        }
    }

    fn metrics(v: &[(&str, i64)]) -> PodMetrics {
        v.iter()
            .map(|(n, x)| {
                (
                    n.to_string(),
                    Sample {
                        value: *x,
                        at: t(0),
                        window_secs: 15,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn utilization_scales_by_the_ratio_outside_the_tolerance() {
        let c = Calculator::default();
        let pods = [pod("a", 100), pod("b", 100)];
        // 90% against 50%: ceil(1.8 * 2) = 4.
        let r = c
            .resource_utilization(2, 50, true, metrics(&[("a", 90), ("b", 90)]), &pods, t(0))
            .unwrap();
        assert_eq!(
            r,
            ResourceResult {
                replicas: 4,
                utilization: 90,
                raw: 90
            }
        );
        // 53% against 50% is within 10%: no change.
        let r = c
            .resource_utilization(2, 50, true, metrics(&[("a", 53), ("b", 53)]), &pods, t(0))
            .unwrap();
        assert_eq!(r.replicas, 2);
        // 10% against 50%: ceil(0.2 * 2) = 1.
        let r = c
            .resource_utilization(2, 50, true, metrics(&[("a", 10), ("b", 10)]), &pods, t(0))
            .unwrap();
        assert_eq!(r.replicas, 1);
    }

    #[test]
    fn missing_metrics_damp_the_scale_as_upstream() {
        let c = Calculator::default();
        let pods = [pod("a", 100), pod("b", 100), pod("c", 100)];
        // Scale up: the pod without a metric counts as 0%.
        // (100+100+0)/300 = 66% against 50%: ceil(1.32 * 3) = 4.
        let r = c
            .resource_utilization(3, 50, true, metrics(&[("a", 100), ("b", 100)]), &pods, t(0))
            .unwrap();
        assert_eq!(r.replicas, 4);
        // Scale down: it counts as 100% of its request.
        // (10+10+100)/300 = 40% against 50%: ratio 0.8, ceil(0.8*3) = 3.
        let r = c
            .resource_utilization(3, 50, true, metrics(&[("a", 10), ("b", 10)]), &pods, t(0))
            .unwrap();
        assert_eq!(r.replicas, 3);
    }

    #[test]
    fn unready_pods_count_as_zero_on_a_scale_up_and_are_ignored_otherwise() {
        let c = Calculator::default();
        let mut starting = pod("c", 100);
        starting.start_time = Some(t(-10));
        starting.ready = Some((false, Some(t(-10))));
        let pods = [pod("a", 100), pod("b", 100), starting];
        // a, b at 100% against 50%, c unready: (100+100+0)/300 -> 66%,
        // ceil(1.33*3) = 4 (not 2*2 = 4 by luck: check a milder case too).
        let r = c
            .resource_utilization(
                3,
                50,
                true,
                metrics(&[("a", 100), ("b", 100), ("c", 500)]),
                &pods,
                t(0),
            )
            .unwrap();
        assert_eq!(r.replicas, 4);
        assert_eq!(r.utilization, 100, "the unready pod's sample is left out");
        // A pending pod is unready too; scaling down ignores it.
        let mut pending = pod("d", 100);
        pending.pending = true;
        let r = c
            .resource_utilization(
                3,
                50,
                true,
                metrics(&[("a", 10), ("b", 10)]),
                &[pod("a", 100), pod("b", 100), pending],
                t(0),
            )
            .unwrap();
        assert_eq!(r.replicas, 1);
    }

    #[test]
    fn a_container_without_a_request_is_an_error() {
        let c = Calculator::default();
        let mut p = pod("a", 0);
        p.request = Err("missing request for cpu in container web of Pod a".into());
        let e = c
            .resource_utilization(1, 50, true, metrics(&[("a", 10)]), &[p], t(0))
            .unwrap_err();
        assert!(e.contains("missing request for cpu"), "{e}");
        let e = c
            .resource_utilization(1, 50, true, metrics(&[]), &[], t(0))
            .unwrap_err();
        assert!(e.contains("no pods returned by selector"), "{e}");
    }

    #[test]
    fn plain_and_object_metrics() {
        let c = Calculator::default();
        let pods = [pod("a", 0), pod("b", 0)];
        // Average 300 against 100 per pod: ceil(3 * 2) = 6.
        let (n, avg) = c
            .plain(
                2,
                100,
                false,
                metrics(&[("a", 200), ("b", 400)]),
                &pods,
                t(0),
            )
            .unwrap();
        assert_eq!((n, avg), (6, 300));
        // An object metric at twice its value target: twice the ready pods.
        assert_eq!(c.object_value(2, 2000, 1000, &pods).unwrap(), 4);
        // A total of 1000 against 300 per pod: ceil(3.33) = 4.
        assert_eq!(c.per_pod(2, 1000, 300), 4);
        // Within tolerance of 2 * 500: stays.
        assert_eq!(c.per_pod(2, 1050, 500), 2);
    }
}
