//! One scrape of a kubelet's `/metrics/resource`, and the usage two
//! scrapes give, computed as metrics-server does: CPU is the rate of the
//! cumulative counter over the window between two samples (or, for a
//! container started since the previous scrape, since its start), memory
//! the latest working set.

use std::collections::HashMap;

/// A cumulative CPU sample: core-seconds at a time (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cpu {
    /// Core-seconds used so far.
    pub seconds: f64,
    /// When it was read (ms since the epoch).
    pub at_ms: i64,
}

/// What one container reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    /// Its cumulative CPU.
    pub cpu: Option<Cpu>,
    /// Its working set in bytes.
    pub memory: Option<f64>,
    /// When it started (ms since the epoch).
    pub started_ms: Option<i64>,
}

/// (namespace, pod, container).
pub type ContainerKey = (String, String, String);

/// What one node reported in one scrape.
#[derive(Debug, Clone, Default)]
pub struct NodeScrape {
    /// The node's cumulative CPU.
    pub cpu: Option<Cpu>,
    /// The node's working set in bytes.
    pub memory: Option<f64>,
    /// Its containers.
    pub containers: HashMap<ContainerKey, Container>,
}

/// Parses a `/metrics/resource` body.
pub fn parse(text: &str) -> Result<NodeScrape, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
    let mut out = NodeScrape::default();
    for s in scrape.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let at_ms = s.timestamp.timestamp_millis();
        let key = || -> Option<ContainerKey> {
            Some((
                s.labels.get("namespace")?.to_string(),
                s.labels.get("pod")?.to_string(),
                s.labels.get("container")?.to_string(),
            ))
        };
        match s.metric.as_str() {
            "node_cpu_usage_seconds_total" => out.cpu = Some(Cpu { seconds: v, at_ms }),
            "node_memory_working_set_bytes" => out.memory = Some(v),
            "container_cpu_usage_seconds_total" => {
                if let Some(k) = key() {
                    out.containers.entry(k).or_default().cpu = Some(Cpu { seconds: v, at_ms });
                }
            }
            "container_memory_working_set_bytes" => {
                if let Some(k) = key() {
                    out.containers.entry(k).or_default().memory = Some(v);
                }
            }
            "container_start_time_seconds" => {
                if let Some(k) = key() {
                    out.containers.entry(k).or_default().started_ms = Some((v * 1000.0) as i64);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A usage over a window: cores, and the window's end and length (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Average cores used over the window.
    pub cores: f64,
    /// The window's end (ms since the epoch).
    pub at_ms: i64,
    /// The window's length (ms).
    pub window_ms: i64,
}

/// The CPU rate between two samples of one counter; None when there is no
/// usable earlier sample (the counter went back: a new run).
pub fn rate(prev: Option<Cpu>, now: Cpu, started_ms: Option<i64>) -> Option<Rate> {
    let from_prev = prev.filter(|p| now.at_ms > p.at_ms && now.seconds >= p.seconds);
    // A container that started after the previous sample: its counter
    // began at zero when it started.
    let from = match (from_prev, started_ms) {
        (Some(p), Some(s)) if s > p.at_ms => Some(Cpu {
            seconds: 0.0,
            at_ms: s,
        }),
        (Some(p), _) => Some(p),
        (None, Some(s)) if s < now.at_ms => Some(Cpu {
            seconds: 0.0,
            at_ms: s,
        }),
        _ => None,
    }?;
    let window_ms = now.at_ms - from.at_ms;
    if window_ms <= 0 {
        return None;
    }
    Some(Rate {
        cores: (now.seconds - from.seconds).max(0.0) / (window_ms as f64 / 1000.0),
        at_ms: now.at_ms,
        window_ms,
    })
}

/// A duration as Go's `time.Duration.String()` prints it (`15.032s`,
/// `1m0.5s`), which is how metrics-server writes `window`.
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let secs = if rest % 1000 == 0 {
        format!("{}", rest / 1000)
    } else {
        let s = format!("{}.{:03}", rest / 1000, rest % 1000);
        s.trim_end_matches('0').to_string()
    };
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// CPU cores as a quantity in nanocores, memory bytes in Ki, as
/// metrics-server encodes them.
pub fn cpu_quantity(cores: f64) -> String {
    format!("{}n", (cores * 1e9).round() as u64)
}

/// Memory bytes as a quantity in Ki.
pub fn memory_quantity(bytes: f64) -> String {
    format!("{}Ki", (bytes / 1024.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="web",namespace="default",pod="web-1"} 2.5 1700000010000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="web",namespace="default",pod="web-1"} 1.048576e+07 1700000010000
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="web",namespace="default",pod="web-1"} 1.7e+09 1700000010000
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 1234.5 1700000010000
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 2.147483648e+09 1700000010000
# TYPE resource_scrape_error gauge
resource_scrape_error 0
"#;

    #[test]
    fn a_kubelet_body_parses_into_node_and_container_samples() {
        let s = parse(BODY).unwrap();
        assert_eq!(
            s.cpu,
            Some(Cpu {
                seconds: 1234.5,
                at_ms: 1_700_000_010_000
            })
        );
        assert_eq!(s.memory, Some(2_147_483_648.0));
        let c = &s.containers[&("default".into(), "web-1".into(), "web".into())];
        assert_eq!(c.cpu.unwrap().seconds, 2.5);
        assert_eq!(c.memory, Some(10_485_760.0));
        assert_eq!(c.started_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn rates_come_from_two_samples_or_from_the_start_of_a_new_run() {
        let a = Cpu {
            seconds: 10.0,
            at_ms: 0,
        };
        let b = Cpu {
            seconds: 13.0,
            at_ms: 15_000,
        };
        let r = rate(Some(a), b, None).unwrap();
        assert!((r.cores - 0.2).abs() < 1e-9);
        assert_eq!(r.window_ms, 15_000);
        // No earlier sample and no start time: nothing yet.
        assert_eq!(rate(None, b, None), None);
        // A first sample of a container that started 5 s before it.
        let r = rate(None, b, Some(10_000)).unwrap();
        assert!((r.cores - 2.6).abs() < 1e-9);
        assert_eq!(r.window_ms, 5_000);
        // The counter went back (a restart between scrapes) and the new
        // run started after the previous sample.
        let restarted = Cpu {
            seconds: 1.0,
            at_ms: 15_000,
        };
        let r = rate(Some(a), restarted, Some(14_000)).unwrap();
        assert!((r.cores - 1.0).abs() < 1e-9);
    }

    #[test]
    fn windows_and_quantities_print_as_metrics_server_prints_them() {
        assert_eq!(go_duration(15_032), "15.032s");
        assert_eq!(go_duration(20_000), "20s");
        assert_eq!(go_duration(60_500), "1m0.5s");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(cpu_quantity(0.25), "250000000n");
        assert_eq!(memory_quantity(10_485_760.0), "10240Ki");
    }
}
