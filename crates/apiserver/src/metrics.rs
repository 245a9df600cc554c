//! Prometheus metrics: request counts and latency histograms per verb,
//! resource and code, in the names upstream's apiserver uses.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Request metrics.
#[derive(Default)]
pub struct Metrics {
    totals: Mutex<BTreeMap<(String, String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String, String), Histogram>>,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, verb: &str, group: &str, resource: &str, code: u16, took: Duration) {
        if let Ok(mut t) = self.totals.lock() {
            *t.entry((verb.into(), group.into(), resource.into(), code))
                .or_default() += 1;
        }
        // Watches last as long as the client wants; upstream keeps them out
        // of the latency histogram too.
        if verb == "WATCH" {
            return;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l
                .entry((verb.into(), group.into(), resource.into()))
                .or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            let secs = took.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, resource and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        if let Ok(t) = self.totals.lock() {
            for ((verb, group, resource, code), n) in t.iter() {
                let _ = writeln!(
                    out,
                    "apiserver_request_total{{code=\"{code}\",group=\"{group}\",resource=\"{resource}\",verb=\"{verb}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, group and resource.\n# TYPE apiserver_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for ((verb, group, resource), h) in l.iter() {
                let labels = format!("group=\"{group}\",resource=\"{resource}\",verb=\"{verb}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "apiserver_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe("GET", "", "pods", 200, Duration::from_millis(3));
        m.observe("GET", "", "pods", 200, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "apiserver_request_total{code=\"200\",group=\"\",resource=\"pods\",verb=\"GET\"} 2"
        ));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains(
            "apiserver_request_duration_seconds_count{group=\"\",resource=\"pods\",verb=\"GET\"} 2"
        ));
    }
}
