//! What the kernel should hold, computed from the Node list alone (no
//! kernel, no API server), and the commands that move it from one state
//! to another. Everything here is pure so that it can be tested in full.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

use super::{HOLLOW_ANNOTATION, HOLLOW_INSTANCE_TYPE, INSTANCE_TYPE_LABEL, Mode, OverlayConfig};
use super::{R8S_PROTO, VTEP_MAC_ANNOTATION};

/// An Ethernet address (a VXLAN tunnel endpoint's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(|| format!("{s:?}: too short"))?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{s:?}: not six two-digit hex bytes"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|e| format!("{s:?}: {e}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?}: too long"));
        }
        // A group or all-zero address would make the tunnel flood or drop.
        if out[0] & 1 == 1 || out == [0; 6] {
            return Err(format!("{s:?}: not a unicast address"));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One kernel object this module keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    /// `dst via <via>` (host-gw), or `dst via <via> dev <vxlan> onlink`
    /// when `overlay` (vxlan), marked with [`R8S_PROTO`].
    Route {
        /// Another node's podCIDR.
        dst: Ipv4Net,
        /// Its InternalIP (host-gw) or its podCIDR's network address (vxlan).
        via: Ipv4Addr,
        /// Through the VXLAN device.
        overlay: bool,
    },
    /// A permanent ARP entry on the VXLAN device for a remote `.0`.
    Neigh {
        /// The remote podCIDR's network address.
        ip: Ipv4Addr,
        /// The remote VTEP's MAC.
        mac: Mac,
    },
    /// A forwarding entry on the VXLAN device: where to tunnel a MAC to.
    Fdb {
        /// The remote VTEP's MAC.
        mac: Mac,
        /// The remote node's InternalIP.
        dst: Ipv4Addr,
    },
}

/// The identity `replace` overwrites: an entry whose key is still wanted
/// must not be deleted (the delete of a neighbour or route would take the
/// new one with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Route(Ipv4Net),
    Neigh(Ipv4Addr),
    Fdb(Mac),
}

impl Entry {
    fn key(&self) -> Key {
        match *self {
            Entry::Route { dst, .. } => Key::Route(dst),
            Entry::Neigh { ip, .. } => Key::Neigh(ip),
            Entry::Fdb { mac, .. } => Key::Fdb(mac),
        }
    }

    /// Routes go after the neighbour and fdb entries they rely on, and
    /// before them on the way out.
    fn rank(&self) -> u8 {
        match self {
            Entry::Fdb { .. } => 0,
            Entry::Neigh { .. } => 1,
            Entry::Route { .. } => 2,
        }
    }

    /// The command that installs (or overwrites) this entry.
    pub fn add_cmd(&self, device: &str) -> Cmd {
        match *self {
            Entry::Route { dst, via, overlay } => {
                let mut a = args(&[
                    "route",
                    "replace",
                    &dst.to_string(),
                    "via",
                    &via.to_string(),
                ]);
                if overlay {
                    a.extend(args(&["dev", device, "onlink"]));
                }
                a.extend(args(&["proto", &R8S_PROTO.to_string()]));
                Cmd::ip(a)
            }
            Entry::Neigh { ip, mac } => Cmd::ip(args(&[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac.to_string(),
                "dev",
                device,
                "nud",
                "permanent",
            ])),
            Entry::Fdb { mac, dst } => Cmd::bridge(args(&[
                "fdb",
                "replace",
                &mac.to_string(),
                "dev",
                device,
                "dst",
                &dst.to_string(),
                "self",
                "permanent",
            ])),
        }
    }

    /// The command that removes exactly this entry.
    pub fn del_cmd(&self, device: &str) -> Cmd {
        match *self {
            Entry::Route { dst, via, overlay } => {
                let mut a = args(&["route", "del", &dst.to_string(), "via", &via.to_string()]);
                if overlay {
                    a.extend(args(&["dev", device]));
                }
                a.extend(args(&["proto", &R8S_PROTO.to_string()]));
                Cmd::ip(a)
            }
            Entry::Neigh { ip, .. } => {
                Cmd::ip(args(&["neigh", "del", &ip.to_string(), "dev", device]))
            }
            Entry::Fdb { mac, dst } => Cmd::bridge(args(&[
                "fdb",
                "del",
                &mac.to_string(),
                "dev",
                device,
                "dst",
                &dst.to_string(),
                "self",
            ])),
        }
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// One iproute2 invocation: `ip ...` or `bridge ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// `ip` or `bridge`.
    pub program: &'static str,
    /// Its arguments (without any `-n <netns>`).
    pub args: Vec<String>,
}

impl Cmd {
    /// An `ip` command.
    pub fn ip(args: Vec<String>) -> Self {
        Cmd {
            program: "ip",
            args,
        }
    }

    /// A `bridge` command.
    pub fn bridge(args: Vec<String>) -> Self {
        Cmd {
            program: "bridge",
            args,
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.program, self.args.join(" "))
    }
}

/// Why a Node gets no routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No IPv4 `spec.podCIDR(s)` yet.
    NoPodCidr,
    /// No IPv4 InternalIP in its status.
    NoInternalIp,
    /// It has this node's InternalIP: its pods are on this host already.
    SameHost,
    /// vxlan: it has not published its VTEP MAC yet.
    NoVtepMac,
    /// vxlan: its VTEP MAC annotation does not parse.
    BadVtepMac(String),
    /// Its podCIDR overlaps this node's own.
    OverlapsOwn(Ipv4Net),
    /// Another node (named) already claims its podCIDR, address or MAC.
    Conflict(String),
}

/// One other node's share of the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoutes {
    /// The Node's name.
    pub name: String,
    /// Its InternalIP (the host-gw next hop, the VXLAN remote).
    pub ip: Ipv4Addr,
    /// What the kernel should hold for it.
    pub entries: Vec<Entry>,
}

/// What the cluster asks of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// This node's own podCIDRs (the first names the VXLAN device address).
    pub own_cidrs: Vec<Ipv4Net>,
    /// The VTEP MAC this node's Node currently publishes, if it exists.
    pub own_vtep_mac: Option<String>,
    /// Whether this node's Node exists.
    pub own_seen: bool,
    /// Entries per other node, by name.
    pub nodes: Vec<NodeRoutes>,
    /// Nodes left out, and why (hollow nodes are left out silently).
    pub skipped: Vec<(String, Skip)>,
}

impl Wanted {
    /// Every entry, whatever node it is for.
    pub fn entries(&self) -> BTreeSet<Entry> {
        self.nodes
            .iter()
            .flat_map(|n| n.entries.iter().copied())
            .collect()
    }
}

/// Whether r8s hollow simulates this Node (fake addresses: never route).
pub fn is_hollow(node: &Node) -> bool {
    let m = &node.metadata;
    m.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(HOLLOW_ANNOTATION))
        || m.labels
            .as_ref()
            .and_then(|l| l.get(INSTANCE_TYPE_LABEL))
            .is_some_and(|v| v == HOLLOW_INSTANCE_TYPE)
}

/// The Node's first IPv4 InternalIP.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The Node's IPv4 podCIDRs (`spec.podCIDRs`, then `spec.podCIDR`),
/// normalised to their network address, without duplicates.
pub fn pod_cidrs(node: &Node) -> Vec<Ipv4Net> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter()) {
        if let Ok(net) = c.parse::<Ipv4Net>() {
            let net = net.trunc();
            if !out.contains(&net) {
                out.push(net);
            }
        }
    }
    out
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// One other node's entries, or why it gets none.
fn node_entries(cfg: &OverlayConfig, own: &[Ipv4Net], node: &Node) -> Result<NodeRoutes, Skip> {
    let cidrs = pod_cidrs(node);
    if cidrs.is_empty() {
        return Err(Skip::NoPodCidr);
    }
    let ip = internal_ip(node).ok_or(Skip::NoInternalIp)?;
    if ip == cfg.node_ip {
        return Err(Skip::SameHost);
    }
    // Routing a range that holds our own pods elsewhere would cut them off.
    if let Some(c) = cidrs
        .iter()
        .find(|c| own.iter().any(|o| o.contains(*c) || c.contains(o)))
    {
        return Err(Skip::OverlapsOwn(*c));
    }
    let mut entries = Vec::new();
    match cfg.mode {
        Mode::HostGw => {
            for dst in cidrs {
                entries.push(Entry::Route {
                    dst,
                    via: ip,
                    overlay: false,
                });
            }
        }
        Mode::Vxlan => {
            let raw = annotation(node, VTEP_MAC_ANNOTATION).ok_or(Skip::NoVtepMac)?;
            let mac: Mac = raw.parse().map_err(Skip::BadVtepMac)?;
            entries.push(Entry::Fdb { mac, dst: ip });
            for dst in cidrs {
                let gw = dst.network();
                entries.push(Entry::Neigh { ip: gw, mac });
                entries.push(Entry::Route {
                    dst,
                    via: gw,
                    overlay: true,
                });
            }
        }
    }
    Ok(NodeRoutes {
        name: node.metadata.name.clone().unwrap_or_default(),
        ip,
        entries,
    })
}

/// What this node should route, from the Node list: every other real node
/// with a podCIDR and an InternalIP (and, for vxlan, a VTEP MAC). Nodes are
/// taken in name order, so that of two nodes claiming the same podCIDR or
/// MAC the same one wins on every node.
pub fn wanted<'a>(cfg: &OverlayConfig, nodes: impl IntoIterator<Item = &'a Node>) -> Wanted {
    let mut sorted: Vec<&Node> = nodes.into_iter().filter(|n| !is_hollow(n)).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Wanted::default();
    if let Some(own) = sorted
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(cfg.node_name.as_str()))
    {
        out.own_cidrs = pod_cidrs(own);
        out.own_vtep_mac = annotation(own, VTEP_MAC_ANNOTATION).map(str::to_string);
        out.own_seen = true;
    }
    let mut claimed: BTreeMap<Key, String> = BTreeMap::new();
    for node in sorted {
        let name = node.metadata.name.clone().unwrap_or_default();
        if name == cfg.node_name || name.is_empty() {
            continue;
        }
        let routes = match node_entries(cfg, &out.own_cidrs, node) {
            Ok(r) => r,
            Err(skip) => {
                out.skipped.push((name, skip));
                continue;
            }
        };
        if let Some(owner) = routes.entries.iter().find_map(|e| claimed.get(&e.key())) {
            out.skipped.push((name, Skip::Conflict(owner.clone())));
            continue;
        }
        for e in &routes.entries {
            claimed.insert(e.key(), name.clone());
        }
        out.nodes.push(routes);
    }
    out
}

/// Every entry this node should hold (see [`wanted`]).
pub fn desired(cfg: &OverlayConfig, nodes: &[Node]) -> BTreeSet<Entry> {
    wanted(cfg, nodes).entries()
}

/// The commands that take the kernel from `old` to `new`: removals first
/// (routes before what they rely on), then additions (the reverse). An
/// old entry whose key a new one overwrites with `replace` is not removed.
pub fn plan(old: &BTreeSet<Entry>, new: &BTreeSet<Entry>, device: &str) -> (Vec<Cmd>, Vec<Cmd>) {
    let kept: BTreeSet<Key> = new.iter().map(Entry::key).collect();
    let mut gone: Vec<&Entry> = old
        .iter()
        .filter(|e| !new.contains(e) && !kept.contains(&e.key()))
        .collect();
    gone.sort_by_key(|e| std::cmp::Reverse(e.rank()));
    let mut added: Vec<&Entry> = new.iter().filter(|e| !old.contains(e)).collect();
    added.sort_by_key(|e| e.rank());
    (
        gone.iter().map(|e| e.del_cmd(device)).collect(),
        added.iter().map(|e| e.add_cmd(device)).collect(),
    )
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
