//! The generated field table (`table.txt`, written by
//! `tools/gen_proto_table.py`), parsed once on first use.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The table's text, embedded so the binary needs no data files.
const TABLE: &str = include_str!("table.txt");

/// What a field holds on the wire (and so how it maps to JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// UTF-8 text.
    String,
    /// Opaque bytes, base64 in JSON.
    Bytes,
    /// Varint, 32-bit signed.
    Int32,
    /// Varint, 64-bit signed.
    Int64,
    /// Varint 0/1.
    Bool,
    /// Fixed64 IEEE double.
    Double,
    /// A nested message, by full proto name.
    Message(String),
}

/// One field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// JSON property name.
    pub json: String,
    /// Wire kind; for maps, the kind of the values (keys are always strings).
    pub kind: FieldKind,
    /// `repeated` field: a JSON array.
    pub repeated: bool,
    /// Proto map (repeated key/value entries): a JSON object.
    pub map: bool,
    /// Go writes this field to JSON even when zero (a pointer, or no omitempty).
    pub keep_zero: bool,
    /// Go embeds this struct with `json:",inline"`: its fields join the parent's.
    pub inline: bool,
}

/// One message type.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Go declares it as a slice type: its JSON is the array in field 1.
    pub array: bool,
    /// Fields by number.
    pub fields: HashMap<u32, Field>,
}

/// All messages and the apiVersion/kind index.
#[derive(Debug, Default)]
pub struct Schema {
    /// Messages by full proto name (`k8s.io.api.core.v1.ConfigMap`).
    pub messages: HashMap<String, Message>,
    /// (apiVersion, kind) -> full proto name.
    pub kinds: HashMap<(String, String), String>,
}

/// The parsed table, or why the embedded text could not be parsed.
pub static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| parse(TABLE));

/// Parses the table format described in its header.
pub fn parse(text: &str) -> Result<Schema, String> {
    let mut schema = Schema::default();
    let mut package: Option<&str> = None;
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let err = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            [first, ..] if first.starts_with('#') => {}
            ["P", pkg] => package = Some(pkg),
            ["M", name, flags @ ..] => {
                let pkg = package.ok_or_else(|| err("message before any package"))?;
                let full = format!("{pkg}.{name}");
                let message = Message {
                    array: flags.contains(&"A"),
                    ..Message::default()
                };
                schema.messages.insert(full.clone(), message);
                current = Some(full);
            }
            ["K", api_version, kind, full] => {
                schema.kinds.insert(
                    (api_version.to_string(), kind.to_string()),
                    full.to_string(),
                );
            }
            [tag, json, kind, flags @ ..] if tag.bytes().all(|b| b.is_ascii_digit()) => {
                let tag: u32 = tag.parse().map_err(|_| err("bad field number"))?;
                let pkg = package.ok_or_else(|| err("field before any package"))?;
                let kind = match *kind {
                    "string" => FieldKind::String,
                    "bytes" => FieldKind::Bytes,
                    "int32" => FieldKind::Int32,
                    "int64" => FieldKind::Int64,
                    "bool" => FieldKind::Bool,
                    "double" => FieldKind::Double,
                    other => match other.strip_prefix("msg=") {
                        // A bare name is in the current package; a dotted one is absolute.
                        Some(t) if t.contains('.') => FieldKind::Message(t.to_string()),
                        Some(t) => FieldKind::Message(format!("{pkg}.{t}")),
                        None => return Err(err("unknown field kind")),
                    },
                };
                let field = Field {
                    json: json.to_string(),
                    kind,
                    repeated: flags.contains(&"r"),
                    map: flags.contains(&"map"),
                    keep_zero: flags.contains(&"z"),
                    inline: flags.contains(&"i"),
                };
                let message = current
                    .as_ref()
                    .and_then(|m| schema.messages.get_mut(m))
                    .ok_or_else(|| err("field before any message"))?;
                message.fields.insert(tag, field);
            }
            _ => return Err(err("unrecognised line")),
        }
    }
    for message in schema.messages.values() {
        for field in message.fields.values() {
            if let FieldKind::Message(t) = &field.kind
                && !schema.messages.contains_key(t)
            {
                return Err(format!(
                    "field {} refers to unknown message {t}",
                    field.json
                ));
            }
        }
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses() {
        let schema = SCHEMA.as_ref().unwrap();
        assert!(schema.messages.len() > 1000);
        let cm = &schema.messages["k8s.io.api.core.v1.ConfigMap"];
        assert_eq!(cm.fields[&2].json, "data");
        assert!(cm.fields[&2].map);
        let aws = &schema.messages["k8s.io.api.core.v1.AWSElasticBlockStoreVolumeSource"];
        assert_eq!(aws.fields[&1].json, "volumeID");
        assert_eq!(
            schema.kinds[&("apps/v1".to_string(), "Deployment".to_string())],
            "k8s.io.api.apps.v1.Deployment"
        );
    }
}
