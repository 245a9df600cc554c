//! Label and field selectors, parsed and matched as upstream does.

use serde_json::{Map, Value};

/// A selector that could not be parsed or is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// The requirements (AND).
    pub requirements: Vec<Requirement>,
}

fn valid_key(k: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(SelectorError(format!(
                "invalid label key \"{k}\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            )));
        }
    }
    if name.is_empty() || name.len() > 63 || !valid_value_chars(name) {
        return Err(SelectorError(format!(
            "invalid label key \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )));
    }
    Ok(())
}

fn valid_value_chars(v: &str) -> bool {
    let b = v.as_bytes();
    b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn valid_value(v: &str) -> Result<(), SelectorError> {
    if v.is_empty() || (v.len() <= 63 && valid_value_chars(v)) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "invalid label value: \"{v}\": at key: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unexpected ')' in selector {s:?}")));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("found '(', expected: ')' in selector {s:?}")));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("found '{rest}', expected: '(' in {whole:?}")))?;
    let mut vals = Vec::new();
    for v in inner.split(',') {
        let v = v.trim();
        valid_value(v)?;
        vals.push(v.to_string());
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses upstream's selector syntax.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_top(s)? {
            let p = part.trim();
            if p.is_empty() {
                return Err(SelectorError(format!("found '', expected: identifier in {s:?}")));
            }
            if let Some(k) = p.strip_prefix('!') {
                let k = k.trim();
                valid_key(k)?;
                requirements.push(Requirement::DoesNotExist(k.to_string()));
                continue;
            }
            if let Some((k, v)) = p.split_once("!=") {
                let (k, v) = (k.trim(), v.trim());
                valid_key(k)?;
                valid_value(v)?;
                requirements.push(Requirement::NotIn(k.to_string(), vec![v.to_string()]));
                continue;
            }
            if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                let (k, v) = (k.trim(), v.trim());
                valid_key(k)?;
                valid_value(v)?;
                requirements.push(Requirement::In(k.to_string(), vec![v.to_string()]));
                continue;
            }
            let mut words = p.splitn(2, char::is_whitespace);
            let k = words.next().unwrap_or("").trim();
            let rest = words.next().unwrap_or("").trim();
            if rest.is_empty() {
                valid_key(k)?;
                requirements.push(Requirement::Exists(k.to_string()));
                continue;
            }
            valid_key(k)?;
            if let Some(r) = rest.strip_prefix("notin") {
                requirements.push(Requirement::NotIn(k.to_string(), parse_set(r, s)?));
            } else if let Some(r) = rest.strip_prefix("in") {
                requirements.push(Requirement::In(k.to_string(), parse_set(r, s)?));
            } else {
                return Err(SelectorError(format!(
                    "found '{rest}', expected: in, notin, =, ==, !=, gt, lt in {s:?}"
                )));
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a metav1.LabelSelector (matchLabels and
    /// matchExpressions).
    pub fn from_label_selector(v: &Value) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(ml) = v["matchLabels"].as_object() {
            for (k, val) in ml {
                requirements.push(Requirement::In(k.clone(), vec![val.as_str().unwrap_or("").to_string()]));
            }
        }
        for e in v["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str().unwrap_or("").to_string();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            requirements.push(match e["operator"].as_str().unwrap_or("") {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(SelectorError(format!("{other:?} is not a valid label selector operator"))),
            });
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|r| {
            let get = |k: &str| labels.get(k).and_then(Value::as_str);
            match r {
                Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
                Requirement::NotIn(k, vs) => !get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            }
        })
    }
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field path, e.g. `spec.nodeName`.
    pub field: String,
    /// `=`/`==` (true) or `!=` (false).
    pub equals: bool,
    /// The value.
    pub value: String,
}

/// A parsed field selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// The requirements (AND).
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d`.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equals, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError(format!("invalid selector: '{part}'; can't understand '{part}'")));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                equals,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Fails for a field the kind does not support, with upstream's message.
    pub fn check_supported(&self, group: &str, plural: &str) -> Result<(), SelectorError> {
        for r in &self.requirements {
            if field_path(group, plural, &r.field).is_none() {
                return Err(SelectorError(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(())
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, group: &str, plural: &str, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(group, plural, obj, &r.field).unwrap_or_default();
            (actual == r.value) == r.equals
        })
    }
}

/// Where a selectable field lives in the object, per kind (None: not
/// selectable for this kind).
fn field_path(group: &str, plural: &str, field: &str) -> Option<&'static str> {
    let common = match field {
        "metadata.name" => Some("metadata.name"),
        "metadata.namespace" => Some("metadata.namespace"),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    let specific: &[(&str, &str)] = match (group, plural) {
        ("", "pods") => &[
            ("spec.nodeName", "spec.nodeName"),
            ("spec.restartPolicy", "spec.restartPolicy"),
            ("spec.schedulerName", "spec.schedulerName"),
            ("spec.serviceAccountName", "spec.serviceAccountName"),
            ("spec.hostNetwork", "spec.hostNetwork"),
            ("status.phase", "status.phase"),
            ("status.podIP", "status.podIP"),
            ("status.podIPs", "status.podIP"),
            ("status.nominatedNodeName", "status.nominatedNodeName"),
        ],
        ("", "events") => &[
            ("involvedObject.kind", "involvedObject.kind"),
            ("involvedObject.namespace", "involvedObject.namespace"),
            ("involvedObject.name", "involvedObject.name"),
            ("involvedObject.uid", "involvedObject.uid"),
            ("involvedObject.apiVersion", "involvedObject.apiVersion"),
            ("involvedObject.resourceVersion", "involvedObject.resourceVersion"),
            ("involvedObject.fieldPath", "involvedObject.fieldPath"),
            ("reason", "reason"),
            ("reportingComponent", "reportingComponent"),
            ("source", "source.component"),
            ("type", "type"),
        ],
        ("events.k8s.io", "events") => &[
            ("regarding.kind", "regarding.kind"),
            ("regarding.namespace", "regarding.namespace"),
            ("regarding.name", "regarding.name"),
            ("regarding.uid", "regarding.uid"),
            ("regarding.apiVersion", "regarding.apiVersion"),
            ("regarding.resourceVersion", "regarding.resourceVersion"),
            ("regarding.fieldPath", "regarding.fieldPath"),
            ("reason", "reason"),
            ("reportingController", "reportingController"),
            ("type", "type"),
        ],
        ("", "secrets") => &[("type", "type")],
        ("", "nodes") => &[("spec.unschedulable", "spec.unschedulable")],
        ("", "namespaces") => &[("status.phase", "status.phase")],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &[("status.replicas", "status.replicas")],
        ("batch", "jobs") => &[("status.successful", "status.succeeded")],
        ("", "services") => &[("spec.clusterIP", "spec.clusterIP"), ("spec.type", "spec.type")],
        ("certificates.k8s.io", "certificatesigningrequests") => &[("spec.signerName", "spec.signerName")],
        _ => &[],
    };
    specific.iter().find(|(f, _)| *f == field).map(|(_, p)| *p)
}

/// The string value of a selectable field (absent fields read as "", and
/// booleans and numbers in their JSON form, as upstream's field sets do).
pub fn field_value(group: &str, plural: &str, obj: &Value, field: &str) -> Option<String> {
    let path = field_path(group, plural, field)?;
    let mut v = obj;
    for seg in path.split('.') {
        v = v.get(seg)?;
    }
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn parses_and_matches_label_selectors() {
        let l = labels(json!({"app": "web", "tier": "front", "env": "prod"}));
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app=web, env in (prod,staging)", true),
            ("", true),
            ("missing!=x", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn rejects_bad_label_selectors() {
        for bad in ["a in (b", "a in b", "-a=b", "a=b=c!", "a==-b", ",", "a b c"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_per_kind() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending").unwrap();
        f.check_supported("", "pods").unwrap();
        assert!(f.matches("", "pods", &pod));
        assert!(FieldSelector::parse("spec.hostNetwork=true").unwrap().matches("", "pods", &pod));
        assert!(!FieldSelector::parse("spec.nodeName=").unwrap().matches("", "pods", &pod));
        let err = FieldSelector::parse("spec.bogus=1").unwrap().check_supported("", "pods").unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: spec.bogus");
        assert!(FieldSelector::parse("spec.nodeName=x").unwrap().check_supported("", "configmaps").is_err());
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}});
        assert!(FieldSelector::parse("involvedObject.kind=Pod,source=kubelet").unwrap().matches("", "events", &ev));
    }

    #[test]
    fn label_selector_objects() {
        let s = LabelSelector::from_label_selector(&json!({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]})).unwrap();
        assert!(s.matches(&labels(json!({"a": "1", "b": "x"}))));
        assert!(!s.matches(&labels(json!({"a": "1"}))));
    }
}
