//! Keeps one node's overlay in the kernel in step with a [`Wanted`] state:
//! the VXLAN device (vxlan), the host-gw next-hop check, and the plan
//! between what the kernel holds and what is wanted, read back from the
//! kernel on every resync so that leftovers of another run and changes
//! made by hand are repaired.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::desired::{Entry, Mac, Skip, Wanted, plan};
use super::exec::Executor;
use super::{Mode, OverlayConfig};
use crate::NetworkError;

/// What a [`Dataplane::sync`] found.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// vxlan: this node's VTEP MAC (to publish on its Node).
    pub mac: Option<Mac>,
    /// host-gw: nodes left out because their InternalIP is not on a
    /// directly connected network, as `(node, InternalIP)`.
    pub refused: Vec<(String, Ipv4Addr)>,
    /// Some command failed: sync again (after a kernel re-read).
    pub failed: bool,
}

/// The kernel state of one node's overlay, kept in step with [`Wanted`].
#[derive(Debug)]
pub struct Dataplane {
    cfg: OverlayConfig,
    exec: Executor,
    /// What we believe the kernel holds.
    applied: BTreeSet<Entry>,
    /// Re-read the kernel (and re-check the device) before the next plan.
    resync: bool,
    /// The podCIDR the device address was set for, once the device is up.
    device_for: Option<Option<Ipv4Net>>,
    mac: Option<Mac>,
    /// host-gw: whether each next hop is on a connected network.
    direct: HashMap<Ipv4Addr, bool>,
}

impl Dataplane {
    /// A dataplane that starts by reading what the kernel holds.
    pub fn new(cfg: OverlayConfig, exec: Executor) -> Self {
        Dataplane {
            cfg,
            exec,
            applied: BTreeSet::new(),
            resync: true,
            device_for: None,
            mac: None,
            direct: HashMap::new(),
        }
    }

    /// Makes the next sync re-read the kernel and re-check everything.
    pub fn request_resync(&mut self) {
        self.resync = true;
    }

    /// Brings the kernel in line with `wanted`. Errors are in the report;
    /// a failed sync leaves a resync for the next one.
    pub fn sync(&mut self, wanted: &Wanted) -> SyncReport {
        let mut report = SyncReport::default();
        if let Err(e) = self.try_sync(wanted, &mut report) {
            tracing::warn!(error = %e, "programming the pod network overlay failed; will resync");
            report.failed = true;
        }
        if report.failed {
            self.resync = true;
        }
        report.mac = self.mac;
        report
    }

    fn try_sync(&mut self, wanted: &Wanted, report: &mut SyncReport) -> Result<(), NetworkError> {
        let dev = self.cfg.device.clone();
        let own_cidr = wanted.own_cidrs.first().copied();
        match self.cfg.mode {
            Mode::Vxlan => {
                let peers = !wanted.nodes.is_empty()
                    || wanted
                        .skipped
                        .iter()
                        .any(|(_, s)| matches!(s, Skip::NoVtepMac));
                if !peers && self.mac.is_none() {
                    // A lone node needs no tunnel: the device (and its UDP
                    // port) comes with the second node, so single-node
                    // clusters sharing a host never contend for the port.
                    return Ok(());
                }
                if self.resync || self.device_for != Some(own_cidr) {
                    let (mac, made) = self.exec.ensure_vxlan(&self.cfg, own_cidr)?;
                    self.mac = Some(mac);
                    self.device_for = Some(own_cidr);
                    self.resync |= made;
                }
            }
            // A device left by an earlier vxlan run would shadow nothing,
            // but it would keep a UDP port and stale entries.
            Mode::HostGw => {
                if self.resync
                    && let Err(e) = self.exec.remove_vxlan(&dev)
                {
                    tracing::warn!(device = %dev, error = %e, "removing a VXLAN device of an earlier run");
                }
            }
        }
        if self.resync {
            self.applied = self.exec.read_state(&dev)?;
            self.direct.clear();
            self.resync = false;
        }
        let mut want = BTreeSet::new();
        for node in &wanted.nodes {
            if self.cfg.mode == Mode::HostGw {
                let direct = match self.direct.get(&node.ip) {
                    Some(d) => *d,
                    None => {
                        let d = self.exec.is_direct(node.ip)?;
                        self.direct.insert(node.ip, d);
                        d
                    }
                };
                if !direct {
                    report.refused.push((node.name.clone(), node.ip));
                    continue;
                }
            }
            want.extend(node.entries.iter().copied());
        }
        let (remove, add) = plan(&self.applied, &want, &dev);
        for cmd in &remove {
            if let Err(e) = self.exec.run_maybe(cmd) {
                tracing::warn!(command = %cmd, error = %e, "removing an overlay entry failed");
                report.failed = true;
            }
        }
        for cmd in &add {
            if let Err(e) = self.exec.run(cmd) {
                tracing::warn!(command = %cmd, error = %e, "adding an overlay entry failed");
                report.failed = true;
            }
        }
        if !remove.is_empty() || !add.is_empty() {
            tracing::debug!(removed = remove.len(), added = add.len(), mode = %self.cfg.mode, "overlay synced");
        }
        self.applied = want;
        Ok(())
    }
}
