//! nftables rules of the service proxy, laid out as kube-proxy's nftables
//! mode lays them out: verdict maps keyed by (address, protocol, port) jump
//! to a chain per service port, which picks an endpoint chain with
//! `numgen`, which DNATs. A change is a transaction that touches only the
//! changed service's chains and map elements, so its cost follows the
//! change, not the number of Services.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::model::{Endpoint, PortRules};

/// The mark bit asking postrouting to masquerade (kube-proxy's).
pub const MASQ_MARK: &str = "0x4000";

/// Node-wide settings of the proxy's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// nftables table name (family `ip`).
    pub table: String,
    /// Pod address ranges of the cluster: traffic from them keeps its
    /// source address; traffic from them to elsewhere is masqueraded.
    pub cluster_cidrs: Vec<String>,
    /// Service ranges: addresses in them that no Service uses are dropped,
    /// so nothing addressed to them leaves the node.
    pub service_cidrs: Vec<String>,
    /// This node's addresses: node ports answer on them.
    pub node_ips: Vec<Ipv4Addr>,
    /// Service addresses answered by a server on this node (cluster DNS):
    /// never rejected or dropped.
    pub local_ips: Vec<Ipv4Addr>,
}

/// The rules of one service port, as nft objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Chain name → its rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set name → its declaration body.
    pub sets: BTreeMap<String, String>,
    /// (map or set, key, value) elements; value empty for sets.
    pub elements: BTreeSet<(String, String, String)>,
}

/// 64-bit FNV-1a: chain names must be the same after a restart, so no
/// randomly keyed hasher.
pub(crate) fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A readable, unique chain name: a hash for uniqueness, then the key
/// (namespace and names are DNS labels, so the characters are safe).
fn chain_name(prefix: &str, key: &str) -> String {
    let h = fnv(key);
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}-{:08x}-{readable}", h as u32)
}

fn endpoint_chain(r: &PortRules, e: &Endpoint) -> String {
    chain_name("sep", &format!("{}/{}/{}", r.key, e.ip, e.port))
}

fn affinity_set(r: &PortRules, e: &Endpoint, secs: u32) -> String {
    let h = fnv(&format!("{}/{}/{}", r.key, e.ip, e.port));
    format!("aff-{h:016x}-{secs}")
}

/// Rules that pick one of `eps` and DNAT to it. With ClientIP affinity
/// each endpoint needs a chain of its own (to remember the client in its
/// set); otherwise one `numgen` map does it, so a Service costs the table
/// one chain, not one per endpoint, and `nft`'s per-transaction cache load
/// stays small.
fn dispatch(r: &PortRules, eps: &[&Endpoint], rules: &mut Vec<String>) {
    let proto = r.proto;
    if let Some(secs) = r.affinity_seconds {
        for e in eps {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(r, e, secs),
                endpoint_chain(r, e)
            ));
        }
        match eps {
            [] => rules.push("drop".into()),
            [one] => rules.push(format!("goto {}", endpoint_chain(r, one))),
            many => {
                let arms: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{i} : goto {}", endpoint_chain(r, e)))
                    .collect();
                rules.push(format!(
                    "numgen random mod {} vmap {{ {} }}",
                    many.len(),
                    arms.join(", ")
                ));
            }
        }
        return;
    }
    match eps {
        [] => rules.push("drop".into()),
        [one] => rules.push(format!(
            "meta l4proto {proto} dnat ip to {}:{}",
            one.ip, one.port
        )),
        many => {
            let arms: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{i} : {} . {}", e.ip, e.port))
                .collect();
            rules.push(format!(
                "meta l4proto {proto} dnat ip to numgen random mod {} map {{ {} }}",
                many.len(),
                arms.join(", ")
            ));
        }
    }
}

/// A set literal: `{ a, b }`.
fn literal<T: ToString>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The nft objects for one service port.
pub fn render(cfg: &TableConfig, r: &PortRules) -> Rendered {
    let mut out = Rendered::default();
    let svc_chain = chain_name("svc", &r.key);
    let ext_chain = chain_name("ext", &r.key);
    let has_external = r.node_port.is_some() || !r.external_ips.is_empty();
    let proto = r.proto;
    if r.endpoints.is_empty() {
        // No endpoint at all: connections are refused at once, as
        // upstream's no-endpoint-services map does.
        for ip in r.cluster_ips.iter().chain(&r.external_ips) {
            out.elements.insert((
                "no-endpoint-services".into(),
                format!("{ip} . {proto} . {}", r.port),
                "goto reject-chain".into(),
            ));
        }
        if let Some(np) = r.node_port {
            out.elements.insert((
                "no-endpoint-nodeports".into(),
                format!("{proto} . {np}"),
                "goto reject-chain".into(),
            ));
        }
        for ip in &r.cluster_ips {
            out.elements
                .insert(("cluster-ips".into(), ip.to_string(), String::new()));
        }
        return out;
    }
    // With affinity, endpoint chains (shared by the internal and external
    // paths) remember clients and mark hairpin traffic themselves.
    if let Some(secs) = r.affinity_seconds {
        for e in &r.endpoints {
            let set = affinity_set(r, e, secs);
            out.sets.insert(
                set.clone(),
                format!("type ipv4_addr; flags dynamic,timeout; timeout {secs}s;"),
            );
            let rules = vec![
                format!("ip saddr {} jump mark-for-masquerade", e.ip),
                format!("update @{set} {{ ip saddr }}"),
                format!("meta l4proto {proto} dnat ip to {}:{}", e.ip, e.port),
            ];
            out.chains.insert(endpoint_chain(r, e), rules);
        }
    }
    let mut rules = Vec::new();
    if !cfg.cluster_cidrs.is_empty() {
        // Traffic from outside the pod network is masqueraded so replies
        // come back through this node.
        rules.push(format!(
            "ip saddr != {} jump mark-for-masquerade",
            literal(&cfg.cluster_cidrs)
        ));
    }
    if r.affinity_seconds.is_none() {
        // A pod reaching itself through its Service must get the reply
        // from the Service's address: masquerade endpoints calling their
        // own Service (kube-proxy marks only the exact hairpin; without
        // per-endpoint chains this marks any endpoint of the Service).
        let ips: Vec<String> = r.endpoints.iter().map(|e| e.ip.to_string()).collect();
        rules.push(format!(
            "ip saddr {} jump mark-for-masquerade",
            literal(&ips)
        ));
    }
    dispatch(r, &r.internal_endpoints(), &mut rules);
    out.chains.insert(svc_chain.clone(), rules);
    if has_external {
        let mut rules = Vec::new();
        if r.external_local {
            // Pods and the node itself reach the service as a cluster IP
            // (upstream's short-circuit); others only local endpoints,
            // with their source address kept.
            if !cfg.cluster_cidrs.is_empty() {
                rules.push(format!(
                    "ip saddr {} goto {svc_chain}",
                    literal(&cfg.cluster_cidrs)
                ));
            }
            rules.push("fib saddr type local jump mark-for-masquerade".into());
            rules.push(format!("fib saddr type local goto {svc_chain}"));
            dispatch(r, &r.external_endpoints(), &mut rules);
        } else {
            rules.push("jump mark-for-masquerade".into());
            rules.push(format!("goto {svc_chain}"));
        }
        out.chains.insert(ext_chain.clone(), rules);
    }
    for ip in &r.cluster_ips {
        out.elements.insert((
            "service-ips".into(),
            format!("{ip} . {proto} . {}", r.port),
            format!("goto {svc_chain}"),
        ));
        out.elements
            .insert(("cluster-ips".into(), ip.to_string(), String::new()));
    }
    for ip in &r.external_ips {
        out.elements.insert((
            "service-ips".into(),
            format!("{ip} . {proto} . {}", r.port),
            format!("goto {ext_chain}"),
        ));
    }
    if let Some(np) = r.node_port {
        out.elements.insert((
            "service-nodeports".into(),
            format!("{proto} . {np}"),
            format!("goto {ext_chain}"),
        ));
    }
    out
}

/// The base table: maps, dispatch and filter chains, masquerading. With
/// `fresh`, the table is deleted first (in the same transaction), so a
/// restarted proxy starts from exactly what it renders.
pub fn base(cfg: &TableConfig, fresh: bool) -> String {
    let t = &cfg.table;
    let mut s = String::new();
    let _ = writeln!(s, "add table ip {t}");
    if fresh {
        let _ = writeln!(s, "delete table ip {t}");
        let _ = writeln!(s, "add table ip {t}");
    }
    for (name, ty) in [
        ("node-ips", "ipv4_addr"),
        ("local-ips", "ipv4_addr"),
        ("cluster-ips", "ipv4_addr"),
    ] {
        let _ = writeln!(s, "add set ip {t} {name} {{ type {ty}; }}");
    }
    for (name, ty) in [
        ("service-ips", "ipv4_addr . inet_proto . inet_service"),
        ("service-nodeports", "inet_proto . inet_service"),
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
        ),
        ("no-endpoint-nodeports", "inet_proto . inet_service"),
    ] {
        let _ = writeln!(s, "add map ip {t} {name} {{ type {ty} : verdict; }}");
    }
    if !cfg.node_ips.is_empty() {
        let _ = writeln!(s, "add element ip {t} node-ips {}", literal(&cfg.node_ips));
    }
    if !cfg.local_ips.is_empty() {
        let _ = writeln!(
            s,
            "add element ip {t} local-ips {}",
            literal(&cfg.local_ips)
        );
    }
    let mut chain = |name: &str, hook: Option<&str>, rules: &[String]| {
        match hook {
            Some(h) => {
                let _ = writeln!(s, "add chain ip {t} {name} {{ {h}; policy accept; }}");
            }
            None => {
                let _ = writeln!(s, "add chain ip {t} {name}");
            }
        }
        let _ = writeln!(s, "flush chain ip {t} {name}");
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {name} {r}");
        }
    };
    chain(
        "mark-for-masquerade",
        None,
        &[format!("meta mark set meta mark | {MASQ_MARK}")],
    );
    let mut post = vec![format!(
        "meta mark & {MASQ_MARK} == {MASQ_MARK} meta mark set meta mark ^ {MASQ_MARK} masquerade fully-random"
    )];
    if !cfg.cluster_cidrs.is_empty() {
        // Pod egress: anything leaving the pod network comes from the node.
        let mut inside = cfg.cluster_cidrs.clone();
        inside.extend(cfg.service_cidrs.iter().cloned());
        post.push(format!(
            "ip saddr {} ip daddr != {} masquerade",
            literal(&cfg.cluster_cidrs),
            literal(&inside)
        ));
    }
    // A reset for TCP (ICMP errors are rate-limited per destination, so a
    // busy client could wait out its timeout instead of being refused).
    chain(
        "reject-chain",
        None,
        &[
            "meta l4proto tcp counter reject with tcp reset".to_string(),
            "counter reject".to_string(),
        ],
    );
    chain(
        "services",
        None,
        &[
            "ip daddr . meta l4proto . th dport vmap @service-ips".to_string(),
            "ip daddr @node-ips meta l4proto . th dport vmap @service-nodeports".to_string(),
        ],
    );
    chain(
        "service-endpoints-check",
        None,
        &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services".to_string()],
    );
    chain(
        "nodeport-endpoints-check",
        None,
        &["ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports".to_string()],
    );
    let mut check = vec![
        "ip daddr @local-ips return".to_string(),
        "ip daddr @cluster-ips goto reject-chain".to_string(),
    ];
    if !cfg.service_cidrs.is_empty() {
        check.push(format!("ip daddr {} drop", literal(&cfg.service_cidrs)));
    }
    chain("cluster-ips-check", None, &check);
    let jump = |c: &str| format!("jump {c}");
    chain(
        "nat-prerouting",
        Some("type nat hook prerouting priority dstnat"),
        &[jump("services")],
    );
    chain(
        "nat-output",
        Some("type nat hook output priority -100"),
        &[jump("services")],
    );
    chain(
        "nat-postrouting",
        Some("type nat hook postrouting priority srcnat"),
        &post,
    );
    chain(
        "filter-input",
        Some("type filter hook input priority -110"),
        &[
            "ct state new jump nodeport-endpoints-check".into(),
            "ct state new jump service-endpoints-check".into(),
        ],
    );
    chain(
        "filter-forward",
        Some("type filter hook forward priority -110"),
        &[
            "ct state new jump service-endpoints-check".into(),
            "ct state new jump cluster-ips-check".into(),
        ],
    );
    chain(
        "filter-output",
        Some("type filter hook output priority -110"),
        &["ct state new jump service-endpoints-check".into()],
    );
    // After DNAT: what is still addressed to a service range had no
    // matching port or Service.
    chain(
        "filter-output-post-dnat",
        Some("type filter hook output priority -90"),
        &["ct state new jump cluster-ips-check".into()],
    );
    s
}

fn element_cmd(op: &str, t: &str, (map, key, value): &(String, String, String)) -> String {
    if value.is_empty() || op == "delete" {
        format!("{op} element ip {t} {map} {{ {key} }}\n")
    } else {
        format!("{op} element ip {t} {map} {{ {key} : {value} }}\n")
    }
}

/// One transaction taking every changed service port from `old` to `new`
/// (None: absent). Order matters: objects exist before anything refers
/// to them, and references go before what they refer to.
pub fn transaction(t: &str, changes: &[(Option<&Rendered>, Option<&Rendered>)]) -> String {
    let empty = Rendered::default();
    let mut sets_add = String::new();
    let mut chains_add = String::new();
    let mut rules = String::new();
    let mut del_elems = String::new();
    let mut add_elems = String::new();
    let mut flush_stale = String::new();
    let mut del_stale = String::new();
    let mut del_sets = String::new();
    for (old, new) in changes {
        let old = old.unwrap_or(&empty);
        let new = new.unwrap_or(&empty);
        for (name, def) in &new.sets {
            if old.sets.get(name) != Some(def) {
                let _ = writeln!(sets_add, "add set ip {t} {name} {{ {def} }}");
            }
        }
        for (name, body) in &new.chains {
            if old.chains.get(name) == Some(body) {
                continue;
            }
            let _ = writeln!(chains_add, "add chain ip {t} {name}");
            let _ = writeln!(rules, "flush chain ip {t} {name}");
            for r in body {
                let _ = writeln!(rules, "add rule ip {t} {name} {r}");
            }
        }
        for e in old.elements.difference(&new.elements) {
            del_elems.push_str(&element_cmd("delete", t, e));
        }
        for e in new.elements.difference(&old.elements) {
            add_elems.push_str(&element_cmd("add", t, e));
        }
        for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
            let _ = writeln!(flush_stale, "flush chain ip {t} {name}");
            let _ = writeln!(del_stale, "delete chain ip {t} {name}");
        }
        for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
            let _ = writeln!(del_sets, "delete set ip {t} {name}");
        }
    }
    [
        sets_add,
        chains_add,
        rules,
        del_elems,
        add_elems,
        flush_stale,
        del_stale,
        del_sets,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TableConfig {
        TableConfig {
            table: "r8s-proxy".into(),
            cluster_cidrs: vec!["10.42.0.0/16".into()],
            service_cidrs: vec!["10.43.0.0/16".into()],
            node_ips: vec!["192.168.1.5".parse().unwrap()],
            local_ips: vec!["10.43.0.10".parse().unwrap()],
        }
    }

    fn rules(eps: &[(&str, bool)]) -> PortRules {
        PortRules {
            key: "shop/web/http/tcp".into(),
            service: "shop/web".into(),
            proto: "tcp",
            port: 80,
            cluster_ips: vec!["10.43.0.5".parse().unwrap()],
            external_ips: vec![],
            node_port: None,
            endpoints: eps
                .iter()
                .map(|(ip, local)| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 8080,
                    local: *local,
                })
                .collect(),
            internal_local: false,
            external_local: false,
            affinity_seconds: None,
        }
    }

    #[test]
    fn cluster_ip_dispatches_randomly_in_one_chain() {
        let r = render(&cfg(), &rules(&[("10.42.0.2", true), ("10.42.0.3", false)]));
        assert_eq!(r.chains.len(), 1, "{:?}", r.chains);
        let svc = r
            .chains
            .iter()
            .find(|(n, _)| n.starts_with("svc-"))
            .unwrap();
        assert!(svc.0.ends_with("-shop/web/http/tcp"), "{}", svc.0);
        assert_eq!(
            svc.1[0],
            "ip saddr != { 10.42.0.0/16 } jump mark-for-masquerade"
        );
        assert_eq!(
            svc.1[1],
            "ip saddr { 10.42.0.2, 10.42.0.3 } jump mark-for-masquerade"
        );
        assert_eq!(
            svc.1[2],
            "meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.42.0.2 . 8080, 1 : 10.42.0.3 . 8080 }"
        );
        let one = render(&cfg(), &rules(&[("10.42.0.2", true)]));
        let svc1 = one.chains.values().next().unwrap();
        assert_eq!(
            svc1.last().unwrap(),
            "meta l4proto tcp dnat ip to 10.42.0.2:8080"
        );
        assert!(r.elements.contains(&(
            "service-ips".into(),
            "10.43.0.5 . tcp . 80".into(),
            format!("goto {}", svc.0)
        )));
    }

    #[test]
    fn no_endpoints_reject_and_node_ports_use_the_external_chain() {
        let mut p = rules(&[]);
        p.node_port = Some(30080);
        let r = render(&cfg(), &p);
        assert!(r.chains.is_empty());
        assert!(r.elements.contains(&(
            "no-endpoint-services".into(),
            "10.43.0.5 . tcp . 80".into(),
            "goto reject-chain".into()
        )));
        assert!(r.elements.contains(&(
            "no-endpoint-nodeports".into(),
            "tcp . 30080".into(),
            "goto reject-chain".into()
        )));
        let mut p = rules(&[("10.42.0.2", false)]);
        p.node_port = Some(30080);
        p.external_local = true;
        let r = render(&cfg(), &p);
        let ext = r
            .chains
            .iter()
            .find(|(n, _)| n.starts_with("ext-"))
            .unwrap();
        // Only remote endpoints: outside traffic is dropped, never SNATed.
        assert_eq!(ext.1.last().unwrap(), "drop");
        assert!(r.elements.iter().any(|(m, k, v)| m == "service-nodeports"
            && k == "tcp . 30080"
            && v == &format!("goto {}", ext.0)));
    }

    #[test]
    fn affinity_remembers_clients_per_endpoint() {
        let mut p = rules(&[("10.42.0.2", true), ("10.42.0.3", true)]);
        p.affinity_seconds = Some(60);
        let r = render(&cfg(), &p);
        assert_eq!(r.sets.len(), 2);
        assert!(r.sets.values().all(|d| d.contains("timeout 60s")));
        assert_eq!(r.chains.keys().filter(|n| n.starts_with("sep-")).count(), 2);
        let svc = r
            .chains
            .iter()
            .find(|(n, _)| n.starts_with("svc-"))
            .unwrap()
            .1;
        assert!(svc[1].starts_with("ip saddr @aff-") && svc[2].starts_with("ip saddr @aff-"));
    }

    #[test]
    fn transactions_touch_only_what_changed() {
        let c = cfg();
        let a = render(&c, &rules(&[("10.42.0.2", true)]));
        let b = render(&c, &rules(&[("10.42.0.2", true), ("10.42.0.3", true)]));
        let tx = transaction("T", &[(Some(&a), Some(&b))]);
        // Only the service chain is rewritten; the map element stays.
        assert_eq!(tx.matches("add chain").count(), 1, "{tx}");
        assert_eq!(tx.matches("add rule").count(), 3, "{tx}");
        assert!(!tx.contains("element"), "{tx}");
        let gone = transaction("T", &[(Some(&b), None)]);
        assert!(gone.contains("delete element ip T service-ips { 10.43.0.5 . tcp . 80 }"));
        assert_eq!(gone.matches("delete chain").count(), 1);
        let d = gone.find("delete element").unwrap();
        let f = gone.find("flush chain").unwrap();
        assert!(d < f, "references go before the chains: {gone}");
    }

    #[test]
    fn base_table_checks_no_endpoints_before_nat_and_masquerades_egress() {
        let s = base(&cfg(), true);
        assert!(s.starts_with("add table ip r8s-proxy\ndelete table ip r8s-proxy\n"));
        assert!(s.contains("add element ip r8s-proxy local-ips { 10.43.0.10 }"));
        assert!(s.contains(
            "ip saddr { 10.42.0.0/16 } ip daddr != { 10.42.0.0/16, 10.43.0.0/16 } masquerade"
        ));
        assert!(s.contains("ip daddr { 10.43.0.0/16 } drop"));
    }
}
