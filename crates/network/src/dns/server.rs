//! The DNS front end: hickory-server's UDP/TCP machinery with a request
//! handler answering cluster names from [`Records`] and forwarding the rest.
//! An ExternalName's CNAME is answered with its target's records after it,
//! from the cluster records or, for a target outside the cluster, the forwarder.
//!
//! hickory-server already answers FORMERR to a request whose header parses
//! but whose body does not (and drops datagrams shorter than a header), and
//! truncates UDP responses to 512 bytes, or the payload size of the EDNS
//! record we put in the response, setting the TC bit; TCP responses are
//! never truncated. The handler only has to echo EDNS with the client's size.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use super::DnsConfig;
use super::forward::{Forwarder, Reply};
use super::records::{Answer, Records, Resolution};
use crate::NetworkError;

/// Largest UDP response we send whatever the client offers: large enough for
/// big headless Services, small enough to stay clear of IP fragmentation trouble.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// Idle TCP connections are closed after this long.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const PORT_ATTEMPTS: usize = 16;

/// Answers queries from the records cache, forwarding non-cluster names.
pub(crate) struct DnsHandler {
    records: Arc<RwLock<Records>>,
    forwarder: Forwarder,
}

impl DnsHandler {
    /// A handler answering from `records` and forwarding to `upstreams`.
    pub(crate) fn new(records: Arc<RwLock<Records>>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            records,
            forwarder: Forwarder::new(upstreams),
        }
    }

    async fn handle<R: ResponseHandler>(&self, request: &Request, handle: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns.set_version(0);
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // Clients use this server as their recursive resolver.
        metadata.recursion_available = true;
        let reply = Respond {
            request,
            edns: edns.as_ref(),
            handle,
        };
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return reply.error(metadata, ResponseCode::BADVERS).await;
        }
        if request.metadata.op_code != OpCode::Query {
            return reply.error(metadata, ResponseCode::NotImp).await;
        }
        let [query] = request.queries.queries() else {
            return reply.error(metadata, ResponseCode::FormErr).await;
        };
        let qtype = query.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return reply.error(metadata, ResponseCode::Refused).await;
        }
        let Resolution {
            chain,
            target,
            answer,
        } = {
            let records = self.records.read().unwrap_or_else(|e| e.into_inner());
            records.resolve(query.name(), qtype)
        };
        let in_class = matches!(query.query_class(), DNSClass::IN | DNSClass::ANY);
        match answer {
            Answer::NotOurs if chain.is_empty() => {}
            // Cluster names only exist in class IN.
            _ if !in_class => return reply.error(metadata, ResponseCode::Refused).await,
            Answer::NotReady => return reply.error(metadata, ResponseCode::ServFail).await,
            Answer::Records(set) => {
                metadata.authoritative = true;
                let answers = after(&chain, &set.answers);
                return reply.send(metadata, &answers, &[], &set.additionals).await;
            }
            Answer::NoData(soa) => {
                metadata.authoritative = true;
                return reply
                    .send(metadata, &chain, std::slice::from_ref(&*soa), &[])
                    .await;
            }
            Answer::NxDomain(soa) => {
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                return reply
                    .send(metadata, &chain, std::slice::from_ref(&*soa), &[])
                    .await;
            }
            // An ExternalName leading out of the cluster: its target is asked upstream.
            Answer::NotOurs => {
                metadata.authoritative = true;
                let (rcode, rest, authorities) = self.outside(target, qtype).await;
                metadata.response_code = rcode;
                let answers = after(&chain, &rest);
                return reply.send(metadata, &answers, &authorities, &[]).await;
            }
        }
        match self.forwarder.resolve(query.original()).await {
            Some(Reply {
                rcode,
                answers,
                authorities,
                additionals,
            }) => {
                metadata.response_code = rcode;
                reply
                    .send(metadata, &answers, &authorities, &additionals)
                    .await
            }
            None => reply.error(metadata, ResponseCode::ServFail).await,
        }
    }

    /// The end of a CNAME chain leaving the cluster, through the forwarder and its
    /// cache: the rcode, the answers to append after the CNAMEs and the authorities.
    /// The CNAMEs are ours whatever the upstream says, so an upstream failure still
    /// answers them with NOERROR, as CoreDNS does; an NXDOMAIN target makes the whole
    /// answer NXDOMAIN (RFC 6604: the rcode describes the chain's last name).
    async fn outside(
        &self,
        target: Name,
        qtype: RecordType,
    ) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        // CNAMEs are class IN, whatever class (IN or ANY) the client asked.
        let query = Query::query(target, qtype);
        let Some(reply) = self.forwarder.resolve(&query).await else {
            return (ResponseCode::NoError, Vec::new(), Vec::new());
        };
        // Only the SOA of a negative answer is worth relaying: clients cache by it.
        let soa = |authorities: Vec<Record>| {
            authorities
                .into_iter()
                .filter(|r| r.record_type() == RecordType::SOA)
                .collect()
        };
        match reply.rcode {
            ResponseCode::NoError if reply.answers.is_empty() => {
                (ResponseCode::NoError, Vec::new(), soa(reply.authorities))
            }
            ResponseCode::NoError => (ResponseCode::NoError, reply.answers, Vec::new()),
            ResponseCode::NXDomain => (
                ResponseCode::NXDomain,
                reply.answers,
                soa(reply.authorities),
            ),
            rcode => {
                tracing::debug!(name = %query.name(), %rcode, "upstream failed an ExternalName target; answering the CNAME alone");
                (ResponseCode::NoError, Vec::new(), Vec::new())
            }
        }
    }
}

/// `chain` followed by `rest`, without copying when there is no chain.
fn after<'a>(chain: &[Record], rest: &'a [Record]) -> Cow<'a, [Record]> {
    if chain.is_empty() {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned([chain, rest].concat())
    }
}

/// What a response needs besides its records.
struct Respond<'q, R> {
    request: &'q Request,
    edns: Option<&'q Edns>,
    handle: R,
}

impl<R: ResponseHandler> Respond<'_, R> {
    async fn error(self, mut metadata: Metadata, rcode: ResponseCode) -> ResponseInfo {
        metadata.response_code = rcode;
        self.send(metadata, &[], &[], &[]).await
    }

    async fn send(
        mut self,
        metadata: Metadata,
        answers: &[Record],
        authorities: &[Record],
        additionals: &[Record],
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::new(&self.request.queries, self.edns);
        let response = builder.build(metadata, answers, authorities, &[], additionals);
        match self.handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, client = %self.request.src(), "failed to send a DNS response");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

// Written out rather than with #[async_trait] (what the trait is declared with),
// to avoid a dependency for one impl: this is that macro's expansion.
impl RequestHandler for DnsHandler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.handle(request, response_handle))
    }
}

/// A running DNS server; dropping it stops answering.
pub struct DnsServer {
    addrs: Vec<SocketAddr>,
    server: Server<DnsHandler>,
}

impl DnsServer {
    /// The addresses answering, each on UDP and TCP (ports resolved when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Serves until a socket fails for good.
    pub async fn run(mut self) -> Result<(), NetworkError> {
        self.server
            .block_until_done()
            .await
            .map_err(|e| NetworkError::Io {
                what: format!("serving DNS on {:?}", self.addrs),
                source: std::io::Error::other(e),
            })
    }

    /// Stops accepting queries and waits for the sockets to close.
    pub async fn shutdown(mut self) -> Result<(), NetworkError> {
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| NetworkError::Io {
                what: "stopping the DNS server".to_string(),
                source: std::io::Error::other(e),
            })
    }
}

/// Binds UDP and TCP on every `cfg.listen` address and answers from `records`.
pub async fn serve_records(
    records: Arc<RwLock<Records>>,
    cfg: &DnsConfig,
) -> Result<DnsServer, NetworkError> {
    // Forwarding to ourselves (a resolv.conf naming the cluster DNS) would loop.
    let upstreams = cfg
        .upstreams
        .iter()
        .filter(|u| !cfg.listen.contains(u))
        .copied()
        .collect();
    let mut server = Server::new(DnsHandler::new(records, upstreams));
    let mut addrs = Vec::new();
    for listen in &cfg.listen {
        let (udp, tcp) = bind(*listen).await?;
        let addr = udp.local_addr().map_err(|source| NetworkError::Io {
            what: format!("reading the address of DNS socket {listen}"),
            source,
        })?;
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(%addr, "cluster DNS listening on UDP and TCP");
        addrs.push(addr);
    }
    Ok(DnsServer { addrs, server })
}

/// A UDP socket and a TCP listener on one address (and one port, when the port is 0).
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), NetworkError> {
    let io = |proto: &str, source| NetworkError::Io {
        what: format!("binding DNS {proto} socket {listen}"),
        source,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(listen).await.map_err(|e| io("UDP", e))?;
        let addr = udp.local_addr().map_err(|e| io("UDP", e))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The port the kernel picked for UDP is taken for TCP: pick another.
            Err(e) if listen.port() == 0 && attempt < PORT_ATTEMPTS => {
                tracing::debug!(%addr, error = %e, "TCP port taken, retrying");
            }
            Err(e) => return Err(io("TCP", e)),
        }
    }
}
