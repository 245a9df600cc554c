//! Pod traffic between nodes, as flannel's two backends do it: `host-gw`
//! routes every other node's podCIDR via that node's InternalIP (nodes
//! must share a link), `vxlan` tunnels it through one VXLAN device per node
//! with static neighbour and fdb entries (nodes only need UDP between
//! them). Each node publishes its VTEP MAC on its own Node; every node
//! watches all Nodes and keeps its routes in step. Routes carry the
//! protocol number [`R8S_PROTO`] so that a restart or `r8s reset` finds
//! them again.

pub mod dataplane;
pub mod desired;
pub mod exec;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};

use crate::NetworkError;
pub use dataplane::{Dataplane, SyncReport};
pub use desired::{Cmd, Entry, Mac, Skip, Wanted, desired, plan, wanted};
pub use exec::Executor;

/// The routing protocol number marking every route this module makes.
pub const R8S_PROTO: u8 = 82;
/// Annotation on a Node holding its VXLAN device's MAC address.
pub const VTEP_MAC_ANNOTATION: &str = "r8s.io/vtep-mac";
/// Annotation r8s hollow puts on the Nodes it simulates.
pub const HOLLOW_ANNOTATION: &str = "r8s.io/hollow";
/// The label hollow nodes carry with [`HOLLOW_INSTANCE_TYPE`].
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// The instance type of hollow nodes.
pub const HOLLOW_INSTANCE_TYPE: &str = "hollow";
/// Outer IPv4 + UDP + VXLAN + inner Ethernet headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// flannel's VNI.
pub const DEFAULT_VNI: u32 = 1;
/// flannel's (and the Linux kernel's historical) VXLAN port.
pub const DEFAULT_PORT: u16 = 8472;

/// How often the kernel is re-read, repairing what someone else changed.
const RESYNC: Duration = Duration::from_secs(60);
/// How soon a failed sync or annotation patch is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// How pod traffic crosses nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A VXLAN tunnel between nodes (flannel's default).
    Vxlan,
    /// Plain routes via the other nodes' addresses (one shared link).
    HostGw,
}

impl FromStr for Mode {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, NetworkError> {
        match s {
            "vxlan" => Ok(Mode::Vxlan),
            "host-gw" => Ok(Mode::HostGw),
            _ => Err(NetworkError::Config(format!(
                "unknown overlay mode {s:?} (use vxlan or host-gw)"
            ))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Vxlan => "vxlan",
            Mode::HostGw => "host-gw",
        })
    }
}

/// Settings of one node's overlay.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// The Node's name.
    pub node_name: String,
    /// This node's InternalIP: the VXLAN underlay address, the next hop
    /// other nodes use.
    pub node_ip: Ipv4Addr,
    /// host-gw or vxlan.
    pub mode: Mode,
    /// The VXLAN device name (at most 15 bytes, unique per node on a host).
    pub device: String,
    /// The VXLAN network identifier ([`DEFAULT_VNI`]).
    pub vni: u32,
    /// The VXLAN UDP port ([`DEFAULT_PORT`]).
    pub port: u16,
}

impl OverlayConfig {
    /// Refuses settings the kernel would refuse later, with a clear reason.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let d = &self.device;
        if d.is_empty()
            || d.len() > 15
            || d.starts_with('-')
            || d.chars().any(|c| c == '/' || c.is_whitespace())
        {
            return Err(NetworkError::Config(format!(
                "VXLAN device name {d:?}: 1 to 15 bytes, no '/', space or leading '-'"
            )));
        }
        if self.vni >= 1 << 24 {
            return Err(NetworkError::Config(format!(
                "VXLAN VNI {} is over 24 bits",
                self.vni
            )));
        }
        if self.port == 0 {
            return Err(NetworkError::Config("VXLAN port 0".into()));
        }
        Ok(())
    }
}

/// The VXLAN device name for a node's pod bridge: `r8s-vx-<bridge>`, within
/// the kernel's 15 bytes (a long bridge name is shortened with a hash of
/// it, so that nodes sharing a host keep distinct devices).
pub fn device_for_bridge(bridge: &str) -> String {
    let safe: String = bridge
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if safe.len() <= 8 && safe == bridge {
        return format!("r8s-vx-{safe}");
    }
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let hash = bridge.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let head: String = safe.chars().take(3).collect();
    format!("r8s-vx-{head}{:04x}", hash & 0xffff)
}

/// Removes the VXLAN device and every route this module made (for
/// `r8s reset` and test clean-up); idempotent.
pub fn cleanup(device: &str) {
    Executor::host().cleanup(device);
}

/// The Node list as the watch sees it, with a relist kept apart until it
/// completes.
#[derive(Default)]
struct Nodes {
    objs: BTreeMap<String, Node>,
    relist: Option<BTreeMap<String, Node>>,
    synced: bool,
}

impl Nodes {
    /// Applies an event; true when a full resync is due (a relist ended).
    fn apply(&mut self, ev: watcher::Event<Node>) -> bool {
        let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
        match ev {
            watcher::Event::Apply(n) => {
                self.objs.insert(name(&n), n);
                false
            }
            watcher::Event::Delete(n) => {
                self.objs.remove(&name(&n));
                false
            }
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(n) => {
                if let Some(r) = self.relist.as_mut() {
                    r.insert(name(&n), n);
                }
                false
            }
            watcher::Event::InitDone => {
                self.objs = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
        }
    }
}

/// Watches Nodes and keeps routes to every other node's podCIDR (and the
/// VXLAN device) in step, until the process ends.
pub async fn run(client: kube::Client, cfg: OverlayConfig) -> Result<(), NetworkError> {
    cfg.validate()?;
    tracing::info!(mode = %cfg.mode, node = %cfg.node_name, node_ip = %cfg.node_ip, device = %cfg.device, "pod network overlay starting");
    let api: Api<Node> = Api::all(client.clone());
    // Hollow nodes (thousands, with fake addresses) never get routes:
    // leave them out at the server so their heartbeats do not wake us.
    let wc = watcher::Config::default()
        .labels(&format!("{INSTANCE_TYPE_LABEL}!={HOLLOW_INSTANCE_TYPE}"));
    let mut events = watcher(api.clone(), wc).default_backoff().boxed();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "r8s-network".into(),
            instance: Some(cfg.node_name.clone()),
        },
    );
    let mut nodes = Nodes::default();
    let mut dataplane = Some(Dataplane::new(cfg.clone(), Executor::host()));
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failed sync or patch is retried, backing off to the resync period
    // so that a lasting fault (a clashing VNI) does not flood the log.
    let mut backoff = RETRY;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let (mut pending, mut full) = (false, false);
    let mut warned: BTreeSet<(String, Ipv4Addr)> = BTreeSet::new();
    let mut skipped_before: Vec<(String, Skip)> = Vec::new();
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return Ok(()) };
                let mut handle = |ev: Result<watcher::Event<Node>, watcher::Error>| match ev {
                    Ok(ev) => {
                        full |= nodes.apply(ev);
                        pending = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
                };
                handle(ev);
                // Whatever else has arrived goes into the same sync.
                while let Some(Some(ev)) = events.next().now_or_never() {
                    handle(ev);
                }
            }
            _ = resync.tick() => {
                full = true;
                pending = true;
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                if retry_at.is_some() => {
                retry_at = None;
                pending = true;
            }
        }
        if !nodes.synced || !pending {
            continue;
        }
        pending = false;
        let mut again = false;
        let want = wanted(&cfg, nodes.objs.values());
        if want.skipped != skipped_before {
            for (node, reason) in want.skipped.iter().filter(|s| !skipped_before.contains(s)) {
                tracing::info!(node = %node, reason = ?reason, "no overlay route to node");
            }
            skipped_before = want.skipped.clone();
        }
        let mut dp = dataplane
            .take()
            .unwrap_or_else(|| Dataplane::new(cfg.clone(), Executor::host()));
        if std::mem::take(&mut full) {
            dp.request_resync();
        }
        // iproute2 runs as child processes: keep them off the async threads.
        let want_for_sync = want.clone();
        let (dp, report) = match tokio::task::spawn_blocking(move || {
            let report = dp.sync(&want_for_sync);
            (dp, report)
        })
        .await
        {
            Ok((dp, report)) => (dp, report),
            Err(e) => {
                tracing::error!(error = %e, "overlay sync task failed; starting over");
                retry_at = Some(tokio::time::Instant::now() + backoff);
                continue;
            }
        };
        dataplane = Some(dp);
        again |= report.failed;
        report_refused(&cfg, &recorder, &nodes, &report, &mut warned);
        if let (Some(mac), true) = (report.mac, want.own_seen) {
            let mac = mac.to_string();
            if want.own_vtep_mac.as_deref() != Some(mac.as_str()) {
                let patch =
                    serde_json::json!({"metadata": {"annotations": {VTEP_MAC_ANNOTATION: mac}}});
                match api
                    .patch(
                        &cfg.node_name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => tracing::info!(mac = %mac, "published this node's VTEP MAC"),
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the VTEP MAC failed; retrying");
                        again = true;
                    }
                }
            }
        }
        if again {
            retry_at = Some(tokio::time::Instant::now() + backoff);
            backoff = (backoff * 2).min(RESYNC);
        } else {
            retry_at = None;
            backoff = RETRY;
        }
    }
}

/// Says, once per node and address, that host-gw cannot reach a node: as a
/// log line and as a Warning event on that Node.
fn report_refused(
    cfg: &OverlayConfig,
    recorder: &Recorder,
    nodes: &Nodes,
    report: &SyncReport,
    warned: &mut BTreeSet<(String, Ipv4Addr)>,
) {
    let now: BTreeSet<(String, Ipv4Addr)> = report.refused.iter().cloned().collect();
    for (node, ip) in now.difference(warned) {
        tracing::warn!(
            node = %node,
            next_hop = %ip,
            "host-gw: no route to this node's pods, its InternalIP is not on a directly \
             connected network (host-gw needs all nodes on one link; use the vxlan backend)"
        );
        let note = format!(
            "host-gw: node {} cannot route pods of node {node}: its InternalIP {ip} is not on a \
             network directly connected to {}; host-gw needs all nodes on one link (use the vxlan backend)",
            cfg.node_name, cfg.node_ip
        );
        if let Some(obj) = nodes.objs.get(node) {
            let regarding = obj.object_ref(&());
            let recorder = recorder.clone();
            let ev = Event {
                type_: EventType::Warning,
                reason: "HostGwUnreachable".into(),
                note: Some(note),
                action: "RoutePodNetwork".into(),
                secondary: None,
            };
            tokio::spawn(async move {
                if let Err(e) = recorder.publish(&ev, &regarding).await {
                    tracing::debug!(error = %e, "publishing the host-gw warning event");
                }
            });
        }
    }
    *warned = now;
}
