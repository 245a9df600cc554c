use super::*;
use serde_json::json;

fn pod(ns: &str, labels: &[(&str, &str)], ip: &str, local: bool) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ip: ip.parse().unwrap(),
        local,
        ports: Vec::new(),
    }
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn namespaces() -> HashMap<String, BTreeMap<String, String>> {
    let mut m = HashMap::new();
    for (ns, team) in [("default", "a"), ("other", "b"), ("third", "b")] {
        m.insert(
            ns.to_string(),
            [
                ("kubernetes.io/metadata.name".to_string(), ns.to_string()),
                ("team".to_string(), team.to_string()),
            ]
            .into(),
        );
    }
    m
}

fn run(policies: &[NetworkPolicy], pods: &[PodInfo]) -> Desired {
    let ns = namespaces();
    desired(&World {
        policies,
        pods,
        namespaces: &ns,
    })
}

fn chain_of<'a>(d: &'a Desired, ip: &str, ingress: bool) -> Option<&'a Vec<String>> {
    let ip: Ipv4Addr = ip.parse().unwrap();
    let name = if ingress {
        d.ingress.get(&ip)?
    } else {
        d.egress.get(&ip)?
    };
    d.chains.get(name)
}

/// The elements of the set a rule line names.
fn set_in<'a>(d: &'a Desired, line: &str) -> &'a [String] {
    let name = line
        .split('@')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    &d.sets[name].elements
}

#[test]
fn without_policies_nothing_is_filtered() {
    let d = run(&[], &[pod("default", &[("app", "db")], "10.42.0.5", true)]);
    assert_eq!(d, Desired::default());
}

#[test]
fn default_deny_isolates_local_pods_of_its_namespace_only() {
    let deny = policy(
        "default",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    let pods = [
        pod("default", &[("app", "db")], "10.42.0.5", true),
        pod("default", &[("app", "web")], "10.42.1.5", false),
        pod("other", &[("app", "db")], "10.42.0.6", true),
    ];
    let d = run(&[deny], &pods);
    assert_eq!(
        chain_of(&d, "10.42.0.5", true).unwrap(),
        &vec!["drop".to_string()]
    );
    // Remote pods are filtered by their own node; other namespaces are not
    // selected; ingress-only policies leave egress open.
    assert_eq!(d.ingress.len(), 1);
    assert!(d.egress.is_empty());
}

#[test]
fn policy_types_default_from_the_rules_present() {
    let p = policy("default", "p", json!({"podSelector": {}, "egress": []}));
    let d = run(&[p], &[pod("default", &[], "10.42.0.5", true)]);
    assert!(chain_of(&d, "10.42.0.5", true).is_some());
    assert_eq!(
        chain_of(&d, "10.42.0.5", false).unwrap(),
        &vec!["drop".to_string()]
    );
    let p = policy(
        "default",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let d = run(&[p], &[pod("default", &[], "10.42.0.5", true)]);
    assert!(chain_of(&d, "10.42.0.5", true).is_none());
    assert!(chain_of(&d, "10.42.0.5", false).is_some());
}

#[test]
fn a_pod_selector_peer_is_its_namespace_pods_wherever_they_run() {
    let p = policy(
        "default",
        "db",
        json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}],
        }),
    );
    let pods = [
        pod("default", &[("app", "db")], "10.42.0.5", true),
        pod("default", &[("role", "frontend")], "10.42.0.7", true),
        pod("default", &[("role", "frontend")], "10.42.1.7", false),
        pod("default", &[("role", "backend")], "10.42.1.8", false),
        pod("other", &[("role", "frontend")], "10.42.1.9", false),
    ];
    let d = run(&[p], &pods);
    let rules = chain_of(&d, "10.42.0.5", true).unwrap();
    assert_eq!(rules.len(), 2);
    assert!(rules[0].starts_with("ip saddr @peers-") && rules[0].ends_with(" accept"));
    assert_eq!(set_in(&d, &rules[0]), ["10.42.0.7", "10.42.1.7"]);
    assert_eq!(rules[1], "drop");
    // The frontend pod is not selected: it stays open.
    assert!(chain_of(&d, "10.42.0.7", true).is_none());
}

#[test]
fn namespace_selectors_alone_and_with_a_pod_selector() {
    let alone = policy(
        "default",
        "ns",
        json!({
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
        }),
    );
    let both = policy(
        "default",
        "both",
        json!({
            "podSelector": {},
            "ingress": [{"from": [{
                "namespaceSelector": {"matchLabels": {"team": "b"}},
                "podSelector": {"matchLabels": {"role": "frontend"}},
            }]}],
        }),
    );
    let pods = [
        pod("default", &[], "10.42.0.5", true),
        pod("default", &[("role", "frontend")], "10.42.0.6", true),
        pod("other", &[("role", "frontend")], "10.42.1.7", false),
        pod("other", &[], "10.42.1.8", false),
        pod("third", &[], "10.42.1.9", false),
    ];
    let d = run(&[alone], &pods);
    let rules = chain_of(&d, "10.42.0.5", true).unwrap();
    assert_eq!(set_in(&d, &rules[0]), ["10.42.1.7-10.42.1.9"]);
    let d = run(&[both], &pods);
    let rules = chain_of(&d, "10.42.0.5", true).unwrap();
    assert_eq!(set_in(&d, &rules[0]), ["10.42.1.7"]);
}

#[test]
fn an_ip_block_takes_out_its_exceptions() {
    let p = policy(
        "default",
        "out",
        json!({
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25", "192.0.2.8/32"]}}]}],
        }),
    );
    let d = run(&[p], &[pod("default", &[], "10.42.0.5", true)]);
    let rules = chain_of(&d, "10.42.0.5", false).unwrap();
    assert!(rules[0].starts_with("ip daddr @peers-") && rules[0].ends_with(" return"));
    assert_eq!(
        set_in(&d, &rules[0]),
        ["192.0.2.0-192.0.2.7", "192.0.2.9-192.0.2.127"]
    );
}

#[test]
fn ports_by_number_range_protocol_and_name() {
    let p = policy(
        "default",
        "ports",
        json!({
            "podSelector": {},
            "ingress": [{"ports": [
                {"protocol": "TCP", "port": 80},
                {"protocol": "TCP", "port": 8000, "endPort": 8080},
                {"protocol": "UDP", "port": 53},
                {"protocol": "TCP", "port": "metrics"},
                {"protocol": "TCP", "port": "nowhere"},
                {"protocol": "SCTP"},
            ]}],
        }),
    );
    let mut a = pod("default", &[], "10.42.0.5", true);
    a.ports = vec![("metrics".into(), "tcp".into(), 9090)];
    let mut b = pod("default", &[], "10.42.0.6", true);
    b.ports = vec![("metrics".into(), "tcp".into(), 9100)];
    let d = run(&[p], &[a, b]);
    assert_eq!(
        chain_of(&d, "10.42.0.5", true).unwrap(),
        &vec![
            "meta l4proto sctp accept".to_string(),
            "meta l4proto tcp th dport { 80, 8000-8080, 9090 } accept".to_string(),
            "meta l4proto udp th dport { 53 } accept".to_string(),
            "drop".to_string(),
        ]
    );
    // Named ports resolve per pod, so the two pods have chains of their own.
    assert!(chain_of(&d, "10.42.0.6", true).unwrap()[1].contains("9100"));
    assert_ne!(
        d.ingress[&"10.42.0.5".parse::<Ipv4Addr>().unwrap()],
        d.ingress[&"10.42.0.6".parse::<Ipv4Addr>().unwrap()]
    );
}

#[test]
fn an_egress_named_port_is_each_destinations_own() {
    let p = policy(
        "default",
        "named",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                "ports": [{"protocol": "TCP", "port": "sql"}],
            }],
        }),
    );
    let web = pod("default", &[("app", "web")], "10.42.0.5", true);
    let mut db1 = pod("default", &[("app", "db")], "10.42.0.6", true);
    db1.ports = vec![("sql".into(), "tcp".into(), 5432)];
    let mut db2 = pod("default", &[("app", "db")], "10.42.1.6", false);
    db2.ports = vec![
        ("sql".into(), "tcp".into(), 3306),
        ("x".into(), "tcp".into(), 1),
    ];
    let mut other = pod("default", &[("app", "cache")], "10.42.1.7", false);
    other.ports = vec![("sql".into(), "tcp".into(), 6379)];
    let d = run(&[p], &[web, db1, db2, other]);
    let rules = chain_of(&d, "10.42.0.5", false).unwrap();
    assert!(rules[0].starts_with("ip daddr . meta l4proto . th dport @named-"));
    assert_eq!(
        set_in(&d, &rules[0]),
        ["10.42.0.6 . tcp . 5432", "10.42.1.6 . tcp . 3306"]
    );
}

#[test]
fn the_rules_of_every_selecting_policy_add_up_and_identical_pods_share_a_chain() {
    let a = policy(
        "default",
        "a",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]}),
    );
    let b = policy(
        "default",
        "b",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"protocol": "TCP", "port": 5432}]}]}),
    );
    let pods = [
        pod("default", &[("app", "db")], "10.42.0.5", true),
        pod("default", &[("app", "db")], "10.42.0.6", true),
        pod("default", &[("app", "web")], "10.42.0.7", true),
    ];
    let d = run(&[b, a], &pods);
    let db = chain_of(&d, "10.42.0.5", true).unwrap();
    assert_eq!(
        db,
        &vec![
            "meta l4proto tcp th dport { 80 } accept".to_string(),
            "meta l4proto tcp th dport { 5432 } accept".to_string(),
            "drop".to_string(),
        ]
    );
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(d.ingress[&ip("10.42.0.5")], d.ingress[&ip("10.42.0.6")]);
    assert_ne!(d.ingress[&ip("10.42.0.5")], d.ingress[&ip("10.42.0.7")]);
    assert_eq!(d.chains.len(), 2);
}

#[test]
fn an_empty_rule_allows_everything_and_an_empty_list_nothing() {
    let all = policy(
        "default",
        "all",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    let none = policy("default", "none", json!({"podSelector": {}, "ingress": []}));
    let pods = [pod("default", &[], "10.42.0.5", true)];
    let d = run(std::slice::from_ref(&all), &pods);
    assert_eq!(chain_of(&d, "10.42.0.5", true).unwrap()[0], "accept");
    let d = run(&[none], &pods);
    assert_eq!(
        chain_of(&d, "10.42.0.5", true).unwrap(),
        &vec!["drop".to_string()]
    );
}

#[test]
fn pods_policies_do_not_apply_to_are_left_out() {
    let mut host: Pod = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "h"},
        "spec": {"nodeName": "n0", "hostNetwork": true, "containers": []},
        "status": {"podIP": "192.0.2.1"},
    }))
    .unwrap();
    assert!(PodInfo::from_pod(&host, "n0", None).is_none());
    host.spec.as_mut().unwrap().host_network = None;
    let info = PodInfo::from_pod(&host, "n0", None).unwrap();
    assert!(info.local);
    assert!(!PodInfo::from_pod(&host, "n1", None).unwrap().local);
    host.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(PodInfo::from_pod(&host, "n0", None).is_none());
}
