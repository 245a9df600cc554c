//! The desired state and plans, from Node objects as the API serves them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use super::*;

const MAC_B: &str = "0a:00:00:00:00:0b";
const MAC_C: &str = "0a:00:00:00:00:0c";

fn cfg(mode: Mode) -> OverlayConfig {
    OverlayConfig {
        node_name: "a".into(),
        node_ip: "192.168.1.10".parse().unwrap(),
        mode,
        device: "r8s-vx-test".into(),
        vni: 1,
        port: 8472,
    }
}

fn node(name: &str, cidr: Option<&str>, ip: Option<&str>, mac: Option<&str>) -> Node {
    let mut v = json!({"metadata": {"name": name}, "spec": {}, "status": {}});
    if let Some(c) = cidr {
        v["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    if let Some(ip) = ip {
        v["status"]["addresses"] = json!([
            {"type": "Hostname", "address": name},
            {"type": "InternalIP", "address": ip},
        ]);
    }
    if let Some(m) = mac {
        v["metadata"]["annotations"] = json!({VTEP_MAC_ANNOTATION: m});
    }
    serde_json::from_value(v).unwrap()
}

fn cluster() -> Vec<Node> {
    vec![
        node(
            "a",
            Some("10.42.0.0/24"),
            Some("192.168.1.10"),
            Some("0a:00:00:00:00:0a"),
        ),
        node("b", Some("10.42.1.0/24"), Some("192.168.1.11"), Some(MAC_B)),
        node("c", Some("10.42.2.0/24"), Some("192.168.1.12"), Some(MAC_C)),
    ]
}

fn route(dst: &str, via: &str, overlay: bool) -> Entry {
    Entry::Route {
        dst: dst.parse().unwrap(),
        via: via.parse().unwrap(),
        overlay,
    }
}

fn neigh(ip: &str, mac: &str) -> Entry {
    Entry::Neigh {
        ip: ip.parse().unwrap(),
        mac: mac.parse().unwrap(),
    }
}

fn fdb(mac: &str, dst: &str) -> Entry {
    Entry::Fdb {
        mac: mac.parse().unwrap(),
        dst: dst.parse().unwrap(),
    }
}

fn strings(cmds: &[Cmd]) -> Vec<String> {
    cmds.iter().map(ToString::to_string).collect()
}

#[test]
fn host_gw_routes_every_other_node_via_its_address() {
    let d = desired(&cfg(Mode::HostGw), &cluster());
    let want: BTreeSet<Entry> = [
        route("10.42.1.0/24", "192.168.1.11", false),
        route("10.42.2.0/24", "192.168.1.12", false),
    ]
    .into();
    assert_eq!(d, want);
    let (remove, add) = plan(&BTreeSet::new(), &d, "r8s-vx-test");
    assert!(remove.is_empty());
    assert_eq!(
        strings(&add),
        [
            "ip route replace 10.42.1.0/24 via 192.168.1.11 proto 82",
            "ip route replace 10.42.2.0/24 via 192.168.1.12 proto 82",
        ]
    );
}

#[test]
fn vxlan_makes_fdb_neigh_and_onlink_route() {
    let d = desired(&cfg(Mode::Vxlan), &cluster());
    assert_eq!(d.len(), 6);
    let (remove, add) = plan(&BTreeSet::new(), &d, "vx0");
    assert!(remove.is_empty());
    assert_eq!(
        strings(&add),
        [
            "bridge fdb replace 0a:00:00:00:00:0b dev vx0 dst 192.168.1.11 self permanent",
            "bridge fdb replace 0a:00:00:00:00:0c dev vx0 dst 192.168.1.12 self permanent",
            "ip neigh replace 10.42.1.0 lladdr 0a:00:00:00:00:0b dev vx0 nud permanent",
            "ip neigh replace 10.42.2.0 lladdr 0a:00:00:00:00:0c dev vx0 nud permanent",
            "ip route replace 10.42.1.0/24 via 10.42.1.0 dev vx0 onlink proto 82",
            "ip route replace 10.42.2.0/24 via 10.42.2.0 dev vx0 onlink proto 82",
        ]
    );
}

#[test]
fn removed_node_loses_everything_routes_first() {
    let c = cfg(Mode::Vxlan);
    let old = desired(&c, &cluster());
    let mut nodes = cluster();
    nodes.retain(|n| n.metadata.name.as_deref() != Some("c"));
    let new = desired(&c, &nodes);
    let (remove, add) = plan(&old, &new, "vx0");
    assert!(add.is_empty());
    assert_eq!(
        strings(&remove),
        [
            "ip route del 10.42.2.0/24 via 10.42.2.0 dev vx0 proto 82",
            "ip neigh del 10.42.2.0 dev vx0",
            "bridge fdb del 0a:00:00:00:00:0c dev vx0 dst 192.168.1.12 self",
        ]
    );
}

#[test]
fn changed_mac_is_replaced_not_deleted() {
    let c = cfg(Mode::Vxlan);
    let old = desired(&c, &cluster());
    let mut nodes = cluster();
    nodes[1] = node(
        "b",
        Some("10.42.1.0/24"),
        Some("192.168.1.11"),
        Some("0a:00:00:00:00:bb"),
    );
    let new = desired(&c, &nodes);
    let (remove, add) = plan(&old, &new, "vx0");
    // The old fdb entry is keyed by the old MAC: it goes. The neighbour is
    // keyed by address: replaced in place, never deleted (that would take
    // the new one with it).
    assert_eq!(
        strings(&remove),
        ["bridge fdb del 0a:00:00:00:00:0b dev vx0 dst 192.168.1.11 self"]
    );
    assert_eq!(
        strings(&add),
        [
            "bridge fdb replace 0a:00:00:00:00:bb dev vx0 dst 192.168.1.11 self permanent",
            "ip neigh replace 10.42.1.0 lladdr 0a:00:00:00:00:bb dev vx0 nud permanent",
        ]
    );
}

#[test]
fn changed_address_and_cidr() {
    let c = cfg(Mode::HostGw);
    let old = desired(&c, &cluster());
    let mut nodes = cluster();
    nodes[1] = node("b", Some("10.42.1.0/24"), Some("192.168.1.99"), None);
    nodes[2] = node("c", Some("10.42.7.0/24"), Some("192.168.1.12"), None);
    let new = desired(&c, &nodes);
    let (remove, add) = plan(&old, &new, "vx0");
    assert_eq!(
        strings(&remove),
        ["ip route del 10.42.2.0/24 via 192.168.1.12 proto 82"]
    );
    assert_eq!(
        strings(&add),
        [
            "ip route replace 10.42.1.0/24 via 192.168.1.99 proto 82",
            "ip route replace 10.42.7.0/24 via 192.168.1.12 proto 82",
        ]
    );
}

#[test]
fn unchanged_state_plans_nothing() {
    let c = cfg(Mode::Vxlan);
    let d = desired(&c, &cluster());
    let (remove, add) = plan(&d, &d, "vx0");
    assert!(remove.is_empty() && add.is_empty());
}

#[test]
fn switching_mode_replaces_routes() {
    let hostgw = desired(&cfg(Mode::HostGw), &cluster());
    let vxlan = desired(&cfg(Mode::Vxlan), &cluster());
    let (remove, add) = plan(&hostgw, &vxlan, "vx0");
    // Same destinations: the routes are overwritten by `replace`.
    assert!(remove.is_empty());
    assert_eq!(add.len(), 6);
}

#[test]
fn own_node_hollow_nodes_and_incomplete_nodes_are_skipped() {
    let mut nodes = cluster();
    let mut hollow = node("h-1", Some("10.64.0.0/24"), Some("10.200.0.1"), Some(MAC_B));
    hollow.metadata.annotations =
        Some([(HOLLOW_ANNOTATION.to_string(), "true".to_string())].into());
    nodes.push(hollow);
    let mut labelled = node("h-2", Some("10.64.1.0/24"), Some("10.200.0.2"), None);
    labelled.metadata.labels = Some(
        [(
            INSTANCE_TYPE_LABEL.to_string(),
            HOLLOW_INSTANCE_TYPE.to_string(),
        )]
        .into(),
    );
    nodes.push(labelled);
    nodes.push(node(
        "d",
        None,
        Some("192.168.1.13"),
        Some("0a:00:00:00:00:0d"),
    ));
    nodes.push(node(
        "e",
        Some("10.42.4.0/24"),
        None,
        Some("0a:00:00:00:00:0e"),
    ));
    nodes.push(node("f", Some("10.42.5.0/24"), Some("192.168.1.15"), None));
    nodes.push(node(
        "g",
        Some("10.42.6.0/24"),
        Some("192.168.1.16"),
        Some("junk"),
    ));
    nodes.push(node(
        "h",
        Some("10.42.8.0/24"),
        Some("192.168.1.10"),
        Some(MAC_B),
    ));
    let w = wanted(&cfg(Mode::Vxlan), &nodes);
    let names: Vec<&str> = w.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(
        w.own_cidrs,
        ["10.42.0.0/24".parse::<ipnet::Ipv4Net>().unwrap()]
    );
    assert_eq!(w.own_vtep_mac.as_deref(), Some("0a:00:00:00:00:0a"));
    assert!(w.own_seen);
    let skipped: Vec<(&str, &Skip)> = w.skipped.iter().map(|(n, s)| (n.as_str(), s)).collect();
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert_eq!(skipped[0], ("d", &Skip::NoPodCidr));
    assert_eq!(skipped[1], ("e", &Skip::NoInternalIp));
    assert_eq!(skipped[2], ("f", &Skip::NoVtepMac));
    assert!(matches!(skipped[3], ("g", Skip::BadVtepMac(_))));
    assert_eq!(skipped[4], ("h", &Skip::SameHost));
    // host-gw needs no MAC.
    let w = wanted(&cfg(Mode::HostGw), &nodes);
    let names: Vec<&str> = w.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["b", "c", "f", "g"]);
}

#[test]
fn conflicting_and_overlapping_cidrs() {
    let mut nodes = cluster();
    // Claims b's podCIDR: the name-order first (b) keeps it.
    nodes.push(node(
        "bb",
        Some("10.42.1.0/24"),
        Some("192.168.1.20"),
        Some("0a:00:00:00:00:20"),
    ));
    // Covers our own pods.
    nodes.push(node(
        "x",
        Some("10.42.0.0/16"),
        Some("192.168.1.21"),
        Some("0a:00:00:00:00:21"),
    ));
    // Reuses c's MAC.
    nodes.push(node(
        "y",
        Some("10.42.9.0/24"),
        Some("192.168.1.22"),
        Some(MAC_C),
    ));
    let w = wanted(&cfg(Mode::Vxlan), &nodes);
    let names: Vec<&str> = w.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(
        w.skipped
            .contains(&("bb".into(), Skip::Conflict("b".into())))
    );
    assert!(w.skipped.contains(&(
        "x".into(),
        Skip::OverlapsOwn("10.42.0.0/16".parse().unwrap())
    )));
    assert!(
        w.skipped
            .contains(&("y".into(), Skip::Conflict("c".into())))
    );
}

#[test]
fn cidrs_are_normalised_and_ipv6_ignored() {
    let v = json!({
        "metadata": {"name": "b"},
        "spec": {"podCIDR": "10.42.1.7/24", "podCIDRs": ["10.42.1.0/24", "fd00:42:1::/64"]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "fd00::11"},
            {"type": "InternalIP", "address": "192.168.1.11"},
        ]},
    });
    let b: Node = serde_json::from_value(v).unwrap();
    assert_eq!(
        pod_cidrs(&b),
        ["10.42.1.0/24".parse::<ipnet::Ipv4Net>().unwrap()]
    );
    assert_eq!(internal_ip(&b), Some(Ipv4Addr::new(192, 168, 1, 11)));
    let d = desired(&cfg(Mode::HostGw), &[b]);
    assert_eq!(d, [route("10.42.1.0/24", "192.168.1.11", false)].into());
}

#[test]
fn no_own_node_yet_still_routes_others() {
    let nodes: Vec<Node> = cluster().into_iter().skip(1).collect();
    let w = wanted(&cfg(Mode::HostGw), &nodes);
    assert!(!w.own_seen && w.own_cidrs.is_empty() && w.own_vtep_mac.is_none());
    assert_eq!(w.nodes.len(), 2);
}

#[test]
fn empty_node_does_not_panic() {
    let n: Node = serde_json::from_value(json!({"metadata": {}})).unwrap();
    let w = wanted(&cfg(Mode::Vxlan), &[n]);
    assert!(w.nodes.is_empty() && w.skipped.is_empty());
}

#[test]
fn kernel_state_with_strays_is_cleaned() {
    // What a previous run left: a route to a node now gone, and a neighbour
    // of a node whose podCIDR moved.
    let old: BTreeSet<Entry> = [
        route("10.42.1.0/24", "10.42.1.0", true),
        route("10.42.50.0/24", "10.42.50.0", true),
        neigh("10.42.1.0", MAC_B),
        neigh("10.42.50.0", "0a:00:00:00:00:50"),
        fdb(MAC_B, "192.168.1.11"),
        fdb("0a:00:00:00:00:50", "192.168.1.50"),
    ]
    .into();
    let new = desired(&cfg(Mode::Vxlan), &cluster());
    let (remove, add) = plan(&old, &new, "vx0");
    assert_eq!(
        strings(&remove),
        [
            "ip route del 10.42.50.0/24 via 10.42.50.0 dev vx0 proto 82",
            "ip neigh del 10.42.50.0 dev vx0",
            "bridge fdb del 0a:00:00:00:00:50 dev vx0 dst 192.168.1.50 self",
        ]
    );
    assert_eq!(add.len(), 3, "{:?}", strings(&add));
}

#[test]
fn macs_parse_strictly() {
    let m: Mac = "0A:1b:2c:3d:4e:5f".parse().unwrap();
    assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
    for bad in [
        "",
        "0a:1b:2c:3d:4e",
        "0a:1b:2c:3d:4e:5f:00",
        "0a:1b:2c:3d:4e:zz",
        "0a:1b:2c:3d:4e:5",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
        "-a:00:00:00:00:01",
    ] {
        assert!(bad.parse::<Mac>().is_err(), "{bad}");
    }
}

#[test]
fn modes_parse_and_print() {
    assert_eq!("vxlan".parse::<Mode>().unwrap(), Mode::Vxlan);
    assert_eq!("host-gw".parse::<Mode>().unwrap(), Mode::HostGw);
    assert!("udp".parse::<Mode>().is_err());
    assert_eq!(Mode::HostGw.to_string(), "host-gw");
    assert_eq!(Mode::Vxlan.to_string(), "vxlan");
}

#[test]
fn config_is_validated() {
    assert!(cfg(Mode::Vxlan).validate().is_ok());
    let mut c = cfg(Mode::Vxlan);
    c.device = "a-very-long-device-name".into();
    assert!(c.validate().is_err());
    let mut c = cfg(Mode::Vxlan);
    c.vni = 1 << 24;
    assert!(c.validate().is_err());
}

#[test]
fn route_get_output_is_read() {
    use super::super::exec::is_direct_route;
    assert!(is_direct_route(
        "10.9.0.7 dev d0 src 10.9.0.1 uid 0 \n    cache \n"
    ));
    assert!(!is_direct_route(
        "10.8.0.7 via 10.9.0.254 dev d0 src 10.9.0.1 uid 0 \n"
    ));
    assert!(!is_direct_route(
        "local 10.9.0.1 dev lo src 10.9.0.1 uid 0 \n"
    ));
    assert!(!is_direct_route(""));
}

#[test]
fn device_names_fit_and_differ() {
    use super::super::device_for_bridge;
    assert_eq!(device_for_bridge("r8s0"), "r8s-vx-r8s0");
    let long = [
        device_for_bridge("r8s-node-one"),
        device_for_bridge("r8s-node-two"),
        device_for_bridge("br/evil name"),
    ];
    for d in &long {
        assert!(d.len() <= 15 && d.starts_with("r8s-vx-"), "{d}");
        let c = OverlayConfig {
            device: d.clone(),
            ..cfg(Mode::Vxlan)
        };
        assert!(c.validate().is_ok(), "{d}");
    }
    assert_ne!(long[0], long[1]);
}
