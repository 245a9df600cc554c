//! The Node object: registration with the host's capacity, status
//! heartbeats and the node Lease.

pub mod eviction;
pub mod imagegc;
pub mod metrics;
pub mod pressure;
pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::pressure::Tracker;
use crate::{KubeletError, Options};

/// Lease duration the kubelet uses.
const LEASE_DURATION_SECONDS: i32 = 40;
/// Lease renewal interval (upstream: a quarter of the duration).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Node status report interval.
const STATUS_EVERY: Duration = Duration::from_secs(10);

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn micro(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The host's CPU count and memory in bytes.
pub fn host_capacity() -> (usize, i64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    (cpus, mem)
}

fn disk_bytes(path: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Upstream's reason and message for each condition, (when True, when
/// False).
fn wording(t: &str, on: bool) -> (&'static str, &'static str) {
    match (t, on) {
        ("MemoryPressure", true) => (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        ("MemoryPressure", false) => (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", true) => ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("DiskPressure", false) => ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", true) => (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        ("PIDPressure", false) => (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        _ => ("KubeletReady", "kubelet is posting ready status"),
    }
}

/// Reports the Node's status: capacity, conditions from the pressure
/// tracker, images. A condition's lastTransitionTime changes only when
/// its status does.
pub struct Reporter {
    opts: Options,
    tracker: Arc<Mutex<Tracker>>,
    /// Per condition: (status, lastTransitionTime).
    transitions: Mutex<HashMap<&'static str, (bool, String)>>,
}

impl Reporter {
    /// A reporter for this node.
    pub fn new(opts: Options, tracker: Arc<Mutex<Tracker>>) -> Reporter {
        Reporter {
            opts,
            tracker,
            transitions: Mutex::new(HashMap::new()),
        }
    }

    fn conditions(&self, now: &str) -> Value {
        let tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let mut times = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
            let on = if t == "Ready" { true } else { tracker.under(t) };
            let since = match times.get(t) {
                Some((was, at)) if *was == on => at.clone(),
                _ => {
                    times.insert(t, (on, now.to_string()));
                    now.to_string()
                }
            };
            let (reason, message) = wording(t, on);
            let mut message = message.to_string();
            let signals = tracker.signals(t);
            if on && !signals.is_empty() {
                message = format!("{message} ({} below threshold)", signals.join(", "));
            }
            out.push(
                json!({"type": t, "status": if on { "True" } else { "False" },
                "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since}),
            );
        }
        Value::Array(out)
    }

    /// Reads the pressure signals again.
    fn observe(&self) {
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        t.observe(&self.opts.data_dir, &self.opts.images_dir());
    }

    /// Creates the Node (or takes over an existing one) and reports status.
    pub async fn register(&self, client: &kube::Client, images: Value) -> Result<(), KubeletError> {
        register(client, &self.opts).await?;
        self.observe();
        self.report(client, images).await
    }

    /// Patches the node's status.
    pub async fn report(&self, client: &kube::Client, images: Value) -> Result<(), KubeletError> {
        let api: Api<Node> = Api::all(client.clone());
        let mut st = status(&self.opts, images);
        st["conditions"] = self.conditions(&rfc3339(Timestamp::now()));
        let patch = json!({"status": st});
        api.patch_status(
            &self.opts.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Reads the signals and reports node status forever.
    pub async fn status_loop(
        self: Arc<Self>,
        client: kube::Client,
        images: impl Fn() -> Value + Send,
    ) {
        loop {
            tokio::time::sleep(STATUS_EVERY).await;
            self.observe();
            if let Err(e) = self.report(&client, images()).await {
                tracing::warn!(error = %e, "reporting node status failed");
            }
        }
    }
}

/// What pods may have: the capacity less `--system-reserved`,
/// `--kube-reserved` and the hard eviction thresholds for memory and the
/// node's disk, as upstream's kubelet computes allocatable.
pub fn allocatable(opts: &Options, cpus: usize, mem: i64, disk: u64) -> Value {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    // Millicores or bytes, summed over both reservations.
    let reserved = |name: &str| -> i64 {
        opts.reserved
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| {
                let q = Quantity(v.clone());
                let n = if name == "cpu" {
                    crate::resources::millicores(&q)
                } else {
                    crate::resources::bytes(&q)
                };
                n.unwrap_or(0).max(0)
            })
            .sum()
    };
    let threshold = |signal: crate::pressure::Signal, capacity: i64| -> i64 {
        opts.eviction_hard
            .iter()
            .filter(|t| t.signal == signal)
            .map(|t| match t.value {
                crate::pressure::Amount::Absolute(v) => v as i64,
                crate::pressure::Amount::Percent(p) => (capacity as f64 * p / 100.0) as i64,
            })
            .max()
            .unwrap_or(0)
    };
    let cpu_m = (cpus as i64 * 1000 - reserved("cpu")).max(0);
    let cpu = if cpu_m % 1000 == 0 {
        (cpu_m / 1000).to_string()
    } else {
        format!("{cpu_m}m")
    };
    let mem_left =
        (mem - reserved("memory") - threshold(crate::pressure::Signal::MemoryAvailable, mem))
            .max(0);
    let disk = disk as i64;
    let disk_left = (disk
        - reserved("ephemeral-storage")
        - threshold(crate::pressure::Signal::NodefsAvailable, disk))
    .max(0);
    json!({
        "cpu": cpu,
        "memory": format!("{}Ki", mem_left / 1024),
        "pods": opts.max_pods.to_string(),
        "ephemeral-storage": format!("{}Ki", disk_left / 1024),
    })
}

/// The node's status as the agent reports it, conditions aside.
pub fn status(opts: &Options, images: Value) -> Value {
    let (cpus, mem) = host_capacity();
    let disk = disk_bytes(&opts.data_dir);
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", mem / 1024),
        "pods": opts.max_pods.to_string(),
        "ephemeral-storage": format!("{}Ki", disk / 1024),
    });
    json!({
        "capacity": capacity,
        "allocatable": allocatable(opts, cpus, mem, disk),
        "addresses": [
            {"type": "InternalIP", "address": opts.node_ip.to_string()},
            {"type": "Hostname", "address": opts.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": opts.kubelet_port}},
        "nodeInfo": {
            "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(),
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
            "kernelVersion": kernel(),
            "osImage": os_image(),
            "containerRuntimeVersion": "r8s://0.1.0",
            "kubeletVersion": "v1.33.0-r8s",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": image::host_arch(),
        },
        "images": images,
    })
}

/// Creates the Node, or takes over an existing one.
async fn register(client: &kube::Client, opts: &Options) -> Result<(), KubeletError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = json!({
        "kubernetes.io/hostname": opts.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": image::host_arch(),
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": image::host_arch(),
    });
    for (k, v) in &opts.node_labels {
        labels[k] = json!(v);
    }
    // A node given its pod network claims it; otherwise the node IPAM
    // controller assigns one.
    let spec = if opts.pod_cidr_from_node {
        json!({})
    } else {
        json!({"podCIDR": opts.net.cidr(), "podCIDRs": [opts.net.cidr()]})
    };
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": opts.node_name, "labels": labels},
        "spec": spec,
    }))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({"metadata": {"labels": labels}, "spec": spec});
            api.patch(
                &opts.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Waits until the node IPAM controller has given the Node a podCIDR.
pub async fn wait_for_pod_cidr(client: &kube::Client, name: &str) -> Result<String, KubeletError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut warned = false;
    loop {
        match api.get(name).await {
            Ok(n) => {
                if let Some(c) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    return Ok(c);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the Node for its podCIDR"),
        }
        if !warned {
            tracing::info!(
                node = name,
                "waiting for the node IPAM controller to assign a podCIDR"
            );
            warned = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Renews the node Lease forever.
pub async fn lease_loop(client: kube::Client, opts: Options) {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    loop {
        let now = micro(Timestamp::now());
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": opts.node_name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": opts.node_name,
                     "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": now},
        });
        let res = api
            .patch(
                &opts.node_name,
                &PatchParams::apply("kubelet").force(),
                &Patch::Apply(&lease),
            )
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_is_capacity_less_reservations_and_hard_thresholds() {
        let mut o = Options::new("n", "/tmp".into(), "/bin/true".into());
        o.eviction_hard =
            crate::pressure::parse_thresholds("memory.available<100Mi,nodefs.available<10%")
                .unwrap();
        o.reserved = vec![
            ("cpu".into(), "250m".into()),
            ("memory".into(), "1Gi".into()),
            ("memory".into(), "412Mi".into()),
            ("ephemeral-storage".into(), "1Gi".into()),
        ];
        let a = allocatable(&o, 2, 8 << 30, 100 << 30);
        assert_eq!(a["cpu"], "1750m");
        // 8Gi - 1Gi - 412Mi - 100Mi = 6656Mi
        assert_eq!(a["memory"], format!("{}Ki", 6656 * 1024));
        // 100Gi - 1Gi - 10Gi = 89Gi
        assert_eq!(a["ephemeral-storage"], format!("{}Ki", 89 << 20));
        assert_eq!(a["pods"], "110");
        o.reserved.clear();
        assert_eq!(allocatable(&o, 2, 8 << 30, 100 << 30)["cpu"], "2");
    }
}
