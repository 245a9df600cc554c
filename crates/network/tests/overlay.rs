//! The overlay's dataplane against the real kernel, without an API server
//! (root only). Two "nodes" are network namespaces joined by a veth pair;
//! each has a pod bridge holding its pod gateway and a "pod" namespace on
//! it. The dataplane of each node is driven with Node objects made here,
//! and the pods ping each other across the nodes in host-gw and then in
//! vxlan mode. All traffic stays inside the namespaces this test makes.

use std::net::Ipv4Addr;
use std::process::Command;

use k8s_openapi::api::core::v1::Node;
use network::overlay::{
    Dataplane, Entry, Executor, Mode, OverlayConfig, R8S_PROTO, VTEP_MAC_ANNOTATION, wanted,
};
use serde_json::json;

const DEVICE: &str = "r8s-vx-test";

/// Deletes every namespace made (and with them their links), even when
/// the test fails half-way.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        run("ip", &["netns", "add", &name]);
        self.0.push(name.clone());
        ip(&name, &["link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip -n <ns> ...`
fn ip(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// The ping to use: iputils', else busybox's.
fn ping_command() -> Vec<String> {
    let found = |p: &str| {
        Command::new("which")
            .arg(p)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found("ping") {
        vec!["ping".into()]
    } else if found("busybox") {
        vec!["busybox".into(), "ping".into()]
    } else {
        panic!("no ping on this machine: install iputils-ping (apt-get install iputils-ping)");
    }
}

/// Pings `to` from inside `ns` (a few tries: the first may wait on ARP).
fn ping(ns: &str, to: Ipv4Addr) -> Result<(), String> {
    ping_tries(ns, to, 3)
}

/// Checks that `to` does not answer from inside `ns`.
fn unreachable(ns: &str, to: Ipv4Addr) -> bool {
    ping_tries(ns, to, 1).is_err()
}

fn ping_tries(ns: &str, to: Ipv4Addr, tries: usize) -> Result<(), String> {
    let mut args: Vec<String> = vec!["netns".into(), "exec".into(), ns.into()];
    args.extend(ping_command());
    args.extend(["-c1".into(), "-W2".into(), to.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut last = String::new();
    for _ in 0..tries {
        match try_run("ip", &args) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn node(name: &str, cidr: &str, addr: Ipv4Addr, mac: Option<String>) -> Node {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": addr.to_string()}]},
    });
    if let Some(m) = mac {
        v["metadata"]["annotations"] = json!({VTEP_MAC_ANNOTATION: m});
    }
    serde_json::from_value(v).unwrap()
}

/// One simulated node: its namespace, address, pod range and pod.
struct SimNode {
    name: &'static str,
    ns: String,
    addr: Ipv4Addr,
    cidr: String,
    pod_ns: String,
    pod_ip: Ipv4Addr,
}

impl SimNode {
    fn cfg(&self, mode: Mode) -> OverlayConfig {
        OverlayConfig {
            node_name: self.name.into(),
            node_ip: self.addr,
            mode,
            device: DEVICE.into(),
            vni: 1,
            port: 8472,
        }
    }

    fn dataplane(&self, mode: Mode) -> Dataplane {
        Dataplane::new(self.cfg(mode), Executor::in_netns(&self.ns))
    }

    fn routes(&self) -> String {
        ip(
            &self.ns,
            &["-4", "route", "show", "proto", &R8S_PROTO.to_string()],
        )
    }
}

/// Builds both nodes: uplink veth, pod bridge, pod namespace, forwarding.
fn build(guard: &mut Namespaces) -> [SimNode; 2] {
    let pid = std::process::id();
    let o = pid % 250;
    let mk = |i: u32, name: &'static str, guard: &mut Namespaces| {
        let ns = guard.add(format!("r8s-ovl-{pid}-{name}"));
        let pod_ns = guard.add(format!("r8s-ovl-{pid}-{name}-pod"));
        let gw = format!("10.{}.{o}.1", 250 + i);
        ip(&ns, &["link", "add", "br-pods", "type", "bridge"]);
        ip(&ns, &["addr", "add", &format!("{gw}/24"), "dev", "br-pods"]);
        ip(&ns, &["link", "set", "br-pods", "up"]);
        ip(
            &ns,
            &[
                "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", &pod_ns,
            ],
        );
        ip(&ns, &["link", "set", "vpod", "master", "br-pods"]);
        ip(&ns, &["link", "set", "vpod", "up"]);
        let pod_ip: Ipv4Addr = format!("10.{}.{o}.2", 250 + i).parse().unwrap();
        ip(
            &pod_ns,
            &["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"],
        );
        ip(&pod_ns, &["link", "set", "eth0", "up"]);
        ip(&pod_ns, &["route", "add", "default", "via", &gw]);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ],
        );
        SimNode {
            name,
            ns,
            addr: format!("10.250.{o}.{i}").parse().unwrap(),
            cidr: format!("10.{}.{o}.0/24", 250 + i),
            pod_ns,
            pod_ip,
        }
    };
    let a = mk(1, "n1", guard);
    let b = mk(2, "n2", guard);
    ip(
        &a.ns,
        &[
            "link", "add", "uplink", "type", "veth", "peer", "name", "uplink", "netns", &b.ns,
        ],
    );
    for n in [&a, &b] {
        ip(
            &n.ns,
            &["addr", "add", &format!("{}/30", n.addr), "dev", "uplink"],
        );
        ip(&n.ns, &["link", "set", "uplink", "up"]);
    }
    [a, b]
}

/// Syncs both dataplanes with the same Node list and checks they succeed.
fn sync_all(nodes: &[SimNode; 2], dps: &mut [Dataplane; 2], list: &[Node], mode: Mode) {
    for (n, dp) in nodes.iter().zip(dps.iter_mut()) {
        let report = dp.sync(&wanted(&n.cfg(mode), list));
        assert!(!report.failed, "{}: sync failed", n.name);
        assert!(
            report.refused.is_empty(),
            "{}: refused {:?}",
            n.name,
            report.refused
        );
    }
}

fn pods_reach_each_other(nodes: &[SimNode; 2]) {
    let [a, b] = nodes;
    ping(&a.pod_ns, b.pod_ip).unwrap_or_else(|e| panic!("pod on n1 -> pod on n2: {e}"));
    ping(&b.pod_ns, a.pod_ip).unwrap_or_else(|e| panic!("pod on n2 -> pod on n1: {e}"));
}

#[test]
fn pods_reach_each_other_across_nodes() {
    assert!(
        is_root(),
        "the overlay test needs root (network namespaces, routes, VXLAN): run it as root"
    );
    // Fail early and clearly rather than after building everything.
    ping_command();
    let mut guard = Namespaces(Vec::new());
    let nodes = build(&mut guard);
    let [a, b] = &nodes;
    // Without routes the pods cannot reach each other.
    assert!(
        unreachable(&a.pod_ns, b.pod_ip),
        "pods reach each other before any route"
    );
    // A route of ours left by an earlier run, to a node that is gone.
    ip(
        &a.ns,
        &[
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            &b.addr.to_string(),
            "proto",
            "82",
        ],
    );

    // host-gw.
    let list = [
        node("n1", &a.cidr, a.addr, None),
        node("n2", &b.cidr, b.addr, None),
    ];
    let mut dps = [a.dataplane(Mode::HostGw), b.dataplane(Mode::HostGw)];
    sync_all(&nodes, &mut dps, &list, Mode::HostGw);
    let routes = a.routes();
    assert!(
        routes.contains(&format!("{} via {}", b.cidr, b.addr)),
        "{routes}"
    );
    assert!(!routes.contains("10.99.0.0"), "stale route kept: {routes}");
    pods_reach_each_other(&nodes);

    // A node whose address is not on a shared link is refused, not routed.
    let far: Ipv4Addr = "192.0.2.7".parse().unwrap();
    let mut with_far = list.to_vec();
    with_far.push(node("n3", "10.98.0.0/24", far, None));
    let report = dps[0].sync(&wanted(&a.cfg(Mode::HostGw), &with_far));
    assert_eq!(report.refused, [("n3".to_string(), far)]);
    assert!(!a.routes().contains("10.98.0.0"));

    // Restart in vxlan mode: fresh dataplanes read what is there and
    // replace it. The first sync makes the devices; their MACs, published
    // on the Nodes, bring the tunnels up on the next one.
    let mut dps = [a.dataplane(Mode::Vxlan), b.dataplane(Mode::Vxlan)];
    let macs: Vec<String> = nodes
        .iter()
        .zip(dps.iter_mut())
        .map(|(n, dp)| {
            let r = dp.sync(&wanted(&n.cfg(Mode::Vxlan), &list));
            assert!(!r.failed, "{}: vxlan device", n.name);
            r.mac.expect("a VTEP MAC").to_string()
        })
        .collect();
    let list = [
        node("n1", &a.cidr, a.addr, Some(macs[0].clone())),
        node("n2", &b.cidr, b.addr, Some(macs[1].clone())),
    ];
    sync_all(&nodes, &mut dps, &list, Mode::Vxlan);
    let routes = a.routes();
    let gw_b = b.cidr.replace("/24", "");
    assert!(
        routes.contains(&format!("{} via {gw_b} dev {DEVICE}", b.cidr)),
        "{routes}"
    );
    let link = ip(&a.ns, &["-d", "link", "show", DEVICE]);
    assert!(
        link.contains("mtu 1450") && link.contains("vxlan id 1"),
        "{link}"
    );
    let addr = ip(&a.ns, &["-4", "addr", "show", "dev", DEVICE]);
    assert!(
        addr.contains(&format!("inet {}/32", a.cidr.replace("/24", ""))),
        "{addr}"
    );
    // The pods now talk through the tunnel: the host-gw route is gone.
    pods_reach_each_other(&nodes);

    // n2 leaves the cluster: n1 drops its route, neighbour and fdb entry.
    let report = dps[0].sync(&wanted(&a.cfg(Mode::Vxlan), &list[..1]));
    assert!(!report.failed);
    let left = Executor::in_netns(&a.ns).read_state(DEVICE).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        unreachable(&a.pod_ns, b.pod_ip),
        "n2's pods still reachable"
    );
    // And comes back.
    dps[0].sync(&wanted(&a.cfg(Mode::Vxlan), &list));
    let back = Executor::in_netns(&a.ns).read_state(DEVICE).unwrap();
    assert_eq!(back.len(), 3, "{back:?}");
    assert!(
        back.iter()
            .any(|e| matches!(e, Entry::Fdb { dst, .. } if *dst == b.addr))
    );
    pods_reach_each_other(&nodes);

    // Clean-up removes the device and every route of ours, and twice is fine.
    for n in &nodes {
        let exec = Executor::in_netns(&n.ns);
        exec.cleanup(DEVICE);
        exec.cleanup(DEVICE);
        assert_eq!(n.routes().trim(), "", "{}: routes left", n.name);
        assert!(try_run("ip", &["-n", &n.ns, "link", "show", DEVICE]).is_err());
    }
    assert!(unreachable(&a.pod_ns, b.pod_ip));
}
