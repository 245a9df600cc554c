//! Field selectors: upstream's `fields.ParseSelector` syntax and the
//! per-kind selectable fields (each registry's `ToSelectableFields` and
//! field-label conversion functions).

use serde_json::Value;

use super::SelectorError;

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field label, e.g. `spec.nodeName`.
    pub field: String,
    /// `=`/`==` (true) or `!=` (false).
    pub equals: bool,
    /// The value, unescaped.
    pub value: String,
}

/// A parsed field selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// The requirements (AND), sorted as upstream sorts its terms.
    pub requirements: Vec<FieldRequirement>,
}

/// Splits on commas that are not escaped with a backslash (the backslash
/// stays, for unescaping later), as upstream's `splitTerms`.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Splits at the first operator; `!=` and `==` win over `=` at the same
/// position. No whitespace trimming: upstream does none.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, equals) in [("!=", false), ("==", true), ("=", true)] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], equals, value));
            }
        }
    }
    None
}

/// Upstream's `UnescapeValue`: `\\`, `\,` and `\=` are the only escapes;
/// a bare `,` or `=` is an error.
fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(SelectorError(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    )));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream prints the rune with %v, i.e. as its code point.
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses `a=b,c!=d` (also `==`), with upstream's error messages.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = if s.is_empty() {
            Vec::new()
        } else {
            split_terms(s)
        };
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let Some((field, equals, value)) = split_term(term) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                equals,
                value: unescape(value)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Fails for a field the kind does not support, with upstream's message.
    pub fn check_supported(&self, group: &str, plural: &str) -> Result<(), SelectorError> {
        match self
            .requirements
            .iter()
            .find(|r| !supported(group, plural, &r.field))
        {
            Some(r) => Err(SelectorError(format!(
                "field label not supported: {}",
                r.field
            ))),
            None => Ok(()),
        }
    }

    /// Fails for a field `supported` refuses (a custom kind's own list).
    pub fn check_supported_with(
        &self,
        supported: impl Fn(&str) -> bool,
    ) -> Result<(), SelectorError> {
        match self.requirements.iter().find(|r| !supported(&r.field)) {
            Some(r) => Err(SelectorError(format!(
                "field label not supported: {}",
                r.field
            ))),
            None => Ok(()),
        }
    }

    /// Whether every requirement holds, reading fields with `value`.
    pub fn matches_with(&self, value: impl Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|r| (value(&r.field) == r.value) == r.equals)
    }

    /// Whether `obj` satisfies every requirement; a field the kind does not
    /// have reads as the empty string, as in upstream's field sets.
    pub fn matches(&self, group: &str, plural: &str, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = selectable_field(group, plural, obj, &r.field).unwrap_or_default();
            (actual == r.value) == r.equals
        })
    }

    /// The value an equality requirement pins `field` to, if any (lets a
    /// caller narrow a scan, e.g. pods by `spec.nodeName`).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.equals && r.field == field)
            .map(|r| r.value.as_str())
    }
}

/// The field labels each kind accepts beyond `metadata.name` and
/// `metadata.namespace`, as the per-version field-label conversions do.
fn kind_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            // Old v1 clients' name for spec.nodeName; upstream maps it.
            "spec.host",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("", "services") => &["spec.clusterIP", "spec.type"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
        _ => &[],
    }
}

fn supported(group: &str, plural: &str, field: &str) -> bool {
    match (group, plural, field) {
        // Upstream's conversions for these cluster-scoped kinds list
        // metadata.name but not metadata.namespace.
        ("", "nodes" | "namespaces", "metadata.namespace") => false,
        (_, _, "metadata.name" | "metadata.namespace") => true,
        _ => kind_fields(group, plural).contains(&field),
    }
}

/// The value of field label `field` in `obj` for a kind: `Err` with
/// upstream's `field label not supported: <field>` (a 400) when the kind
/// has no such field, `Ok(Some(..))` otherwise (absent fields read as
/// upstream's field sets print them: `""`, `false`, `0`).
pub fn field_value(
    group: &str,
    plural: &str,
    obj: &Value,
    field: &str,
) -> Result<Option<String>, SelectorError> {
    match selectable_field(group, plural, obj, field) {
        Some(v) => Ok(Some(v)),
        None => Err(SelectorError(format!("field label not supported: {field}"))),
    }
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Upstream's int32 fields print as decimal with 0 for absent.
fn int_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// Upstream's bool fields print as `true`/`false` with false for absent.
fn bool_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// The value a selectable field has in `obj` (None: the kind does not
/// support the field). Works on core/v1 and events.k8s.io/v1 shaped events
/// alike, since both share storage.
pub fn selectable_field(group: &str, plural: &str, obj: &Value, field: &str) -> Option<String> {
    if !supported(group, plural, field) {
        return None;
    }
    let v = match (plural, field) {
        (_, "metadata.name") => str_at(obj, "/metadata/name").to_string(),
        (_, "metadata.namespace") => str_at(obj, "/metadata/namespace").to_string(),
        ("pods", "spec.hostNetwork") => bool_at(obj, "/spec/hostNetwork"),
        ("pods", "spec.host") => str_at(obj, "/spec/nodeName").to_string(),
        // Upstream takes the first of status.podIPs; status.podIPs itself is
        // accepted but is not in the field set, so it reads as empty.
        ("pods", "status.podIP") => {
            match obj.pointer("/status/podIPs/0/ip").and_then(Value::as_str) {
                Some(ip) => ip.to_string(),
                None => str_at(obj, "/status/podIP").to_string(),
            }
        }
        ("pods", "status.podIPs") => String::new(),
        ("events", f) => event_field(obj, f.strip_prefix("regarding.").unwrap_or(f)),
        ("nodes", "spec.unschedulable") => bool_at(obj, "/spec/unschedulable"),
        ("replicationcontrollers" | "replicasets", "status.replicas") => {
            int_at(obj, "/status/replicas")
        }
        ("jobs", "status.successful") => int_at(obj, "/status/succeeded"),
        (_, f) => str_at(obj, &format!("/{}", f.replace('.', "/"))).to_string(),
    };
    Some(v)
}

/// An event's field by its core/v1 label (involvedObject fields given
/// without their prefix), from either API shape.
fn event_field(obj: &Value, field: &str) -> String {
    let involved = obj
        .get("involvedObject")
        .or_else(|| obj.get("regarding"))
        .unwrap_or(&Value::Null);
    let reporting = obj
        .get("reportingComponent")
        .or_else(|| obj.get("reportingController"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let field = field.strip_prefix("involvedObject.").unwrap_or(field);
    match field {
        "reason" | "type" => str_at(obj, &format!("/{field}")).to_string(),
        "reportingComponent" | "reportingController" => reporting.to_string(),
        "source" => {
            let source = obj
                .pointer("/source/component")
                .or_else(|| obj.pointer("/deprecatedSource/component"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            // Upstream falls back to the reporting controller.
            if source.is_empty() {
                reporting.to_string()
            } else {
                source.to_string()
            }
        }
        f => involved
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    }
}
