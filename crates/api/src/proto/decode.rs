//! The table-driven message decoder.

use serde_json::{Map, Number, Value};

use super::special;
use super::table::{Field, FieldKind, SCHEMA, Schema};
use super::wire::{WireValue, fields, read_varint};
use super::{MAGIC, ProtoError, with_type_meta};

/// Deepest message nesting accepted; bounds recursion on hostile input
/// (JSONSchemaProps and RawExtension can nest arbitrarily).
pub const MAX_DEPTH: usize = 100;

/// The parsed table, or the reason it is unusable.
pub fn schema() -> Result<&'static Schema, ProtoError> {
    SCHEMA.as_ref().map_err(|e| ProtoError::Table(e.clone()))
}

/// Decodes magic + `runtime.Unknown`; `depth` counts enclosing messages
/// when the body is embedded in a RawExtension.
pub fn decode_body(bytes: &[u8], depth: usize) -> Result<Value, ProtoError> {
    let envelope = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtoError::Magic)?;
    let schema = schema()?;
    let (mut api_version, mut kind, mut raw) = (None, None, &[][..]);
    for item in fields(envelope) {
        match item? {
            (1, WireValue::Bytes(type_meta)) => {
                for item in fields(type_meta) {
                    match item? {
                        (1, WireValue::Bytes(s)) => api_version = Some(text(s)),
                        (2, WireValue::Bytes(s)) => kind = Some(text(s)),
                        _ => {}
                    }
                }
            }
            (2, WireValue::Bytes(b)) => raw = b,
            // contentEncoding and contentType are always empty for objects
            // sent by Kubernetes clients; the raw bytes are the message.
            (3 | 4, WireValue::Bytes(_)) => {}
            (n @ 1..=4, other) => {
                return Err(ProtoError::WireType {
                    message: "k8s.io.apimachinery.pkg.runtime.Unknown".into(),
                    field: n.to_string(),
                    got: other.wire_type(),
                });
            }
            _ => {}
        }
    }
    let api_version = api_version
        .filter(|s| !s.is_empty())
        .ok_or(ProtoError::MissingTypeMeta("apiVersion"))?;
    let kind = kind
        .filter(|s| !s.is_empty())
        .ok_or(ProtoError::MissingTypeMeta("kind"))?;
    let message =
        resolve_kind(schema, &api_version, &kind).ok_or_else(|| ProtoError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let body = message_value(schema, &message, raw, depth + 1)?;
    Ok(with_type_meta(&api_version, &kind, body))
}

/// Finds the message for an apiVersion/kind: the generated index first, then
/// the group's package by naming convention (lists, kinds newer than the
/// index), then meta/v1 (DeleteOptions and friends are registered in every
/// group version).
pub fn resolve_kind(schema: &Schema, api_version: &str, kind: &str) -> Option<String> {
    if let Some(m) = schema
        .kinds
        .get(&(api_version.to_string(), kind.to_string()))
    {
        return Some(m.clone());
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => format!("k8s.io.api.core.{version}"),
        "meta.k8s.io" => format!("k8s.io.apimachinery.pkg.apis.meta.{version}"),
        "apiextensions.k8s.io" => {
            format!("k8s.io.apiextensions-apiserver.pkg.apis.apiextensions.{version}")
        }
        "apiregistration.k8s.io" => {
            format!("k8s.io.kube-aggregator.pkg.apis.apiregistration.{version}")
        }
        "internal.apiserver.k8s.io" => format!("k8s.io.api.apiserverinternal.{version}"),
        g => format!("k8s.io.api.{}.{version}", g.split('.').next().unwrap_or(g)),
    };
    [
        format!("{package}.{kind}"),
        format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}"),
    ]
    .into_iter()
    .find(|m| schema.messages.contains_key(m))
}

/// Decodes one message into its JSON value: special types by name, the rest
/// field by field.
pub fn message_value(
    schema: &Schema,
    name: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Value, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep(MAX_DEPTH));
    }
    if let Some(v) = special::decode(schema, name, bytes, depth)? {
        return Ok(v);
    }
    let message = schema
        .messages
        .get(name)
        .ok_or_else(|| ProtoError::Table(format!("no message {name}")))?;
    let mut out = Map::new();
    for item in fields(bytes) {
        let (number, value) = item?;
        // Unknown fields are skipped, as upstream's decoder does (newer clients).
        let Some(field) = message.fields.get(&number) else {
            continue;
        };
        if field.map {
            let WireValue::Bytes(entry) = value else {
                return Err(wire_err(name, field, value));
            };
            let (k, v) = map_entry(schema, name, field, entry, depth)?;
            match out
                .entry(field.json.clone())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                Value::Object(m) => {
                    m.insert(k, v);
                }
                other => *other = Value::Object(Map::from_iter([(k, v)])),
            }
        } else if field.repeated {
            let items = repeated(schema, name, field, value, depth)?;
            match out
                .entry(field.json.clone())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(a) => a.extend(items),
                other => *other = Value::Array(items),
            }
        } else {
            let v = single(schema, name, field, value, depth)?;
            if field.inline {
                if let Value::Object(inner) = v {
                    out.extend(inner);
                }
            } else if !field.keep_zero && is_zero_scalar(&field.kind, &v) {
                // Go's omitempty: a zero non-pointer scalar is left out of JSON.
                out.remove(&field.json);
            } else {
                out.insert(field.json.clone(), v);
            }
        }
    }
    if message.array {
        // Go slice types (Verbs, ExtraValue) are a message with `items` on
        // the wire but a bare array in JSON.
        let items = message.fields.get(&1).and_then(|f| out.remove(&f.json));
        return Ok(items.unwrap_or(Value::Array(Vec::new())));
    }
    // Repeated fields with no elements never reach the wire, so empty arrays
    // cannot occur here; maps likewise.
    Ok(Value::Object(out))
}

fn wire_err(message: &str, field: &Field, value: WireValue<'_>) -> ProtoError {
    ProtoError::WireType {
        message: message.into(),
        field: field.json.clone(),
        got: value.wire_type(),
    }
}

fn is_zero_scalar(kind: &FieldKind, v: &Value) -> bool {
    match (kind, v) {
        (FieldKind::String | FieldKind::Bytes, Value::String(s)) => s.is_empty(),
        (FieldKind::Bool, Value::Bool(b)) => !b,
        (FieldKind::Int32 | FieldKind::Int64 | FieldKind::Double, Value::Number(n)) => {
            n.as_f64() == Some(0.0)
        }
        _ => false,
    }
}

/// Decodes one non-repeated value.
fn single(
    schema: &Schema,
    msg: &str,
    field: &Field,
    value: WireValue<'_>,
    depth: usize,
) -> Result<Value, ProtoError> {
    match (&field.kind, value) {
        (FieldKind::String, WireValue::Bytes(b)) => Ok(Value::String(text(b))),
        (FieldKind::Bytes, WireValue::Bytes(b)) => Ok(Value::String(special::base64(b))),
        (FieldKind::Message(t), WireValue::Bytes(b)) => message_value(schema, t, b, depth + 1),
        (FieldKind::Int32, WireValue::Varint(n)) => Ok(Value::from(n as i32)),
        (FieldKind::Int64, WireValue::Varint(n)) => Ok(Value::from(n as i64)),
        (FieldKind::Bool, WireValue::Varint(n)) => Ok(Value::Bool(n != 0)),
        (FieldKind::Double, WireValue::Fixed64(n)) => double(msg, field, f64::from_bits(n)),
        (_, v) => Err(wire_err(msg, field, v)),
    }
}

fn double(msg: &str, field: &Field, f: f64) -> Result<Value, ProtoError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ProtoError::Invalid {
            message: format!("{msg}.{}", field.json),
            reason: format!("{f} is not representable in JSON"),
        })
}

/// Decodes the elements one occurrence of a repeated field carries: one
/// value, or many when a scalar field is packed.
fn repeated(
    schema: &Schema,
    msg: &str,
    field: &Field,
    value: WireValue<'_>,
    depth: usize,
) -> Result<Vec<Value>, ProtoError> {
    let packed_scalar = matches!(
        field.kind,
        FieldKind::Int32 | FieldKind::Int64 | FieldKind::Bool | FieldKind::Double
    );
    let WireValue::Bytes(mut packed) = value else {
        return Ok(vec![single(schema, msg, field, value, depth)?]);
    };
    if !packed_scalar {
        return Ok(vec![single(schema, msg, field, value, depth)?]);
    }
    let mut items = Vec::new();
    while !packed.is_empty() {
        let element = if field.kind == FieldKind::Double {
            let (head, rest) = packed
                .split_at_checked(8)
                .ok_or(ProtoError::Truncated("packed double"))?;
            packed = rest;
            let mut a = [0u8; 8];
            a.copy_from_slice(head);
            WireValue::Fixed64(u64::from_le_bytes(a))
        } else {
            WireValue::Varint(read_varint(&mut packed)?)
        };
        items.push(single(schema, msg, field, element, depth)?);
    }
    Ok(items)
}

/// Decodes one map entry message {key = 1, value = 2}; absent parts are zero.
fn map_entry(
    schema: &Schema,
    msg: &str,
    field: &Field,
    entry: &[u8],
    depth: usize,
) -> Result<(String, Value), ProtoError> {
    let (mut key, mut value) = (String::new(), None);
    for item in fields(entry) {
        match item? {
            (1, WireValue::Bytes(b)) => key = text(b),
            (2, v) => value = Some(single(schema, msg, field, v, depth)?),
            (1, v) => return Err(wire_err(msg, field, v)),
            _ => {}
        }
    }
    let value = match value {
        Some(v) => v,
        None => match &field.kind {
            FieldKind::Message(t) => message_value(schema, t, &[], depth + 1)?,
            FieldKind::String | FieldKind::Bytes => Value::String(String::new()),
            FieldKind::Bool => Value::Bool(false),
            FieldKind::Int32 | FieldKind::Int64 | FieldKind::Double => Value::from(0),
        },
    };
    Ok((key, value))
}

/// Proto strings as JSON text; invalid UTF-8 becomes U+FFFD, as Go's JSON
/// encoder does with the same bytes.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
