//! Requests and limits to cgroup settings, and the pod's QoS class with the
//! OOM score adjustment upstream derives from it.

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
    let s = q.0.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|v| v.ceil() as i64);
    }
    s.parse::<f64>().ok().map(|v| (v * 1000.0).ceil() as i64)
}

/// Parses a memory quantity to bytes.
pub fn bytes(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    for (suf, mul) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suf) {
            return n.parse::<f64>().ok().map(|v| (v * mul).ceil() as i64);
        }
    }
    s.parse::<f64>().ok().map(|v| v.ceil() as i64)
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
