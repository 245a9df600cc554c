//! The eviction manager: every 10 s (upstream's housekeeping period) it
//!
//! 1. enforces local ephemeral storage limits, as upstream's
//!    `LocalStorageCapacityIsolation`: a pod whose disk emptyDir outgrows
//!    its `sizeLimit`, whose containers' writable layers and logs outgrow
//!    their `ephemeral-storage` limits, or whose total outgrows the sum of
//!    those limits is evicted at once (grace 0);
//! 2. under a crossed `--eviction-hard` threshold, or an `--eviction-soft`
//!    one that has held for its `--eviction-soft-grace-period`, evicts one
//!    pod per pass (grace 1 s for hard thresholds as upstream; for soft
//!    ones the pod's own, capped by `--eviction-max-pod-grace-period`),
//!    ranked as upstream ranks:
//!    for memory and disk, pods using more than they request first, then
//!    lower priority first, then by how far usage exceeds the request; for
//!    PIDs by priority, then process count.
//!
//! An evicted pod stays, Failed with reason `Evicted`, the message upstream
//! writes and a `DisruptionTarget` condition; its worker stops it (see
//! `pods.rs`). Critical pods (priority of system-node-critical and above)
//! are never evicted. Memory-backed emptyDirs count as memory (tmpfs pages
//! are charged to the pod's memory cgroup), not disk.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::Agent;
use crate::pressure::{Amount, Signal, Threshold};

/// How often the manager looks.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Priority from which pods are never evicted (system-node-critical is
/// 2000001000, system-cluster-critical 2000000000).
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Why and how a pod is to be stopped by its worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `status.reason` (`Evicted`, `DeadlineExceeded`).
    pub reason: String,
    /// `status.message`.
    pub message: String,
    /// How long the containers get between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Whether the pod gets the `DisruptionTarget` condition.
    pub disruption: bool,
}

/// Verdicts waiting for their pod's worker, by pod uid.
pub type Pending = Arc<Mutex<HashMap<String, Verdict>>>;

/// What one pod uses now.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    /// Working set of the pod's memory cgroup.
    pub memory: u64,
    /// Working set by container name.
    pub container_memory: HashMap<String, u64>,
    /// Writable layer plus logs, by container name.
    pub container_disk: HashMap<String, u64>,
    /// Disk emptyDir usage by volume name.
    pub empty_dirs: HashMap<String, u64>,
    /// Processes in the pod's cgroup.
    pub processes: u64,
}

impl Usage {
    /// Local ephemeral storage: containers' layers and logs, and emptyDirs.
    pub fn disk(&self) -> u64 {
        self.container_disk.values().sum::<u64>() + self.empty_dirs.values().sum::<u64>()
    }
}

/// Bytes allocated (as `du` counts) under `path`, not crossing mounts.
pub fn disk_usage(path: &Path) -> u64 {
    fn walk(p: &Path, dev: u64) -> u64 {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if md.dev() != dev {
            return 0;
        }
        let mut n = md.blocks() * 512;
        if md.is_dir()
            && let Ok(rd) = std::fs::read_dir(p)
        {
            for e in rd.flatten() {
                n += walk(&e.path(), dev);
            }
        }
        n
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) => walk(path, md.dev()),
        Err(_) => 0,
    }
}

/// A quantity as upstream prints a binary-SI `resource.Quantity`: the
/// largest suffix that divides it exactly (`100Mi`, `71684Ki`, `1000`).
pub fn quantity(n: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
    if n == 0 {
        return "0".into();
    }
    for (i, s) in SUFFIXES.iter().enumerate() {
        let unit = 1u64 << (10 * (6 - i));
        if n.is_multiple_of(unit) {
            return format!("{}{s}", n / unit);
        }
    }
    n.to_string()
}

fn limit_of(c: &Container, name: &str) -> Option<(u64, String)> {
    let q = c.resources.as_ref()?.limits.as_ref()?.get(name)?;
    let v = crate::resources::bytes(q)?;
    Some((v.max(0) as u64, q.0.trim().to_string()))
}

fn request_of(c: &Container, name: &str) -> (u64, String) {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|m| m.get(name))
        .and_then(|q| {
            Some((
                crate::resources::bytes(q)?.max(0) as u64,
                q.0.trim().to_string(),
            ))
        })
        .unwrap_or((0, "0".into()))
}

/// The pod's request of `name`: its containers' sum, or the largest init
/// container's if that is more (upstream's effective request).
fn pod_request(pod: &Pod, name: &str) -> u64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let apps: u64 = spec.containers.iter().map(|c| request_of(c, name).0).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| request_of(c, name).0)
        .max()
        .unwrap_or(0);
    apps.max(init)
}

/// Why a pod breaks its local storage limits, in upstream's words.
pub fn local_storage_violation(pod: &Pod, u: &Usage) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for v in spec.volumes.iter().flatten() {
        let Some(ed) = &v.empty_dir else { continue };
        if ed.medium.as_deref() == Some("Memory") {
            continue;
        }
        let Some(limit) = &ed.size_limit else {
            continue;
        };
        let Some(max) = crate::resources::bytes(limit).filter(|b| *b > 0) else {
            continue;
        };
        if u.empty_dirs
            .get(&v.name)
            .is_some_and(|used| *used > max as u64)
        {
            return Some(format!(
                "Usage of EmptyDir volume \"{}\" exceeds the limit \"{}\". ",
                v.name,
                limit.0.trim()
            ));
        }
    }
    let limits: Vec<u64> = spec
        .containers
        .iter()
        .filter_map(|c| limit_of(c, "ephemeral-storage").map(|l| l.0))
        .collect();
    if !limits.is_empty() {
        let total: u64 = limits.iter().sum();
        if u.disk() > total {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                quantity(total)
            ));
        }
    }
    for c in &spec.containers {
        let Some((max, text)) = limit_of(c, "ephemeral-storage") else {
            continue;
        };
        if u.container_disk
            .get(&c.name)
            .is_some_and(|used| *used > max)
        {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit \"{text}\". ",
                c.name
            ));
        }
    }
    None
}

/// The resource a signal reclaims, as upstream names it in messages.
fn resource_of(s: Signal) -> &'static str {
    match s {
        Signal::MemoryAvailable => "memory",
        Signal::PidAvailable => "pids",
        Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
        _ => "ephemeral-storage",
    }
}

/// A pod as the ranking sees it.
#[derive(Debug, Clone, Copy)]
pub struct Rank {
    /// `spec.priority`.
    pub priority: i32,
    /// What it uses of the resource.
    pub usage: u64,
    /// What it requests of it.
    pub request: u64,
}

/// Orders candidates, the first to evict first (upstream's
/// `rankMemoryPressure`/`rankDiskPressureFunc`; for PIDs and inodes,
/// requests are 0 so it is priority, then usage).
pub fn rank(cands: &mut [(usize, Rank)]) {
    cands.sort_by(|(_, a), (_, b)| {
        let exceeds = |r: &Rank| r.usage > r.request;
        exceeds(b)
            .cmp(&exceeds(a))
            .then(a.priority.cmp(&b.priority))
            .then(
                b.usage
                    .saturating_sub(b.request)
                    .cmp(&a.usage.saturating_sub(a.request)),
            )
    });
}

/// What the threshold's minimum is, for the message.
fn threshold_quantity(t: &Threshold, capacity: u64) -> u64 {
    match t.value {
        Amount::Absolute(v) => v,
        Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
    }
}

/// Upstream's eviction message for a pod evicted to reclaim `resource`.
pub fn pressure_message(
    resource: &str,
    threshold: u64,
    available: u64,
    pod: &Pod,
    usage: &HashMap<String, u64>,
) -> String {
    let mut m = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. ",
        quantity(threshold),
        quantity(available)
    );
    if resource == "memory" || resource == "ephemeral-storage" {
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let (req, req_text) = request_of(c, resource);
            if let Some(used) = usage.get(&c.name)
                && *used > req
            {
                m.push_str(&format!(
                    "Container {} was using {}, request is {req_text}, has larger consumption of {resource}. ",
                    c.name,
                    quantity(*used)
                ));
            }
        }
    }
    m
}

/// Measures one pod (disk only when asked: walking layers costs).
fn measure(agent: &Agent, entry: &crate::registry::PodEntry, pod: &Pod, disk: bool) -> Usage {
    let root = &agent.opts.cgroup_root;
    let pod_rel = format!("{root}/pod{}", entry.uid);
    let mut u = Usage {
        memory: crate::stats::cgroup_usage(&pod_rel).1.map_or(0, |m| m.1),
        processes: crate::stats::cgroup_procs(&pod_rel) as u64,
        ..Default::default()
    };
    let pod_dir = agent.opts.data_dir.join("agent/pods").join(&entry.uid);
    for (name, c) in &entry.containers {
        if let (Some(id), true) = (&c.id, c.running) {
            let rel = format!("{pod_rel}/{id}");
            let mem = crate::stats::cgroup_usage(&rel).1.map_or(0, |m| m.1);
            u.container_memory.insert(name.clone(), mem);
            if disk {
                let upper = agent
                    .opts
                    .data_dir
                    .join("agent/containers")
                    .join(id)
                    .join("upper");
                let logs = pod_dir.join("logs").join(name);
                u.container_disk
                    .insert(name.clone(), disk_usage(&upper) + disk_usage(&logs));
            }
        }
    }
    if disk {
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(ed) = &v.empty_dir
                && ed.medium.as_deref() != Some("Memory")
            {
                let used = disk_usage(&pod_dir.join("volumes").join(&v.name));
                u.empty_dirs.insert(v.name.clone(), used);
            }
        }
    }
    u
}

/// Whether any container of the pod has a local storage limit to check.
fn has_local_limits(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| limit_of(c, "ephemeral-storage").is_some())
            || s.volumes.iter().flatten().any(|v| {
                v.empty_dir.as_ref().is_some_and(|e| {
                    e.size_limit.is_some() && e.medium.as_deref() != Some("Memory")
                })
            })
    })
}

/// Runs the manager until the agent stops.
pub async fn run(agent: Arc<Agent>) {
    let mut state = PassState::default();
    loop {
        tokio::time::sleep(PERIOD).await;
        let a = agent.clone();
        match tokio::task::spawn_blocking(move || {
            pass(&a, &mut state);
            state
        })
        .await
        {
            Ok(s) => state = s,
            Err(e) => {
                tracing::warn!(error = %e, "eviction pass failed");
                state = PassState::default();
            }
        }
    }
}

/// What one pass hands the next.
#[derive(Default)]
struct PassState {
    /// When each soft threshold (by signal) was first seen crossed, since
    /// it last cleared.
    soft_seen: HashMap<&'static str, std::time::Instant>,
    /// The signals whose thresholds drove the last pass: they stay met
    /// until their `--eviction-minimum-reclaim` margin is free.
    met: std::collections::HashSet<String>,
}

/// The thresholds crossed now that may drive evictions: hard ones, and
/// soft ones that have held for their grace period (tracked in `seen`);
/// one that was met last pass stays met until its minimum reclaim is
/// free. The flag says whether it is soft.
fn thresholds_met(
    agent: &Agent,
    state: &mut PassState,
) -> Vec<(Threshold, crate::pressure::Reading, bool)> {
    let data_dir = agent.opts.data_dir.clone();
    let images_dir = agent.opts.images_dir();
    let last = std::mem::take(&mut state.met);
    let read = |t: &Threshold, soft: bool| {
        let r = crate::pressure::observe(t.signal, &data_dir, &images_dir)?;
        let reclaim = agent
            .opts
            .eviction_minimum_reclaim
            .iter()
            .find(|(s, _)| *s == t.signal)
            .map(|(_, a)| *a);
        let met = match reclaim {
            Some(m) if last.contains(&threshold_key(t, soft)) => {
                crate::pressure::unresolved(t, m, r)
            }
            _ => crate::pressure::crossed(t, r),
        };
        met.then_some(r)
    };
    let seen = &mut state.soft_seen;
    let mut out: Vec<(Threshold, crate::pressure::Reading, bool)> = agent
        .opts
        .eviction_hard
        .iter()
        .filter_map(|t| read(t, false).map(|r| (t.clone(), r, false)))
        .collect();
    let now = std::time::Instant::now();
    for (t, grace) in &agent.opts.eviction_soft {
        match read(t, true) {
            Some(r) => {
                let first = *seen.entry(t.signal.name()).or_insert(now);
                if now.duration_since(first) >= *grace {
                    out.push((t.clone(), r, true));
                }
            }
            None => {
                seen.remove(t.signal.name());
            }
        }
    }
    state.met = out
        .iter()
        .map(|(t, _, soft)| threshold_key(t, *soft))
        .collect();
    out
}

/// One threshold's identity across passes: a soft threshold that drove
/// evictions does not make the hard one on the same signal count as met.
fn threshold_key(t: &Threshold, soft: bool) -> String {
    format!(
        "{}<{:?}/{}",
        t.signal.name(),
        t.value,
        if soft { "soft" } else { "hard" }
    )
}

/// One look at the node; records verdicts for the pod workers.
fn pass(agent: &Agent, state: &mut PassState) {
    let crossed = thresholds_met(agent, state);
    // While evictions go on for a threshold (its minimum reclaim not yet
    // free), its node condition stays, as upstream computes conditions
    // from the unresolved thresholds too.
    if let Ok(mut t) = agent.pressure.lock() {
        let signals: Vec<crate::pressure::Signal> =
            crossed.iter().map(|(t, _, _)| t.signal).collect();
        t.hold(&signals);
    }
    let entries: Vec<crate::registry::PodEntry> = agent
        .registry
        .lock()
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default();
    let pending: Vec<String> = agent
        .evictions
        .lock()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let candidates: Vec<(crate::registry::PodEntry, Arc<Pod>)> = entries
        .into_iter()
        .filter(|e| e.containers.values().any(|c| c.running))
        .filter(|e| !pending.contains(&e.uid))
        .filter_map(|e| {
            let pod = e.pod.clone()?;
            let active = pod.metadata.deletion_timestamp.is_none()
                && !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
                && pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) < CRITICAL_PRIORITY;
            active.then_some((e, pod))
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let disk_pressure = crossed
        .iter()
        .any(|(t, _, _)| resource_of(t.signal) != "memory" && resource_of(t.signal) != "pids");
    let usages: Vec<Usage> = candidates
        .iter()
        .map(|(e, p)| measure(agent, e, p, disk_pressure || has_local_limits(p)))
        .collect();

    // Local storage limits: every offender goes, at once.
    let mut evicted = false;
    for ((_, pod), u) in candidates.iter().zip(&usages) {
        if has_local_limits(pod)
            && let Some(msg) = local_storage_violation(pod, u)
        {
            evict(agent, pod, msg, Duration::ZERO);
            evicted = true;
        }
    }
    if evicted {
        return;
    }

    // Thresholds: memory first, then disk, then PIDs; one pod per pass.
    let mut order = crossed.clone();
    // Hard before soft for the same resource.
    order.sort_by_key(|(t, _, soft)| match resource_of(t.signal) {
        "memory" => (0, *soft),
        "pids" => (2, *soft),
        _ => (1, *soft),
    });
    let Some((t, reading, soft)) = order.first() else {
        return;
    };
    let resource = resource_of(t.signal);
    let mut ranks: Vec<(usize, Rank)> = candidates
        .iter()
        .zip(&usages)
        .enumerate()
        .map(|(i, ((_, pod), u))| {
            let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            let (usage, request) = match resource {
                "memory" => (u.memory, pod_request(pod, "memory")),
                "ephemeral-storage" => (u.disk(), pod_request(pod, "ephemeral-storage")),
                _ => (u.processes, 0),
            };
            (
                i,
                Rank {
                    priority,
                    usage,
                    request,
                },
            )
        })
        .collect();
    rank(&mut ranks);
    let Some((i, _)) = ranks.first() else { return };
    let (_, pod) = &candidates[*i];
    let per_container = match resource {
        "memory" => usages[*i].container_memory.clone(),
        _ => usages[*i].container_disk.clone(),
    };
    let msg = pressure_message(
        resource,
        threshold_quantity(t, reading.capacity),
        reading.available,
        pod,
        &per_container,
    );
    // Hard: 1 s (upstream's immediate eviction); soft: the pod's own grace
    // capped by --eviction-max-pod-grace-period.
    let grace = if *soft {
        let cap = agent.opts.eviction_max_pod_grace_period.max(0) as u64;
        pod_grace(pod).min(cap)
    } else {
        1
    };
    evict(agent, pod, msg, Duration::from_secs(grace));
}

fn evict(agent: &Agent, pod: &Pod, message: String, grace: Duration) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    tracing::info!(pod = %crate::events::pod_desc(pod), %message, "evicting pod");
    agent.events.warning(pod, "Evicted", message.clone());
    if let Ok(mut p) = agent.evictions.lock() {
        p.insert(
            uid,
            Verdict {
                reason: "Evicted".into(),
                message,
                grace,
                disruption: true,
            },
        );
    }
}

/// The pod's `terminationGracePeriodSeconds` (30 when unset, as the API
/// server defaults it).
pub(crate) fn pod_grace(pod: &Pod) -> u64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn quantities_print_as_upstream() {
        assert_eq!(quantity(100 << 20), "100Mi");
        assert_eq!(quantity(71684 << 10), "71684Ki");
        assert_eq!(quantity(1 << 60), "1Ei");
        assert_eq!(quantity(1000), "1000");
        assert_eq!(quantity(0), "0");
    }

    #[test]
    fn ranking_puts_pods_over_their_requests_and_low_priority_first() {
        let r = |priority, usage, request| Rank {
            priority,
            usage,
            request,
        };
        let mut v = vec![
            (0, r(0, 50, 100)),    // under its request
            (1, r(0, 200, 100)),   // over by 100
            (2, r(0, 500, 100)),   // over by 400
            (3, r(-10, 150, 100)), // over, lower priority
        ];
        rank(&mut v);
        let order: Vec<usize> = v.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, vec![3, 2, 1, 0]);
    }

    #[test]
    fn local_storage_violations_use_upstreams_messages() {
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {
                "volumes": [
                    {"name": "scratch", "emptyDir": {"sizeLimit": "10Mi"}},
                    {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
                ],
                "containers": [
                    {"name": "a", "resources": {"limits": {"ephemeral-storage": "20Mi"}}},
                    {"name": "b", "resources": {"limits": {"ephemeral-storage": "20Mi"}}}
                ]
            }
        }));
        let mut u = Usage::default();
        u.empty_dirs.insert("scratch".into(), 5 << 20);
        u.container_disk.insert("a".into(), 1 << 20);
        assert_eq!(local_storage_violation(&p, &u), None);
        u.empty_dirs.insert("scratch".into(), 11 << 20);
        assert_eq!(
            local_storage_violation(&p, &u).unwrap(),
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"10Mi\". "
        );
        u.empty_dirs.insert("scratch".into(), 9 << 20);
        u.container_disk.insert("a".into(), 21 << 20);
        assert_eq!(
            local_storage_violation(&p, &u).unwrap(),
            "Container a exceeded its local ephemeral storage limit \"20Mi\". "
        );
        u.container_disk.insert("a".into(), 19 << 20);
        u.container_disk.insert("b".into(), 19 << 20);
        assert_eq!(
            local_storage_violation(&p, &u).unwrap(),
            "Pod ephemeral local storage usage exceeds the total limit of containers 40Mi. "
        );
    }

    #[test]
    fn pressure_messages_name_containers_over_their_requests() {
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "big"},
                {"name": "small", "resources": {"requests": {"memory": "64Mi"}}}
            ]}
        }));
        let usage = HashMap::from([
            ("big".to_string(), 70 << 20),
            ("small".to_string(), 1 << 20),
        ]);
        assert_eq!(
            pressure_message("memory", 100 << 20, 50 << 20, &p, &usage),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container big was using 70Mi, request is 0, has larger consumption of memory. "
        );
    }

    #[test]
    fn disk_usage_counts_allocated_blocks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![1u8; 1 << 20]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/g"), vec![1u8; 1 << 20]).unwrap();
        let n = disk_usage(d.path());
        assert!((2 << 20..3 << 20).contains(&n), "{n}");
        assert_eq!(disk_usage(&d.path().join("missing")), 0);
    }
}
