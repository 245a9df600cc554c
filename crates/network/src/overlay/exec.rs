//! The kernel side: iproute2 commands (`ip`, `bridge`), optionally inside a
//! named network namespace so that tests can run several nodes on one
//! machine: the VXLAN device, reading back what of ours the kernel holds,
//! and clean-up.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::desired::{Cmd, Entry, Mac};
use super::{OverlayConfig, R8S_PROTO, VXLAN_OVERHEAD};
use crate::NetworkError;

/// Runs iproute2 commands on the host or inside one network namespace.
#[derive(Debug, Clone, Default)]
pub struct Executor {
    /// The namespace (`ip -n <netns>`); None: the caller's own.
    pub netns: Option<String>,
}

fn ip(a: &[&str]) -> Cmd {
    Cmd::ip(a.iter().map(|s| s.to_string()).collect())
}

/// stderr of iproute2 when the object to delete or show is not there.
fn is_missing(stderr: &str) -> bool {
    [
        "No such process",
        "No such file or directory",
        "Cannot find device",
        "does not exist",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// A command that ran and failed (kept apart so "not found" can be told).
struct Failed {
    cmd: String,
    stderr: String,
}

impl From<Failed> for NetworkError {
    fn from(f: Failed) -> Self {
        NetworkError::Config(format!("{}: {}", f.cmd, f.stderr))
    }
}

/// Whether `ip route get` output says the address is on a connected link
/// (no gateway, not one of our own addresses).
pub fn is_direct_route(out: &str) -> bool {
    let first = out.lines().next().unwrap_or("");
    !first.is_empty()
        && !first.starts_with("local ")
        && !first.split_whitespace().any(|w| w == "via")
}

/// One IPv4 interface address.
struct IfAddr {
    dev: String,
    net: Ipv4Net,
    mtu: u32,
}

impl Executor {
    /// Commands on the caller's own namespace.
    pub fn host() -> Self {
        Executor { netns: None }
    }

    /// Commands inside the named namespace.
    pub fn in_netns(name: &str) -> Self {
        Executor {
            netns: Some(name.to_string()),
        }
    }

    fn output(&self, cmd: &Cmd) -> Result<Result<String, Failed>, NetworkError> {
        let mut c = Command::new(cmd.program);
        if let Some(ns) = &self.netns {
            c.args(["-n", ns]);
        }
        let out = c
            .args(&cmd.args)
            .output()
            .map_err(|source| NetworkError::Io {
                what: format!("running {} (iproute2)", cmd.program),
                source,
            })?;
        if out.status.success() {
            return Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        Ok(Err(Failed {
            cmd: cmd.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }))
    }

    /// Runs a command; its stdout.
    pub fn run(&self, cmd: &Cmd) -> Result<String, NetworkError> {
        Ok(self.output(cmd)??)
    }

    /// Runs a command that may find nothing to act on (deletes, shows of a
    /// device that may be gone): None then.
    pub fn run_maybe(&self, cmd: &Cmd) -> Result<Option<String>, NetworkError> {
        match self.output(cmd)? {
            Ok(s) => Ok(Some(s)),
            Err(f) if is_missing(&f.stderr) => Ok(None),
            Err(f) => Err(f.into()),
        }
    }

    fn json(&self, cmd: &Cmd) -> Result<Vec<Value>, NetworkError> {
        let Some(out) = self.run_maybe(cmd)? else {
            return Ok(Vec::new());
        };
        match serde_json::from_str::<Value>(&out) {
            Ok(Value::Array(v)) => Ok(v),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(NetworkError::Config(format!("{cmd}: bad JSON: {e}"))),
        }
    }

    /// Whether `addr` is reached without a gateway: what a host-gw next hop
    /// must be.
    pub fn is_direct(&self, addr: Ipv4Addr) -> Result<bool, NetworkError> {
        match self.output(&ip(&["-4", "route", "get", &addr.to_string()]))? {
            Ok(out) => Ok(is_direct_route(&out)),
            // "Network is unreachable": no route at all.
            Err(_) => Ok(false),
        }
    }

    fn addresses(&self) -> Result<Vec<IfAddr>, NetworkError> {
        let mut out = Vec::new();
        for l in &self.json(&ip(&["-j", "-4", "addr", "show"]))? {
            let dev = l["ifname"].as_str().unwrap_or_default();
            let mtu = l["mtu"].as_u64().and_then(|m| u32::try_from(m).ok());
            for a in l["addr_info"].as_array().into_iter().flatten() {
                let addr = a["local"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
                let len = a["prefixlen"].as_u64().and_then(|p| u8::try_from(p).ok());
                if let (Some(addr), Some(len)) = (addr, len)
                    && let Ok(net) = Ipv4Net::new(addr, len)
                {
                    out.push(IfAddr {
                        dev: dev.to_string(),
                        net,
                        mtu: mtu.unwrap_or(1500),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The device as `ip -d -j link show` describes it, if it exists.
    fn link(&self, dev: &str) -> Result<Option<Value>, NetworkError> {
        Ok(self
            .json(&ip(&["-j", "-d", "link", "show", "dev", dev]))?
            .into_iter()
            .next())
    }

    /// The MTU pods get under VXLAN (as flannel's CNI gives them): that of
    /// the interface holding `node_ip`, less the encapsulation; None when
    /// no interface holds it yet.
    pub fn vxlan_pod_mtu(&self, node_ip: Ipv4Addr) -> Option<u32> {
        if node_ip.is_loopback() {
            return None; // no tunnel goes over loopback
        }
        let addrs = self.addresses().ok()?;
        addrs
            .iter()
            .find(|a| a.net.addr() == node_ip)
            .map(|u| u.mtu.saturating_sub(VXLAN_OVERHEAD))
    }

    /// Makes sure the VXLAN device exists with `cfg`'s settings, is up and
    /// holds `<own podCIDR>.0/32`; its MAC, and whether it was (re)made
    /// (which drops every route, neighbour and fdb entry on it).
    pub fn ensure_vxlan(
        &self,
        cfg: &OverlayConfig,
        own_cidr: Option<Ipv4Net>,
    ) -> Result<(Mac, bool), NetworkError> {
        let dev = cfg.device.as_str();
        let addrs = self.addresses()?;
        let underlay = addrs.iter().find(|a| a.net.addr() == cfg.node_ip);
        if underlay.is_none() {
            tracing::warn!(node_ip = %cfg.node_ip, device = dev, "no interface holds the node IP; the VXLAN device gets no underlay device");
        }
        let mtu = underlay
            .map_or(1500, |u| u.mtu)
            .saturating_sub(VXLAN_OVERHEAD);
        let current = self.link(dev)?;
        if let Some(l) = &current
            && l["linkinfo"]["info_kind"] != "vxlan"
        {
            // Never take over (or delete) someone else's interface.
            return Err(NetworkError::Config(format!(
                "{dev} exists and is not a VXLAN device: choose another overlay device name"
            )));
        }
        let fits = current.as_ref().is_some_and(|l| {
            let d = &l["linkinfo"]["info_data"];
            d["id"].as_u64() == Some(u64::from(cfg.vni))
                && d["port"].as_u64() == Some(u64::from(cfg.port))
                && d["local"].as_str() == Some(cfg.node_ip.to_string().as_str())
                && underlay.is_none_or(|u| d["link"].as_str() == Some(u.dev.as_str()))
        });
        let made = !fits;
        if made {
            if current.is_some() {
                tracing::info!(device = dev, "VXLAN device settings changed; recreating it");
                self.run_maybe(&ip(&["link", "del", dev]))?;
            }
            let (vni, local, port) = (
                cfg.vni.to_string(),
                cfg.node_ip.to_string(),
                cfg.port.to_string(),
            );
            let mut a = vec![
                "link", "add", dev, "type", "vxlan", "id", &vni, "local", &local,
            ];
            if let Some(u) = underlay {
                a.extend(["dev", u.dev.as_str()]);
            }
            a.extend(["dstport", &port, "nolearning"]);
            if let Err(e) = self.run(&ip(&a)) {
                let hint = if e.to_string().contains("VNI already exists") {
                    " (another VXLAN device here uses this VNI and port: several nodes on one \
                     host need distinct VXLAN ports or VNIs)"
                } else {
                    ""
                };
                return Err(NetworkError::Config(format!("{e}{hint}")));
            }
            tracing::info!(device = dev, vni = cfg.vni, port = cfg.port, local = %cfg.node_ip, mtu, "VXLAN device created");
        }
        if made || current.as_ref().and_then(|l| l["mtu"].as_u64()) != Some(u64::from(mtu)) {
            self.run(&ip(&["link", "set", dev, "mtu", &mtu.to_string()]))?;
        }
        self.run(&ip(&["link", "set", dev, "up"]))?;
        // flannel's layout: the podCIDR's network address, alone, on the
        // device, so that what the host itself sends across has a source
        // address the other side routes back.
        let want = own_cidr.and_then(|c| Ipv4Net::new(c.network(), 32).ok());
        let have: Vec<Ipv4Net> = self
            .addresses()?
            .into_iter()
            .filter(|a| a.dev == dev)
            .map(|a| a.net)
            .collect();
        if have.iter().copied().ne(want) {
            if !have.is_empty() {
                self.run(&ip(&["-4", "addr", "flush", "dev", dev]))?;
            }
            if let Some(w) = want {
                self.run(&ip(&["addr", "add", &w.to_string(), "dev", dev]))?;
            }
        }
        let mac = self
            .link(dev)?
            .and_then(|l| l["address"].as_str().map(str::to_string))
            .ok_or_else(|| NetworkError::Config(format!("{dev}: no MAC address")))?;
        let mac = mac
            .parse()
            .map_err(|e| NetworkError::Config(format!("{dev}: {e}")))?;
        Ok((mac, made))
    }

    /// Removes the VXLAN device; nothing if it is not there, and never a
    /// device of another kind that happens to have the name.
    pub fn remove_vxlan(&self, dev: &str) -> Result<(), NetworkError> {
        match self.link(dev)? {
            Some(l) if l["linkinfo"]["info_kind"] == "vxlan" => {
                self.run_maybe(&ip(&["link", "del", dev]))?;
                tracing::info!(device = dev, "VXLAN device removed");
                Ok(())
            }
            Some(_) => Err(NetworkError::Config(format!(
                "{dev} is not a VXLAN device: left alone"
            ))),
            None => Ok(()),
        }
    }

    /// What of ours the kernel holds now: routes marked [`R8S_PROTO`] and
    /// the permanent neighbour and fdb entries on `device`. A route of ours
    /// that this module would never make is deleted on the spot.
    pub fn read_state(&self, device: &str) -> Result<BTreeSet<Entry>, NetworkError> {
        let mut out = BTreeSet::new();
        let proto = R8S_PROTO.to_string();
        for r in &self.json(&ip(&["-j", "-4", "route", "show", "proto", &proto]))? {
            let dst = r["dst"].as_str().and_then(|d| d.parse::<Ipv4Net>().ok());
            let via = r["gateway"].as_str().and_then(|g| g.parse().ok());
            let onlink = r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "onlink"));
            match (dst, via) {
                (Some(dst), Some(via)) => {
                    let overlay = onlink && r["dev"].as_str() == Some(device);
                    out.insert(Entry::Route { dst, via, overlay });
                }
                _ => {
                    let dst = r["dst"].as_str().unwrap_or_default();
                    if !dst.is_empty() {
                        tracing::info!(dst, "removing a stray route of ours");
                        self.run_maybe(&ip(&["route", "del", dst, "proto", &proto]))?;
                    }
                }
            }
        }
        let neigh = ip(&[
            "-j",
            "-4",
            "neigh",
            "show",
            "dev",
            device,
            "nud",
            "permanent",
        ]);
        for n in &self.json(&neigh)? {
            let addr = n["dst"].as_str().and_then(|d| d.parse().ok());
            let mac = n["lladdr"].as_str().and_then(|m| m.parse().ok());
            if let (Some(ip), Some(mac)) = (addr, mac) {
                out.insert(Entry::Neigh { ip, mac });
            }
        }
        let fdb = Cmd::bridge(
            ["-j", "fdb", "show", "dev", device]
                .map(String::from)
                .to_vec(),
        );
        for f in &self.json(&fdb)? {
            if f["state"] != "permanent" {
                continue;
            }
            // The all-zero MAC (flooding default) fails to parse: not ours.
            let mac = f["mac"].as_str().and_then(|m| m.parse().ok());
            let dst = f["dst"].as_str().and_then(|d| d.parse().ok());
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.insert(Entry::Fdb { mac, dst });
            }
        }
        Ok(out)
    }

    /// Removes the VXLAN device and every route marked [`R8S_PROTO`].
    pub fn cleanup(&self, device: &str) {
        if let Err(e) = self.remove_vxlan(device) {
            tracing::warn!(device, error = %e, "removing the VXLAN device");
        }
        // The device took its own routes; what is left is host-gw's.
        match self.read_state(device) {
            Ok(entries) => {
                for e in entries {
                    if let Entry::Route { .. } = e
                        && let Err(err) = self.run_maybe(&e.del_cmd(device))
                    {
                        tracing::warn!(error = %err, "removing an overlay route");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing overlay routes"),
        }
    }
}
