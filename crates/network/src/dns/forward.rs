//! Forwarding of non-cluster names to the node's resolvers, with a cache.
//!
//! Plain UDP with a TCP retry on truncation, as a stub resolver does: the
//! upstreams (the node's resolv.conf) are recursive resolvers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer, per transport.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a positive answer is cached.
const MAX_POSITIVE_TTL: u32 = 300;
/// Longest a negative answer (NXDOMAIN, NODATA) is cached.
const MAX_NEGATIVE_TTL: u32 = 30;
/// Entries kept before expired ones are swept; beyond it after a sweep, the cache restarts empty.
const MAX_ENTRIES: usize = 10_000;
/// The EDNS payload offered upstream: the DNS flag day 2020 value, no fragmentation.
const UPSTREAM_PAYLOAD: u16 = 1232;

/// An upstream answer, relayed to the client.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    // Name's Eq and Hash ignore case.
    name: Name,
    qtype: RecordType,
    class: DNSClass,
}

#[derive(Debug)]
struct Cached {
    reply: Reply,
    stored: Instant,
    ttl: u32,
}

/// Sends queries to the upstream resolvers in order and caches their answers.
#[derive(Debug)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: RwLock<HashMap<CacheKey, Arc<Cached>>>,
}

impl Forwarder {
    /// A forwarder to `upstreams`, tried in order.
    pub(crate) fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The answer to `query`, from the cache or the upstreams; None when no upstream answered.
    pub(crate) async fn resolve(&self, query: &Query) -> Option<Reply> {
        let key = CacheKey {
            name: query.name().clone(),
            qtype: query.query_type(),
            class: query.query_class(),
        };
        if let Some(reply) = self.cached(&key) {
            return Some(reply);
        }
        let reply = self.ask_upstreams(query).await?;
        if let Some(ttl) = cache_ttl(&reply) {
            self.store(key, reply.clone(), ttl);
        }
        Some(reply)
    }

    fn cached(&self, key: &CacheKey) -> Option<Reply> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let entry = cache.get(key)?;
        let elapsed = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        let remaining = entry.ttl.checked_sub(elapsed).filter(|r| *r > 0)?;
        // Age the TTLs so that clients' caches do not outlive ours.
        let age = |records: &[Record]| {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = r.ttl.saturating_sub(elapsed).min(remaining);
                    r
                })
                .collect()
        };
        Some(Reply {
            rcode: entry.reply.rcode,
            answers: age(&entry.reply.answers),
            authorities: age(&entry.reply.authorities),
            additionals: age(&entry.reply.additionals),
        })
    }

    fn store(&self, key: CacheKey, reply: Reply, ttl: u32) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, e| e.stored.elapsed() < Duration::from_secs(u64::from(e.ttl)));
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        let entry = Cached {
            reply,
            stored: Instant::now(),
            ttl,
        };
        cache.insert(key, Arc::new(entry));
    }

    /// Tries each upstream in order, as glibc's stub resolver does: a timeout, a network
    /// error or a SERVFAIL/REFUSED/NOTIMP moves on to the next one.
    async fn ask_upstreams(&self, query: &Query) -> Option<Reply> {
        let mut last = None;
        for upstream in &self.upstreams {
            match exchange(*upstream, query).await {
                Ok(message) => {
                    let rcode = message.metadata.response_code;
                    let reply = Reply {
                        rcode,
                        answers: message.answers,
                        authorities: message.authorities,
                        additionals: message.additionals,
                    };
                    if matches!(
                        rcode,
                        ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp
                    ) {
                        tracing::debug!(%upstream, %rcode, name = %query.name(), "upstream failed the query");
                        last = Some(reply);
                        continue;
                    }
                    return Some(reply);
                }
                Err(error) => {
                    tracing::debug!(%upstream, %error, name = %query.name(), "upstream did not answer");
                }
            }
        }
        if last.is_none() {
            tracing::warn!(name = %query.name(), upstreams = ?self.upstreams, "no upstream resolver answered");
        }
        last
    }
}

/// How long a reply may be cached: the smallest answer TTL for positive answers,
/// the SOA's negative TTL (RFC 2308) for NXDOMAIN and NODATA; None for the rest.
fn cache_ttl(reply: &Reply) -> Option<u32> {
    let ttl = match reply.rcode {
        ResponseCode::NoError if !reply.answers.is_empty() => reply
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()?
            .min(MAX_POSITIVE_TTL),
        ResponseCode::NoError | ResponseCode::NXDomain => reply
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?
            .min(MAX_NEGATIVE_TTL),
        _ => return None,
    };
    (ttl > 0).then_some(ttl)
}

/// One query to one upstream: UDP, then TCP when the answer was truncated; without
/// EDNS again when the upstream rejects it with FORMERR.
async fn exchange(upstream: SocketAddr, query: &Query) -> std::io::Result<Message> {
    let mut response = exchange_once(upstream, query, true).await?;
    if response.metadata.response_code == ResponseCode::FormErr {
        response = exchange_once(upstream, query, false).await?;
    }
    Ok(response)
}

async fn exchange_once(
    upstream: SocketAddr,
    query: &Query,
    edns: bool,
) -> std::io::Result<Message> {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(query.clone());
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(UPSTREAM_PAYLOAD);
        request.set_edns(opt);
    }
    let bytes = request.to_vec().map_err(std::io::Error::other)?;
    let response = timeout(udp_exchange(upstream, &bytes, &request)).await?;
    if !response.metadata.truncation {
        return Ok(response);
    }
    tracing::debug!(%upstream, name = %query.name(), "truncated upstream answer, retrying over TCP");
    timeout(tcp_exchange(upstream, &bytes, &request)).await
}

async fn timeout<T>(f: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(UPSTREAM_TIMEOUT, f)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timed out"))?
}

/// Whether `response` answers `request`: same ID and question, so that a stray or
/// spoofed datagram is ignored rather than relayed.
fn answers(request: &Message, response: &Message) -> bool {
    response.metadata.id == request.metadata.id
        && response.metadata.message_type == MessageType::Response
        && match (request.queries.first(), response.queries.first()) {
            (Some(q), Some(r)) => {
                q.name() == r.name()
                    && q.query_type() == r.query_type()
                    && q.query_class() == r.query_class()
            }
            _ => false,
        }
}

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A fresh socket per query: a random source port, and connect() filters other senders.
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let len = socket.recv(&mut buf).await?;
        match Message::from_vec(&buf[..len]) {
            Ok(response) if answers(request, &response) => return Ok(response),
            _ => tracing::debug!(%upstream, "ignoring an unrelated datagram"),
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    let response = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if answers(request, &response) {
        Ok(response)
    } else {
        Err(std::io::Error::other(
            "upstream TCP answer does not match the query",
        ))
    }
}
