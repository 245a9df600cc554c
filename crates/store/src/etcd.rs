//! etcd v3 backend: the [`Store`] trait mapped onto a real etcd cluster.
//!
//! Keys are stored as given (the API server already uses `/registry/...`).
//! Conditional writes are etcd transactions comparing `create_revision` /
//! `mod_revision`, whose failure branch reads the key so that a conflict
//! carries the current value. Every unary request has a deadline, so a dead
//! etcd surfaces as [`StoreError::Backend`] instead of a hang; the client
//! reconnects by itself once etcd is back.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use futures::StreamExt;

use crate::{
    Deleted, Event, EventType, KeyValue, RangeResult, Revision, Store, StoreError, WatchStream,
};

/// Default deadline for one etcd request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest gRPC message accepted from etcd (big lists and watch batches).
const MAX_MESSAGE: usize = 512 << 20;

/// etcd's error text for a read below the compact revision.
const COMPACTED_MSG: &str = "required revision has been compacted";
/// etcd's error text for a read beyond the current revision.
const FUTURE_MSG: &str = "required revision is a future revision";

/// TLS material for talking to etcd, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA bundle that signed etcd's serving certificate.
    pub ca_file: PathBuf,
    /// Client certificate (with `key_file`), for etcd's client-cert auth.
    pub cert_file: Option<PathBuf>,
    /// Client private key (with `cert_file`).
    pub key_file: Option<PathBuf>,
}

/// Tunables for [`EtcdStore::connect_with`].
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Deadline for each unary request and for establishing a watch.
    pub request_timeout: Duration,
    /// Deadline for establishing a TCP/TLS connection.
    pub connect_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A parsed `etcd://` datastore spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSpec {
    /// Endpoint URLs (`http://` or, with TLS, `https://`).
    pub endpoints: Vec<String>,
    /// TLS settings, when `ca` was given.
    pub tls: Option<EtcdTls>,
}

/// Parses `etcd://host:2379[,host2:2379][?ca=PATH&cert=PATH&key=PATH]`.
///
/// With `ca` the endpoints use TLS (`cert` and `key` add a client
/// certificate); without it they are plain HTTP.
pub fn parse_spec(spec: &str) -> Result<EtcdSpec, StoreError> {
    let bad = |why: &str| StoreError::Backend(format!("invalid etcd datastore {spec:?}: {why}"));
    let rest = spec
        .strip_prefix("etcd://")
        .ok_or_else(|| bad("must start with etcd://"))?;
    let (hosts, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let (mut ca, mut cert, mut key) = (None, None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("query parameters must be name=value"))?;
        let slot = match name {
            "ca" => &mut ca,
            "cert" => &mut cert,
            "key" => &mut key,
            other => return Err(bad(&format!("unknown parameter {other:?} (ca, cert, key)"))),
        };
        *slot = Some(PathBuf::from(value));
    }
    let tls = match (ca, cert, key) {
        (None, None, None) => None,
        (Some(ca_file), cert_file, key_file) => {
            if cert_file.is_some() != key_file.is_some() {
                return Err(bad("cert and key must be given together"));
            }
            Some(EtcdTls {
                ca_file,
                cert_file,
                key_file,
            })
        }
        (None, _, _) => return Err(bad("cert/key need ca")),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoints: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{h}"))
        .collect();
    if endpoints.is_empty() {
        return Err(bad("no endpoints"));
    }
    Ok(EtcdSpec { endpoints, tls })
}

/// Why an etcd call failed, before it is turned into a [`StoreError`].
enum Fail {
    /// The revision asked for is compacted.
    Compacted,
    /// The revision asked for is in the future.
    Future,
    /// Anything else, already mapped.
    Other(StoreError),
}

impl Fail {
    /// Maps the revision cases too, for operations where they are unexpected.
    fn into_store(self, op: &str) -> StoreError {
        match self {
            Fail::Compacted => StoreError::Backend(format!("etcd {op}: {COMPACTED_MSG}")),
            Fail::Future => StoreError::Backend(format!("etcd {op}: {FUTURE_MSG}")),
            Fail::Other(e) => e,
        }
    }
}

fn classify(op: &str, e: etcd_client::Error) -> Fail {
    let text = e.to_string();
    if text.contains(COMPACTED_MSG) {
        Fail::Compacted
    } else if text.contains(FUTURE_MSG) {
        Fail::Future
    } else {
        Fail::Other(StoreError::Backend(format!("etcd {op} failed: {text}")))
    }
}

/// The key range `[start, end)` holding every key with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty or all 0xff: every key from the start on ("\0" = no end).
    vec![0]
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = std::str::from_utf8(kv.key()).map_err(|_| {
        StoreError::Backend(format!("etcd returned a non-UTF-8 key {:?}", kv.key()))
    })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(
    h: Option<&etcd_client::ResponseHeader>,
    op: &str,
) -> Result<Revision, StoreError> {
    h.map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend(format!("etcd {op}: response without header")))
}

/// The store backed by etcd v3.
pub struct EtcdStore {
    client: Client,
    timeout: Duration,
    /// The highest compact revision this store did or observed.
    compacted: AtomicI64,
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:port`, `https://host:port` or
    /// `host:port`) and checks that etcd answers.
    pub async fn connect(endpoints: &[String], tls: Option<EtcdTls>) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, tls, EtcdOptions::default()).await
    }

    /// Connects to the endpoints of an `etcd://` spec (see [`parse_spec`]).
    pub async fn connect_spec(spec: &str) -> Result<Self, StoreError> {
        let spec = parse_spec(spec)?;
        Self::connect(&spec.endpoints, spec.tls).await
    }

    /// [`EtcdStore::connect`] with explicit options.
    pub async fn connect_with(
        endpoints: &[String],
        tls: Option<EtcdTls>,
        opts: EtcdOptions,
    ) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            // Keepalive pings notice a silently dead peer under a watch.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &tls {
            copts = copts.with_tls(tls_options(tls)?);
        }
        let client = tokio::time::timeout(
            opts.request_timeout,
            Client::connect(endpoints, Some(copts)),
        )
        .await
        .map_err(|_| StoreError::Backend(format!("connecting to etcd {endpoints:?} timed out")))?
        .map_err(|e| StoreError::Backend(format!("connecting to etcd {endpoints:?}: {e}")))?;
        let store = EtcdStore {
            client,
            timeout: opts.request_timeout,
            compacted: AtomicI64::new(0),
        };
        let rev = store.current_revision().await.map_err(|e| {
            let why = match e {
                StoreError::Backend(msg) => msg,
                other => other.to_string(),
            };
            StoreError::Backend(format!("etcd at {endpoints:?} is not answering: {why}"))
        })?;
        tracing::info!(?endpoints, revision = rev, "connected to etcd");
        Ok(store)
    }

    /// Runs one etcd request under the request deadline.
    async fn call<T>(
        &self,
        op: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Fail> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(op, e)),
            Err(_) => Err(Fail::Other(StoreError::Backend(format!(
                "etcd {op} timed out after {:?} (is etcd up?)",
                self.timeout
            )))),
        }
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    async fn txn(&self, op: &str, txn: Txn) -> Result<TxnResponse, StoreError> {
        let mut kv = self.kv();
        self.call(op, kv.txn(txn))
            .await
            .map_err(|f| f.into_store(op))
    }

    /// Whether a read at `revision` is still allowed (not compacted).
    async fn readable(&self, revision: Revision) -> Result<bool, StoreError> {
        let mut kv = self.kv();
        let opts = GetOptions::new().with_count_only().with_revision(revision);
        match self.call("range", kv.get(vec![0u8], Some(opts))).await {
            Ok(_) | Err(Fail::Future) => Ok(true),
            Err(Fail::Compacted) => Ok(false),
            Err(Fail::Other(e)) => Err(e),
        }
    }

    /// The compact revision: the last one known, checked against etcd and
    /// found by bisection when someone else compacted further (etcd has no
    /// API that returns it).
    async fn discover_compacted(&self) -> Result<Revision, StoreError> {
        let known = self.compacted.load(Ordering::Acquire);
        let lo = known.max(1);
        if self.readable(lo).await? {
            return Ok(known);
        }
        // `lo` is unreadable, the current revision always is.
        let (mut bad, mut good) = (lo, self.current_revision().await?);
        while good - bad > 1 {
            let mid = bad + (good - bad) / 2;
            if self.readable(mid).await? {
                good = mid;
            } else {
                bad = mid;
            }
        }
        self.compacted.fetch_max(good, Ordering::AcqRel);
        Ok(good)
    }

    /// Reads the current value of `key` from a failed transaction's else branch.
    fn else_value(resp: &TxnResponse) -> Result<Option<KeyValue>, StoreError> {
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                return g.kvs().first().map(convert).transpose();
            }
        }
        Err(StoreError::Backend(
            "etcd txn: missing read in the failure branch".into(),
        ))
    }

    /// The `Conflict`/`NotFound` for a failed conditional write.
    fn precondition_failed(
        key: &str,
        expected: Revision,
        resp: &TxnResponse,
    ) -> Result<StoreError, StoreError> {
        Ok(match Self::else_value(resp)? {
            None => StoreError::NotFound(key.to_string()),
            Some(cur) => StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: Box::new(cur),
            },
        })
    }

    /// The comparison guarding an update or delete.
    fn guard(key: &str, expected: Revision) -> Compare {
        if expected == 0 {
            Compare::create_revision(key, CompareOp::Greater, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, expected)
        }
    }
}

fn tls_options(tls: &EtcdTls) -> Result<etcd_client::TlsOptions, StoreError> {
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p)
            .map_err(|e| StoreError::Backend(format!("reading etcd {what} {}: {e}", p.display())))
    };
    let mut opts = etcd_client::TlsOptions::new().ca_certificate(
        etcd_client::Certificate::from_pem(read(&tls.ca_file, "CA")?),
    );
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            opts = opts.identity(etcd_client::Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Backend(
                "etcd TLS: client certificate and key must be given together".into(),
            ));
        }
    }
    Ok(opts)
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.kv();
        let resp = self
            .call("get", kv.get(key, None))
            .await
            .map_err(|f| f.into_store("get"))?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: i64,
        revision: Revision,
    ) -> Result<RangeResult, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = if prefix.is_empty() {
            vec![0u8]
        } else {
            prefix.as_bytes().to_vec()
        };
        if let Some(after) = start_after {
            // The first key strictly after `after`.
            let mut next = after.as_bytes().to_vec();
            next.push(0);
            if next > start {
                start = next;
            }
        }
        let opts = GetOptions::new()
            .with_range(end)
            .with_limit(limit.max(0))
            .with_revision(revision.max(0));
        let mut kv = self.kv();
        let resp = match self.call("range", kv.get(start, Some(opts))).await {
            Ok(r) => r,
            Err(Fail::Compacted) => {
                return Err(StoreError::Compacted {
                    requested: revision,
                    compacted: self.discover_compacted().await?,
                });
            }
            Err(Fail::Future) => {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current: self.current_revision().await?,
                });
            }
            Err(Fail::Other(e)) => return Err(e),
        };
        let kvs = resp
            .kvs()
            .iter()
            .map(convert)
            .collect::<Result<Vec<_>, _>>()?;
        // etcd's header carries the current revision, not the one read at.
        let served = if revision > 0 {
            revision
        } else {
            header_revision(resp.header(), "range")?
        };
        Ok(RangeResult {
            more: resp.more(),
            count: resp.count(),
            revision: served,
            kvs,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn("create", txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let rev = header_revision(resp.header(), "create")?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let txn = Txn::new()
            .when([Self::guard(key, expected)])
            .and_then([TxnOp::put(
                key,
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn("update", txn).await?;
        if !resp.succeeded() {
            return Err(Self::precondition_failed(key, expected, &resp)?);
        }
        let rev = header_revision(resp.header(), "update")?;
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
            _ => None,
        });
        let create_revision = prev.ok_or_else(|| {
            StoreError::Backend("etcd update: put returned no previous value".into())
        })?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Deleted, StoreError> {
        let txn = Txn::new()
            .when([Self::guard(key, expected)])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn("delete", txn).await?;
        if !resp.succeeded() {
            return Err(Self::precondition_failed(key, expected, &resp)?);
        }
        let revision = header_revision(resp.header(), "delete")?;
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(convert),
                _ => None,
            })
            .transpose()?
            .ok_or_else(|| StoreError::Backend("etcd delete: no previous value returned".into()))?;
        Ok(Deleted { prev, revision })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // etcd would accept a start one revision below ours (it serves the
        // compact revision itself); the trait wants `after` retained.
        if after > 0 && !self.readable(after).await? {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: self.discover_compacted().await?,
            });
        }
        let key = if prefix.is_empty() {
            vec![0u8]
        } else {
            prefix.as_bytes().to_vec()
        };
        let mut opts = WatchOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_prev_key();
        if after > 0 {
            opts = opts.with_start_revision(after + 1);
        }
        let mut client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut stream = self
            .call("watch", client.watch(key, Some(opts)))
            .await
            .map_err(|f| f.into_store("watch"))?;
        // Wait for the "created" answer, so that every write after this
        // call returns is seen.
        let first = self
            .call("watch", stream.message())
            .await
            .map_err(|f| f.into_store("watch"))?
            .ok_or_else(|| {
                StoreError::Backend("etcd closed the watch before creating it".into())
            })?;
        if first.canceled() {
            return Err(cancel_error(&first, after));
        }
        if !first.created() {
            return Err(StoreError::Backend(
                "etcd watch: first response was not a creation".into(),
            ));
        }
        let start = if after > 0 {
            after
        } else {
            header_revision(first.header(), "watch")?
        };
        let state = WatchState {
            stream,
            pending: VecDeque::new(),
            last: start,
            done: false,
        };
        Ok(futures::stream::unfold(state, next_event).boxed())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.kv();
        let resp = self
            .call(
                "get revision",
                kv.get(vec![0u8], Some(GetOptions::new().with_count_only())),
            )
            .await
            .map_err(|f| f.into_store("get revision"))?;
        header_revision(resp.header(), "get revision")
    }

    async fn compact_revision(&self) -> Result<Revision, StoreError> {
        self.discover_compacted().await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        if revision <= 0 {
            return Ok(());
        }
        let mut kv = self.kv();
        let opts = CompactionOptions::new();
        match self.call("compact", kv.compact(revision, Some(opts))).await {
            Ok(_) => {
                self.compacted.fetch_max(revision, Ordering::AcqRel);
                tracing::debug!(revision, "etcd compacted");
                Ok(())
            }
            // Already compacted at or past it: nothing to do, as on the other backends.
            Err(Fail::Compacted) => Ok(()),
            Err(Fail::Future) => Err(StoreError::FutureRevision {
                requested: revision,
                current: self.current_revision().await?,
            }),
            Err(Fail::Other(e)) => Err(e),
        }
    }
}

/// The store error for a watch etcd canceled.
fn cancel_error(resp: &etcd_client::WatchResponse, requested: Revision) -> StoreError {
    if resp.compact_revision() > 0 {
        StoreError::Compacted {
            requested,
            compacted: resp.compact_revision(),
        }
    } else {
        StoreError::Backend(format!("etcd canceled the watch: {}", resp.cancel_reason()))
    }
}

struct WatchState {
    stream: etcd_client::WatchStream,
    pending: VecDeque<Event>,
    /// The revision of the last event delivered (or the watch start).
    last: Revision,
    done: bool,
}

fn convert_event(ev: &etcd_client::Event) -> Result<Event, StoreError> {
    let kv = ev
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd watch event without a key".into()))?;
    let prev = ev.prev_kv().map(convert).transpose()?;
    Ok(match ev.event_type() {
        etcd_client::EventType::Put => Event {
            kind: EventType::Put,
            kv: convert(kv)?,
            prev,
        },
        etcd_client::EventType::Delete => {
            // etcd's delete carries only the key and the delete revision;
            // the trait wants the last value with that revision.
            let mut last = prev.clone().unwrap_or(convert(kv)?);
            last.mod_revision = kv.mod_revision();
            Event {
                kind: EventType::Delete,
                kv: last,
                prev,
            }
        }
    })
}

/// One step of a watch stream: the next event, or the error that ends it.
async fn next_event(mut st: WatchState) -> Option<(Result<Event, StoreError>, WatchState)> {
    loop {
        if let Some(ev) = st.pending.pop_front() {
            st.last = ev.kv.mod_revision;
            return Some((Ok(ev), st));
        }
        if st.done {
            return None;
        }
        let err = match st.stream.message().await {
            Ok(Some(resp)) if resp.canceled() => cancel_error(&resp, st.last),
            Ok(Some(resp)) => {
                match resp
                    .events()
                    .iter()
                    .map(convert_event)
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(evs) => {
                        st.pending.extend(evs);
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Ok(None) => StoreError::Backend("etcd closed the watch stream".into()),
            Err(e) => StoreError::Backend(format!("etcd watch stream broken: {e}")),
        };
        tracing::warn!(error = %err, last = st.last, "etcd watch ended");
        st.done = true;
        return Some((Err(err), st));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn parses_specs() {
        let s = parse_spec("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(
            s.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(s.tls, None);
        let s = parse_spec("etcd://e:2379?ca=/c.pem&cert=/x.pem&key=/k.pem").unwrap();
        assert_eq!(s.endpoints, ["https://e:2379"]);
        assert_eq!(
            s.tls,
            Some(EtcdTls {
                ca_file: "/c.pem".into(),
                cert_file: Some("/x.pem".into()),
                key_file: Some("/k.pem".into()),
            })
        );
        for bad in [
            "sqlite://x",
            "etcd://",
            "etcd://h:1?ca=/c&cert=/x",
            "etcd://h:1?key=/k",
            "etcd://h:1?bogus=1",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad} accepted");
        }
    }
}
