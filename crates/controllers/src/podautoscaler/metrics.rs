//! The HPA's metrics clients: the resource metrics API
//! (`metrics.k8s.io/v1beta1` PodMetrics), the custom metrics API
//! (`custom.metrics.k8s.io/v1beta2`, per pod and per object) and the
//! external metrics API (`external.metrics.k8s.io/v1beta1`), read through
//! the API server like any client (an adapter registered as an APIService
//! answers the last two). Values come back in milli-units.

use k8s_openapi::api::autoscaling::v2::MetricIdentifier;
use k8s_openapi::jiff::Timestamp;
use kube::discovery::ApiResource;
use serde_json::Value;

use super::replicas::{PodMetrics, Sample};

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn get(client: &kube::Client, path: &str) -> Result<Value, String> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request::<Value>(req)
        .await
        .map_err(|e| e.to_string())
}

fn milli(q: &Value) -> Option<i64> {
    controller_runtime::quantity::parse_scaled(q.as_str()?, 1000)
}

fn timestamp(v: &Value) -> Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Timestamp::now)
}

/// Go duration strings as metrics-server writes them (`15.032s`, `1m0s`).
fn window_secs(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or("");
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().unwrap_or(0.0);
        num.clear();
        total += match c {
            'h' => n * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                n / 1000.0
            }
            'm' => n * 60.0,
            's' => n,
            _ => 0.0,
        };
    }
    total.round() as i64
}

/// Per-pod usage of a resource (one container's, or the pod's sum).
pub async fn pod_resource(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<PodMetrics, String> {
    let list = get(
        client,
        &format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}",
            enc(selector)
        ),
    )
    .await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let mut out = PodMetrics::new();
    for pm in items {
        let Some(name) = pm["metadata"]["name"].as_str() else {
            continue;
        };
        let mut sum = 0;
        let mut complete = false;
        for c in pm["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|want| c["name"] != want) {
                continue;
            }
            match milli(&c["usage"][resource]) {
                Some(v) => {
                    sum += v;
                    complete = true;
                }
                None => {
                    // A container without the resource: the pod's metric
                    // is missing, as upstream treats it.
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            out.insert(
                name.to_string(),
                Sample {
                    value: sum,
                    at: timestamp(&pm["timestamp"]),
                    window_secs: window_secs(&pm["window"]),
                },
            );
        }
    }
    Ok(out)
}

fn metric_selector(metric: &MetricIdentifier) -> String {
    let Some(sel) = &metric.selector else {
        return String::new();
    };
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    format!("&metricLabelSelector={}", enc(&parts.join(",")))
}

/// A per-pod custom metric for the pods `selector` picks.
pub async fn pods_custom(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    metric: &MetricIdentifier,
) -> Result<PodMetrics, String> {
    let list = get(
        client,
        &format!(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/{}?labelSelector={}{}",
            metric.name,
            enc(selector),
            metric_selector(metric)
        ),
    )
    .await
    .map_err(|e| format!("unable to fetch metrics from custom metrics API: {e}"))?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return Err("no metrics returned from custom metrics API".into());
    }
    Ok(items
        .iter()
        .filter_map(|i| {
            Some((
                i["describedObject"]["name"].as_str()?.to_string(),
                Sample {
                    value: milli(&i["value"])?,
                    at: timestamp(&i["timestamp"]),
                    window_secs: i["windowSeconds"].as_i64().unwrap_or(0),
                },
            ))
        })
        .collect())
}

/// A custom metric of one object.
pub async fn object_custom(
    client: &kube::Client,
    ns: &str,
    ar: &ApiResource,
    name: &str,
    metric: &MetricIdentifier,
) -> Result<i64, String> {
    let resource = if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    };
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{name}/{}?{}",
        metric.name,
        metric_selector(metric).trim_start_matches('&')
    );
    let list = get(client, &path)
        .await
        .map_err(|e| format!("unable to fetch metrics from custom metrics API: {e}"))?;
    list["items"]
        .as_array()
        .and_then(|i| i.first())
        .and_then(|i| milli(&i["value"]))
        .ok_or_else(|| "no metrics returned from custom metrics API".into())
}

/// The sum of an external metric's series.
pub async fn external(
    client: &kube::Client,
    ns: &str,
    metric: &MetricIdentifier,
) -> Result<i64, String> {
    let sel = metric_selector(metric).replacen("&metricLabelSelector=", "labelSelector=", 1);
    let list = get(
        client,
        &format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{}?{sel}",
            metric.name
        ),
    )
    .await
    .map_err(|e| format!("unable to fetch metrics from external metrics API: {e}"))?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return Err("no metrics returned from external metrics API".into());
    }
    Ok(items.iter().filter_map(|i| milli(&i["value"])).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_windows_parse_to_seconds() {
        assert_eq!(window_secs(&Value::from("15.032s")), 15);
        assert_eq!(window_secs(&Value::from("1m0s")), 60);
        assert_eq!(window_secs(&Value::from("1m30.5s")), 91);
        assert_eq!(window_secs(&Value::from("500ms")), 1);
    }
}
