//! Reads: get, list (with selectors, pagination and resourceVersion
//! semantics), watch, and their Table / metadata-only renderings.

use std::time::Duration;

use api::catalogue::ResourceInfo;
use base64::Engine;
use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use store::{EventType, Revision, StoreError};
use tokio::sync::mpsc;

use super::{Call, Rest, collection_prefix, decode_kv};
use crate::convert;
use crate::error::ApiError;
use crate::filter::Filter;
use crate::http::{self as h, Body, Want};
use crate::watch::{CachedEvent, Source};

/// A custom object read at a version gets that version's defaults, as
/// upstream defaults what it reads from storage (an object written at
/// another version, or before a default was added).
fn with_read_defaults(call: &Call, mut obj: Value) -> Value {
    if let Some(served) = &call.route.custom {
        use api::registry::Strategy;
        served.strategy.default(&mut obj);
    }
    obj
}

/// A Table of `rows`: a custom kind's printer columns, else the built-in
/// printers.
fn table(call: &Call, info: &ResourceInfo, rows: &[&Value], include: &str) -> Value {
    let now = chrono::Utc::now();
    match &call.route.custom {
        Some(served) => {
            let cols = served.columns();
            api::table::table_of(
                api::crd::columns::definitions(cols),
                rows,
                |o| api::crd::columns::cells(cols, o, now),
                include,
            )
        }
        None => api::table::table(info.group, info.plural, rows, now, include),
    }
}

/// GET of one object.
pub async fn get(rest: &Rest, call: &Call, name: &str) -> Result<Response<Body>, ApiError> {
    let want = h::negotiate(&call.headers)?;
    let (obj, _) = rest.load(call.info(), call.ns(), name).await?;
    Ok(h::json(200, &render_one(call, want, obj)))
}

/// One object in the representation the client asked for; writes answer
/// this way too (upstream transforms create, update and patch responses
/// as it does a GET's).
pub(crate) fn render_one(call: &Call, want: Want, obj: Value) -> Value {
    let info = call.info();
    let obj = with_read_defaults(call, obj);
    match want {
        Want::Object => obj,
        Want::Metadata => partial(&obj),
        Want::Table => {
            let include = call.query.get("includeObject").unwrap_or("Metadata");
            let mut t = table(call, info, &[&obj], include);
            t["metadata"] = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            t
        }
    }
}

fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    })
}

/// One page of a list.
pub struct ListPage {
    /// Matching objects.
    pub items: Vec<Value>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Continue token for the next page.
    pub continue_token: Option<String>,
    /// Items left after this page (only without selectors, as upstream).
    pub remaining: Option<i64>,
}

fn encode_continue(rev: Revision, start: &str) -> String {
    let v = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
}

fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_i64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    Ok((rev, start))
}

fn parse_rv(s: &str) -> Result<Revision, ApiError> {
    s.parse::<Revision>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// Lists matching objects for a call (one page when `limit` is set).
pub async fn list_objects(rest: &Rest, call: &Call) -> Result<ListPage, ApiError> {
    let info = call.info();
    let filter = Filter::from_query(info, call.route.custom.as_deref(), &call.query)?;
    let prefix = collection_prefix(info, call.ns());
    let limit = call.query.int("limit")?.unwrap_or(0).max(0);
    let (mut revision, mut start_after) = match call.query.get("continue") {
        Some(token) => {
            let (rev, start) = decode_continue(token)?;
            (rev, Some(format!("{prefix}{start}")))
        }
        None => (0, None),
    };
    if call.query.get("continue").is_none() {
        let rv = call.query.get("resourceVersion");
        match call.query.get("resourceVersionMatch") {
            Some("Exact") => {
                revision = parse_rv(rv.ok_or_else(|| {
                    ApiError::bad_request(
                        "resourceVersionMatch \"Exact\" requires a resourceVersion",
                    )
                })?)?
            }
            Some("NotOlderThan") | None => {
                if let Some(rv) = rv
                    && rv != "0"
                {
                    let want = parse_rv(rv)?;
                    let now = rest.store.current_revision().await?;
                    if want > now {
                        return Err(ApiError::timeout(format!(
                            "Too large resource version: {want}, current: {now}"
                        )));
                    }
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        }
    }
    let mut items = Vec::new();
    let mut last_key: Option<String> = None;
    let mut more;
    let mut remaining = None;
    loop {
        let batch = if limit > 0 {
            (limit - items.len() as i64).max(1)
        } else {
            0
        };
        let res = match rest
            .store
            .range(&prefix, start_after.as_deref(), batch, revision)
            .await
        {
            Ok(r) => r,
            Err(StoreError::Compacted { .. }) if call.query.get("continue").is_some() => {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        revision = res.revision;
        more = res.more;
        for kv in &res.kvs {
            last_key = Some(kv.key.clone());
            let obj = decode_kv(info, kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
        }
        if filter.is_empty() && limit > 0 {
            remaining = Some(res.count - res.kvs.len() as i64);
        }
        if !more || limit == 0 || items.len() as i64 >= limit {
            break;
        }
        start_after = last_key.clone();
    }
    let continue_token = match (&last_key, more && limit > 0) {
        (Some(k), true) => Some(encode_continue(
            revision,
            k.strip_prefix(&prefix).unwrap_or(k),
        )),
        _ => None,
    };
    Ok(ListPage {
        items,
        revision,
        continue_token,
        remaining: remaining.filter(|r| *r > 0 && more),
    })
}

/// GET of a collection.
pub async fn list(rest: &Rest, call: &Call) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let want = h::negotiate(&call.headers)?;
    let mut page = list_objects(rest, call).await?;
    rest.convert(info, &mut page.items, &info.api_version())
        .await?;
    if call.route.custom.is_some() {
        page.items = page
            .items
            .into_iter()
            .map(|o| with_read_defaults(call, o))
            .collect();
    }
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let body = render_list(call, want, page.items, meta);
    Ok(h::json(200, &body))
}

/// A list in the representation the client asked for, with list
/// metadata `meta`.
pub(crate) fn render_list(call: &Call, want: Want, items: Vec<Value>, meta: Value) -> Value {
    let info = call.info();
    match want {
        Want::Object => json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": meta,
            "items": items,
        }),
        Want::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(partial).collect::<Vec<_>>(),
        }),
        Want::Table => {
            let include = call.query.get("includeObject").unwrap_or("Metadata");
            let rows: Vec<&Value> = items.iter().collect();
            let mut t = table(call, info, &rows, include);
            t["metadata"] = meta;
            t
        }
    }
}

fn watch_event(kind: &str, call: &Call, want: Want, obj: Value) -> Bytes {
    let object = match (kind, want) {
        ("BOOKMARK" | "ERROR", _) => obj,
        _ => render_one(call, want, obj),
    };
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(info: &ResourceInfo, rev: Revision, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta})
}

/// Whether a stored object can be sent as stored (no version conversion).
fn as_stored(info: &ResourceInfo, obj: &Value) -> bool {
    obj["apiVersion"].as_str() == Some(info.api_version().as_str())
        && obj["kind"].as_str() == Some(info.kind)
}

/// The event type for this watcher, honouring selector transitions as
/// upstream does (an object leaving the selector is DELETED).
fn event_type(ev: &CachedEvent, now: bool, before: impl FnOnce() -> bool) -> Option<&'static str> {
    match ev.kind {
        EventType::Delete => now.then_some("DELETED"),
        EventType::Put => match (before(), now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

/// Encodes one cached event for a watcher, or None when it does not see it.
/// Objects that need no conversion are filtered in place and sent from the
/// shared encoding.
fn encode_event(
    info: &ResourceInfo,
    filter: &Filter,
    call: &Call,
    want: Want,
    ev: &CachedEvent,
) -> Option<Bytes> {
    if want == Want::Object && as_stored(info, &ev.object) {
        let now = filter.matches(&ev.object);
        let t = event_type(ev, now, || {
            ev.prev.as_ref().is_some_and(|p| filter.matches(p))
        })?;
        let body = ev.encoded();
        let mut line = Vec::with_capacity(body.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(t.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(body);
        line.extend_from_slice(b"}\n");
        return Some(Bytes::from(line));
    }
    let (t, obj) = classify(info, filter, ev)?;
    Some(watch_event(t, call, want, obj))
}

/// Classifies a cached event for this watcher, converting the object to the
/// watcher's version first.
fn classify(
    info: &ResourceInfo,
    filter: &Filter,
    ev: &CachedEvent,
) -> Option<(&'static str, Value)> {
    let mut obj = (*ev.object).clone();
    convert::to_version(info, &mut obj);
    let now = filter.matches(&obj);
    let t = event_type(ev, now, || {
        ev.prev.as_ref().is_some_and(|p| {
            let mut p = (**p).clone();
            convert::to_version(info, &mut p);
            filter.matches(&p)
        })
    })?;
    Some((t, obj))
}

/// A watch: a chunked stream of JSON events.
pub async fn watch(rest: &Rest, call: &Call) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let want = h::negotiate(&call.headers)?;
    let mut filter = Filter::from_query(info, call.route.custom.as_deref(), &call.query)?;
    if let Some(name) = &call.route.name {
        filter.require_name(name);
    }
    let prefix = collection_prefix(info, call.ns());
    let bookmarks = call.query.flag("allowWatchBookmarks");
    let send_initial = match call.query.get("sendInitialEvents") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let rv = call.query.get("resourceVersion").unwrap_or("");
    let timeout = match call.query.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        // Upstream spreads watch lifetimes over [30m, 60m) so clients do not
        // all reconnect at once.
        _ => Duration::from_secs(1800 + (uuid::Uuid::new_v4().as_u128() % 1800) as u64),
    };

    // Initial state: "" and "0" mean "start with the current objects",
    // unless sendInitialEvents=false.
    let mut initial = Vec::new();
    let after: Revision;
    let initial_wanted = send_initial.unwrap_or(rv.is_empty() || rv == "0");
    if initial_wanted {
        let res = rest.store.range(&prefix, None, 0, 0).await?;
        after = res.revision;
        for kv in &res.kvs {
            let obj = decode_kv(info, kv)?;
            if filter.matches(&obj) {
                initial.push(obj);
            }
        }
    } else if rv.is_empty() || rv == "0" {
        after = rest.store.current_revision().await?;
    } else {
        after = parse_rv(rv)?;
    }

    rest.convert(info, &mut initial, &info.api_version())
        .await?;
    // Events of a kind with a conversion webhook are converted for this
    // watcher before they are filtered and encoded.
    let conv: Conversion = call
        .route
        .custom
        .clone()
        .filter(|_| info.conversion_webhook)
        .map(|s| (rest.store.clone(), s));
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let source = rest.cache.subscribe(&prefix, after).await;
    let call_info = info;
    let req = CallLite::from(call);
    tokio::spawn(async move {
        let call = req.as_call(call_info);
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(b).await.is_ok() }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        for obj in initial {
            if !send(watch_event("ADDED", &call, want, obj)).await {
                return;
            }
        }
        if send_initial == Some(true) && bookmarks {
            let b = bookmark(call_info, after, true);
            if !send(watch_event("BOOKMARK", &call, want, b)).await {
                return;
            }
        }
        let source = match source {
            Ok(s) => s,
            Err(e) => {
                let err: ApiError = match e {
                    StoreError::Compacted {
                        requested,
                        compacted,
                    } => ApiError::gone(format!(
                        "too old resource version: {requested} ({compacted})"
                    )),
                    other => other.into(),
                };
                let _ = send(watch_event("ERROR", &call, want, err.status())).await;
                return;
            }
        };
        let mut last_sent = after;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        match source {
            Source::Cache {
                replay,
                mut live,
                after: skip,
            } => {
                for ev in replay {
                    last_sent = ev.revision;
                    let conv_ev = convert_event(&conv, &ev, call_info).await;
                    let ev = conv_ev.as_ref().unwrap_or(&ev);
                    if let Some(line) = encode_event(call_info, &filter, &call, want, ev)
                        && !send(line).await
                    {
                        return;
                    }
                }
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => return,
                        _ = tick.tick(), if bookmarks => {
                            let b = bookmark(call_info, last_sent.max(skip), false);
                            if !send(watch_event("BOOKMARK", &call, want, b)).await { return; }
                        }
                        _ = tx.closed() => return,
                        ev = live.recv() => match ev {
                            Ok(ev) => {
                                if ev.revision <= skip || !ev.key.starts_with(&prefix) {
                                    continue;
                                }
                                last_sent = ev.revision;
                                let conv_ev = convert_event(&conv, &ev, call_info).await;
                                let ev = conv_ev.as_ref().unwrap_or(&ev);
                                if let Some(line) = encode_event(call_info, &filter, &call, want, ev)
                                    && !send(line).await
                                {
                                    return;
                                }
                            }
                            // A watcher that fell behind is closed; the
                            // client re-watches from its last resourceVersion.
                            Err(_) => return,
                        }
                    }
                }
            }
            Source::Store(mut stream) => {
                use futures::StreamExt;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => return,
                        _ = tx.closed() => return,
                        item = stream.next() => match item {
                            Some(Ok(ev)) => {
                                let Some(ce) = crate::watch::from_store_event(&ev) else { continue };
                                let conv_ev = convert_event(&conv, &ce, call_info).await;
                                let ce = conv_ev.as_ref().unwrap_or(&ce);
                                if let Some((t, obj)) = classify(call_info, &filter, ce)
                                    && !send(watch_event(t, &call, want, obj)).await
                                {
                                    return;
                                }
                            }
                            Some(Err(StoreError::Compacted { requested, compacted })) => {
                                let e = ApiError::gone(format!("too old resource version: {requested} ({compacted})"));
                                let _ = send(watch_event("ERROR", &call, want, e.status())).await;
                                return;
                            }
                            _ => return,
                        }
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let resp = Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(h::streaming(stream))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(resp)
}

/// What a watch of a kind with a conversion webhook converts with.
type Conversion = Option<(store::SharedStore, std::sync::Arc<crate::crd::Served>)>;

/// The event with its objects converted to the watcher's version, when
/// its kind has a conversion webhook and they are stored at another one
/// (a failed conversion leaves the event as stored, logged).
async fn convert_event(
    conv: &Conversion,
    ev: &CachedEvent,
    info: &ResourceInfo,
) -> Option<CachedEvent> {
    let (store, served) = conv.as_ref()?;
    let desired = info.api_version();
    if ev.object["apiVersion"].as_str() == Some(desired.as_str()) {
        return None;
    }
    let mut objs = vec![(*ev.object).clone()];
    if let Some(p) = &ev.prev {
        objs.push((**p).clone());
    }
    if let Err(e) = crate::crd::conversion::convert(store, served, &mut objs, &desired).await {
        tracing::warn!(error = %e.message, "watch event not converted");
        return None;
    }
    let prev = ev
        .prev
        .as_ref()
        .and_then(|_| objs.pop())
        .map(std::sync::Arc::new);
    let object = std::sync::Arc::new(objs.pop()?);
    Some(CachedEvent {
        object,
        prev,
        encoded: std::sync::OnceLock::new(),
        ..ev.clone()
    })
}

/// The parts of a call a detached watch task keeps.
struct CallLite {
    namespace: Option<String>,
    custom: Option<std::sync::Arc<crate::crd::Served>>,
    query: super::Query,
    user: crate::auth::User,
}

impl CallLite {
    fn from(call: &Call) -> CallLite {
        CallLite {
            namespace: call.route.namespace.clone(),
            custom: call.route.custom.clone(),
            query: call.query.clone(),
            user: call.user.clone(),
        }
    }

    fn as_call(&self, info: &'static ResourceInfo) -> Call {
        Call {
            route: crate::router::ResourceRoute {
                info,
                namespace: self.namespace.clone(),
                name: None,
                subresource: None,
                rest: String::new(),
                watch_prefix: true,
                custom: self.custom.clone(),
            },
            method: http::Method::GET,
            query: self.query.clone(),
            headers: http::HeaderMap::new(),
            user: self.user.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_roundtrip() {
        let t = encode_continue(42, "default/web");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web".to_string())
        );
        assert!(decode_continue("!!!").is_err());
    }
}
