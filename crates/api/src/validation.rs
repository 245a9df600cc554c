//! Upstream's name and metadata validation (`k8s.io/apimachinery/pkg/util/validation`,
//! `pkg/api/validation` and `field.Error`), with upstream's messages word for
//! word, because clients and tests match on them.
//!
//! This module depends on nothing else in the crate so that it can be
//! mounted anywhere (and tested on its own).

use std::fmt;

use serde_json::{Map, Value, json};

/// Upstream's `TotalAnnotationSizeLimitB`: keys plus values, 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Longest DNS-1123 label (and DNS-1035 label, label value, name part).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Longest name part of a qualified name.
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

/// Upstream's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Not found`.
    NotFound,
    /// `Required value`.
    Required,
    /// `Duplicate value`.
    Duplicate,
    /// `Invalid value`.
    Invalid,
    /// `Unsupported value`.
    NotSupported,
    /// `Forbidden`.
    Forbidden,
    /// `Too long`.
    TooLong,
    /// `Too many`.
    TooMany,
    /// `Internal error`.
    Internal,
    /// `Invalid value` for a value of the wrong type.
    TypeInvalid,
}

impl ErrorKind {
    /// The human text upstream prints, e.g. `Invalid value`.
    pub fn text(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "Not found",
            ErrorKind::Required => "Required value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Invalid | ErrorKind::TypeInvalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
            ErrorKind::Internal => "Internal error",
        }
    }

    /// The metav1.StatusCause reason, e.g. `FieldValueInvalid`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "FieldValueNotFound",
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
            ErrorKind::Internal => "InternalError",
            ErrorKind::TypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

/// Upstream's `field.Error`: a field path, what is wrong, the bad value and
/// a detail message.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Field path, e.g. `metadata.labels` or `spec.containers[0].image`.
    pub field: String,
    /// What kind of problem it is.
    pub kind: ErrorKind,
    /// The offending value (`Null` when upstream passes none).
    pub value: Value,
    /// Extra explanation, may be empty.
    pub detail: String,
}

impl FieldError {
    fn new(
        field: impl Into<String>,
        kind: ErrorKind,
        value: Value,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            kind,
            value,
            detail: detail.into(),
        }
    }

    /// `field.Invalid`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError::new(field, ErrorKind::Invalid, value.into(), detail)
    }

    /// `field.Required`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::new(
            field,
            ErrorKind::Required,
            Value::String(String::new()),
            detail,
        )
    }

    /// `field.Forbidden`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::new(
            field,
            ErrorKind::Forbidden,
            Value::String(String::new()),
            detail,
        )
    }

    /// `field.Duplicate`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> FieldError {
        FieldError::new(field, ErrorKind::Duplicate, value.into(), "")
    }

    /// `field.NotFound`.
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> FieldError {
        FieldError::new(field, ErrorKind::NotFound, value.into(), "")
    }

    /// `field.NotSupported`: lists the allowed values, quoted, as upstream does.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        allowed: &[&str],
    ) -> FieldError {
        let detail = if allowed.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = allowed.iter().map(|a| go_quote(a)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError::new(field, ErrorKind::NotSupported, value.into(), detail)
    }

    /// `field.TooLong`, with upstream's "may not be more than N bytes".
    pub fn too_long(
        field: impl Into<String>,
        value: impl Into<Value>,
        max: Option<usize>,
    ) -> FieldError {
        let detail = match max {
            Some(1) => "may not be more than 1 byte".to_string(),
            Some(n) => format!("may not be more than {n} bytes"),
            None => "value is too long".to_string(),
        };
        FieldError::new(field, ErrorKind::TooLong, value.into(), detail)
    }

    /// `field.TooMany`.
    pub fn too_many(field: impl Into<String>, actual: Option<usize>, max: usize) -> FieldError {
        let value = actual.map_or(Value::String("unknown".into()), |a| json!(a));
        FieldError::new(
            field,
            ErrorKind::TooMany,
            value,
            format!("must have at most {max} items"),
        )
    }

    /// `field.InternalError`.
    pub fn internal(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::new(field, ErrorKind::Internal, Value::Null, detail)
    }

    /// Upstream's `ErrorBody`: the message without the field path, which
    /// is what a StatusCause carries, e.g. `Invalid value: "Foo": ...`.
    pub fn body(&self) -> String {
        let mut s = match self.kind {
            ErrorKind::Required
            | ErrorKind::Forbidden
            | ErrorKind::TooLong
            | ErrorKind::Internal => self.kind.text().to_string(),
            _ => format!("{}: {}", self.kind.text(), render_value(&self.value)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Go's `%q` for the strings upstream quotes (JSON escaping agrees with it
/// for everything a Kubernetes name or label can contain).
pub fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// How upstream's `ErrorBody` prints a bad value: strings quoted, numbers
/// and booleans bare, `null` for none, anything else as JSON (upstream
/// prints Go syntax there; no client parses it).
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// Upstream's `ErrorList.ToAggregate().Error()`: one message alone, several
/// de-duplicated in brackets.
pub fn aggregate_message(errs: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.to_string();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    if seen.len() == 1 {
        seen.pop().unwrap_or_default()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// The 422 `Invalid` metav1.Status upstream's `errors.NewInvalid` builds:
/// `Pod "Foo" is invalid: ...` with one cause per field error.
pub fn invalid_status(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Value {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{qualified} {} is invalid: {}", go_quote(name), aggregate_message(errs)),
        "reason": "Invalid",
        "details": {"name": name, "group": group, "kind": kind, "causes": causes},
        "code": 422,
    })
}

/// Upstream's `RegexError`, including its `',  or '` double space.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(e);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// Upstream's `MaxLenError`.
pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn dns1123_label_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(|c| *c != b'-')
        && b.last().is_some_and(|c| *c != b'-')
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn dns1123_subdomain_syntax(s: &str) -> bool {
    s.split('.').all(dns1123_label_syntax)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn qualified_name_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Upstream's `IsDNS1123Label`: the problems, empty when valid.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !dns1123_label_syntax(value) {
        if dns1123_subdomain_syntax(value) {
            // A valid subdomain that is not a label can only have dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Upstream's `IsDNS1123Subdomain`: the problems, empty when valid.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !dns1123_subdomain_syntax(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream's `IsDNS1035Label`: the problems, empty when valid.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    let ok =
        dns1123_label_syntax(value) && value.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !ok {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Upstream's `IsQualifiedName` (label keys, annotation keys, finalizers).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !qualified_name_syntax(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream's `IsValidLabelValue`.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !qualified_name_syntax(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Upstream's `IsValidPathSegmentName` (`prefix`: a generateName, which may
/// be `.` or `..` since a suffix follows).
pub fn is_valid_path_segment_name(name: &str, prefix: bool) -> Vec<String> {
    if !prefix {
        for bad in [".", ".."] {
            if name == bad {
                return vec![format!("may not be '{bad}'")];
            }
        }
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// Which syntax a kind's `metadata.name` must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most kinds.
    Subdomain,
    /// DNS-1123 label: namespaces.
    Label,
    /// DNS-1035 label: services.
    Dns1035Label,
    /// Anything usable as a URL path segment: RBAC kinds, persistent volumes.
    PathSegment,
}

impl NameRule {
    /// Upstream's `ValidateNameFunc` for this rule; `prefix` is set when
    /// checking a generateName (a trailing `-` is then allowed).
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && self != NameRule::PathSegment {
            masked = mask_trailing_dash(name);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(name),
            NameRule::Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
            NameRule::PathSegment => is_valid_path_segment_name(name, prefix),
        }
    }
}

/// Upstream's `maskTrailingDash`, quirk included: it replaces the last two
/// characters with `a`, so `ab-` checks as `aa`.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        let cut = name.len() - 2;
        match name.get(..cut) {
            Some(head) => format!("{head}a"),
            None => name.to_string(),
        }
    } else {
        name.to_string()
    }
}

/// The name rule upstream's validation uses for a resource.
pub fn name_rule(group: &str, plural: &str) -> NameRule {
    match (group, plural) {
        ("", "namespaces") => NameRule::Label,
        ("", "services") => NameRule::Dns1035Label,
        ("", "persistentvolumes") => NameRule::PathSegment,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        ("apiregistration.k8s.io", "apiservices") => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// Finalizer names upstream accepts without a `/`.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

fn string_map<'a>(v: &'a Value) -> impl Iterator<Item = (&'a String, &'a str)> {
    v.as_object()
        .into_iter()
        .flat_map(|m: &'a Map<String, Value>| m.iter())
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
}

/// Upstream's `ValidateLabels`; errors are reported on `path` itself (e.g.
/// `metadata.labels`), as upstream does.
pub fn validate_labels(labels: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut entries: Vec<(&String, &str)> = string_map(labels).collect();
    entries.sort();
    for (k, v) in entries {
        errs.extend(
            is_qualified_name(k)
                .into_iter()
                .map(|m| FieldError::invalid(path, k.as_str(), m)),
        );
        errs.extend(
            is_valid_label_value(v)
                .into_iter()
                .map(|m| FieldError::invalid(path, v, m)),
        );
    }
    errs
}

/// Upstream's `ValidateAnnotations`: keys are qualified names (case
/// insensitive) and keys plus values stay within 256 KiB.
pub fn validate_annotations(annotations: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    let mut keys: Vec<(&String, &str)> = string_map(annotations).collect();
    keys.sort();
    for (k, v) in keys {
        total += k.len() + v.len();
        errs.extend(
            is_qualified_name(&k.to_lowercase())
                .into_iter()
                .map(|m| FieldError::invalid(path, k.as_str(), m)),
        );
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(
            path,
            "",
            Some(TOTAL_ANNOTATION_SIZE_LIMIT),
        ));
    }
    errs
}

/// apimachinery's `ValidateFinalizers`: each name a qualified name.
pub fn validate_qualified_finalizers(finalizers: &Value, path: &str) -> Vec<FieldError> {
    finalizers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .flat_map(|f| {
            is_qualified_name(f)
                .into_iter()
                .map(move |m| FieldError::invalid(path, f, m))
        })
        .collect()
}

/// Upstream's `ValidateFinalizers` (core flavour: a name without `/` must
/// be a standard one).
pub fn validate_finalizers(finalizers: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let list: Vec<&str> = finalizers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for f in &list {
        let msgs = is_qualified_name(f);
        if !msgs.is_empty() {
            errs.extend(msgs.into_iter().map(|m| FieldError::invalid(path, *f, m)));
        } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(f) {
            errs.push(FieldError::invalid(
                path,
                *f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if list.contains(&"orphan") && list.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            json!(list),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Upstream's `ValidateOwnerReferences`.
pub fn validate_owner_references(refs: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut controllers: Vec<String> = Vec::new();
    for r in refs.as_array().into_iter().flatten() {
        let api_version = r["apiVersion"].as_str().unwrap_or("");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                version,
                "version must not be empty",
            ));
        }
        if r["kind"].as_str().unwrap_or("").is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.kind"),
                "",
                "kind must not be empty",
            ));
        }
        let name = r["name"].as_str().unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                name,
                "name must not be empty",
            ));
        }
        if r["uid"].as_str().unwrap_or("").is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.uid"),
                "",
                "uid must not be empty",
            ));
        }
        if r["controller"] == Value::Bool(true) {
            controllers.push(format!("{}/{}", r["kind"].as_str().unwrap_or(""), name));
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            path,
            refs.clone(),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    errs
}

/// Upstream's `ValidateObjectMeta` for a create: name or generateName by
/// the kind's rule, namespace presence and syntax, generation, labels,
/// annotations, owner references and finalizers.
pub fn validate_object_meta(
    group: &str,
    plural: &str,
    namespaced: bool,
    meta: &Value,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rule = name_rule(group, plural);
    let name = meta["name"].as_str().unwrap_or("");
    let generate = meta["generateName"].as_str().unwrap_or("");
    if !generate.is_empty() {
        errs.extend(
            rule.check(generate, true)
                .into_iter()
                .map(|m| FieldError::invalid("metadata.generateName", generate, m)),
        );
    }
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        errs.extend(
            rule.check(name, false)
                .into_iter()
                .map(|m| FieldError::invalid("metadata.name", name, m)),
        );
    }
    let namespace = meta["namespace"].as_str().unwrap_or("");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            errs.extend(
                is_dns1123_label(namespace)
                    .into_iter()
                    .map(|m| FieldError::invalid("metadata.namespace", namespace, m)),
            );
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(g) = meta["generation"].as_i64()
        && g < 0
    {
        errs.push(FieldError::invalid(
            "metadata.generation",
            g,
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_labels(&meta["labels"], "metadata.labels"));
    errs.extend(validate_annotations(
        &meta["annotations"],
        "metadata.annotations",
    ));
    errs.extend(validate_owner_references(
        &meta["ownerReferences"],
        "metadata.ownerReferences",
    ));
    // Custom resources and CRDs are checked by apimachinery's generic
    // rules, which take any qualified name; the built-in kinds by core's,
    // which also want a `/` outside the standard names.
    let builtin = group != "apiextensions.k8s.io"
        && crate::catalogue::RESOURCES.iter().any(|r| r.group == group);
    if builtin {
        errs.extend(validate_finalizers(
            &meta["finalizers"],
            "metadata.finalizers",
        ));
    } else {
        errs.extend(validate_qualified_finalizers(
            &meta["finalizers"],
            "metadata.finalizers",
        ));
    }
    // CronJob names get an 11-character suffix for their Jobs, which must
    // still fit a DNS-1035 label.
    if (group, plural) == ("batch", "cronjobs") && name.len() > DNS1123_LABEL_MAX_LENGTH - 11 {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    errs
}

/// Upstream's `FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE: &str = "field is immutable";

/// Upstream's `ValidateObjectMetaUpdate` (without its resourceVersion
/// check, which the REST layer does): identity fields are immutable,
/// generation never goes back, no new finalizers once deleting, and
/// labels, annotations, owner references and finalizers stay valid.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !old["deletionTimestamp"].is_null() {
        let before: Vec<&str> = old["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut added: Vec<&str> = new["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|f| !before.contains(f))
            .collect();
        added.sort_unstable();
        added.dedup();
        if !added.is_empty() {
            let quoted: Vec<String> = added.iter().map(|f| go_quote(f)).collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            ));
        }
    }
    let (new_gen, old_gen) = (
        new["generation"].as_i64().unwrap_or(0),
        old["generation"].as_i64().unwrap_or(0),
    );
    if new_gen < old_gen {
        errs.push(FieldError::invalid(
            "metadata.generation",
            new_gen,
            "must not be decremented",
        ));
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        if new[field] != old[field] {
            errs.push(FieldError::invalid(
                format!("metadata.{field}"),
                new[field].clone(),
                FIELD_IMMUTABLE,
            ));
        }
    }
    errs.extend(validate_labels(&new["labels"], "metadata.labels"));
    errs.extend(validate_annotations(
        &new["annotations"],
        "metadata.annotations",
    ));
    errs.extend(validate_owner_references(
        &new["ownerReferences"],
        "metadata.ownerReferences",
    ));
    errs.extend(validate_finalizers(
        &new["finalizers"],
        "metadata.finalizers",
    ));
    errs
}

/// Upstream's `SimpleNameGenerator` alphabet (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Upstream caps the base so that base plus suffix fits a DNS label.
const MAX_GENERATED_BASE: usize = 58;
/// Length of the random suffix.
const RANDOM_SUFFIX: usize = 5;

/// A name for `generateName`: the base, cut to 58 bytes, plus five random
/// characters from upstream's alphabet.
pub fn generate_name(base: &str) -> String {
    let mut cut = base.len().min(MAX_GENERATED_BASE);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = base[..cut].to_string();
    let random = uuid::Uuid::new_v4();
    for b in random.as_bytes().iter().take(RANDOM_SUFFIX) {
        out.push(char::from(
            NAME_ALPHABET[usize::from(*b) % NAME_ALPHABET.len()],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_message_is_upstreams() {
        let errs = validate_object_meta(
            "",
            "pods",
            true,
            &json!({"name": "Foo", "namespace": "default"}),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(errs[0].kind.reason(), "FieldValueInvalid");
    }

    #[test]
    fn name_rules_per_kind() {
        assert!(is_dns1123_subdomain("a.b-c").is_empty());
        assert_eq!(
            is_dns1123_label("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert!(is_dns1123_label("a-b").is_empty());
        assert!(!is_dns1035_label("1abc").is_empty());
        assert!(is_dns1035_label("abc-1").is_empty());
        assert_eq!(name_rule("", "services"), NameRule::Dns1035Label);
        assert_eq!(name_rule("", "namespaces"), NameRule::Label);
        assert_eq!(
            name_rule("rbac.authorization.k8s.io", "clusterroles"),
            NameRule::PathSegment
        );
        assert!(
            NameRule::PathSegment
                .check("system:controller:x", false)
                .is_empty()
        );
        assert_eq!(
            NameRule::PathSegment.check("..", false),
            vec!["may not be '..'".to_string()]
        );
        assert_eq!(NameRule::PathSegment.check("a/b%", false).len(), 2);
        assert_eq!(is_dns1123_subdomain(&"a".repeat(254)).len(), 1);
    }

    #[test]
    fn generate_name_prefix_and_result() {
        assert!(NameRule::Subdomain.check("web-", true).is_empty());
        assert!(!NameRule::Subdomain.check("Web-", true).is_empty());
        let errs = validate_object_meta(
            "",
            "pods",
            true,
            &json!({"generateName": "web-", "namespace": "d"}),
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
        assert!(is_dns1123_subdomain(&n).is_empty());
        assert_eq!(generate_name(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn labels_annotations_and_namespace() {
        let meta = json!({"name": "n", "labels": {"-bad": "ok", "good": "-bad"}, "annotations": {"Example.com/X": "y"}});
        let errs = validate_object_meta("", "configmaps", true, &meta);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text[0], "metadata.namespace: Required value");
        assert!(
            text[1]
                .starts_with("metadata.labels: Invalid value: \"-bad\": name part must consist of")
        );
        assert!(text[1].contains("(e.g. 'MyName',  or 'my.name',  or '123-abc', regex"));
        assert!(text[2].starts_with(
            "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string"
        ));
        assert_eq!(errs.len(), 3, "{text:?}");
        let big = json!({"k": "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)});
        let errs = validate_annotations(&big, "metadata.annotations");
        assert_eq!(
            errs[0].to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        let errs =
            validate_object_meta("", "nodes", false, &json!({"name": "n", "namespace": "x"}));
        assert_eq!(
            errs[0].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
    }

    #[test]
    fn finalizers_and_owner_references() {
        let errs = validate_finalizers(
            &json!(["kubernetes", "example.com/x", "custom"]),
            "metadata.finalizers",
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "metadata.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
        let refs = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
                          {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "2", "controller": true},
                          {"apiVersion": "", "kind": "", "name": "", "uid": ""}]);
        let errs = validate_owner_references(&refs, "metadata.ownerReferences");
        assert_eq!(errs.len(), 5);
        assert!(
            errs[4]
                .detail
                .starts_with("Only one reference can have Controller set to true")
        );
    }

    #[test]
    fn status_and_bodies() {
        let errs = [
            FieldError::invalid("metadata.name", "Foo", "bad"),
            FieldError::required("spec.containers", ""),
            FieldError::not_supported(
                "spec.restartPolicy",
                "Sometimes",
                &["Always", "OnFailure", "Never"],
            ),
            FieldError::duplicate("spec.ports[1].name", "http"),
        ];
        assert_eq!(
            errs[2].body(),
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(errs[3].body(), "Duplicate value: \"http\"");
        let st = invalid_status("apps", "Deployment", "Foo", &errs[..2]);
        assert_eq!(st["code"], 422);
        assert_eq!(
            st["message"],
            "Deployment.apps \"Foo\" is invalid: [metadata.name: Invalid value: \"Foo\": bad, spec.containers: Required value]"
        );
        assert_eq!(st["details"]["causes"][1]["reason"], "FieldValueRequired");
        assert_eq!(
            st["details"]["causes"][0]["message"],
            "Invalid value: \"Foo\": bad"
        );
        let one = invalid_status("", "Pod", "Foo", &errs[..1]);
        assert_eq!(
            one["message"],
            "Pod \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": bad"
        );
    }
}
