//! Validation of a CustomResourceDefinition itself, with upstream's field
//! paths and messages (`ValidateCustomResourceDefinition`): names, scope,
//! versions, structural schemas, subresources, printer columns and CEL
//! rules that must compile.

use serde_json::Value;

use super::{Definition, cel};
use crate::registry::FieldError;
use crate::registry::common::{duplicate, forbidden, invalid, not_supported, required};

fn is_dns1035_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Validates a CRD (on create and on every update).
pub fn validate(crd: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let d = Definition::from_json(crd);
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    let want = format!("{}.{}", d.names.plural, d.group);
    if name != want {
        errs.push(invalid(
            "metadata.name",
            &Value::String(name.into()),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if d.group.is_empty() {
        errs.push(required("spec.group"));
    } else if !d.group.contains('.') {
        errs.push(invalid(
            "spec.group",
            &spec["group"],
            "should be a domain with at least one dot",
        ));
    } else if !is_dns1123_subdomain(&d.group) {
        errs.push(invalid(
            "spec.group",
            &spec["group"],
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        None | Some("") => errs.push(required("spec.scope")),
        Some(_) => errs.push(not_supported(
            "spec.scope",
            &spec["scope"],
            &["Cluster", "Namespaced"],
        )),
    }
    names(&spec["names"], "spec.names", &mut errs);
    versions(spec, &mut errs);
    conversion(&spec["conversion"], &mut errs);
    errs
}

fn conversion(c: &Value, errs: &mut Vec<FieldError>) {
    match c["strategy"].as_str() {
        None | Some("None") => {
            if c.get("webhook").is_some_and(|w| !w.is_null()) {
                errs.push(forbidden(
                    "spec.conversion.webhook",
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        Some("Webhook") => {
            let w = &c["webhook"];
            if w.is_null() {
                errs.push(FieldError {
                    reason: "FieldValueRequired",
                    field: "spec.conversion.webhook".into(),
                    message: "Required value: required when strategy is set to Webhook".into(),
                });
                return;
            }
            let cc = &w["clientConfig"];
            if cc["url"].is_null() == cc["service"].is_null() {
                errs.push(FieldError {
                    reason: "FieldValueRequired",
                    field: "spec.conversion.webhook.clientConfig".into(),
                    message: "Required value: exactly one of url or service is required".into(),
                });
            }
            let versions: Vec<&str> = w["conversionReviewVersions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
                errs.push(invalid(
                    "spec.conversion.webhook.conversionReviewVersions",
                    &w["conversionReviewVersions"],
                    "must include at least one of v1, v1beta1",
                ));
            }
        }
        Some(_) => errs.push(not_supported(
            "spec.conversion.strategy",
            &c["strategy"],
            &["None", "Webhook"],
        )),
    }
}

/// What an update may not change.
pub fn validate_update(crd: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let d = Definition::from_json(crd);
    {
        let was = &old["spec"];
        for f in ["group", "scope"] {
            if spec[f] != was[f] && !(f == "group" && was[f].is_null()) {
                errs.push(crate::registry::common::immutable(
                    format!("spec.{f}"),
                    &spec[f],
                ));
            }
        }
        if spec["names"]["plural"] != was["names"]["plural"] {
            errs.push(crate::registry::common::immutable(
                "spec.names.plural",
                &spec["names"]["plural"],
            ));
        }
        // A version still holding stored objects cannot disappear.
        let stored: Vec<&str> = old["status"]["storedVersions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for sv in stored {
            if d.version(sv).is_none() {
                errs.push(invalid(
                    "status.storedVersions",
                    &old["status"]["storedVersions"],
                    &format!("must appear in spec.versions (stored version {sv} is missing)"),
                ));
            }
        }
    }
    errs
}

fn names(n: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let plural = n["plural"].as_str().unwrap_or("");
    if plural.is_empty() {
        errs.push(required(format!("{path}.plural")));
    } else if !is_dns1035_label(plural) {
        errs.push(invalid(format!("{path}.plural"), &n["plural"], DNS1035_MSG));
    }
    if let Some(s) = n["singular"].as_str()
        && !s.is_empty()
        && !is_dns1035_label(s)
    {
        errs.push(invalid(
            format!("{path}.singular"),
            &n["singular"],
            DNS1035_MSG,
        ));
    }
    let kind = n["kind"].as_str().unwrap_or("");
    if kind.is_empty() {
        errs.push(required(format!("{path}.kind")));
    } else if !is_dns1035_label(&kind.to_lowercase()) {
        errs.push(invalid(
            format!("{path}.kind"),
            &n["kind"],
            "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
        ));
    }
    if let Some(lk) = n["listKind"].as_str()
        && !lk.is_empty()
        && lk == kind
    {
        errs.push(invalid(
            format!("{path}.listKind"),
            &n["listKind"],
            "kind and listKind may not be the same",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, s) in n["shortNames"].as_array().into_iter().flatten().enumerate() {
        let sn = s.as_str().unwrap_or("");
        if !is_dns1035_label(sn) {
            errs.push(invalid(format!("{path}.shortNames[{i}]"), s, DNS1035_MSG));
        }
        if seen.contains(&sn) {
            errs.push(duplicate(format!("{path}.shortNames[{i}]"), sn));
        }
        seen.push(sn);
    }
    for (i, c) in n["categories"].as_array().into_iter().flatten().enumerate() {
        let cs = c.as_str().unwrap_or("");
        if !is_dns1035_label(cs) {
            errs.push(invalid(format!("{path}.categories[{i}]"), c, DNS1035_MSG));
        }
    }
}

fn versions(spec: &Value, errs: &mut Vec<FieldError>) {
    let Some(vs) = spec["versions"].as_array().filter(|a| !a.is_empty()) else {
        errs.push(invalid(
            "spec.versions",
            &spec["versions"],
            "must have exactly one version marked as storage version",
        ));
        return;
    };
    let storage = vs
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if storage != 1 {
        errs.push(invalid(
            "spec.versions",
            &spec["versions"],
            "must have exactly one version marked as storage version",
        ));
    }
    if !vs.iter().any(|v| v["served"].as_bool() == Some(true)) {
        errs.push(invalid(
            "spec.versions",
            &spec["versions"],
            "must have at least one version marked as served",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = v["name"].as_str().unwrap_or("");
        if name.is_empty() {
            errs.push(required(format!("{path}.name")));
        } else if !is_dns1035_label(name) {
            errs.push(invalid(format!("{path}.name"), &v["name"], DNS1035_MSG));
        }
        if seen.contains(&name) {
            errs.push(duplicate(format!("{path}.name"), name));
        }
        seen.push(name);
        match v["schema"].get("openAPIV3Schema").filter(|s| s.is_object()) {
            None => errs.push(FieldError {
                reason: "FieldValueRequired",
                field: format!("{path}.schema.openAPIV3Schema"),
                message: "Required value: schemas are required".into(),
            }),
            Some(s) => {
                let sp = format!("{path}.schema.openAPIV3Schema");
                match s["type"].as_str() {
                    Some("object") => {}
                    None | Some("") => errs.push(FieldError {
                        reason: "FieldValueRequired",
                        field: format!("{sp}.type"),
                        message: "Required value: must not be empty at the root".into(),
                    }),
                    Some(_) => errs.push(invalid(
                        format!("{sp}.type"),
                        &s["type"],
                        "must be object at the root",
                    )),
                }
                structural(s, &sp, false, errs);
                cel::check_rules(s, &sp, errs);
            }
        }
        subresources(&v["subresources"], &format!("{path}.subresources"), errs);
        for (j, c) in v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = format!("{path}.additionalPrinterColumns[{j}]");
            if c["name"].as_str().unwrap_or("").is_empty() {
                errs.push(required(format!("{cp}.name")));
            }
            match c["type"].as_str() {
                Some("integer" | "number" | "string" | "boolean" | "date") => {}
                None | Some("") => errs.push(required(format!("{cp}.type"))),
                Some(_) => errs.push(not_supported(
                    format!("{cp}.type"),
                    &c["type"],
                    &["boolean", "date", "integer", "number", "string"],
                )),
            }
            let jp = c["jsonPath"].as_str().unwrap_or("");
            if jp.is_empty() {
                errs.push(required(format!("{cp}.jsonPath")));
            } else if super::columns::parse_path(jp).is_err() {
                errs.push(invalid(
                    format!("{cp}.jsonPath"),
                    &c["jsonPath"],
                    "must be a simple json path",
                ));
            }
        }
    }
}

fn subresources(sub: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(scale) = sub.get("scale").filter(|s| s.is_object()) else {
        return;
    };
    let sp = format!("{path}.scale");
    for (field, prefix) in [
        ("specReplicasPath", ".spec."),
        ("statusReplicasPath", ".status."),
    ] {
        let p = scale[field].as_str().unwrap_or("");
        if p.is_empty() {
            errs.push(required(format!("{sp}.{field}")));
        } else if !p.starts_with(prefix) {
            errs.push(invalid(
                format!("{sp}.{field}"),
                &scale[field],
                &format!(
                    "should be a json path under {}",
                    prefix.trim_end_matches('.')
                ),
            ));
        }
    }
    if let Some(p) = scale["labelSelectorPath"].as_str()
        && !(p.starts_with(".spec.") || p.starts_with(".status."))
    {
        errs.push(invalid(
            format!("{sp}.labelSelectorPath"),
            &scale["labelSelectorPath"],
            "should be a json path under either .spec or .status",
        ));
    }
}

/// Upstream's structural-schema rules that matter for serving: every
/// specified field has a type (unless its value is free-form), and the
/// logical junctors carry no types of their own.
fn structural(s: &Value, path: &str, in_junctor: bool, errs: &mut Vec<FieldError>) {
    let free = s["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
        || s["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if !in_junctor && !free && s["type"].as_str().unwrap_or("").is_empty() {
        errs.push(FieldError {
            reason: "FieldValueRequired",
            field: format!("{path}.type"),
            message: "Required value: must not be empty for specified object fields".into(),
        });
    }
    if in_junctor {
        for f in ["default", "additionalProperties", "nullable"] {
            if s.get(f).is_some() {
                errs.push(forbidden(
                    format!("{path}.{f}"),
                    "must not be specified in a nested context",
                ));
            }
        }
    }
    if s["type"].as_str() == Some("array") && s.get("items").is_none() && !in_junctor {
        errs.push(FieldError {
            reason: "FieldValueRequired",
            field: format!("{path}.items"),
            message: "Required value: must be specified".into(),
        });
    }
    if s.get("properties").is_some()
        && s.get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
    {
        errs.push(forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, sub) in props {
            structural(sub, &format!("{path}.properties[{k}]"), in_junctor, errs);
        }
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        structural(items, &format!("{path}.items"), in_junctor, errs);
    }
    if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
        structural(
            ap,
            &format!("{path}.additionalProperties"),
            in_junctor,
            errs,
        );
    }
    for j in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in s[j].as_array().into_iter().flatten().enumerate() {
            let p = format!("{path}.{j}[{i}]");
            // int-or-string is spelled `anyOf: [{type: integer}, {type: string}]`.
            if sub.get("type").is_some() && s["x-kubernetes-int-or-string"].as_bool() != Some(true)
            {
                errs.push(forbidden(
                    format!("{p}.type"),
                    "must not be specified in a nested context",
                ));
            }
            structural(sub, &p, true, errs);
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object()) {
        structural(not, &format!("{path}.not"), true, errs);
    }
    if let Some(re) = s["pattern"].as_str()
        && regex::Regex::new(re).is_err()
    {
        errs.push(invalid(
            format!("{path}.pattern"),
            &s["pattern"],
            "must be a valid regular expression",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com",
                "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"x": {"type": "string"}}}}}}}]
            }
        })
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn a_good_definition_passes() {
        assert_eq!(messages(&validate(&crd())), Vec::<String>::new());
    }

    #[test]
    fn bad_definitions_name_their_fields() {
        let mut c = crd();
        c["metadata"]["name"] = json!("wrong");
        c["spec"]["versions"][0]["storage"] = json!(false);
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["y"] = json!({});
        c["spec"]["scope"] = json!("Galaxy");
        let m = messages(&validate(&c));
        assert!(m.contains(&"metadata.name: Invalid value: \"wrong\": must be spec.names.plural+\".\"+spec.group".to_string()), "{m:?}");
        assert!(
            m.iter()
                .any(|x| x.starts_with("spec.versions: Invalid value")
                    && x.ends_with("must have exactly one version marked as storage version")),
            "{m:?}"
        );
        assert!(m.contains(&"spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[y].type: Required value: must not be empty for specified object fields".to_string()), "{m:?}");
        assert!(m.contains(&"spec.scope: Unsupported value: \"Galaxy\": supported values: \"Cluster\", \"Namespaced\"".to_string()), "{m:?}");
    }

    #[test]
    fn a_webhook_conversion_needs_its_webhook() {
        let mut c = crd();
        c["spec"]["conversion"] = json!({"strategy": "Webhook"});
        let m = messages(&validate(&c));
        assert_eq!(
            m,
            ["spec.conversion.webhook: Required value: required when strategy is set to Webhook"]
        );
        c["spec"]["conversion"]["webhook"] =
            json!({"conversionReviewVersions": ["v1"], "clientConfig": {"url": "https://x"}});
        assert!(validate(&c).is_empty());
    }

    #[test]
    fn plural_and_scope_are_immutable() {
        let old = crd();
        let mut new = crd();
        new["spec"]["scope"] = json!("Cluster");
        let m = messages(&validate_update(&new, &old));
        assert!(
            m.iter().any(
                |x| x.starts_with("spec.scope: Invalid value: \"Cluster\": field is immutable")
            ),
            "{m:?}"
        );
    }
}
