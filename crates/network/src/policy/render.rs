//! The nft script that takes the policy table from what it holds to what
//! it should: one transaction, so a packet sees either the old rules or
//! the new, never a pod between them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use super::model::Desired;

/// The base of the table. Forwarded packets only: traffic from the node
/// itself (kubelet probes, the ingress proxy) and to it (the node's DNS
/// server) is never filtered, as upstream's "a pod cannot block its
/// node". Packets reach this hook after the service proxy's DNAT, so a
/// policy sees the pod a Service picked.
fn base(t: &str) -> String {
    format!(
        "add table ip {t}\n\
         delete table ip {t}\n\
         add table ip {t}\n\
         add map ip {t} ingress {{ type ipv4_addr : verdict; }}\n\
         add map ip {t} egress {{ type ipv4_addr : verdict; }}\n\
         add chain ip {t} forward {{ type filter hook forward priority filter; policy accept; }}\n\
         add rule ip {t} forward ct state established,related accept\n\
         add rule ip {t} forward ip saddr vmap @egress\n\
         add rule ip {t} forward ip daddr vmap @ingress\n"
    )
}

fn map_changes(
    t: &str,
    map: &str,
    old: &BTreeMap<Ipv4Addr, String>,
    new: &BTreeMap<Ipv4Addr, String>,
    dels: &mut String,
    adds: &mut String,
) {
    for (ip, chain) in old {
        if new.get(ip) != Some(chain) {
            let _ = writeln!(dels, "delete element ip {t} {map} {{ {ip} }}");
        }
    }
    let added: Vec<String> = new
        .iter()
        .filter(|(ip, chain)| old.get(ip) != Some(chain))
        .map(|(ip, chain)| format!("{ip} : jump {chain}"))
        .collect();
    for chunk in added.chunks(1000) {
        let _ = writeln!(adds, "add element ip {t} {map} {{ {} }}", chunk.join(", "));
    }
}

/// The script from `old` (None: a table to rebuild whole) to `new`;
/// empty when nothing changes.
pub fn transaction(t: &str, old: Option<&Desired>, new: &Desired) -> String {
    let empty = Desired::default();
    let mut s = String::new();
    let old = match old {
        Some(o) => o,
        None => {
            s.push_str(&base(t));
            &empty
        }
    };
    for (name, def) in &new.sets {
        match old.sets.get(name) {
            Some(o) if o == def => continue,
            Some(_) => {
                let _ = writeln!(s, "flush set ip {t} {name}");
            }
            None => {
                let _ = writeln!(s, "add set ip {t} {name} {{ {} }}", def.decl);
            }
        }
        for chunk in def.elements.chunks(1000) {
            let _ = writeln!(s, "add element ip {t} {name} {{ {} }}", chunk.join(", "));
        }
    }
    for (name, rules) in &new.chains {
        if old.chains.contains_key(name) {
            continue;
        }
        let _ = writeln!(s, "add chain ip {t} {name}");
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {name} {r}");
        }
    }
    let (mut dels, mut adds) = (String::new(), String::new());
    map_changes(
        t,
        "ingress",
        &old.ingress,
        &new.ingress,
        &mut dels,
        &mut adds,
    );
    map_changes(t, "egress", &old.egress, &new.egress, &mut dels, &mut adds);
    s.push_str(&dels);
    s.push_str(&adds);
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(s, "flush chain ip {t} {name}");
            let _ = writeln!(s, "delete chain ip {t} {name}");
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(s, "delete set ip {t} {name}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{PEER_SET, SetDef};

    fn desired(ip: &str, chain: &str, peers: &[&str]) -> Desired {
        let mut d = Desired::default();
        d.sets.insert(
            "peers-1".into(),
            SetDef {
                decl: PEER_SET,
                elements: peers.iter().map(|s| s.to_string()).collect(),
            },
        );
        d.chains.insert(
            chain.into(),
            vec!["ip saddr @peers-1 accept".into(), "drop".into()],
        );
        d.ingress.insert(ip.parse().unwrap(), chain.into());
        d
    }

    #[test]
    fn a_rebuild_starts_from_an_empty_table_in_the_same_transaction() {
        let d = desired("10.42.0.5", "pod-in-1", &["10.42.0.6"]);
        let s = transaction("t", None, &d);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "add table ip t");
        assert_eq!(lines[1], "delete table ip t");
        assert!(s.contains("add set ip t peers-1 { type ipv4_addr; flags interval; }"));
        assert!(s.contains("add element ip t peers-1 { 10.42.0.6 }"));
        assert!(s.contains("add rule ip t pod-in-1 ip saddr @peers-1 accept"));
        assert!(s.contains("add element ip t ingress { 10.42.0.5 : jump pod-in-1 }"));
        // The set exists before the chain that names it, the chain before
        // the map element that jumps to it.
        let pos = |x: &str| s.find(x).unwrap();
        assert!(pos("add set") < pos("add chain ip t pod-in-1"));
        assert!(pos("add chain ip t pod-in-1") < pos("add element ip t ingress"));
    }

    #[test]
    fn an_unchanged_table_needs_no_transaction() {
        let d = desired("10.42.0.5", "pod-in-1", &["10.42.0.6"]);
        assert_eq!(transaction("t", Some(&d), &d), "");
    }

    #[test]
    fn a_peer_change_rewrites_only_the_set() {
        let a = desired("10.42.0.5", "pod-in-1", &["10.42.0.6"]);
        let b = desired("10.42.0.5", "pod-in-1", &["10.42.0.6", "10.42.0.7"]);
        let s = transaction("t", Some(&a), &b);
        assert_eq!(
            s,
            "flush set ip t peers-1\nadd element ip t peers-1 { 10.42.0.6, 10.42.0.7 }\n"
        );
    }

    #[test]
    fn a_pod_moving_to_new_rules_swaps_its_element_then_drops_the_old_chain() {
        let a = desired("10.42.0.5", "pod-in-1", &[]);
        let b = desired("10.42.0.5", "pod-in-2", &[]);
        let s = transaction("t", Some(&a), &b);
        let pos = |x: &str| s.find(x).unwrap();
        assert!(pos("add chain ip t pod-in-2") < pos("delete element ip t ingress { 10.42.0.5 }"));
        assert!(
            pos("add element ip t ingress { 10.42.0.5 : jump pod-in-2 }")
                < pos("delete chain ip t pod-in-1")
        );
        assert!(!s.contains("set ip t peers-1"));
    }

    #[test]
    fn a_removed_pod_leaves_no_element_chain_or_set() {
        let a = desired("10.42.0.5", "pod-in-1", &["10.42.0.6"]);
        let s = transaction("t", Some(&a), &Desired::default());
        assert!(s.contains("delete element ip t ingress { 10.42.0.5 }"));
        assert!(s.contains("delete chain ip t pod-in-1"));
        assert!(s.contains("delete set ip t peers-1"));
        assert!(s.find("delete chain").unwrap() < s.find("delete set").unwrap());
    }
}
