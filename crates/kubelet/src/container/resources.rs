//! Requests and limits to cgroup settings, and the pod's QoS class with the
//! OOM score adjustment upstream derives from it.

use controller_runtime::quantity::parse_scaled;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// One container's cgroup settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `cpu.shares` (2 when nothing is requested, as upstream).
    pub cpu_shares: u64,
    /// CFS quota in µs per 100 ms period, from the CPU limit.
    pub cpu_quota: Option<i64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
}

/// Parses a CPU quantity to millicores.
pub fn millicores(q: &Quantity) -> Option<i64> {
    parse_scaled(&q.0, 1000)
}

/// Parses a memory quantity to bytes.
pub fn bytes(q: &Quantity) -> Option<i64> {
    parse_scaled(&q.0, 1)
}

fn get(c: &Container, limits: bool, name: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let m = if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    };
    m.and_then(|m| m.get(name)).cloned()
}

/// The container's settings; a request defaults to the limit, as the API
/// server's defaulting does.
pub fn of(c: &Container) -> Settings {
    let cpu_req = get(c, false, "cpu")
        .or_else(|| get(c, true, "cpu"))
        .and_then(|q| millicores(&q));
    let cpu_lim = get(c, true, "cpu").and_then(|q| millicores(&q));
    let mem_lim = get(c, true, "memory").and_then(|q| bytes(&q));
    Settings {
        cpu_shares: cpu_req
            .map(|m| ((m * 1024) / 1000).max(2) as u64)
            .unwrap_or(2),
        // At least 1 ms per period, as upstream's minimum quota.
        cpu_quota: cpu_lim.map(|m| (m * 100).max(1000)),
        memory_limit: mem_lim,
    }
}

/// Applies new settings to a running container's cgroup (in-place pod
/// resize), `rel` relative to the hierarchy roots. On v1 the memory+swap
/// limit, when one is set, moves with the memory limit, in the order the
/// kernel accepts.
pub fn apply_live(rel: &str, s: &Settings) -> Result<(), String> {
    use std::path::Path;
    let base = Path::new("/sys/fs/cgroup");
    let rel = rel.trim_start_matches('/');
    let write = |p: &Path, v: &str| {
        std::fs::write(p, v).map_err(|e| format!("writing {v:?} to {}: {e}", p.display()))
    };
    if base.join("cgroup.controllers").exists() {
        let d = base.join(rel);
        // runc's shares-to-weight conversion, as libcontainer applies it.
        let weight = 1 + (s.cpu_shares.saturating_sub(2) * 9999) / 262_142;
        write(&d.join("cpu.weight"), &weight.to_string())?;
        let max = match s.cpu_quota {
            Some(q) => format!("{q} 100000"),
            None => "max 100000".into(),
        };
        write(&d.join("cpu.max"), &max)?;
        let mem = s.memory_limit.map_or("max".to_string(), |m| m.to_string());
        return write(&d.join("memory.max"), &mem);
    }
    let cpu = ["cpu,cpuacct", "cpu"]
        .iter()
        .map(|h| base.join(h).join(rel))
        .find(|p| p.exists())
        .ok_or_else(|| format!("no cpu cgroup for {rel}"))?;
    write(&cpu.join("cpu.shares"), &s.cpu_shares.to_string())?;
    write(
        &cpu.join("cpu.cfs_quota_us"),
        &s.cpu_quota.unwrap_or(-1).to_string(),
    )?;
    let mem = base.join("memory").join(rel);
    let limit = s.memory_limit.unwrap_or(-1);
    let memsw = mem.join("memory.memsw.limit_in_bytes");
    let has_memsw = std::fs::read_to_string(&memsw)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|v| v < (1 << 62));
    let current = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(-1);
    let growing = limit == -1 || (current != -1 && limit > current);
    if has_memsw && growing {
        write(&memsw, &limit.to_string())?;
    }
    write(&mem.join("memory.limit_in_bytes"), &limit.to_string())?;
    if has_memsw && !growing {
        write(&memsw, &limit.to_string())?;
    }
    Ok(())
}

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Every container has equal CPU and memory requests and limits.
    Guaranteed,
    /// Some request or limit is set.
    Burstable,
    /// Nothing is set.
    BestEffort,
}

impl Qos {
    /// The name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// The pod's QoS class, by upstream's rules.
pub fn qos(pod: &Pod) -> Qos {
    let Some(spec) = pod.spec.as_ref() else {
        return Qos::BestEffort;
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        for res in ["cpu", "memory"] {
            let req = get(c, false, res);
            let lim = get(c, true, res);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (&req, &lim) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => {
                    let eq = if res == "cpu" {
                        millicores(r) == millicores(l)
                    } else {
                        bytes(r) == bytes(l)
                    };
                    if !eq {
                        guaranteed = false;
                    }
                }
                _ => {}
            }
        }
    }
    if !any {
        Qos::BestEffort
    } else if guaranteed {
        Qos::Guaranteed
    } else {
        Qos::Burstable
    }
}

/// An OOM score adjustment this host lets the runtime set. Lowering it
/// below the current value needs CAP_SYS_RESOURCE; without it (rootless,
/// or a sandboxed host like this machine kind) the kernel refuses and the
/// container would not start, so it is raised to the current value, as
/// containerd restricts it when it runs without that capability.
pub fn settable_oom_score_adj(wanted: i32) -> i32 {
    let may_lower = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    if may_lower {
        return wanted;
    }
    let current = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    wanted.max(current)
}

/// The OOM score adjustment of a container, as the kubelet computes it.
pub fn oom_score_adj(pod: &Pod, c: &Container, node_memory: i64) -> i32 {
    match qos(pod) {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let req = get(c, false, "memory").and_then(|q| bytes(&q)).unwrap_or(0);
            let adj = 1000 - (1000 * req) / node_memory.max(1);
            adj.clamp(3, 999) as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use std::collections::BTreeMap;

    fn ctr(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let m = |p: &[(&str, &str)]| {
            (!p.is_empty()).then(|| {
                p.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: m(req),
                limits: m(lim),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(c: Container) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![c],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(millicores(&Quantity("250m".into())), Some(250));
        assert_eq!(millicores(&Quantity("1.5".into())), Some(1500));
        assert_eq!(bytes(&Quantity("64Mi".into())), Some(64 << 20));
        assert_eq!(bytes(&Quantity("1G".into())), Some(1_000_000_000));
    }

    #[test]
    fn settings_from_requests_and_limits() {
        let s = of(&ctr(
            &[("cpu", "500m")],
            &[("cpu", "1"), ("memory", "32Mi")],
        ));
        assert_eq!(s.cpu_shares, 512);
        assert_eq!(s.cpu_quota, Some(100_000));
        assert_eq!(s.memory_limit, Some(32 << 20));
        assert_eq!(of(&ctr(&[], &[])).cpu_shares, 2);
    }

    #[test]
    fn qos_classes_and_oom_scores() {
        let g = pod(ctr(
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1000m"), ("memory", "1Gi")],
        ));
        assert_eq!(qos(&g), Qos::Guaranteed);
        let b = pod(ctr(&[("memory", "1Gi")], &[]));
        assert_eq!(qos(&b), Qos::Burstable);
        let e = pod(ctr(&[], &[]));
        assert_eq!(qos(&e), Qos::BestEffort);
        let c = &b.spec.as_ref().unwrap().containers[0];
        assert_eq!(oom_score_adj(&b, c, 4 << 30), 750);
        assert_eq!(oom_score_adj(&e, c, 4 << 30), 1000);
        assert_eq!(oom_score_adj(&g, c, 4 << 30), -997);
    }
}
