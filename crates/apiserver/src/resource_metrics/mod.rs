//! The resource metrics API (metrics.k8s.io/v1beta1, NodeMetrics and
//! PodMetrics) served by the API server itself, as metrics-server would:
//! every `--metric-resolution` (15 s by default) each real node's kubelet
//! is scraped at `/metrics/resource` through the same authenticated
//! connection `kubectl logs` uses, and usage is computed from the last two
//! samples ([`sample`]). `kubectl top` and the HorizontalPodAutoscaler read
//! it.
//!
//! It is registered as the local APIService `v1beta1.metrics.k8s.io`; a
//! user who installs the real metrics-server points that APIService at its
//! Service and the aggregation layer sends the group there instead.
//!
//! Hollow nodes run no kubelet API and are not scraped.

pub mod sample;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::{self as h, Body};
use crate::rest::{Call, Rest};
use sample::{ContainerKey, Cpu, NodeScrape, Rate};

/// The group served here.
pub const GROUP: &str = "metrics.k8s.io";

/// A node's usage as served.
#[derive(Debug, Clone)]
struct NodeUsage {
    labels: Value,
    cpu: Rate,
    memory: f64,
}

/// A pod's usage as served.
#[derive(Debug, Clone)]
struct PodUsage {
    labels: Value,
    at_ms: i64,
    window_ms: i64,
    /// (container, cores, bytes), in the pod's container order.
    containers: Vec<(String, f64, f64)>,
}

#[derive(Default)]
struct Served {
    nodes: BTreeMap<String, NodeUsage>,
    pods: BTreeMap<(String, String), PodUsage>,
}

/// The scraper's memory: each node's previous scrape.
#[derive(Default)]
struct Previous {
    nodes: HashMap<String, NodeScrape>,
}

/// The metrics API's state.
pub struct ResourceMetrics {
    served: RwLock<Served>,
    previous: Mutex<Previous>,
    resolution: RwLock<Duration>,
}

impl Default for ResourceMetrics {
    fn default() -> Self {
        ResourceMetrics {
            served: RwLock::default(),
            previous: Mutex::default(),
            resolution: RwLock::new(Duration::from_secs(15)),
        }
    }
}

/// Whether a resource is one of this API's.
pub fn is_metrics(info: &api::catalogue::ResourceInfo) -> bool {
    info.group == GROUP && !info.custom
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl ResourceMetrics {
    /// Sets how often nodes are scraped (`--metric-resolution`).
    pub fn set_resolution(&self, d: Duration) {
        if let Ok(mut r) = self.resolution.write() {
            *r = d.max(Duration::from_secs(1));
        }
    }

    fn resolution(&self) -> Duration {
        self.resolution
            .read()
            .map(|r| *r)
            .unwrap_or(Duration::from_secs(15))
    }

    /// Scrapes every `resolution` until the task is dropped. The second
    /// scrape comes early, so that usage (which needs two samples) is there
    /// a few seconds after start rather than two periods.
    pub async fn run(&self, rest: &Rest) {
        let mut first = true;
        loop {
            self.scrape(rest).await;
            let every = self.resolution();
            let wait = if first {
                every.min(Duration::from_secs(3))
            } else {
                every
            };
            first = false;
            tokio::time::sleep(wait).await;
        }
    }

    /// One round: every real node's kubelet, concurrently.
    async fn scrape(&self, rest: &Rest) {
        let nodes = match list(rest, "", "nodes", None).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e.message, "metrics: nodes not listed");
                return;
            }
        };
        let timeout = self.resolution().mul_f32(0.8).min(Duration::from_secs(10));
        let targets: Vec<(String, Value, String, u16)> = nodes
            .iter()
            .filter(|n| n["metadata"]["annotations"]["r8s.io/hollow"].is_null())
            .filter_map(|n| {
                let name = n["metadata"]["name"].as_str()?.to_string();
                let ip = n["status"]["addresses"]
                    .as_array()?
                    .iter()
                    .find(|a| a["type"] == "InternalIP")?["address"]
                    .as_str()?
                    .to_string();
                let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
                (port > 0).then(|| (name, n["metadata"]["labels"].clone(), ip, port as u16))
            })
            .collect();
        let scrapes =
            futures::future::join_all(targets.iter().map(|(name, _, ip, port)| async move {
                let got = tokio::time::timeout(timeout, fetch(rest, ip, *port)).await;
                match got {
                    Ok(Ok(body)) => sample::parse(&body).ok(),
                    Ok(Err(e)) => {
                        tracing::debug!(node = %name, error = %e, "metrics: scrape failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(node = %name, "metrics: scrape timed out");
                        None
                    }
                }
            }))
            .await;
        let mut served = Served::default();
        let mut pod_keys: Vec<(String, String)> = Vec::new();
        {
            let Ok(mut prev) = self.previous.lock() else {
                return;
            };
            let mut next = HashMap::new();
            for ((name, labels, _, _), scrape) in targets.iter().zip(scrapes) {
                let Some(now) = scrape else {
                    continue;
                };
                let before = prev.nodes.get(name);
                if let (Some(cpu), Some(mem)) = (now.cpu, now.memory)
                    && let Some(r) = sample::rate(before.and_then(|b| b.cpu), cpu, None)
                {
                    served.nodes.insert(
                        name.clone(),
                        NodeUsage {
                            labels: labels.clone(),
                            cpu: r,
                            memory: mem,
                        },
                    );
                }
                for (key, usage) in pod_usage(before, &now) {
                    pod_keys.push(key.clone());
                    served.pods.insert(key, usage);
                }
                next.insert(name.clone(), now);
            }
            prev.nodes = next;
        }
        // A PodMetrics carries its pod's labels (label selectors apply to
        // them) and the pod's container order.
        let pods_info = api::catalogue::find("", "v1", "pods");
        for key in pod_keys {
            let Some(info) = pods_info else { break };
            match crate::objects::load(&rest.store, info, Some(&key.0), &key.1).await {
                Ok((pod, _)) => {
                    if let Some(p) = served.pods.get_mut(&key) {
                        p.labels = pod["metadata"]["labels"].clone();
                        let order: Vec<&str> = pod["spec"]["containers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c["name"].as_str())
                            .collect();
                        p.containers.sort_by_key(|c| {
                            order.iter().position(|n| *n == c.0).unwrap_or(usize::MAX)
                        });
                    }
                }
                Err(_) => {
                    // Gone since the scrape.
                    served.pods.remove(&key);
                }
            }
        }
        if let Ok(mut s) = self.served.write() {
            *s = served;
        }
    }

    fn node_object(name: &str, u: &NodeUsage) -> Value {
        json!({
            "kind": "NodeMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": name,
                "creationTimestamp": crate::rest::now_rfc3339(),
                "labels": u.labels,
            },
            "timestamp": rfc3339_ms(u.cpu.at_ms),
            "window": sample::go_duration(u.cpu.window_ms),
            "usage": {
                "cpu": sample::cpu_quantity(u.cpu.cores),
                "memory": sample::memory_quantity(u.memory),
            },
        })
    }

    fn pod_object(ns: &str, name: &str, u: &PodUsage) -> Value {
        json!({
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": name,
                "namespace": ns,
                "creationTimestamp": crate::rest::now_rfc3339(),
                "labels": u.labels,
            },
            "timestamp": rfc3339_ms(u.at_ms),
            "window": sample::go_duration(u.window_ms),
            "containers": u.containers.iter().map(|(c, cores, bytes)| json!({
                "name": c,
                "usage": {
                    "cpu": sample::cpu_quantity(*cores),
                    "memory": sample::memory_quantity(*bytes),
                },
            })).collect::<Vec<_>>(),
        })
    }

    /// Answers a GET of NodeMetrics or PodMetrics (one or a list).
    pub fn serve(&self, call: &Call) -> Result<Response<Body>, ApiError> {
        let info = call.info();
        let want = h::negotiate(&call.headers)?;
        let served = self
            .served
            .read()
            .map_err(|_| ApiError::internal("metrics state poisoned"))?;
        let nodes = info.plural == "nodes";
        if let Some(name) = call.route.name.as_deref() {
            let obj = if nodes {
                served.nodes.get(name).map(|u| Self::node_object(name, u))
            } else {
                let ns = call.ns().unwrap_or("default");
                served
                    .pods
                    .get(&(ns.to_string(), name.to_string()))
                    .map(|u| Self::pod_object(ns, name, u))
            };
            let obj = obj.ok_or_else(|| {
                ApiError::not_found(
                    GROUP,
                    if nodes { "nodemetrics" } else { "podmetrics" },
                    name,
                )
            })?;
            return Ok(h::json(200, &crate::rest::render(call, want, obj)));
        }
        let filter = crate::filter::Filter::from_query(info, None, &call.query)?;
        let items: Vec<Value> = if nodes {
            served
                .nodes
                .iter()
                .map(|(n, u)| Self::node_object(n, u))
                .filter(|o| filter.matches(o))
                .collect()
        } else {
            served
                .pods
                .iter()
                .filter(|((ns, _), _)| call.ns().is_none_or(|want| want == ns))
                .map(|((ns, n), u)| Self::pod_object(ns, n, u))
                .filter(|o| filter.matches(o))
                .collect()
        };
        let body = crate::rest::render_list(call, want, items, json!({}));
        Ok(h::json(200, &body))
    }
}

/// A container's (name, CPU rate, working set) in one scrape.
type ContainerUsage = (String, Option<Rate>, Option<f64>);

/// Usage of each pod on a node whose every running container has a rate.
fn pod_usage(before: Option<&NodeScrape>, now: &NodeScrape) -> Vec<((String, String), PodUsage)> {
    let mut by_pod: BTreeMap<(String, String), Vec<ContainerUsage>> = BTreeMap::new();
    for (key, c) in &now.containers {
        let (ns, pod, ctr): &ContainerKey = key;
        let prev: Option<Cpu> = before
            .and_then(|b| b.containers.get(key))
            .filter(|p| p.started_ms == c.started_ms)
            .and_then(|p| p.cpu);
        let r = c.cpu.and_then(|cpu| sample::rate(prev, cpu, c.started_ms));
        by_pod
            .entry((ns.clone(), pod.clone()))
            .or_default()
            .push((ctr.clone(), r, c.memory));
    }
    by_pod
        .into_iter()
        .filter_map(|(key, ctrs)| {
            let mut containers = Vec::new();
            let (mut at_ms, mut window_ms) = (0, i64::MAX);
            for (name, r, mem) in ctrs {
                let (r, mem) = (r?, mem?);
                at_ms = at_ms.max(r.at_ms);
                window_ms = window_ms.min(r.window_ms);
                containers.push((name, r.cores, mem));
            }
            if containers.is_empty() {
                return None;
            }
            Some((
                key,
                PodUsage {
                    labels: Value::Null,
                    at_ms,
                    window_ms,
                    containers,
                },
            ))
        })
        .collect()
}

/// Every stored object of a kind (in a namespace).
async fn list(
    rest: &Rest,
    group: &str,
    plural: &str,
    ns: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let info = api::catalogue::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not in the catalogue")))?;
    let prefix = crate::objects::collection_prefix(info, ns);
    let kvs = rest.store.range(&prefix, None, 0, 0).await?;
    Ok(kvs
        .kvs
        .iter()
        .filter_map(|kv| crate::objects::decode_kv(info, kv).ok())
        .collect())
}

/// The body of a kubelet's `/metrics/resource`.
async fn fetch(rest: &Rest, ip: &str, port: u16) -> Result<String, String> {
    let resp = crate::rest::node_proxy::get(rest, ip, port, "/metrics/resource")
        .await
        .map_err(|e| e.message)?;
    if !resp.status().is_success() {
        return Err(format!("kubelet answered {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}
