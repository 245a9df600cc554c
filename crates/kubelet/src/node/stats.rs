//! `/stats/summary`: the node's and its pods' resource usage in the
//! kubelet Summary API shape (stats.k8s.io/v1alpha1), which metrics-server
//! and `kubectl get --raw /api/v1/nodes/N/proxy/stats/summary` read.
//!
//! CPU and memory come from the cgroups r8s created (v1 `cpuacct` and
//! `memory`, or v2 `cpu.stat` and `memory.current`), the node's from
//! `/proc`; `usageNanoCores` is the rate since the previous request, as
//! upstream computes it from its own samples.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

use crate::registry::Registry;

/// What the summary needs besides the pod registry.
#[derive(Debug)]
pub struct StatsCtx {
    /// The Node's name.
    pub node_name: String,
    /// Top-level cgroup of the pods.
    pub cgroup_root: String,
    /// The agent's data dir (its file system is the node's `fs`).
    pub data_dir: PathBuf,
    /// When the agent started.
    pub started: String,
    /// Previous CPU samples by cgroup (or "node"): (when, total ns).
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

fn now() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    t.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(t)
        .to_string()
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// CPU time (ns) and memory (usage, working set, rss) of one cgroup path
/// (relative to the hierarchy roots).
pub(crate) fn cgroup_usage(rel: &str) -> (Option<u64>, Option<(u64, u64, u64)>) {
    let base = Path::new("/sys/fs/cgroup");
    if unified() {
        let d = base.join(rel);
        let cpu = stat_field(&d.join("cpu.stat"), "usage_usec").map(|us| us * 1000);
        let mem = read_u64(&d.join("memory.current")).map(|usage| {
            let stat = d.join("memory.stat");
            let inactive = stat_field(&stat, "inactive_file").unwrap_or(0);
            let rss = stat_field(&stat, "anon").unwrap_or(0);
            (usage, usage.saturating_sub(inactive), rss)
        });
        return (cpu, mem);
    }
    let cpu = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .find_map(|h| read_u64(&base.join(h).join(rel).join("cpuacct.usage")));
    let m = base.join("memory").join(rel);
    let mem = read_u64(&m.join("memory.usage_in_bytes")).map(|usage| {
        let stat = m.join("memory.stat");
        let inactive = stat_field(&stat, "total_inactive_file").unwrap_or(0);
        let rss = stat_field(&stat, "total_rss").unwrap_or(0);
        (usage, usage.saturating_sub(inactive), rss)
    });
    (cpu, mem)
}

impl StatsCtx {
    /// A context for `node_name`.
    pub fn new(node_name: &str, cgroup_root: &str, data_dir: &Path) -> StatsCtx {
        StatsCtx {
            node_name: node_name.to_string(),
            cgroup_root: cgroup_root.trim_matches('/').to_string(),
            data_dir: data_dir.to_path_buf(),
            started: now(),
            last: Mutex::default(),
        }
    }

    /// The rate in nano-cores since the previous sample of `key`.
    fn nano_cores(&self, key: &str, total_ns: u64) -> Option<u64> {
        let mut last = self.last.lock().ok()?;
        let now = Instant::now();
        let prev = last.insert(key.to_string(), (now, total_ns));
        let (at, before) = prev?;
        let secs = now.duration_since(at).as_secs_f64();
        (secs > 0.0).then(|| (total_ns.saturating_sub(before) as f64 / secs) as u64)
    }

    fn cpu_json(&self, key: &str, total_ns: Option<u64>, time: &str) -> Value {
        let mut v = json!({ "time": time });
        if let Some(t) = total_ns {
            v["usageCoreNanoSeconds"] = json!(t);
            if let Some(r) = self.nano_cores(key, t) {
                v["usageNanoCores"] = json!(r);
            }
        }
        v
    }

    fn memory_json(mem: Option<(u64, u64, u64)>, time: &str, limit: Option<u64>) -> Value {
        let mut v = json!({ "time": time });
        if let Some((usage, ws, rss)) = mem {
            v["usageBytes"] = json!(usage);
            v["workingSetBytes"] = json!(ws);
            v["rssBytes"] = json!(rss);
            if let Some(l) = limit {
                v["availableBytes"] = json!(l.saturating_sub(ws));
            }
        }
        v
    }

    /// The node's cumulative CPU time (ns, from `/proc/stat`) and memory
    /// working set (total less available, as upstream's kubelet reports).
    pub fn node_usage(&self) -> (Option<u64>, u64) {
        let (cpu, total, avail, _) = node_proc();
        (cpu, total.saturating_sub(avail))
    }

    /// The machine's memory in bytes.
    pub fn memory_total(&self) -> u64 {
        node_proc().1
    }

    fn node(&self, time: &str) -> Value {
        let (cpu_ns, total, avail, free) = node_proc();
        let fs = nix::sys::statvfs::statvfs(&self.data_dir).ok().map(|s| {
            let bs = s.fragment_size();
            let cap = s.blocks() * bs;
            let availb = s.blocks_available() * bs;
            let used = (s.blocks() - s.blocks_free()) * bs;
            json!({"time": time, "capacityBytes": cap, "availableBytes": availb,
                "usedBytes": used, "inodes": s.files(), "inodesFree": s.files_free(),
                "inodesUsed": s.files() - s.files_free()})
        });
        let procs = std::fs::read_dir("/proc")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                    .count()
            })
            .unwrap_or(0);
        json!({
            "nodeName": self.node_name,
            "startTime": self.started,
            "cpu": self.cpu_json("node", cpu_ns, time),
            "memory": {
                "time": time,
                "availableBytes": avail,
                "usageBytes": total.saturating_sub(free),
                "workingSetBytes": total.saturating_sub(avail),
            },
            "fs": fs,
            "runtime": {"imageFs": fs},
            "rlimit": {
                "time": time,
                "maxpid": read_u64(Path::new("/proc/sys/kernel/pid_max")),
                "curproc": procs,
            },
        })
    }

    /// The whole summary.
    pub fn summary(&self, registry: &Registry) -> Value {
        let time = now();
        let pods: Vec<((String, String), crate::registry::PodEntry)> = registry
            .lock()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for ((ns, name), entry) in pods {
            let pod_rel = format!("{}/pod{}", self.cgroup_root, entry.uid);
            let mut containers = Vec::new();
            for (cname, c) in &entry.containers {
                let (Some(id), true) = (&c.id, c.running) else {
                    continue;
                };
                let rel = format!("{pod_rel}/{id}");
                let (cpu, mem) = cgroup_usage(&rel);
                containers.push(json!({
                    "name": cname,
                    "startTime": c.started_at.as_deref().unwrap_or(&time),
                    "cpu": self.cpu_json(&rel, cpu, &time),
                    "memory": Self::memory_json(mem, &time, None),
                }));
            }
            let (cpu, mem) = cgroup_usage(&pod_rel);
            let procs = cgroup_procs(&pod_rel);
            out.push(json!({
                "podRef": {"name": name, "namespace": ns, "uid": entry.uid},
                "startTime": time,
                "containers": containers,
                "cpu": self.cpu_json(&pod_rel, cpu, &time),
                "memory": Self::memory_json(mem, &time, None),
                "process_stats": {"process_count": procs},
            }));
        }
        json!({ "node": self.node(&time), "pods": out })
    }
}

/// The node's CPU time (ns) and memory (total, available, free bytes).
fn node_proc() -> (Option<u64>, u64, u64, u64) {
    // /proc/stat: user nice system idle iowait irq softirq steal, in
    // USER_HZ (100/s on Linux).
    let cpu_ns = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let f: Vec<u64> = s
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let busy: u64 = f
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum();
        Some(busy * 10_000_000)
    });
    // /proc/meminfo values are "N kB".
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |k: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |v| v * 1024)
    };
    (cpu_ns, kb("MemTotal"), kb("MemAvailable"), kb("MemFree"))
}

/// Processes in a cgroup subtree.
pub(crate) fn cgroup_procs(rel: &str) -> usize {
    fn walk(d: &Path) -> usize {
        let here = std::fs::read_to_string(d.join("cgroup.procs"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        here + std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| walk(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    }
    let base = Path::new("/sys/fs/cgroup");
    if unified() {
        walk(&base.join(rel))
    } else {
        walk(&base.join("memory").join(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_summary_reads_proc_and_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = StatsCtx::new("n1", "r8s", dir.path());
        let reg: Registry = Default::default();
        let s = ctx.summary(&reg);
        assert_eq!(s["node"]["nodeName"], "n1");
        assert!(s["node"]["memory"]["availableBytes"].as_u64().unwrap() > 0);
        assert!(s["node"]["fs"]["capacityBytes"].as_u64().unwrap() > 0);
        assert!(s["node"]["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0);
        assert!(
            s["node"]["cpu"].get("usageNanoCores").is_none(),
            "no rate yet"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        let s = ctx.summary(&reg);
        assert!(
            s["node"]["cpu"]["usageNanoCores"].is_u64(),
            "a rate from two samples"
        );
        assert_eq!(s["pods"], json!([]));
    }
}
