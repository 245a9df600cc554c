//! The cluster DNS server over real sockets on 127.0.0.1: cluster answers
//! over UDP and TCP, truncation, forwarding with its cache, and bad input.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use network::dns::{DnsConfig, DnsServer, Records, serve_records};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const WAIT: Duration = Duration::from_secs(5);

fn records() -> Records {
    let mut records = Records::new("cluster.local").unwrap();
    let web: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap();
    records.apply_service(&web);
    let big: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "big"},
        "spec": {"clusterIP": "None"},
    }))
    .unwrap();
    records.apply_service(&big);
    let endpoints: Vec<_> = (1..=40)
        .map(|i| json!({"addresses": [format!("10.42.1.{i}")], "conditions": {"ready": true}}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {
            "namespace": "default",
            "name": "big-1",
            "labels": {"kubernetes.io/service-name": "big"},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
    .unwrap();
    records.apply_slice(&slice);
    let externals = [
        ("other", "alias", "Web.default.svc.cluster.local"),
        ("default", "ext", "example.org"),
        ("default", "ext-missing", "missing.example.org"),
        ("default", "ext-broken", "broken.example.org"),
        ("default", "loop-a", "loop-b.default.svc.cluster.local"),
        ("default", "loop-b", "loop-a.default.svc.cluster.local"),
    ];
    for (namespace, name, target) in externals {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"type": "ExternalName", "externalName": target},
        }))
        .unwrap();
        records.apply_service(&svc);
    }
    records
}

async fn start(upstreams: Vec<SocketAddr>) -> (DnsServer, SocketAddr) {
    let cfg = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        domain: "cluster.local".to_string(),
        upstreams,
    };
    let server = serve_records(Arc::new(RwLock::new(records())), &cfg)
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    assert_ne!(addr.port(), 0);
    (server, addr)
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    if let Some(payload) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        msg.set_edns(opt);
    }
    msg
}

async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    buf.truncate(len);
    Some(buf)
}

async fn udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> (Message, usize) {
    let request = query(name, qtype, edns);
    let bytes = udp_raw(server, &request.to_vec().unwrap(), WAIT)
        .await
        .expect("no UDP answer");
    let response = Message::from_vec(&bytes).unwrap();
    assert_eq!(response.metadata.id, request.metadata.id);
    (response, bytes.len())
}

async fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) {
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.unwrap();
}

async fn tcp_recv(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let request = query(name, qtype, None);
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_send(&mut stream, &request.to_vec().unwrap()).await;
    let bytes = tokio::time::timeout(WAIT, tcp_recv(&mut stream))
        .await
        .unwrap()
        .unwrap();
    Message::from_vec(&bytes).unwrap()
}

/// The answer section in order, as `owner type data`.
fn answer_section(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

fn rdata(msg: &Message) -> Vec<String> {
    let mut out: Vec<String> = msg.answers.iter().map(|r| r.data.to_string()).collect();
    out.sort();
    out
}

/// A stand-in for the node's resolver, counting the queries per transport and name.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

impl Upstream {
    fn count(&self, key: &str) -> usize {
        self.seen.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.seen.lock().unwrap().values().sum()
    }

    fn answer(&self, request: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        let q = request.queries.first()?.clone();
        let name = q.name().to_ascii().to_lowercase();
        let transport = if tcp { "tcp" } else { "udp" };
        *self
            .seen
            .lock()
            .unwrap()
            .entry(format!("{transport} {name}"))
            .or_default() += 1;
        let mut response = Message::response(request.metadata.id, OpCode::Query);
        response.metadata.recursion_available = true;
        response.add_query(q.clone());
        let a =
            |ip: [u8; 4]| Record::from_rdata(q.name().clone(), 60, RData::A(A(Ipv4Addr::from(ip))));
        let soa = || {
            let soa = SOA::new(
                Name::from_str("ns.example.org.").unwrap(),
                Name::from_str("admin.example.org.").unwrap(),
                1,
                3600,
                600,
                86400,
                30,
            );
            Record::from_rdata(Name::from_str("example.org.").unwrap(), 60, RData::SOA(soa))
        };
        match name.as_str() {
            "example.org." if q.query_type() == RecordType::A => {
                response.add_answer(a([192, 0, 2, 1]));
            }
            // No other type: NODATA.
            "example.org." => {
                response.add_authority(soa());
            }
            "missing.example.org." => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(soa());
            }
            "big.example.org." if !tcp => response.metadata.truncation = true,
            "big.example.org." => {
                for i in 1..=3 {
                    response.add_answer(a([192, 0, 2, i]));
                }
            }
            _ => response.metadata.response_code = ResponseCode::ServFail,
        }
        response.to_vec().ok()
    }

    /// Serves on UDP and TCP of one 127.0.0.1 port.
    async fn start(&self) -> SocketAddr {
        // The kernel picks a free UDP port; its TCP twin may be taken by
        // someone else, so try again with a new port (as the server does).
        let (udp, tcp, addr) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp, addr),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("binding TCP {addr}: {e}"),
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, from)) = udp.recv_from(&mut buf).await {
                if let Some(reply) = me.answer(&buf[..len], false) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                while let Some(request) = tcp_recv(&mut stream).await {
                    if let Some(reply) = me.answer(&request, true) {
                        tcp_send(&mut stream, &reply).await;
                    }
                }
            }
        });
        addr
    }
}

#[tokio::test]
async fn cluster_names_over_udp_and_tcp() {
    let (_server, addr) = start(Vec::new()).await;

    let (msg, _) = udp(addr, "web.default.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.metadata.authoritative);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(rdata(&msg), ["10.96.0.10"]);
    assert_eq!(msg.answers[0].ttl, 5);

    let msg = tcp(addr, "Web.Default.svc.cluster.local", RecordType::A).await;
    assert_eq!(rdata(&msg), ["10.96.0.10"]);

    let (msg, _) = udp(addr, "nope.default.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    assert!(msg.answers.is_empty());
    assert_eq!(msg.authorities.len(), 1);
    assert_eq!(msg.authorities[0].record_type(), RecordType::SOA);

    let (msg, _) = udp(
        addr,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
        Some(1232),
    )
    .await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
    assert_eq!(msg.authorities[0].record_type(), RecordType::SOA);
    assert!(msg.edns.is_some(), "EDNS must be echoed");

    let (msg, _) = udp(
        addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        None,
    )
    .await;
    assert_eq!(rdata(&msg), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(msg.additionals.len(), 1);
    assert_eq!(msg.additionals[0].data.to_string(), "10.96.0.10");

    let (msg, _) = udp(addr, "10.0.96.10.in-addr.arpa.", RecordType::PTR, None).await;
    assert_eq!(rdata(&msg), ["web.default.svc.cluster.local."]);

    let (msg, _) = udp(
        addr,
        "10-42-0-5.default.pod.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(rdata(&msg), ["10.42.0.5"]);
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let (_server, addr) = start(Vec::new()).await;
    let name = "big.default.svc.cluster.local.";

    let (msg, len) = udp(addr, name, RecordType::A, None).await;
    assert!(msg.metadata.truncation, "40 addresses do not fit 512 bytes");
    assert!(len <= 512, "{len} bytes over UDP without EDNS");
    assert!(msg.answers.len() < 40);

    let (msg, len) = udp(addr, name, RecordType::A, Some(4096)).await;
    assert!(!msg.metadata.truncation);
    assert_eq!(msg.answers.len(), 40);
    assert!(len > 512);

    let msg = tcp(addr, name, RecordType::A).await;
    assert!(!msg.metadata.truncation);
    assert_eq!(msg.answers.len(), 40);
}

#[tokio::test]
async fn forwards_and_caches_other_names() {
    let upstream = Upstream::default();
    let upstream_addr = upstream.start().await;
    let (_server, addr) = start(vec![upstream_addr]).await;

    for _ in 0..2 {
        let (msg, _) = udp(addr, "Example.org.", RecordType::A, None).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert!(!msg.metadata.authoritative);
        assert!(msg.metadata.recursion_available);
        assert_eq!(rdata(&msg), ["192.0.2.1"]);
        assert!(msg.answers[0].ttl <= 60 && msg.answers[0].ttl > 50);
    }
    assert_eq!(
        upstream.count("udp example.org."),
        1,
        "the second answer comes from the cache"
    );

    for _ in 0..2 {
        let (msg, _) = udp(addr, "missing.example.org.", RecordType::A, None).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(msg.authorities[0].record_type(), RecordType::SOA);
    }
    assert_eq!(
        upstream.count("udp missing.example.org."),
        1,
        "negative answers are cached too"
    );

    // The upstream's SERVFAIL is relayed and not cached.
    for _ in 0..2 {
        let (msg, _) = udp(addr, "broken.example.org.", RecordType::A, None).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    }
    assert_eq!(upstream.count("udp broken.example.org."), 2);

    // Truncated upstream answers are fetched again over TCP.
    let msg = tcp(addr, "big.example.org.", RecordType::A).await;
    assert_eq!(rdata(&msg), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    assert_eq!(upstream.count("udp big.example.org."), 1);
    assert_eq!(upstream.count("tcp big.example.org."), 1);

    // Cluster names never reach the upstream.
    udp(addr, "web.default.svc.cluster.local.", RecordType::A, None).await;
    udp(addr, "gone.default.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(upstream.count("udp gone.default.svc.cluster.local."), 0);
}

#[tokio::test]
async fn without_a_working_upstream_other_names_fail() {
    let (_server, addr) = start(Vec::new()).await;
    let (msg, _) = udp(addr, "example.org.", RecordType::A, None).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);

    // A port nobody listens on: refused at once, then the next upstream answers.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = Upstream::default();
    let working = upstream.start().await;
    let (_server, addr) = start(vec![closed]).await;
    let (msg, _) = udp(addr, "example.org.", RecordType::A, None).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    let (_server, addr) = start(vec![closed, working]).await;
    let (msg, _) = udp(addr, "example.org.", RecordType::A, None).await;
    assert_eq!(rdata(&msg), ["192.0.2.1"]);
}

#[tokio::test]
async fn garbage_gets_formerr_and_the_server_keeps_answering() {
    let (_server, addr) = start(Vec::new()).await;

    // Shorter than a header: nothing to answer to.
    assert!(
        udp_raw(addr, &[1, 2, 3], Duration::from_millis(300))
            .await
            .is_none()
    );

    // A header claiming a question that is not there.
    let bytes = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
    ];
    let reply = udp_raw(addr, &bytes, WAIT).await.expect("FORMERR expected");
    let msg = Message::from_vec(&reply).unwrap();
    assert_eq!(msg.metadata.id, 0x1234);
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);

    // Two questions in one query.
    let mut two = query("web.default.svc.cluster.local.", RecordType::A, None);
    two.add_query(Query::query(
        Name::from_str("example.org.").unwrap(),
        RecordType::A,
    ));
    let reply = udp_raw(addr, &two.to_vec().unwrap(), WAIT)
        .await
        .expect("FORMERR expected");
    assert_eq!(
        Message::from_vec(&reply).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );

    // Garbage over TCP closes that connection only.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    tcp_send(&mut stream, &[0xde, 0xad]).await;
    let _ = tokio::time::timeout(Duration::from_millis(300), tcp_recv(&mut stream)).await;

    let (msg, _) = udp(addr, "web.default.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(rdata(&msg), ["10.96.0.10"]);
    let msg = tcp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&msg), ["10.96.0.10"]);
}

#[tokio::test]
async fn binding_a_taken_address_names_it() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = DnsConfig {
        listen: vec![addr],
        domain: "cluster.local".to_string(),
        upstreams: Vec::new(),
    };
    let Err(error) = serve_records(Arc::new(RwLock::new(records())), &cfg).await else {
        panic!("binding a taken port succeeded");
    };
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

#[tokio::test]
async fn external_name_to_a_cluster_service_resolves_to_its_cluster_ip() {
    let upstream = Upstream::default();
    let upstream_addr = upstream.start().await;
    let (_server, addr) = start(vec![upstream_addr]).await;
    let name = "alias.other.svc.cluster.local.";
    let cname = "alias.other.svc.cluster.local. CNAME Web.default.svc.cluster.local.";

    let (msg, _) = udp(addr, name, RecordType::A, None).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.metadata.authoritative);
    assert_eq!(
        answer_section(&msg),
        [cname, "web.default.svc.cluster.local. A 10.96.0.10"],
        "the CNAME first, then its target's address"
    );
    let msg = tcp(addr, "Alias.Other.svc.cluster.local", RecordType::A).await;
    assert_eq!(
        answer_section(&msg),
        [cname, "web.default.svc.cluster.local. A 10.96.0.10"]
    );

    // The target has no AAAA: NOERROR with the CNAME and the cluster's SOA.
    let (msg, _) = udp(addr, name, RecordType::AAAA, None).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer_section(&msg), [cname]);
    assert_eq!(msg.authorities.len(), 1);
    assert_eq!(msg.authorities[0].record_type(), RecordType::SOA);

    // Asked for the CNAME itself: the CNAME alone.
    let (msg, _) = udp(addr, name, RecordType::CNAME, None).await;
    assert_eq!(answer_section(&msg), [cname]);

    assert_eq!(upstream.total(), 0, "in-cluster targets never go upstream");
}

#[tokio::test]
async fn external_name_outside_the_cluster_resolves_upstream_through_the_cache() {
    let upstream = Upstream::default();
    let upstream_addr = upstream.start().await;
    let (_server, addr) = start(vec![upstream_addr]).await;
    let cname = "ext.default.svc.cluster.local. CNAME example.org.";

    for _ in 0..2 {
        let (msg, _) = udp(addr, "ext.default.svc.cluster.local.", RecordType::A, None).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer_section(&msg), [cname, "example.org. A 192.0.2.1"]);
    }
    let msg = tcp(addr, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer_section(&msg), [cname, "example.org. A 192.0.2.1"]);
    // The target itself shares the cache entry.
    let (msg, _) = udp(addr, "example.org.", RecordType::A, None).await;
    assert_eq!(rdata(&msg), ["192.0.2.1"]);
    assert_eq!(
        upstream.count("udp example.org."),
        1,
        "later answers come from the cache"
    );

    // NODATA upstream: NOERROR with the CNAME and the upstream's SOA, cached as well.
    for _ in 0..2 {
        let (msg, _) = udp(
            addr,
            "ext.default.svc.cluster.local.",
            RecordType::AAAA,
            None,
        )
        .await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer_section(&msg), [cname]);
        assert_eq!(msg.authorities.len(), 1);
        assert_eq!(msg.authorities[0].name.to_string(), "example.org.");
    }
    assert_eq!(upstream.count("udp example.org."), 2);

    // A target that does not exist: NXDOMAIN for the chain, the CNAME still first.
    let (msg, _) = udp(
        addr,
        "ext-missing.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        answer_section(&msg),
        ["ext-missing.default.svc.cluster.local. CNAME missing.example.org."]
    );
    assert_eq!(msg.authorities[0].record_type(), RecordType::SOA);

    // A failing upstream: the CNAME alone, NOERROR, as CoreDNS.
    let (msg, _) = udp(
        addr,
        "ext-broken.default.svc.cluster.local.",
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answer_section(&msg),
        ["ext-broken.default.svc.cluster.local. CNAME broken.example.org."]
    );
    assert_eq!(upstream.count("udp broken.example.org."), 1);
}

#[tokio::test]
async fn external_name_without_upstreams_answers_the_cname() {
    let (_server, addr) = start(Vec::new()).await;
    let (msg, _) = udp(addr, "ext.default.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answer_section(&msg),
        ["ext.default.svc.cluster.local. CNAME example.org."]
    );
}

#[tokio::test]
async fn a_cname_loop_between_external_names_terminates() {
    let upstream = Upstream::default();
    let upstream_addr = upstream.start().await;
    let (_server, addr) = start(vec![upstream_addr]).await;
    for qtype in [RecordType::A, RecordType::AAAA] {
        let (msg, _) = udp(addr, "loop-a.default.svc.cluster.local.", qtype, None).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            answer_section(&msg),
            [
                "loop-a.default.svc.cluster.local. CNAME loop-b.default.svc.cluster.local.",
                "loop-b.default.svc.cluster.local. CNAME loop-a.default.svc.cluster.local.",
            ]
        );
        assert_eq!(msg.authorities[0].record_type(), RecordType::SOA);
    }
    assert_eq!(upstream.total(), 0);
}
