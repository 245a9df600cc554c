//! The kubelet's Prometheus endpoints, in upstream's names and shapes:
//! `/metrics/resource` (what metrics-server and r8s's own metrics API
//! scrape: cumulative CPU and working-set memory of the node, pods and
//! containers), `/metrics/cadvisor` (cAdvisor's container series) and
//! `/metrics` (the agent's own: running pods and containers, pod start
//! durations).
//!
//! Every sample is read from the cgroups r8s made when scraped; nothing is
//! cached between scrapes, so a scraper computes rates from its own two
//! samples, as upstream's do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::registry::Registry;
use crate::stats::{StatsCtx, cgroup_usage};

/// Upstream's `kubelet_pod_start_duration_seconds` buckets.
const START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// `kubelet_pod_start_duration_seconds`: one agent per process, so one
/// histogram, as upstream's global registry holds it.
pub static POD_START: std::sync::LazyLock<Histogram> = std::sync::LazyLock::new(Histogram::default);

/// A cumulative Prometheus histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<(Vec<u64>, u64, f64)>,
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&self, secs: f64) {
        let Ok(mut h) = self.inner.lock() else {
            return;
        };
        if h.0.is_empty() {
            h.0 = vec![0; START_BUCKETS.len()];
        }
        for (i, le) in START_BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.0[i] += 1;
            }
        }
        h.1 += 1;
        h.2 += secs;
    }

    fn write(&self, out: &mut String, name: &str) {
        let Ok(h) = self.inner.lock() else {
            return;
        };
        for (i, le) in START_BUCKETS.iter().enumerate() {
            let n = h.0.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.1);
        let _ = writeln!(out, "{name}_sum {}", h.2);
        let _ = writeln!(out, "{name}_count {}", h.1);
    }
}

/// Escapes a label value as the exposition format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One running container as the endpoints see it.
struct Ctr {
    ns: String,
    pod: String,
    name: String,
    id: String,
    image: String,
    cgroup: String,
    started: Option<f64>,
}

struct Pod {
    ns: String,
    name: String,
    cgroup: String,
}

fn snapshot(ctx: &StatsCtx, registry: &Registry) -> (Vec<Pod>, Vec<Ctr>, usize) {
    let Ok(r) = registry.lock() else {
        return (Vec::new(), Vec::new(), 0);
    };
    let mut pods = Vec::new();
    let mut ctrs = Vec::new();
    let mut exited = 0;
    for ((ns, name), entry) in r.iter() {
        let pod_rel = format!("{}/pod{}", ctx.cgroup_root, entry.uid);
        pods.push(Pod {
            ns: ns.clone(),
            name: name.clone(),
            cgroup: pod_rel.clone(),
        });
        for (cname, c) in &entry.containers {
            let (Some(id), true) = (&c.id, c.running) else {
                exited += 1;
                continue;
            };
            let image = entry
                .pod
                .as_ref()
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .find(|c| &c.name == cname)
                })
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            ctrs.push(Ctr {
                ns: ns.clone(),
                pod: name.clone(),
                name: cname.clone(),
                id: id.clone(),
                image,
                cgroup: format!("{pod_rel}/{id}"),
                started: c.started_at.as_deref().and_then(|t| {
                    t.parse::<k8s_openapi::jiff::Timestamp>()
                        .ok()
                        .map(|t| t.as_millisecond() as f64 / 1000.0)
                }),
            });
        }
    }
    pods.sort_by(|a, b| (&a.ns, &a.name).cmp(&(&b.ns, &b.name)));
    ctrs.sort_by(|a, b| (&a.ns, &a.pod, &a.name).cmp(&(&b.ns, &b.pod, &b.name)));
    (pods, ctrs, exited)
}

/// `/metrics/resource`: the resource metrics endpoint (Prometheus text).
pub fn resource(ctx: &StatsCtx, registry: &Registry) -> String {
    let ts = now_ms();
    let (pods, ctrs, _) = snapshot(ctx, registry);
    let mut out = String::new();
    let usage: Vec<_> = ctrs.iter().map(|c| cgroup_usage(&c.cgroup)).collect();
    header(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    );
    for (c, (cpu, _)) in ctrs.iter().zip(&usage) {
        if let Some(ns) = cpu {
            let l = labels(&[
                ("container", &c.name),
                ("namespace", &c.ns),
                ("pod", &c.pod),
            ]);
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{l} {} {ts}",
                *ns as f64 / 1e9
            );
        }
    }
    header(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    );
    for (c, (_, mem)) in ctrs.iter().zip(&usage) {
        if let Some((_, ws, _)) = mem {
            let l = labels(&[
                ("container", &c.name),
                ("namespace", &c.ns),
                ("pod", &c.pod),
            ]);
            let _ = writeln!(out, "container_memory_working_set_bytes{l} {ws} {ts}");
        }
    }
    header(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    );
    for c in &ctrs {
        if let Some(s) = c.started {
            let l = labels(&[
                ("container", &c.name),
                ("namespace", &c.ns),
                ("pod", &c.pod),
            ]);
            let _ = writeln!(out, "container_start_time_seconds{l} {s} {ts}");
        }
    }
    let (node_cpu, node_ws) = ctx.node_usage();
    header(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    );
    if let Some(ns) = node_cpu {
        let _ = writeln!(out, "node_cpu_usage_seconds_total {} {ts}", ns as f64 / 1e9);
    }
    header(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    );
    let _ = writeln!(out, "node_memory_working_set_bytes {node_ws} {ts}");
    let pod_usage: Vec<_> = pods.iter().map(|p| cgroup_usage(&p.cgroup)).collect();
    header(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    );
    for (p, (cpu, _)) in pods.iter().zip(&pod_usage) {
        if let Some(ns) = cpu {
            let l = labels(&[("namespace", &p.ns), ("pod", &p.name)]);
            let _ = writeln!(
                out,
                "pod_cpu_usage_seconds_total{l} {} {ts}",
                *ns as f64 / 1e9
            );
        }
    }
    header(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    );
    for (p, (_, mem)) in pods.iter().zip(&pod_usage) {
        if let Some((_, ws, _)) = mem {
            let l = labels(&[("namespace", &p.ns), ("pod", &p.name)]);
            let _ = writeln!(out, "pod_memory_working_set_bytes{l} {ws} {ts}");
        }
    }
    header(
        &mut out,
        "resource_scrape_error",
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    );
    let _ = writeln!(out, "resource_scrape_error 0");
    out
}

/// `/metrics/cadvisor`: cAdvisor's per-cgroup series (containers, their
/// pods' cgroups with `container=""`, and the machine).
pub fn cadvisor(ctx: &StatsCtx, registry: &Registry) -> String {
    let ts = now_ms();
    let (pods, ctrs, _) = snapshot(ctx, registry);
    // (labels, cgroup) for every series: containers, then pod cgroups.
    let mut series: Vec<(BTreeMap<&str, String>, String)> = Vec::new();
    for c in &ctrs {
        let mut l = BTreeMap::new();
        l.insert("container", c.name.clone());
        l.insert("id", format!("/{}", c.cgroup));
        l.insert("image", c.image.clone());
        l.insert("name", c.id.clone());
        l.insert("namespace", c.ns.clone());
        l.insert("pod", c.pod.clone());
        series.push((l, c.cgroup.clone()));
    }
    for p in &pods {
        let mut l = BTreeMap::new();
        l.insert("container", String::new());
        l.insert("id", format!("/{}", p.cgroup));
        l.insert("image", String::new());
        l.insert("name", String::new());
        l.insert("namespace", p.ns.clone());
        l.insert("pod", p.name.clone());
        series.push((l, p.cgroup.clone()));
    }
    let render = |l: &BTreeMap<&str, String>| {
        let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        labels(&pairs)
    };
    let usage: Vec<_> = series.iter().map(|(_, cg)| cgroup_usage(cg)).collect();
    let mut out = String::new();
    header(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
    );
    for ((l, _), (cpu, _)) in series.iter().zip(&usage) {
        if let Some(ns) = cpu {
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{} {} {ts}",
                render(l),
                *ns as f64 / 1e9
            );
        }
    }
    for (name, help, pick) in [
        (
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            0usize,
        ),
        (
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            1,
        ),
        ("container_memory_rss", "Size of RSS in bytes.", 2),
    ] {
        header(&mut out, name, "gauge", help);
        for ((l, _), (_, mem)) in series.iter().zip(&usage) {
            if let Some(m) = mem {
                let v = [m.0, m.1, m.2][pick];
                let _ = writeln!(out, "{name}{} {v} {ts}", render(l));
            }
        }
    }
    header(
        &mut out,
        "container_last_seen",
        "gauge",
        "Last time a container was seen by the exporter",
    );
    for (l, _) in &series {
        let _ = writeln!(
            out,
            "container_last_seen{} {} {ts}",
            render(l),
            ts as f64 / 1000.0
        );
    }
    header(
        &mut out,
        "machine_cpu_cores",
        "gauge",
        "Number of logical CPU cores.",
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(out, "machine_cpu_cores {cores}");
    header(
        &mut out,
        "machine_memory_bytes",
        "gauge",
        "Amount of memory installed on the machine.",
    );
    let _ = writeln!(out, "machine_memory_bytes {}", ctx.memory_total());
    out
}

/// `/metrics`: the agent's own metrics.
pub fn agent(ctx: &StatsCtx, registry: &Registry) -> String {
    let (pods, ctrs, exited) = snapshot(ctx, registry);
    let mut out = String::new();
    header(
        &mut out,
        "kubelet_node_name",
        "gauge",
        "[ALPHA] The node's name. The count is always 1.",
    );
    let _ = writeln!(
        out,
        "kubelet_node_name{} 1",
        labels(&[("node", &ctx.node_name)])
    );
    header(
        &mut out,
        "kubelet_running_pods",
        "gauge",
        "[ALPHA] Number of pods that have a running pod sandbox",
    );
    let _ = writeln!(out, "kubelet_running_pods {}", pods.len());
    header(
        &mut out,
        "kubelet_running_containers",
        "gauge",
        "[ALPHA] Number of containers currently running",
    );
    let _ = writeln!(
        out,
        "kubelet_running_containers{{container_state=\"running\"}} {}",
        ctrs.len()
    );
    let _ = writeln!(
        out,
        "kubelet_running_containers{{container_state=\"exited\"}} {exited}"
    );
    header(
        &mut out,
        "kubelet_pod_start_duration_seconds",
        "histogram",
        "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
    );
    POD_START.write(&mut out, "kubelet_pod_start_duration_seconds");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_histograms_are_cumulative() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\n")]),
            "{a=\"x\\\"y\\\\z\\n\"}".to_string()
        );
        let h = Histogram::default();
        h.observe(0.7);
        h.observe(4.5);
        let mut s = String::new();
        h.write(&mut s, "m");
        assert!(s.contains("m_bucket{le=\"0.5\"} 0\n"), "{s}");
        assert!(s.contains("m_bucket{le=\"1\"} 1\n"), "{s}");
        assert!(s.contains("m_bucket{le=\"5\"} 2\n"), "{s}");
        assert!(s.contains("m_bucket{le=\"+Inf\"} 2\n"), "{s}");
        assert!(s.contains("m_count 2\n"), "{s}");
        assert!(s.contains("m_sum 5.2\n"), "{s}");
    }

    #[test]
    fn the_node_series_are_there_without_pods() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = StatsCtx::new("n1", "r8s", dir.path());
        let reg: Registry = Default::default();
        let r = resource(&ctx, &reg);
        assert!(r.contains("\nnode_cpu_usage_seconds_total "), "{r}");
        assert!(r.contains("\nnode_memory_working_set_bytes "), "{r}");
        assert!(r.contains("\nresource_scrape_error 0\n"), "{r}");
        let a = agent(&ctx, &reg);
        assert!(a.contains("kubelet_node_name{node=\"n1\"} 1"), "{a}");
        assert!(a.contains("kubelet_running_pods 0"), "{a}");
        let c = cadvisor(&ctx, &reg);
        assert!(c.contains("machine_cpu_cores "), "{c}");
    }
}
