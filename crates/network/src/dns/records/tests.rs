use std::str::FromStr;

use serde_json::{Value, json};

use super::*;

fn records() -> Records {
    Records::new("cluster.local").unwrap()
}

fn service(ns: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn web() -> Service {
    service(
        "default",
        "web",
        json!({
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00::10"],
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"port": 8125, "protocol": "UDP"},
            ],
        }),
    )
}

fn headless(name: &str) -> Service {
    service(
        "db",
        name,
        json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
    )
}

fn slice(ns: &str, name: &str, service: &str, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
    }))
    .unwrap()
}

fn name(text: &str) -> Name {
    Name::from_str(text).unwrap()
}

fn lookup(records: &Records, qname: &str, qtype: RecordType) -> Answer {
    records.lookup(&name(qname), qtype)
}

/// The answers' data as text, sorted, or the kind of empty answer.
fn data(answer: &Answer) -> Vec<String> {
    match answer {
        Answer::Records(set) => {
            let mut out: Vec<String> = set.answers.iter().map(|r| r.data.to_string()).collect();
            out.sort();
            out
        }
        Answer::NoData(_) => vec!["NODATA".to_string()],
        Answer::NxDomain(_) => vec!["NXDOMAIN".to_string()],
        Answer::NotOurs => vec!["FORWARD".to_string()],
        Answer::NotReady => vec!["NOTREADY".to_string()],
    }
}

fn q(records: &Records, qname: &str, qtype: RecordType) -> Vec<String> {
    data(&lookup(records, qname, qtype))
}

#[test]
fn cluster_ip_service_a_and_aaaa() {
    let mut r = records();
    r.apply_service(&web());
    assert_eq!(
        q(&r, "web.default.svc.cluster.local.", RecordType::A),
        ["10.96.0.10"]
    );
    assert_eq!(
        q(&r, "web.default.svc.cluster.local.", RecordType::AAAA),
        ["fd00::10"]
    );
    let Answer::Records(set) = lookup(&r, "web.default.svc.cluster.local.", RecordType::A) else {
        panic!("no records");
    };
    assert_eq!(set.answers[0].ttl, CLUSTER_TTL);
    assert_eq!(set.answers[0].name, name("web.default.svc.cluster.local."));
}

#[test]
fn ipv4_only_service_has_no_aaaa_but_exists() {
    let mut r = records();
    r.apply_service(&service(
        "default",
        "v4",
        json!({"clusterIP": "10.96.0.11"}),
    ));
    assert_eq!(
        q(&r, "v4.default.svc.cluster.local.", RecordType::A),
        ["10.96.0.11"]
    );
    assert_eq!(
        q(&r, "v4.default.svc.cluster.local.", RecordType::AAAA),
        ["NODATA"]
    );
    assert_eq!(
        q(&r, "v4.default.svc.cluster.local.", RecordType::MX),
        ["NODATA"]
    );
}

#[test]
fn case_and_trailing_dot_do_not_matter() {
    let mut r = records();
    r.apply_service(&web());
    assert_eq!(
        q(&r, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A),
        ["10.96.0.10"]
    );
    assert_eq!(
        q(&r, "web.default.svc.cluster.local", RecordType::A),
        ["10.96.0.10"]
    );
    let mut caps = records();
    caps.apply_service(&service(
        "Default",
        "Web",
        json!({"clusterIP": "10.96.0.12"}),
    ));
    assert_eq!(
        q(&caps, "web.default.svc.cluster.local.", RecordType::A),
        ["10.96.0.12"]
    );
    let upper = Records::new("Cluster.Local.").unwrap();
    assert_eq!(upper.domain(), &name("cluster.local."));
}

#[test]
fn nxdomain_and_empty_non_terminals() {
    let mut r = records();
    r.apply_service(&web());
    for missing in [
        "nope.default.svc.cluster.local.",
        "web.other.svc.cluster.local.",
        "x.web.default.svc.cluster.local.",
        "_http._udp.web.default.svc.cluster.local.",
        "nothing.cluster.local.",
    ] {
        assert_eq!(q(&r, missing, RecordType::A), ["NXDOMAIN"], "{missing}");
    }
    for exists in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
        "_tcp.web.default.svc.cluster.local.",
        "pod.cluster.local.",
    ] {
        assert_eq!(q(&r, exists, RecordType::A), ["NODATA"], "{exists}");
    }
    let Answer::NxDomain(soa) = lookup(&r, "nope.default.svc.cluster.local.", RecordType::A) else {
        panic!("not NXDOMAIN");
    };
    assert_eq!(soa.name, name("cluster.local."));
    assert_eq!(
        soa.data.to_string(),
        "ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"
    );
    assert_eq!(
        q(&r, "cluster.local.", RecordType::SOA),
        [soa.data.to_string()]
    );
}

#[test]
fn schema_version_record() {
    let r = records();
    assert_eq!(
        q(&r, "dns-version.cluster.local.", RecordType::TXT),
        ["1.0.1"]
    );
}

#[test]
fn names_outside_the_domain_are_forwarded() {
    let r = records();
    assert_eq!(q(&r, "example.com.", RecordType::A), ["FORWARD"]);
    assert_eq!(q(&r, "local.", RecordType::A), ["FORWARD"]);
    assert_eq!(
        q(&r, "cluster.local.example.com.", RecordType::A),
        ["FORWARD"]
    );
}

#[test]
fn srv_for_cluster_ip_service() {
    let mut r = records();
    r.apply_service(&web());
    let answer = lookup(
        &r,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(data(&answer), ["0 100 80 web.default.svc.cluster.local."]);
    let Answer::Records(set) = answer else {
        panic!()
    };
    let mut additional: Vec<String> = set.additionals.iter().map(|r| r.data.to_string()).collect();
    additional.sort();
    assert_eq!(additional, ["10.96.0.10", "fd00::10"]);
    // Unnamed ports: only at the Service name.
    assert_eq!(
        q(&r, "web.default.svc.cluster.local.", RecordType::SRV),
        [
            "0 100 80 web.default.svc.cluster.local.",
            "0 100 8125 web.default.svc.cluster.local."
        ]
    );
    assert_eq!(
        q(
            &r,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::A
        ),
        ["NODATA"]
    );
}

#[test]
fn ptr_for_cluster_ips() {
    let mut r = records();
    r.apply_service(&web());
    assert_eq!(
        q(&r, "10.0.96.10.in-addr.arpa.", RecordType::PTR),
        ["web.default.svc.cluster.local."]
    );
    let v6 = Name::from(IpAddr::from_str("fd00::10").unwrap()).to_string();
    assert_eq!(
        q(&r, &v6, RecordType::PTR),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(q(&r, "10.0.96.10.in-addr.arpa.", RecordType::A), ["NODATA"]);
    // Unknown reverse names go upstream, as CoreDNS's default fallthrough.
    assert_eq!(
        q(&r, "11.0.96.10.in-addr.arpa.", RecordType::PTR),
        ["FORWARD"]
    );
    assert_eq!(q(&r, "0.96.10.in-addr.arpa.", RecordType::PTR), ["FORWARD"]);
}

#[test]
fn headless_service_publishes_ready_endpoints() {
    let mut r = records();
    r.apply_service(&headless("pg"));
    r.apply_slice(&slice(
        "db",
        "pg-abc",
        "pg",
        json!([
            {"addresses": ["10.42.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "conditions": {}},
            {"addresses": ["10.42.0.7"], "hostname": "pg-2", "conditions": {"ready": false}},
        ]),
    ));
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.0.5", "10.42.0.6"]
    );
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::AAAA),
        ["NODATA"]
    );
    assert_eq!(
        q(&r, "pg-0.pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.0.5"]
    );
    // Endpoints without hostname get their dashed address.
    assert_eq!(
        q(&r, "10-42-0-6.pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.0.6"]
    );
    assert_eq!(
        q(&r, "pg-2.pg.db.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    let answer = lookup(&r, "_pg._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&answer),
        [
            "0 100 5432 10-42-0-6.pg.db.svc.cluster.local.",
            "0 100 5432 pg-0.pg.db.svc.cluster.local."
        ]
    );
    let Answer::Records(set) = answer else {
        panic!()
    };
    let mut additional: Vec<String> = set
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    additional.sort();
    assert_eq!(
        additional,
        [
            "10-42-0-6.pg.db.svc.cluster.local. 10.42.0.6",
            "pg-0.pg.db.svc.cluster.local. 10.42.0.5"
        ]
    );
    assert_eq!(
        q(&r, "5.0.42.10.in-addr.arpa.", RecordType::PTR),
        ["pg-0.pg.db.svc.cluster.local."]
    );
    assert_eq!(
        q(&r, "7.0.42.10.in-addr.arpa.", RecordType::PTR),
        ["FORWARD"]
    );
}

#[test]
fn headless_endpoints_across_slices_and_publish_not_ready() {
    let mut r = records();
    let mut svc = headless("pg");
    r.apply_service(&svc);
    r.apply_slice(&slice(
        "db",
        "a",
        "pg",
        json!([{"addresses": ["10.42.0.5"]}]),
    ));
    r.apply_slice(&slice(
        "db",
        "b",
        "pg",
        json!([{"addresses": ["10.42.0.6"]}, {"addresses": ["10.42.0.5"]}]),
    ));
    r.apply_slice(&slice(
        "db",
        "c",
        "pg",
        json!([{"addresses": ["10.42.0.7"], "conditions": {"ready": false}}]),
    ));
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.0.5", "10.42.0.6"]
    );
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    r.apply_service(&svc);
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.0.5", "10.42.0.6", "10.42.0.7"]
    );
}

#[test]
fn headless_without_ready_endpoints_is_nxdomain() {
    let mut r = records();
    r.apply_service(&headless("pg"));
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    r.apply_slice(&slice(
        "db",
        "a",
        "pg",
        json!([{"addresses": ["10.42.0.5"], "conditions": {"ready": false}}]),
    ));
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
}

#[test]
fn endpoint_changes_and_removal() {
    let mut r = records();
    r.apply_service(&headless("pg"));
    let first = slice(
        "db",
        "a",
        "pg",
        json!([{"addresses": ["10.42.0.5"], "hostname": "pg-0"}]),
    );
    r.apply_slice(&first);
    r.apply_slice(&slice(
        "db",
        "a",
        "pg",
        json!([{"addresses": ["10.42.0.9"], "hostname": "pg-0"}]),
    ));
    assert_eq!(
        q(&r, "pg-0.pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.0.9"]
    );
    assert_eq!(
        q(&r, "5.0.42.10.in-addr.arpa.", RecordType::PTR),
        ["FORWARD"]
    );
    r.delete_slice(&first);
    assert_eq!(
        q(&r, "pg-0.pg.db.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    // The namespace's empty non-terminal went with its last Service.
    assert_eq!(q(&r, "db.svc.cluster.local.", RecordType::A), ["NXDOMAIN"]);
    assert_eq!(q(&r, "svc.cluster.local.", RecordType::A), ["NODATA"]);
}

#[test]
fn service_removal_and_update() {
    let mut r = records();
    let svc = web();
    r.apply_service(&svc);
    r.apply_service(&service(
        "default",
        "other",
        json!({"clusterIP": "10.96.0.20"}),
    ));
    r.delete_service(&svc);
    for gone in [
        "web.default.svc.cluster.local.",
        "_http._tcp.web.default.svc.cluster.local.",
    ] {
        assert_eq!(q(&r, gone, RecordType::A), ["NXDOMAIN"]);
    }
    assert_eq!(
        q(&r, "10.0.96.10.in-addr.arpa.", RecordType::PTR),
        ["FORWARD"]
    );
    assert_eq!(
        q(&r, "default.svc.cluster.local.", RecordType::A),
        ["NODATA"]
    );
    r.apply_service(&service(
        "default",
        "other",
        json!({"clusterIP": "10.96.0.21"}),
    ));
    assert_eq!(
        q(&r, "other.default.svc.cluster.local.", RecordType::A),
        ["10.96.0.21"]
    );
    assert_eq!(
        q(&r, "20.0.96.10.in-addr.arpa.", RecordType::PTR),
        ["FORWARD"]
    );
}

#[test]
fn replace_drops_what_the_new_list_lacks() {
    let mut r = records().unsynced();
    assert_eq!(
        q(&r, "web.default.svc.cluster.local.", RecordType::A),
        ["NOTREADY"]
    );
    assert_eq!(q(&r, "example.com.", RecordType::A), ["FORWARD"]);
    r.apply_service(&headless("pg"));
    r.replace_services(&[web(), headless("pg")]);
    assert_eq!(
        q(&r, "web.default.svc.cluster.local.", RecordType::A),
        ["NOTREADY"]
    );
    r.replace_slices(&[slice(
        "db",
        "a",
        "pg",
        json!([{"addresses": ["10.42.0.5"]}]),
    )]);
    assert_eq!(
        q(&r, "web.default.svc.cluster.local.", RecordType::A),
        ["10.96.0.10"]
    );
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["10.42.0.5"]
    );
    r.replace_services(&[headless("pg")]);
    r.replace_slices(&[]);
    assert_eq!(
        q(&r, "web.default.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
}

#[test]
fn external_name_is_a_cname() {
    let mut r = records();
    r.apply_service(&service(
        "default",
        "ext",
        json!({"type": "ExternalName", "externalName": "www.Example.com"}),
    ));
    for qtype in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::SRV,
    ] {
        assert_eq!(
            q(&r, "ext.default.svc.cluster.local.", qtype),
            ["www.Example.com."]
        );
    }
    r.apply_service(&service(
        "default",
        "bad",
        json!({"type": "ExternalName", "externalName": "a..b"}),
    ));
    assert_eq!(
        q(&r, "bad.default.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
}

#[test]
fn pod_records() {
    let r = records();
    assert_eq!(
        q(&r, "10-42-0-5.default.pod.cluster.local.", RecordType::A),
        ["10.42.0.5"]
    );
    assert_eq!(
        q(&r, "10-42-0-5.Any.POD.cluster.local", RecordType::A),
        ["10.42.0.5"]
    );
    assert_eq!(
        q(&r, "10-42-0-5.default.pod.cluster.local.", RecordType::AAAA),
        ["NODATA"]
    );
    assert_eq!(
        q(&r, "fd00--5.default.pod.cluster.local.", RecordType::AAAA),
        ["fd00::5"]
    );
    assert_eq!(
        q(&r, "default.pod.cluster.local.", RecordType::A),
        ["NODATA"]
    );
    assert_eq!(
        q(&r, "10-42-0-256.default.pod.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    assert_eq!(
        q(&r, "web.default.pod.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    assert_eq!(
        q(&r, "x.10-42-0-5.default.pod.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
}

#[test]
fn shared_reverse_names_keep_other_owners() {
    let mut r = records();
    r.apply_service(&headless("a"));
    r.apply_service(&headless("b"));
    r.apply_slice(&slice(
        "db",
        "a-1",
        "a",
        json!([{"addresses": ["10.42.0.5"], "hostname": "x"}]),
    ));
    let b = slice(
        "db",
        "b-1",
        "b",
        json!([{"addresses": ["10.42.0.5"], "hostname": "x"}]),
    );
    r.apply_slice(&b);
    assert_eq!(
        q(&r, "5.0.42.10.in-addr.arpa.", RecordType::PTR),
        ["x.a.db.svc.cluster.local.", "x.b.db.svc.cluster.local."]
    );
    r.delete_slice(&b);
    assert_eq!(
        q(&r, "5.0.42.10.in-addr.arpa.", RecordType::PTR),
        ["x.a.db.svc.cluster.local."]
    );
}

#[test]
fn slices_of_non_headless_services_publish_nothing() {
    let mut r = records();
    r.apply_service(&service(
        "db",
        "pg",
        json!({"clusterIP": "10.96.0.30", "ports": [{"name": "pg", "port": 5432}]}),
    ));
    r.apply_slice(&slice(
        "db",
        "a",
        "pg",
        json!([{"addresses": ["10.42.0.5"], "hostname": "pg-0"}]),
    ));
    assert_eq!(
        q(&r, "pg.db.svc.cluster.local.", RecordType::A),
        ["10.96.0.30"]
    );
    assert_eq!(
        q(&r, "pg-0.pg.db.svc.cluster.local.", RecordType::A),
        ["NXDOMAIN"]
    );
    assert_eq!(
        q(&r, "_pg._tcp.pg.db.svc.cluster.local.", RecordType::SRV),
        ["0 100 5432 pg.db.svc.cluster.local."]
    );
}

#[test]
fn any_returns_every_type() {
    let mut r = records();
    r.apply_service(&web());
    let got = q(&r, "web.default.svc.cluster.local.", RecordType::ANY);
    assert_eq!(got.len(), 4, "{got:?}");
}

fn external(ns: &str, svc: &str, target: &str) -> Service {
    service(
        ns,
        svc,
        json!({"type": "ExternalName", "externalName": target}),
    )
}

/// The CNAMEs followed as `owner -> target`, then the end answer as [`data`] shows it.
fn chase(records: &Records, qname: &str, qtype: RecordType) -> (Vec<String>, Vec<String>) {
    let resolution = records.resolve(&name(qname), qtype);
    let chain = resolution
        .chain
        .iter()
        .map(|r| format!("{} -> {}", r.name, r.data))
        .collect();
    (chain, data(&resolution.answer))
}

#[test]
fn external_name_to_a_cluster_service_is_followed() {
    let mut r = records();
    r.apply_service(&web());
    r.apply_service(&external("other", "alias", "WEB.default.svc.cluster.local"));
    let alias = "alias.other.svc.cluster.local.";
    let cname = "alias.other.svc.cluster.local. -> WEB.default.svc.cluster.local.";
    assert_eq!(
        chase(&r, alias, RecordType::A),
        (vec![cname.to_string()], vec!["10.96.0.10".to_string()])
    );
    assert_eq!(
        chase(&r, "Alias.Other.svc.cluster.local", RecordType::AAAA),
        (vec![cname.to_string()], vec!["fd00::10".to_string()])
    );
    let resolution = r.resolve(&name(alias), RecordType::A);
    assert_eq!(resolution.target, name("web.default.svc.cluster.local."));

    // SRV: the target's SRV records with their additionals.
    let resolution = r.resolve(&name(alias), RecordType::SRV);
    assert_eq!(resolution.chain.len(), 1);
    let Answer::Records(set) = resolution.answer else {
        panic!("no SRV records");
    };
    assert_eq!(set.answers.len(), 2);
    assert_eq!(set.additionals.len(), 2, "{:?}", set.additionals);

    // A CNAME query gets the CNAME alone, unfollowed.
    assert_eq!(
        chase(&r, alias, RecordType::CNAME),
        (
            Vec::new(),
            vec!["WEB.default.svc.cluster.local.".to_string()]
        )
    );
    // Names without a CNAME resolve as lookup answers them.
    assert_eq!(
        chase(&r, "web.default.svc.cluster.local.", RecordType::A),
        (Vec::new(), vec!["10.96.0.10".to_string()])
    );
    assert_eq!(
        chase(&r, "example.com.", RecordType::A),
        (Vec::new(), vec!["FORWARD".to_string()])
    );
}

#[test]
fn external_name_chains_end_in_negative_answers_or_outside() {
    let mut r = records();
    r.apply_service(&service(
        "default",
        "v4",
        json!({"clusterIP": "10.96.0.11"}),
    ));
    r.apply_service(&external(
        "default",
        "to-v4",
        "v4.default.svc.cluster.local",
    ));
    r.apply_service(&external(
        "default",
        "to-gone",
        "gone.default.svc.cluster.local",
    ));
    r.apply_service(&external(
        "default",
        "to-pod",
        "10-42-0-5.x.pod.cluster.local",
    ));
    r.apply_service(&external("default", "out", "www.example.com"));
    r.apply_service(&external("default", "hop", "out.default.svc.cluster.local"));

    let (chain, end) = chase(&r, "to-v4.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!((chain.len(), end), (1, vec!["NODATA".to_string()]));
    let (chain, end) = chase(&r, "to-gone.default.svc.cluster.local.", RecordType::A);
    assert_eq!((chain.len(), end), (1, vec!["NXDOMAIN".to_string()]));
    let (chain, end) = chase(&r, "to-pod.default.svc.cluster.local.", RecordType::A);
    assert_eq!((chain.len(), end), (1, vec!["10.42.0.5".to_string()]));

    // Out of the cluster: the server asks the upstream for the target.
    let resolution = r.resolve(&name("hop.default.svc.cluster.local."), RecordType::A);
    assert!(matches!(resolution.answer, Answer::NotOurs));
    assert_eq!(resolution.target, name("www.example.com."));
    let chain: Vec<String> = resolution
        .chain
        .iter()
        .map(|r| format!("{} -> {}", r.name, r.data))
        .collect();
    assert_eq!(
        chain,
        [
            "hop.default.svc.cluster.local. -> out.default.svc.cluster.local.",
            "out.default.svc.cluster.local. -> www.example.com.",
        ]
    );
}

#[test]
fn cname_loops_and_long_chains_end() {
    let mut r = records();
    r.apply_service(&external("default", "a", "b.default.svc.cluster.local"));
    r.apply_service(&external("default", "b", "A.Default.svc.cluster.local."));
    r.apply_service(&external("default", "me", "me.default.svc.cluster.local"));
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::ANY] {
        assert_eq!(
            chase(&r, "a.default.svc.cluster.local.", qtype),
            (
                vec![
                    "a.default.svc.cluster.local. -> b.default.svc.cluster.local.".to_string(),
                    "b.default.svc.cluster.local. -> A.Default.svc.cluster.local.".to_string(),
                ],
                vec!["NODATA".to_string()]
            )
        );
    }
    let (chain, end) = chase(&r, "me.default.svc.cluster.local.", RecordType::A);
    assert_eq!((chain.len(), end), (1, vec!["NODATA".to_string()]));

    // e0 -> e1 -> ... -> e11 -> web: cut after MAX_CNAME_HOPS CNAMEs.
    r.apply_service(&web());
    for i in 0..12 {
        let target = if i == 11 {
            "web.default.svc.cluster.local".to_string()
        } else {
            format!("e{}.default.svc.cluster.local", i + 1)
        };
        r.apply_service(&external("default", &format!("e{i}"), &target));
    }
    let (chain, end) = chase(&r, "e0.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        (chain.len(), end),
        (MAX_CNAME_HOPS, vec!["NODATA".to_string()])
    );
    // Starting within reach of the end, the chain completes.
    let start = format!("e{}.default.svc.cluster.local.", 12 - MAX_CNAME_HOPS);
    let (chain, end) = chase(&r, &start, RecordType::A);
    assert_eq!(
        (chain.len(), end),
        (MAX_CNAME_HOPS, vec!["10.96.0.10".to_string()])
    );
}

#[test]
fn unlisted_records_do_not_follow_cnames() {
    let r = records().unsynced();
    let (chain, end) = chase(&r, "a.default.svc.cluster.local.", RecordType::A);
    assert_eq!((chain.len(), end), (0, vec!["NOTREADY".to_string()]));
}
