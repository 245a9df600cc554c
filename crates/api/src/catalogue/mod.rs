//! The resource catalogue: every kind the API server serves, with the facts
//! discovery, routing, storage and OpenAPI need about it.

/// Everything the server needs to know about one served resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: &'static str,
    /// Singular name, e.g. `deployment`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Subresources served under `/<name>/<sub>`.
    pub subresources: &'static [&'static str],
    /// Verbs on the main resource.
    pub verbs: &'static [&'static str],
    /// The OpenAPI definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: &'static str,
    /// The group whose storage this resource shares (e.g. events.k8s.io
    /// events live with core events; autoscaling v1 and v2 share storage).
    pub storage_group: &'static str,
    /// Whether a CustomResourceDefinition defines this resource (its rules
    /// come from the definition's schema, not from compiled code).
    pub custom: bool,
    /// The version a custom resource is stored at (empty for built-ins,
    /// whose storage versions `apiserver::convert` knows).
    pub storage_version: &'static str,
    /// Whether a webhook converts this custom resource between versions
    /// (reads keep the stored apiVersion until the webhook has run).
    pub conversion_webhook: bool,
}

impl ResourceInfo {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix for this resource, as upstream lays it out:
    /// `/registry/<resource>/` for core and most groups (upstream keeps the
    /// group out of the path for built-in kinds), so the data in an etcd
    /// looks like Kubernetes data.
    pub fn storage_prefix(&self) -> String {
        if self.custom {
            // Upstream keeps custom resources under their group.
            return format!("/registry/{}/{}/", self.group, self.plural);
        }
        format!(
            "/registry/{}/",
            storage_resource(self.storage_group, self.plural)
        )
    }

    /// Whether `verb` is allowed on the main resource.
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// Whether `sub` is a served subresource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

/// Upstream's etcd path segment for a resource. Most built-ins use the
/// plural; a few historical ones differ.
fn storage_resource(group: &str, plural: &str) -> String {
    match (group, plural) {
        ("", "services") => "services/specs".to_string(),
        ("", "endpoints") => "services/endpoints".to_string(),
        ("", "nodes") => "minions".to_string(),
        ("", "replicationcontrollers") => "controllers".to_string(),
        ("apps", "deployments") => "deployments".to_string(),
        ("networking.k8s.io", "ingresses") => "ingress".to_string(),
        ("policy", "poddisruptionbudgets") => "poddisruptionbudgets".to_string(),
        ("rbac.authorization.k8s.io", p) => p.to_string(),
        ("scheduling.k8s.io", p) => p.to_string(),
        ("storage.k8s.io", p) => p.to_string(),
        ("coordination.k8s.io", "leases") => "leases".to_string(),
        ("discovery.k8s.io", "endpointslices") => "endpointslices".to_string(),
        ("autoscaling", "horizontalpodautoscalers") => "horizontalpodautoscalers".to_string(),
        // Measured, never stored: a prefix of their own all the same.
        ("metrics.k8s.io", p) => format!("metrics.k8s.io/{p}"),
        (_, p) => p.to_string(),
    }
}

const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NONE: &[&str] = &[];
const CREATE: &[&str] = &["create"];
const GET_LIST: &[&str] = &["get", "list"];
const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

macro_rules! res {
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $def:expr) => {
        res!(
            $g, $v, $kind, $plural, $singular, $ns, $short, $cat, $sub, $def, $g, RW
        )
    };
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $def:expr, $sg:expr, $verbs:expr) => {
        ResourceInfo {
            group: $g,
            version: $v,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            verbs: $verbs,
            definition: $def,
            storage_group: $sg,
            custom: false,
            storage_version: "",
            conversion_webhook: false,
        }
    };
}

mod table;
pub use table::RESOURCES;

/// Groups in discovery order, each with its versions (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Resources served in one group version.
pub fn resources_in(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Looks up a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks up a resource by apiVersion and kind.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Makes a resource served from data (a CustomResourceDefinition) live as
/// long as the built-in ones, so the whole server keeps passing
/// `&'static ResourceInfo` around. Equal infos share one allocation, so the
/// memory this keeps is bounded by the distinct definitions a process has
/// served, not by how often they are re-read.
pub fn intern(info: ResourceInfo) -> &'static ResourceInfo {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static INFOS: LazyLock<Mutex<HashSet<&'static ResourceInfo>>> =
        LazyLock::new(|| Mutex::new(HashSet::new()));
    let mut set = INFOS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(&info) {
        return found;
    }
    let leaked: &'static ResourceInfo = Box::leak(Box::new(info));
    set.insert(leaked);
    leaked
}

/// A string that lives as long as the process, shared between equal
/// strings (see [`intern`]).
pub fn intern_str(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static STRS: LazyLock<Mutex<HashSet<&'static str>>> =
        LazyLock::new(|| Mutex::new(HashSet::new()));
    let mut set = STRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// A list of strings that lives as long as the process (see [`intern`]).
pub fn intern_strs(v: &[String]) -> &'static [&'static str] {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static LISTS: LazyLock<Mutex<HashSet<&'static [&'static str]>>> =
        LazyLock::new(|| Mutex::new(HashSet::new()));
    let items: Vec<&'static str> = v.iter().map(|s| intern_str(s)).collect();
    let mut set = LISTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(items.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(items.into_boxed_slice());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_is_unique_per_group_version() {
        for r in RESOURCES {
            let n = RESOURCES
                .iter()
                .filter(|o| o.group == r.group && o.version == r.version && o.plural == r.plural)
                .count();
            assert_eq!(n, 1, "{} {} {}", r.group, r.version, r.plural);
        }
    }

    #[test]
    fn core_and_apps_are_found() {
        assert_eq!(find("", "v1", "pods").map(|r| r.kind), Some("Pod"));
        assert_eq!(
            find_kind("apps/v1", "Deployment").map(|r| r.plural),
            Some("deployments")
        );
        assert!(find("apps", "v1", "pods").is_none());
        assert_eq!(groups()[0], ("", vec!["v1"]));
        let autoscaling = groups().into_iter().find(|(g, _)| *g == "autoscaling");
        assert_eq!(autoscaling, Some(("autoscaling", vec!["v2", "v1"])));
    }
}
