//! HTTP plumbing: the body type, request reading with a size limit, content
//! negotiation and response builders.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};

/// The request body type: as received, or buffered once already (when
/// the audit log records the request object).
pub type RequestBody = http_body_util::Either<Incoming, Full<Bytes>>;
use serde_json::Value;

use crate::error::ApiError;

/// The response body type: a full buffer or a stream (watch, logs).
pub type Body = BoxBody<Bytes, Infallible>;

/// Upstream's limit on request bodies (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A full body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A streaming body from chunks.
pub fn streaming<S>(stream: S) -> Body
where
    S: Stream<Item = Bytes> + Send + Sync + 'static,
{
    use futures::StreamExt;
    BodyExt::boxed(StreamBody::new(
        stream.map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ))
}

/// A JSON response, ending in a newline as upstream's encoder writes it.
pub fn json(code: u16, v: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A JSON response with a specific content type.
pub fn json_typed(code: u16, v: &Value, content_type: &str) -> Response<Body> {
    let mut r = json(code, v);
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

/// A plain-text response.
pub fn text(code: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(body.into()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// The Status response for an error.
pub fn error(e: &ApiError) -> Response<Body> {
    json(e.code, &e.status())
}

/// Reads the whole request body, refusing more than [`MAX_BODY`].
pub async fn read_body(body: RequestBody, headers: &HeaderMap) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::too_large("the request body is larger than the 3145728-byte limit");
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY
    {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(format!(
                    "error reading request body: {e}"
                )))
            }
        }
    }
}

/// What representation the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The object itself.
    Object,
    /// A meta.k8s.io Table.
    Table,
    /// PartialObjectMetadata(List).
    Metadata,
}

/// Parses `Accept` the way upstream negotiates: the first JSON (or `*/*`)
/// media type wins; protobuf-only clients are refused.
pub fn negotiate(headers: &HeaderMap) -> Result<Want, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Want::Object);
    };
    if accept.trim().is_empty() {
        return Ok(Want::Object);
    }
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        if !matches!(
            media,
            "application/json"
                | "*/*"
                | "application/*"
                | "application/yaml"
                | "application/json-seq"
        ) {
            continue;
        }
        let mut as_ = None;
        let mut g = None;
        for p in params {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(v.trim().to_string()),
                    "g" => g = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        match (as_.as_deref(), g.as_deref()) {
            (None, _) => return Ok(Want::Object),
            (Some("Table"), Some("meta.k8s.io")) => return Ok(Want::Table),
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io")) => {
                return Ok(Want::Metadata);
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml (asked for {accept})"
    )))
}

/// Decodes a request body as JSON or YAML, per its content type.
pub fn decode_body(bytes: &[u8], content_type: &str) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    // kubectl's typed clients (create configmap/secret/namespace, drain's
    // evictions, ...) send Kubernetes protobuf; it is decoded into the same
    // JSON every other client sends.
    if media == "application/vnd.kubernetes.protobuf" {
        return api::proto::decode(bytes).map_err(|e| {
            ApiError::bad_request(format!("error decoding protobuf request body: {e}"))
        });
    }
    if media.contains("protobuf") || media.contains("cbor") {
        return Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {media})"
        )));
    }
    let is_yaml = content_type.contains("yaml");
    if is_yaml {
        let v: Value = serde_yaml_ng::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        return Ok(v);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!("error decoding request body: invalid JSON: {e}"))
    })
}

/// Query parameters (last value wins, as upstream's decoding does).
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// A parameter, if present and non-empty.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    /// An integer parameter; a malformed one is a 400.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {k}: {v:?} is not an integer"))
            }),
        }
    }

    /// `dryRun=All` requested. Unknown values are a 400.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}: supported values: \"All\""
            ))),
        }
    }
}
