//! Decoding of `application/vnd.kubernetes.protobuf` request bodies into
//! upstream's JSON shape.
//!
//! kubectl's typed clients send protobuf and do not retry with JSON, while
//! r8s handles every object as JSON. A body is the magic `k8s\0` followed by
//! a `runtime.Unknown` envelope carrying apiVersion, kind and the object's
//! own message; the object is decoded with a generic wire-format reader
//! driven by the generated field table (see `tools/gen_proto_table.py`).

mod decode;
mod special;
pub mod table;
mod wire;

use serde_json::{Map, Value};

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    #[error("protobuf body does not start with the Kubernetes magic prefix k8s\\0")]
    Magic,
    /// The input ended inside a value.
    #[error("protobuf data is truncated inside a {0}")]
    Truncated(&'static str),
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("protobuf data has a malformed varint")]
    Varint,
    /// Field number 0 or above the protobuf maximum.
    #[error("protobuf data has invalid field number {0}")]
    FieldNumber(u64),
    /// Wire types 3, 4 (groups), 6 and 7.
    #[error("protobuf data uses unsupported wire type {0}")]
    UnsupportedWireType(u8),
    /// A field arrived with a wire type its declaration does not allow.
    #[error("{message}.{field}: wire type {got} does not match the field's type")]
    WireType {
        /// Full proto name of the enclosing message.
        message: String,
        /// JSON name of the field.
        field: String,
        /// The wire type found.
        got: u8,
    },
    /// The envelope lacks apiVersion or kind.
    #[error("protobuf envelope (runtime.Unknown) has no {0}")]
    MissingTypeMeta(&'static str),
    /// No message is known for the envelope's apiVersion and kind.
    #[error("no protobuf message is known for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// Messages nested deeper than the decoder allows.
    #[error("protobuf messages are nested deeper than {0} levels")]
    TooDeep(usize),
    /// A value is well-framed but cannot be represented (bad time, NaN, non-JSON raw).
    #[error("{message}: {reason}")]
    Invalid {
        /// Full proto name of the message (or field) holding the value.
        message: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded generated table is broken (a build problem, not an input one).
    #[error("generated protobuf table is malformed: {0}")]
    Table(String),
}

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Decodes a full Kubernetes protobuf body (magic + `runtime.Unknown`) into
/// the object's JSON, with `apiVersion` and `kind` set.
pub fn decode(bytes: &[u8]) -> Result<Value, ProtoError> {
    decode::decode_body(bytes, 0)
}

/// Decodes one message of the given full proto name (no envelope) into JSON.
pub fn decode_message(message: &str, bytes: &[u8]) -> Result<Value, ProtoError> {
    let schema = decode::schema()?;
    decode::message_value(schema, message, bytes, 0)
}

/// The full proto message name for an apiVersion and kind, if known.
pub fn message_for(api_version: &str, kind: &str) -> Option<String> {
    let schema = decode::schema().ok()?;
    decode::resolve_kind(schema, api_version, kind)
}

/// Puts `apiVersion` and `kind` first, as upstream's JSON encoder does.
fn with_type_meta(api_version: &str, kind: &str, body: Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String(kind.into()));
    if let Value::Object(fields) = body {
        for (k, v) in fields {
            if k != "apiVersion" && k != "kind" {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}
