//! The `/openapi/v2` and `/openapi/v3` documents, generated once from the
//! catalogue and [`crate::schema`] and cached for the life of the process.

mod paths;

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::catalogue;
use crate::schema;
use paths::{Op, Param, PathItem, Reply};

/// The Kubernetes version the documents describe.
const VERSION: &str = "v1.33.0";
const V2_REF: &str = "#/definitions/";
const V3_REF: &str = "#/components/schemas/";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

/// A rendered document and its serialized form.
struct Doc {
    value: Value,
    bytes: Vec<u8>,
    hash: String,
}

impl Doc {
    fn new(value: Value) -> Doc {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        let hash = content_hash(&bytes);
        Doc { value, bytes, hash }
    }
}

/// Per group version (`("apps", "v1")`, `("", "v1")`) documents.
static V3: LazyLock<HashMap<(String, String), Doc>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for (group, versions) in catalogue::groups() {
        for version in versions {
            out.insert(
                (group.to_string(), version.to_string()),
                Doc::new(build_v3(group, version)),
            );
        }
    }
    out
});

static V3_ROOT: LazyLock<Value> = LazyLock::new(|| {
    let mut paths = Map::new();
    for (group, versions) in catalogue::groups() {
        for version in versions {
            let Some(doc) = V3.get(&(group.to_string(), version.to_string())) else {
                continue;
            };
            let key = paths::prefix(group, version)
                .trim_start_matches('/')
                .to_string();
            paths.insert(
                key.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.hash) }),
            );
        }
    }
    json!({ "paths": paths })
});

static V2: LazyLock<Doc> = LazyLock::new(|| Doc::new(build_v2()));

/// The `/openapi/v3` index: every group version's document URL, with a
/// content hash so clients may cache documents forever.
pub fn v3_root() -> &'static Value {
    &V3_ROOT
}

/// The OpenAPI 3.0 document of one group version (`""` for core), if served.
pub fn v3_document(group: &str, version: &str) -> Option<&'static Value> {
    V3.get(&(group.to_string(), version.to_string()))
        .map(|d| &d.value)
}

/// [`v3_document`] already serialized as JSON.
pub fn v3_document_bytes(group: &str, version: &str) -> Option<&'static [u8]> {
    V3.get(&(group.to_string(), version.to_string()))
        .map(|d| d.bytes.as_slice())
}

/// The content hash [`v3_root`] advertises for a group version's document.
pub fn v3_hash(group: &str, version: &str) -> Option<&'static str> {
    V3.get(&(group.to_string(), version.to_string()))
        .map(|d| d.hash.as_str())
}

/// The swagger 2.0 document (`/openapi/v2`) for every served group version.
pub fn v2_document() -> &'static Value {
    &V2.value
}

/// [`v2_document`] already serialized as JSON.
pub fn v2_document_bytes() -> &'static [u8] {
    &V2.bytes
}

/// Two FNV-1a passes with different bases: a stable (across runs and
/// builds) 128-bit fingerprint; it only has to change when content does.
fn content_hash(bytes: &[u8]) -> String {
    let fnv = |basis: u64| {
        bytes.iter().fold(basis, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

fn info() -> Value {
    json!({ "title": "Kubernetes", "version": VERSION })
}

fn group_version_paths(group: &str, version: &str) -> Vec<PathItem> {
    let mut items = vec![paths::resources_path(group, version)];
    for r in catalogue::resources_in(group, version) {
        items.extend(paths::resource_paths(r));
    }
    items
}

/// Definition names the operations of `items` mention.
fn referenced(items: &[PathItem]) -> Vec<String> {
    let mut out = Vec::new();
    for op in items.iter().flat_map(|i| &i.ops) {
        if let Some((def, _)) = &op.body {
            out.push(def.clone());
        }
        if let Reply::Def(def) = &op.reply {
            out.push(def.clone());
        }
    }
    out
}

fn gvk_value(gvk: &Option<(String, String, String)>) -> Option<Value> {
    gvk.as_ref()
        .map(|(g, v, k)| json!({ "group": g, "kind": k, "version": v }))
}

// ---- OpenAPI 3 ----

fn build_v3(group: &str, version: &str) -> Value {
    let items = group_version_paths(group, version);
    let roots = referenced(&items);
    let mut schemas = Map::new();
    for name in schema::reachable(roots.iter().map(String::as_str)) {
        if let Some(def) = schema::definition(name) {
            schemas.insert(name.to_string(), definition_v3(name, def));
        }
    }
    let mut path_map = BTreeMap::new();
    for item in &items {
        path_map.insert(item.path.clone(), path_item_v3(item));
    }
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": path_map,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// Rewrites a swagger-style definition the way upstream's OpenAPI 3
/// documents spell it: references under `components/schemas`, described
/// references wrapped in `allOf`, and the int-or-string types as `oneOf`.
fn definition_v3(name: &str, def: &Value) -> Value {
    let mut v = to_v3(def);
    if let Value::Object(m) = &mut v {
        match name {
            QUANTITY => {
                m.remove("type");
                m.insert(
                    "oneOf".into(),
                    json!([{ "type": "string" }, { "type": "number" }]),
                );
            }
            INT_OR_STRING => {
                m.remove("type");
                m.insert(
                    "oneOf".into(),
                    json!([{ "type": "integer" }, { "type": "string" }]),
                );
            }
            _ => {}
        }
    }
    v
}

fn to_v3(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let target = format!("{V3_REF}{}", r.trim_start_matches(V2_REF));
                if m.len() == 1 {
                    return json!({ "$ref": target });
                }
                let mut out = Map::new();
                out.insert("allOf".into(), json!([{ "$ref": target }]));
                for (k, child) in m {
                    if k != "$ref" {
                        out.insert(k.clone(), to_v3(child));
                    }
                }
                return Value::Object(out);
            }
            Value::Object(m.iter().map(|(k, c)| (k.clone(), to_v3(c))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}

fn param_v3(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), p.description.clone().into());
    m.insert("in".into(), p.location.into());
    m.insert("name".into(), p.name.into());
    if p.required {
        m.insert("required".into(), true.into());
    }
    m.insert(
        "schema".into(),
        json!({ "type": p.ty, "uniqueItems": true }),
    );
    Value::Object(m)
}

fn reply_schema_v3(reply: &Reply) -> Value {
    match reply {
        Reply::Def(d) => json!({ "$ref": format!("{V3_REF}{d}") }),
        Reply::Text => json!({ "type": "string" }),
    }
}

fn op_v3(op: &Op) -> Value {
    let mut m = Map::new();
    if op.deprecated {
        m.insert("deprecated".into(), true.into());
    }
    m.insert("description".into(), op.description.clone().into());
    m.insert("operationId".into(), op.id.clone().into());
    if !op.params.is_empty() {
        m.insert(
            "parameters".into(),
            op.params.iter().map(param_v3).collect(),
        );
    }
    if let Some((def, types)) = &op.body {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    json!({ "schema": { "$ref": format!("{V3_REF}{def}") } }),
                )
            })
            .collect();
        let mut body = Map::new();
        body.insert("content".into(), Value::Object(content));
        if op.body_required {
            body.insert("required".into(), true.into());
        }
        m.insert("requestBody".into(), Value::Object(body));
    }
    let mut responses = Map::new();
    for (code, description) in op.codes {
        let content: Map<String, Value> = op
            .produces
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    json!({ "schema": reply_schema_v3(&op.reply) }),
                )
            })
            .collect();
        responses.insert(
            code.to_string(),
            json!({ "content": content, "description": description }),
        );
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("tags".into(), json!([op.tag]));
    if !op.action.is_empty() {
        m.insert("x-kubernetes-action".into(), op.action.into());
    }
    if let Some(g) = gvk_value(&op.gvk) {
        m.insert("x-kubernetes-group-version-kind".into(), g);
    }
    Value::Object(m)
}

fn path_item_v3(item: &PathItem) -> Value {
    let mut m = Map::new();
    for op in &item.ops {
        m.insert(op.method.into(), op_v3(op));
    }
    if !item.params.is_empty() {
        m.insert(
            "parameters".into(),
            item.params.iter().map(param_v3).collect(),
        );
    }
    Value::Object(m)
}

// ---- swagger 2.0 ----

fn build_v2() -> Value {
    let mut path_map = BTreeMap::new();
    for (group, versions) in catalogue::groups() {
        for version in versions {
            for item in group_version_paths(group, version) {
                path_map.insert(item.path.clone(), path_item_v2(&item));
            }
        }
    }
    // Already sorted by name and in swagger's own spelling.
    let definitions = schema::definitions().clone();
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": path_map,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "in": "header",
                "name": "authorization",
                "type": "apiKey",
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

fn param_v2(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), p.description.clone().into());
    m.insert("in".into(), p.location.into());
    m.insert("name".into(), p.name.into());
    if p.required {
        m.insert("required".into(), true.into());
    }
    m.insert("type".into(), p.ty.into());
    m.insert("uniqueItems".into(), true.into());
    Value::Object(m)
}

fn op_v2(op: &Op) -> Value {
    let mut m = Map::new();
    let consumes: &[&str] = match &op.body {
        Some((_, types)) => types,
        None => &["*/*"],
    };
    m.insert("consumes".into(), json!(consumes));
    if op.deprecated {
        m.insert("deprecated".into(), true.into());
    }
    m.insert("description".into(), op.description.clone().into());
    m.insert("operationId".into(), op.id.clone().into());
    let mut params: Vec<Value> = Vec::new();
    if let Some((def, _)) = &op.body {
        params.push(json!({
            "in": "body",
            "name": "body",
            "required": op.body_required,
            "schema": { "$ref": format!("{V2_REF}{def}") },
        }));
    }
    params.extend(op.params.iter().map(param_v2));
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    m.insert("produces".into(), json!(op.produces));
    let schema = match &op.reply {
        Reply::Def(d) => json!({ "$ref": format!("{V2_REF}{d}") }),
        Reply::Text => json!({ "type": "string" }),
    };
    let mut responses = Map::new();
    for (code, description) in op.codes {
        responses.insert(
            code.to_string(),
            json!({ "description": description, "schema": schema }),
        );
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("schemes".into(), json!(["https"]));
    m.insert("tags".into(), json!([op.tag]));
    if !op.action.is_empty() {
        m.insert("x-kubernetes-action".into(), op.action.into());
    }
    if let Some(g) = gvk_value(&op.gvk) {
        m.insert("x-kubernetes-group-version-kind".into(), g);
    }
    Value::Object(m)
}

fn path_item_v2(item: &PathItem) -> Value {
    let mut m = Map::new();
    for op in &item.ops {
        m.insert(op.method.into(), op_v2(op));
    }
    if !item.params.is_empty() {
        m.insert(
            "parameters".into(),
            item.params.iter().map(param_v2).collect(),
        );
    }
    Value::Object(m)
}

// ---- custom resources ----

/// The schema upstream publishes for a custom kind: the definition's
/// structural schema with `apiVersion`, `kind` and `metadata` spelled out
/// and the kind's group-version-kind attached.
fn custom_schema(r: &catalogue::ResourceInfo, schema: Option<&Value>) -> Value {
    let mut s = schema
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    let props = s
        .as_object_mut()
        .map(|m| m.entry("properties").or_insert_with(|| json!({})));
    if let Some(Value::Object(p)) = props {
        p.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
        );
        p.insert(
            "kind".into(),
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
        );
        p.insert(
            "metadata".into(),
            json!({"allOf": [{"$ref": format!("{V3_REF}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
        );
    }
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": r.group, "kind": r.kind, "version": r.version}]);
    s
}

/// The OpenAPI 3.0 document of a custom group version: its resources'
/// paths and schemas, with the built-in definitions they refer to.
pub fn custom_v3_document(resources: &[(&catalogue::ResourceInfo, Option<&Value>)]) -> Value {
    let mut items = Vec::new();
    if let Some((r, _)) = resources.first() {
        items.push(paths::resources_path(r.group, r.version));
    }
    for (r, _) in resources {
        items.extend(paths::resource_paths(r));
    }
    let roots = referenced(&items);
    let mut schemas = Map::new();
    for name in schema::reachable(
        roots
            .iter()
            .map(String::as_str)
            .chain(["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]),
    ) {
        if let Some(def) = schema::definition(name) {
            schemas.insert(name.to_string(), definition_v3(name, def));
        }
    }
    for (r, s) in resources {
        schemas.insert(r.definition.to_string(), custom_schema(r, *s));
        schemas.insert(
            format!("{}List", r.definition),
            json!({
                "description": format!("{}List is a list of {}", r.kind, r.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "items": {"type": "array", "items": {"$ref": format!("{V3_REF}{}", r.definition)}},
                    "kind": {"type": "string"},
                    "metadata": {"allOf": [{"$ref": format!("{V3_REF}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}]},
                },
                "x-kubernetes-group-version-kind": [{"group": r.group, "kind": format!("{}List", r.kind), "version": r.version}],
            }),
        );
    }
    let mut path_map = BTreeMap::new();
    for item in &items {
        path_map.insert(item.path.clone(), path_item_v3(item));
    }
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": path_map,
        "components": {"schemas": schemas},
    })
}

/// The `/openapi/v3` index with custom group versions added (each with
/// the hash of its current document).
pub fn v3_root_with(custom: &[(String, String, String)]) -> Value {
    let mut root = v3_root().clone();
    if let Some(paths) = root["paths"].as_object_mut() {
        for (group, version, hash) in custom {
            let key = format!("apis/{group}/{version}");
            paths.insert(
                key.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}") }),
            );
        }
    }
    root
}

/// A stable content hash of a document.
pub fn hash_of(doc: &Value) -> String {
    content_hash(&serde_json::to_vec(doc).unwrap_or_default())
}
