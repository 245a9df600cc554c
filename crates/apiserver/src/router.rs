//! Maps request paths onto what they address. Kubernetes paths are
//! irregular (`/api/v1/namespaces/x` is an object, `/api/v1/namespaces/x/pods`
//! a collection), so this is a small hand-written parser rather than a
//! router table.

use api::catalogue::{self, ResourceInfo};

/// What a path addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their `/...` checks).
    Health(String),
    /// `/metrics`
    Metrics,
    /// `/cacerts`: the cluster CA, for joining nodes (as k3s serves it).
    CaCerts,
    /// `/r8s/v1/join`: node join with a token.
    NodeJoin,
    /// `/openapi/v2` (and `/swagger.json`).
    OpenApiV2,
    /// `/openapi/v3`
    OpenApiV3Root,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/<v>`.
    OpenApiV3(String, String),
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<g>/<v>`
    ResourceList(String, String),
    /// A resource collection, object or subresource.
    Resource(ResourceRoute),
    /// Nothing here.
    NotFound,
}

/// A resource path, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRoute {
    /// The resource.
    pub info: &'static ResourceInfo,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Whatever follows the subresource (proxy paths).
    pub rest: String,
    /// The legacy `/watch/` path prefix was used.
    pub watch_prefix: bool,
    /// The definition's rules when the resource is a custom one.
    pub custom: Option<std::sync::Arc<crate::crd::Served>>,
}

fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a request path; `custom` holds the custom kinds served now.
pub fn route(path: &str, custom: &crate::crd::Registry) -> Route {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<String> = trimmed.split('/').skip(1).map(decode).collect::<Vec<_>>();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        [] | [""] => Route::NotFound,
        ["version"] => Route::Version,
        ["healthz", ..] | ["livez", ..] | ["readyz", ..] => Route::Health(s.join("/")),
        ["metrics"] => Route::Metrics,
        ["cacerts"] => Route::CaCerts,
        ["r8s", "v1", "join"] => Route::NodeJoin,
        ["openapi", "v2"] | ["swagger.json"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => Route::OpenApiV3(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3(g.to_string(), v.to_string()),
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::ResourceList(String::new(), v.to_string()),
        ["apis", g, v] => Route::ResourceList(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => resource_route("", v, rest, custom),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest, custom),
        _ => Route::NotFound,
    }
}

type Found = (
    &'static ResourceInfo,
    Option<std::sync::Arc<crate::crd::Served>>,
);

fn find(custom: &crate::crd::Registry, group: &str, version: &str, plural: &str) -> Option<Found> {
    match catalogue::find(group, version, plural) {
        Some(info) => Some((info, None)),
        None => custom
            .find(group, version, plural)
            .map(|s| (s.info, Some(s))),
    }
}

fn resource_route(
    group: &str,
    version: &str,
    rest: &[&str],
    custom: &crate::crd::Registry,
) -> Route {
    let (watch_prefix, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    // `/namespaces/<ns>/<plural>/...` addresses a namespaced resource, unless
    // the third segment is a subresource of the namespace itself.
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some((info, served)) = find(custom, group, version, plural)
        && info.namespaced
    {
        return Route::Resource(ResourceRoute {
            info,
            namespace: Some(ns.to_string()),
            name: tail.first().map(|s| s.to_string()),
            subresource: tail.get(1).map(|s| s.to_string()),
            rest: tail.get(2..).map(|t| t.join("/")).unwrap_or_default(),
            watch_prefix,
            custom: served,
        });
    }
    let Some((plural, tail)) = rest.split_first() else {
        return Route::NotFound;
    };
    let Some((info, custom)) = find(custom, group, version, plural) else {
        return Route::NotFound;
    };
    Route::Resource(ResourceRoute {
        info,
        namespace: None,
        name: tail.first().map(|s| s.to_string()),
        subresource: tail.get(1).map(|s| s.to_string()),
        rest: tail.get(2..).map(|t| t.join("/")).unwrap_or_default(),
        watch_prefix,
        custom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Route {
        super::route(path, &crate::crd::Registry::default())
    }

    fn res(path: &str) -> ResourceRoute {
        match route(path) {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_kubernetes_paths() {
        assert_eq!(route("/version"), Route::Version);
        assert_eq!(route("/api"), Route::CoreVersions);
        assert_eq!(route("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(
            route("/apis/apps/v1"),
            Route::ResourceList("apps".into(), "v1".into())
        );
        let r = res("/api/v1/namespaces/default/pods/web/log");
        assert_eq!(r.info.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("log"));
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(r.info.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("kube-system"));
        let r = res("/api/v1/namespaces/x/status");
        assert_eq!(r.info.plural, "namespaces");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = res("/apis/apps/v1/deployments");
        assert_eq!(r.namespace, None);
        let r = res("/api/v1/watch/namespaces/default/pods");
        assert!(r.watch_prefix);
        assert_eq!(r.info.plural, "pods");
        let r = res("/api/v1/namespaces/default/pods/web/proxy/a/b");
        assert_eq!(r.rest, "a/b");
        assert_eq!(route("/apis/apps/v1/nothings"), Route::NotFound);
        assert_eq!(route("/nope"), Route::NotFound);
    }
}
