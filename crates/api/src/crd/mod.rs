//! CustomResourceDefinitions (apiextensions.k8s.io/v1): what a definition
//! says about the kind it adds, as data the generic REST layer serves like
//! a built-in kind. Upstream's `apiextensions-apiserver`, minus the server:
//! the definition model ([`Definition`]), its validation
//! ([`validation`]), the structural-schema checks, pruning and defaulting
//! of custom objects ([`schema`]), their printer columns ([`columns`]) and
//! their strategy ([`strategy`]).

pub mod cel;
pub mod columns;
pub mod schema;
pub mod strategy;
pub mod validation;

use std::cmp::Ordering;

use serde_json::Value;

use crate::catalogue::{self, ResourceInfo};

/// The finalizer that makes deleting a definition delete its objects first.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One CustomResourceDefinition, read from its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// `metadata.name` (`<plural>.<group>`).
    pub name: String,
    /// `spec.group`.
    pub group: String,
    /// `spec.names`.
    pub names: Names,
    /// `spec.scope == Namespaced`.
    pub namespaced: bool,
    /// `spec.versions`, in the definition's order.
    pub versions: Vec<Version>,
    /// Webhook conversion, when `spec.conversion.strategy == Webhook`.
    pub webhook: Option<Value>,
}

/// `spec.names` (or `status.acceptedNames`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Names {
    /// Kind.
    pub kind: String,
    /// List kind (`<Kind>List` by default).
    pub list_kind: String,
    /// Plural, the URL segment.
    pub plural: String,
    /// Singular (the lower-cased kind by default).
    pub singular: String,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories (`all`, ...).
    pub categories: Vec<String>,
}

/// One entry of `spec.versions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// Version name, e.g. `v1beta1`.
    pub name: String,
    /// Whether the REST API serves it.
    pub served: bool,
    /// Whether objects are stored at it (exactly one version is).
    pub storage: bool,
    /// Whether it is deprecated.
    pub deprecated: bool,
    /// The warning sent with each request at a deprecated version.
    pub deprecation_warning: Option<String>,
    /// `schema.openAPIV3Schema`.
    pub schema: Option<Value>,
    /// Whether the status subresource is enabled.
    pub status: bool,
    /// The scale subresource, when enabled.
    pub scale: Option<Scale>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<Column>,
    /// `selectableFields[].jsonPath`.
    pub selectable_fields: Vec<String>,
}

/// `subresources.scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    /// `.spec.replicas`-like path of the desired replicas.
    pub spec_replicas_path: String,
    /// `.status.replicas`-like path of the observed replicas.
    pub status_replicas_path: String,
    /// Path of the serialized label selector, if any.
    pub label_selector_path: Option<String>,
}

/// One additional printer column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header.
    pub name: String,
    /// OpenAPI type: integer, number, string, boolean, date.
    pub type_: String,
    /// OpenAPI format.
    pub format: String,
    /// Description.
    pub description: String,
    /// 0 is shown by default, higher only with `-o wide`.
    pub priority: i64,
    /// The simple JSONPath of the cell.
    pub json_path: String,
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn strs_of(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Names {
    /// Reads `spec.names`-shaped JSON, filling upstream's defaults.
    pub fn from_json(v: &Value) -> Names {
        let kind = str_of(&v["kind"]);
        let list_kind = match v["listKind"].as_str() {
            Some(l) if !l.is_empty() => l.to_string(),
            _ if kind.is_empty() => String::new(),
            _ => format!("{kind}List"),
        };
        let singular = match v["singular"].as_str() {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => kind.to_lowercase(),
        };
        Names {
            kind,
            list_kind,
            plural: str_of(&v["plural"]),
            singular,
            short_names: strs_of(&v["shortNames"]),
            categories: strs_of(&v["categories"]),
        }
    }

    /// The JSON form (`status.acceptedNames`).
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), self.kind.clone().into());
        m.insert("listKind".into(), self.list_kind.clone().into());
        m.insert("plural".into(), self.plural.clone().into());
        m.insert("singular".into(), self.singular.clone().into());
        if !self.short_names.is_empty() {
            m.insert("shortNames".into(), self.short_names.clone().into());
        }
        if !self.categories.is_empty() {
            m.insert("categories".into(), self.categories.clone().into());
        }
        Value::Object(m)
    }
}

impl Version {
    fn from_json(v: &Value) -> Version {
        let sub = &v["subresources"];
        let scale = sub.get("scale").filter(|s| s.is_object()).map(|s| Scale {
            spec_replicas_path: str_of(&s["specReplicasPath"]),
            status_replicas_path: str_of(&s["statusReplicasPath"]),
            label_selector_path: s["labelSelectorPath"].as_str().map(String::from),
        });
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| Column {
                        name: str_of(&c["name"]),
                        type_: str_of(&c["type"]),
                        format: str_of(&c["format"]),
                        description: str_of(&c["description"]),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        json_path: str_of(&c["jsonPath"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let selectable_fields = v["selectableFields"]
            .as_array()
            .map(|a| a.iter().map(|f| str_of(&f["jsonPath"])).collect())
            .unwrap_or_default();
        Version {
            name: str_of(&v["name"]),
            served: v["served"].as_bool().unwrap_or(false),
            storage: v["storage"].as_bool().unwrap_or(false),
            deprecated: v["deprecated"].as_bool().unwrap_or(false),
            deprecation_warning: v["deprecationWarning"].as_str().map(String::from),
            schema: v["schema"]
                .get("openAPIV3Schema")
                .filter(|s| s.is_object())
                .cloned(),
            status: sub.get("status").is_some_and(|s| s.is_object()),
            scale,
            columns,
            selectable_fields,
        }
    }

    /// The warning a request at this version gets, if it is deprecated.
    pub fn warning(&self, group: &str, kind: &str) -> Option<String> {
        if !self.deprecated {
            return None;
        }
        Some(
            self.deprecation_warning
                .clone()
                .unwrap_or_else(|| format!("{group}/{} {kind} is deprecated", self.name)),
        )
    }
}

impl Definition {
    /// Reads a CustomResourceDefinition object.
    pub fn from_json(crd: &Value) -> Definition {
        let spec = &crd["spec"];
        let mut versions: Vec<Version> = spec["versions"]
            .as_array()
            .map(|a| a.iter().map(Version::from_json).collect())
            .unwrap_or_default();
        versions.sort_by(|a, b| compare_versions(&a.name, &b.name));
        let webhook = (spec["conversion"]["strategy"].as_str() == Some("Webhook"))
            .then(|| spec["conversion"]["webhook"].clone());
        Definition {
            name: str_of(&crd["metadata"]["name"]),
            group: str_of(&spec["group"]),
            names: Names::from_json(&spec["names"]),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            versions,
            webhook,
        }
    }

    /// The version objects are stored at.
    pub fn storage_version(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.storage)
    }

    /// A version by name.
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The served versions, preferred first (upstream's kube-aware order).
    pub fn served(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| v.served)
    }

    /// The catalogue entry for `version`, with the accepted `names`.
    pub fn info(&self, names: &Names, version: &Version) -> &'static ResourceInfo {
        let mut subs: Vec<String> = Vec::new();
        if version.status {
            subs.push("status".into());
        }
        if version.scale.is_some() {
            subs.push("scale".into());
        }
        let group = catalogue::intern_str(&self.group);
        catalogue::intern(ResourceInfo {
            group,
            version: catalogue::intern_str(&version.name),
            kind: catalogue::intern_str(&names.kind),
            plural: catalogue::intern_str(&names.plural),
            singular: catalogue::intern_str(&names.singular),
            namespaced: self.namespaced,
            short_names: catalogue::intern_strs(&names.short_names),
            categories: catalogue::intern_strs(&names.categories),
            subresources: catalogue::intern_strs(&subs),
            verbs: catalogue::intern_strs(
                &[
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "create",
                    "update",
                    "watch",
                ]
                .map(String::from),
            ),
            definition: catalogue::intern_str(&definition_name(
                &self.group,
                &version.name,
                &names.kind,
            )),
            storage_group: group,
            custom: true,
            storage_version: catalogue::intern_str(
                self.storage_version()
                    .map_or(version.name.as_str(), |s| s.name.as_str()),
            ),
            conversion_webhook: self.webhook.is_some(),
        })
    }
}

/// The OpenAPI definition name upstream gives a custom kind: the group
/// reversed, then version and kind (`com.example.stable.v1.CronTab`).
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').collect();
    parts.reverse();
    format!("{}.{version}.{kind}", parts.join("."))
}

/// Parses `v<major>[alpha|beta<minor>]`.
fn kube_version(v: &str) -> Option<(u64, u8, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || digits.starts_with('0') {
        return None;
    }
    let major: u64 = digits.parse().ok()?;
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return Some((major, 2, 0));
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n)
    } else {
        return None;
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) || num.starts_with('0') {
        return None;
    }
    Some((major, level, num.parse().ok()?))
}

/// Upstream's `CompareKubeAwareVersionStrings`, as an ordering where the
/// preferred version comes first: GA before beta before alpha, higher
/// numbers first, then versions not in Kubernetes' form alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (kube_version(a), kube_version(b)) {
        (Some((ma, la, na)), Some((mb, lb, nb))) => lb.cmp(&la).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_sort_as_upstream() {
        let mut v = vec![
            "foo1",
            "v1alpha1",
            "v10",
            "v2",
            "v1",
            "v11beta2",
            "v10beta3",
            "v3beta1",
            "v12alpha1",
            "v1beta1",
            "foo10",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            [
                "v10",
                "v2",
                "v1",
                "v11beta2",
                "v10beta3",
                "v3beta1",
                "v1beta1",
                "v12alpha1",
                "v1alpha1",
                "foo1",
                "foo10"
            ]
        );
    }

    #[test]
    fn a_definition_becomes_catalogue_entries() {
        let crd = json!({
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com",
                "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}}
                ]
            }
        });
        let d = Definition::from_json(&crd);
        assert_eq!(d.names.singular, "crontab");
        assert_eq!(d.names.list_kind, "CronTabList");
        assert_eq!(d.versions[0].name, "v1", "preferred first");
        let info = d.info(&d.names, &d.versions[0]);
        assert!(info.custom && info.namespaced);
        assert_eq!(info.subresources, ["status", "scale"]);
        assert_eq!(info.short_names, ["ct"]);
        assert_eq!(info.definition, "com.example.stable.v1.CronTab");
        assert_eq!(
            info.storage_prefix(),
            "/registry/stable.example.com/crontabs/"
        );
        assert!(
            std::ptr::eq(info, d.info(&d.names, &d.versions[0])),
            "interned"
        );
    }
}
