//! What one node's NetworkPolicy table should hold, computed from the
//! cluster's policies, pods and namespaces: a pure function, so every rule
//! of the API's semantics is tested without a kernel.
//!
//! The shape: each local pod a policy selects gets an ingress and/or egress
//! chain holding the union of the rules of every policy that selects it,
//! ending in `drop`. Chains are named by a hash of their rules, so pods
//! with the same rules share one and a chain's content never changes under
//! its name. Peers (pods by selector, ipBlocks) are interval sets named
//! after the policy rule they belong to, so a pod coming or going changes
//! set elements, not chains.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use controller_runtime::objects::selector_matches;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::proxy::render::fnv;

/// A pod as policies see it: where it is, what it is called, what it
/// serves.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its address on the pod network.
    pub ip: Ipv4Addr,
    /// Whether it runs on this node (its traffic is filtered here).
    pub local: bool,
    /// Its containers' ports: (name, protocol in lower case, number).
    pub ports: Vec<(String, String, u16)>,
}

impl PodInfo {
    /// The pod's policy-relevant facts, or None when policies do not apply
    /// to it (no address yet, the host's network, finished).
    pub fn from_pod(pod: &Pod, node: &str, ip: Option<Ipv4Addr>) -> Option<PodInfo> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) || controller_runtime::objects::pod_terminal(pod) {
            return None;
        }
        let ip = ip.or_else(|| {
            pod.status
                .as_ref()?
                .pod_ip
                .as_deref()?
                .parse::<Ipv4Addr>()
                .ok()
        })?;
        let ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some((
                    p.name.clone()?,
                    p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    u16::try_from(p.container_port).ok()?,
                ))
            })
            .collect();
        Some(PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            local: spec.node_name.as_deref() == Some(node),
            ports,
        })
    }
}

/// A set in the table: its type and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    /// The body of `add set`: `type ...; flags ...;`.
    pub decl: &'static str,
    /// Elements as nft writes them.
    pub elements: Vec<String>,
}

/// Peers: addresses and ranges.
pub const PEER_SET: &str = "type ipv4_addr; flags interval;";
/// Named ports of peers: address, protocol, port.
pub const NAMED_PORT_SET: &str = "type ipv4_addr . inet_proto . inet_service;";

/// What the table should hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// Sets by name.
    pub sets: BTreeMap<String, SetDef>,
    /// Per-pod chains by name, with their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Local pod address → its ingress chain.
    pub ingress: BTreeMap<Ipv4Addr, String>,
    /// Local pod address → its egress chain.
    pub egress: BTreeMap<Ipv4Addr, String>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn tag(self) -> &'static str {
        match self {
            Dir::Ingress => "in",
            Dir::Egress => "eg",
        }
    }

    /// Ingress is the last check, so an allowed packet is accepted; an
    /// allowed egress returns to the base chain for the ingress check.
    fn allow(self) -> &'static str {
        match self {
            Dir::Ingress => "accept",
            Dir::Egress => "return",
        }
    }

    /// Whose address a peer is: the source of ingress, the destination of
    /// egress.
    fn peer_field(self) -> &'static str {
        match self {
            Dir::Ingress => "ip saddr",
            Dir::Egress => "ip daddr",
        }
    }
}

/// The policy types in force (defaulted by the API server; an object
/// stored without them is read as upstream's defaulting would write it).
fn policy_types(p: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = p.spec.as_ref() else {
        return (false, false);
    };
    match &spec.policy_types {
        Some(t) if !t.is_empty() => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.is_some()),
    }
}

fn key(p: &NetworkPolicy) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// An inclusive range of addresses.
type Range = (u32, u32);

/// `cidr` without `except`, as sorted disjoint ranges.
fn ip_block(cidr: &str, except: &[String]) -> Vec<Range> {
    let Ok(net) = cidr.parse::<ipnet::Ipv4Net>() else {
        return Vec::new();
    };
    let mut out = vec![(u32::from(net.network()), u32::from(net.broadcast()))];
    for e in except {
        let Ok(x) = e.parse::<ipnet::Ipv4Net>() else {
            continue;
        };
        let (xs, xe) = (u32::from(x.network()), u32::from(x.broadcast()));
        out = out
            .into_iter()
            .flat_map(|(s, e)| {
                let mut parts = Vec::new();
                if xe < s || xs > e {
                    parts.push((s, e));
                } else {
                    if xs > s {
                        parts.push((s, xs - 1));
                    }
                    if xe < e {
                        parts.push((xe + 1, e));
                    }
                }
                parts
            })
            .collect();
    }
    out
}

/// Sorted, merged ranges as nft elements.
fn elements(mut ranges: Vec<Range>) -> Vec<String> {
    ranges.sort_unstable();
    let mut merged: Vec<Range> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
        .into_iter()
        .map(|(s, e)| {
            if s == e {
                Ipv4Addr::from(s).to_string()
            } else {
                format!("{}-{}", Ipv4Addr::from(s), Ipv4Addr::from(e))
            }
        })
        .collect()
}

/// The cluster as policies see it.
pub struct World<'a> {
    /// Every NetworkPolicy.
    pub policies: &'a [NetworkPolicy],
    /// Every pod policies apply to, on any node.
    pub pods: &'a [PodInfo],
    /// Namespace labels by name.
    pub namespaces: &'a HashMap<String, BTreeMap<String, String>>,
}

impl World<'_> {
    /// The pods one peer entry names, seen from a policy in `ns`.
    fn peer_pods<'p>(&'p self, ns: &str, peer: &NetworkPolicyPeer) -> Vec<&'p PodInfo> {
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return Vec::new();
        }
        let no_labels = BTreeMap::new();
        self.pods
            .iter()
            .filter(|p| match &peer.namespace_selector {
                None => p.namespace == ns,
                Some(sel) => {
                    selector_matches(sel, self.namespaces.get(&p.namespace).unwrap_or(&no_labels))
                }
            })
            .filter(|p| {
                peer.pod_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, &p.labels))
            })
            .collect()
    }

    /// The addresses of a rule's peers.
    fn peer_elements(&self, ns: &str, peers: &[NetworkPolicyPeer]) -> Vec<String> {
        let mut ranges = Vec::new();
        for peer in peers {
            if let Some(b) = &peer.ip_block {
                ranges.extend(ip_block(&b.cidr, b.except.as_deref().unwrap_or_default()));
            }
            for p in self.peer_pods(ns, peer) {
                let ip = u32::from(p.ip);
                ranges.push((ip, ip));
            }
        }
        elements(ranges)
    }

    /// `address . protocol . port` of the peers' ports called `name`
    /// (every pod's when the rule names no peers).
    fn named_port_elements(
        &self,
        ns: &str,
        peers: &[NetworkPolicyPeer],
        name: &str,
        proto: &str,
    ) -> Vec<String> {
        let pods: Vec<&PodInfo> = if peers.is_empty() {
            self.pods.iter().collect()
        } else {
            peers.iter().flat_map(|p| self.peer_pods(ns, p)).collect()
        };
        let mut out: BTreeSet<String> = BTreeSet::new();
        for p in pods {
            for (n, pr, port) in &p.ports {
                if n == name && pr == proto {
                    out.insert(format!("{} . {proto} . {port}", p.ip));
                }
            }
        }
        out.into_iter().collect()
    }
}

fn set_name(kind: &str, parts: &str) -> String {
    format!("{kind}-{:016x}", fnv(parts))
}

/// Builds the rules of one policy rule for one local pod into `out`,
/// adding the sets they use to `sets`.
#[allow(clippy::too_many_arguments)]
fn rule_lines(
    world: &World<'_>,
    pol: &str,
    ns: &str,
    dir: Dir,
    idx: usize,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    pod: &PodInfo,
    sets: &mut BTreeMap<String, SetDef>,
    out: &mut Vec<String>,
) {
    let peers = peers.unwrap_or_default();
    let peer_match = if peers.is_empty() {
        String::new()
    } else {
        let name = set_name("peers", &format!("{pol}/{}/{idx}", dir.tag()));
        sets.entry(name.clone()).or_insert_with(|| SetDef {
            decl: PEER_SET,
            elements: world.peer_elements(ns, peers),
        });
        format!("{} @{name} ", dir.peer_field())
    };
    let verdict = dir.allow();
    let ports = ports.unwrap_or_default();
    if ports.is_empty() {
        out.push(format!("{peer_match}{verdict}"));
        return;
    }
    // Port numbers and ranges per protocol; a protocol with no port allows
    // all of its ports.
    let mut numbered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut whole: BTreeSet<String> = BTreeSet::new();
    for (pidx, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
        match &p.port {
            None => {
                whole.insert(proto);
            }
            Some(IntOrString::Int(n)) => {
                let item = match p.end_port {
                    Some(end) if end > *n => format!("{n}-{end}"),
                    _ => n.to_string(),
                };
                numbered.entry(proto).or_default().push(item);
            }
            Some(IntOrString::String(name)) => match dir {
                // The selected pod's own port of that name.
                Dir::Ingress => {
                    for (n, pr, port) in &pod.ports {
                        if n == name && *pr == proto {
                            numbered
                                .entry(proto.clone())
                                .or_default()
                                .push(port.to_string());
                        }
                    }
                }
                // Each destination's own port of that name: a set of
                // address, protocol and port; the peers are in it.
                Dir::Egress => {
                    let set = set_name("named", &format!("{pol}/{}/{idx}/{pidx}", dir.tag()));
                    sets.entry(set.clone()).or_insert_with(|| SetDef {
                        decl: NAMED_PORT_SET,
                        elements: world.named_port_elements(ns, peers, name, &proto),
                    });
                    out.push(format!(
                        "ip daddr . meta l4proto . th dport @{set} {verdict}"
                    ));
                }
            },
        }
    }
    for proto in &whole {
        out.push(format!("{peer_match}meta l4proto {proto} {verdict}"));
    }
    for (proto, items) in numbered {
        if whole.contains(&proto) {
            continue;
        }
        let mut items: Vec<String> = items;
        items.sort();
        items.dedup();
        out.push(format!(
            "{peer_match}meta l4proto {proto} th dport {{ {} }} {verdict}",
            items.join(", ")
        ));
    }
}

/// Computes the table for the local pods of `world`.
pub fn desired(world: &World<'_>) -> Desired {
    let mut d = Desired::default();
    let mut policies: Vec<&NetworkPolicy> = world.policies.iter().collect();
    policies.sort_by_key(|p| key(p));
    for pod in world.pods.iter().filter(|p| p.local) {
        for dir in [Dir::Ingress, Dir::Egress] {
            let mut lines = Vec::new();
            let mut selected = false;
            for p in &policies {
                let ns = p.metadata.namespace.as_deref().unwrap_or("");
                let Some(spec) = p.spec.as_ref() else {
                    continue;
                };
                if ns != pod.namespace {
                    continue;
                }
                let (ing, eg) = policy_types(p);
                if !(match dir {
                    Dir::Ingress => ing,
                    Dir::Egress => eg,
                }) {
                    continue;
                }
                let sel = spec.pod_selector.clone().unwrap_or_default();
                if !selector_matches(&sel, &pod.labels) {
                    continue;
                }
                selected = true;
                let pol = key(p);
                match dir {
                    Dir::Ingress => {
                        for (i, r) in spec.ingress.iter().flatten().enumerate() {
                            rule_lines(
                                world,
                                &pol,
                                ns,
                                dir,
                                i,
                                r.from.as_deref(),
                                r.ports.as_deref(),
                                pod,
                                &mut d.sets,
                                &mut lines,
                            );
                        }
                    }
                    Dir::Egress => {
                        for (i, r) in spec.egress.iter().flatten().enumerate() {
                            rule_lines(
                                world,
                                &pol,
                                ns,
                                dir,
                                i,
                                r.to.as_deref(),
                                r.ports.as_deref(),
                                pod,
                                &mut d.sets,
                                &mut lines,
                            );
                        }
                    }
                }
            }
            if !selected {
                continue;
            }
            lines.push("drop".into());
            let name = format!("pod-{}-{:016x}", dir.tag(), fnv(&lines.join("\n")));
            match dir {
                Dir::Ingress => d.ingress.insert(pod.ip, name.clone()),
                Dir::Egress => d.egress.insert(pod.ip, name.clone()),
            };
            d.chains.entry(name).or_insert(lines);
        }
    }
    d
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
