//! Types whose JSON is not an object of their proto fields: Quantity,
//! IntOrString, Time, MicroTime, Duration, RawExtension and other raw-JSON
//! holders, and apiextensions' JSONSchemaPropsOr* unions.

use serde_json::Value;

use super::ProtoError;
use super::decode::{decode_body, message_value, text};
use super::table::Schema;
use super::wire::{WireValue, fields};

const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";
const APIEXT: &str = "k8s.io.apiextensions-apiserver.pkg.apis.apiextensions.";

/// Go's zero time.Time (0001-01-01T00:00:00Z) in Unix seconds; JSON has null.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// The JSON for a special message, or None when `name` is an ordinary one.
pub fn decode(
    schema: &Schema,
    name: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtoError> {
    let value = match name {
        QUANTITY => {
            // Quantity's JSON is its canonical string; an empty one is zero.
            let s = string_field(name, bytes, 1)?.unwrap_or_default();
            Value::String(if s.is_empty() { "0".into() } else { s })
        }
        INT_OR_STRING => int_or_string(bytes)?,
        TIME => time(name, bytes, false)?,
        MICRO_TIME => time(name, bytes, true)?,
        DURATION => {
            let ns = varint_field(name, bytes, 1)?.unwrap_or(0) as i64;
            Value::String(go_duration(ns))
        }
        RAW_EXTENSION | FIELDS_V1 => raw_json(name, bytes, depth)?,
        _ => match name
            .strip_prefix(APIEXT)
            .and_then(|rest| rest.split_once('.'))
        {
            Some((_, "JSON")) => raw_json(name, bytes, depth)?,
            Some((
                version,
                union @ ("JSONSchemaPropsOrArray"
                | "JSONSchemaPropsOrBool"
                | "JSONSchemaPropsOrStringArray"),
            )) => schema_union(
                schema,
                name,
                &format!("{APIEXT}{version}.JSONSchemaProps"),
                union,
                bytes,
                depth,
            )?,
            _ => return Ok(None),
        },
    };
    Ok(Some(value))
}

fn bad(message: &str, reason: impl Into<String>) -> ProtoError {
    ProtoError::Invalid {
        message: message.into(),
        reason: reason.into(),
    }
}

fn wire(message: &str, number: u32, got: WireValue<'_>) -> ProtoError {
    ProtoError::WireType {
        message: message.into(),
        field: number.to_string(),
        got: got.wire_type(),
    }
}

/// The last occurrence of length-delimited field `number`.
fn bytes_field<'a>(
    message: &str,
    bytes: &'a [u8],
    number: u32,
) -> Result<Option<&'a [u8]>, ProtoError> {
    let mut found = None;
    for item in fields(bytes) {
        match item? {
            (n, WireValue::Bytes(b)) if n == number => found = Some(b),
            (n, other) if n == number => return Err(wire(message, n, other)),
            _ => {}
        }
    }
    Ok(found)
}

fn string_field(message: &str, bytes: &[u8], number: u32) -> Result<Option<String>, ProtoError> {
    Ok(bytes_field(message, bytes, number)?.map(text))
}

/// The last occurrence of varint field `number`.
fn varint_field(message: &str, bytes: &[u8], number: u32) -> Result<Option<u64>, ProtoError> {
    let mut found = None;
    for item in fields(bytes) {
        match item? {
            (n, WireValue::Varint(v)) if n == number => found = Some(v),
            (n, other) if n == number => return Err(wire(message, n, other)),
            _ => {}
        }
    }
    Ok(found)
}

/// IntOrString {type(1): 0 int / 1 string, intVal(2), strVal(3)} -> number or string.
fn int_or_string(bytes: &[u8]) -> Result<Value, ProtoError> {
    let kind = varint_field(INT_OR_STRING, bytes, 1)?.unwrap_or(0);
    if kind == 1 {
        Ok(Value::String(
            string_field(INT_OR_STRING, bytes, 3)?.unwrap_or_default(),
        ))
    } else {
        Ok(Value::from(
            varint_field(INT_OR_STRING, bytes, 2)?.unwrap_or(0) as i32,
        ))
    }
}

/// Time / MicroTime {seconds(1), nanos(2)} -> RFC 3339 in UTC (seconds, or
/// exactly six fractional digits for MicroTime); an empty message is Go's
/// zero time, which upstream writes as null.
fn time(name: &str, bytes: &[u8], micro: bool) -> Result<Value, ProtoError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let seconds = varint_field(name, bytes, 1)?.unwrap_or(0) as i64;
    let nanos = i64::from(varint_field(name, bytes, 2)?.unwrap_or(0) as i32);
    // Go's time.Unix normalises nanoseconds outside [0, 1e9) into seconds.
    let seconds = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(|| bad(name, "seconds out of range"))?;
    let nanos = nanos.rem_euclid(1_000_000_000) as u32;
    if seconds == GO_ZERO_TIME && nanos == 0 {
        return Ok(Value::Null);
    }
    let t = chrono::DateTime::from_timestamp(seconds, nanos)
        .ok_or_else(|| bad(name, format!("{seconds}s is not a representable time")))?;
    // Go's RFC 3339 marshalling refuses years outside 0..=9999.
    if !(0..=9999).contains(&chrono::Datelike::year(&t)) {
        return Err(bad(name, format!("year of {seconds}s is outside 0..=9999")));
    }
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(t.format(format).to_string()))
}

/// Go's time.Duration.String(): "1h2m3.5s", "1.5ms", "0s".
pub fn go_duration(ns: i64) -> String {
    let mut u = ns.unsigned_abs();
    let sign = if ns < 0 { "-" } else { "" };
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (digits, unit) = match u {
            0..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        return format!("{sign}{}{unit}", fraction(u, digits));
    }
    let secs = fraction(u % 60_000_000_000, 9);
    u /= 60_000_000_000;
    let mut out = String::from(sign);
    if u >= 60 {
        out.push_str(&format!("{}h", u / 60));
    }
    if u > 0 {
        out.push_str(&format!("{}m", u % 60));
    }
    out.push_str(&secs);
    out.push('s');
    out
}

/// `v / 10^digits` with its fraction, trailing zeros (and a bare dot) dropped.
fn fraction(v: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let (int, frac) = (v / scale, v % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// RawExtension / FieldsV1 / apiextensions JSON {raw(1)}: the raw bytes are
/// JSON (or, for embedded objects, a nested Kubernetes protobuf body).
fn raw_json(name: &str, bytes: &[u8], depth: usize) -> Result<Value, ProtoError> {
    let Some(raw) = bytes_field(name, bytes, 1)? else {
        return Ok(Value::Null);
    };
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(super::MAGIC) {
        return decode_body(raw, depth);
    }
    serde_json::from_slice(raw).map_err(|e| bad(name, format!("raw bytes are not JSON: {e}")))
}

/// The JSONSchemaPropsOr* unions, marshalled like their Go MarshalJSON:
/// OrArray {schema(1), jSONSchemas(2)}: the array if non-empty, else the schema;
/// OrBool {allows(1), schema(2)}: the schema if set, else the bool;
/// OrStringArray {schema(1), property(2)}: the strings if any, else the schema.
fn schema_union(
    schema: &Schema,
    name: &str,
    props: &str,
    union: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Value, ProtoError> {
    let (mut one, mut many, mut strings, mut allows) = (None, Vec::new(), Vec::new(), false);
    let schema_tag = if union == "JSONSchemaPropsOrBool" {
        2
    } else {
        1
    };
    for item in fields(bytes) {
        match item? {
            (n, WireValue::Bytes(b)) if n == schema_tag => {
                one = Some(message_value(schema, props, b, depth + 1)?)
            }
            (2, WireValue::Bytes(b)) if union == "JSONSchemaPropsOrArray" => {
                many.push(message_value(schema, props, b, depth + 1)?)
            }
            (2, WireValue::Bytes(b)) if union == "JSONSchemaPropsOrStringArray" => {
                strings.push(Value::String(text(b)))
            }
            (1, WireValue::Varint(v)) if union == "JSONSchemaPropsOrBool" => allows = v != 0,
            (n @ (1 | 2), other) => return Err(wire(name, n, other)),
            _ => {}
        }
    }
    Ok(match union {
        "JSONSchemaPropsOrArray" if !many.is_empty() => Value::Array(many),
        "JSONSchemaPropsOrStringArray" if !strings.is_empty() => Value::Array(strings),
        "JSONSchemaPropsOrBool" => one.unwrap_or(Value::Bool(allows)),
        _ => one.unwrap_or(Value::Null),
    })
}

/// Standard base64 with padding, as Go's encoding/json writes []byte.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_match_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_723_000_000_000, "1h2m3s"),
            (3_600_000_000_000, "1h0m0s"),
            (-90_000_000_000, "-1m30s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (ns, want) in cases {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn base64_matches_std() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }
}
