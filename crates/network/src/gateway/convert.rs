//! HTTPRoute and GRPCRoute rules compiled into matchers and actions,
//! pure: backends resolved to Service endpoints (a reference to another
//! namespace only with a ReferenceGrant), filters into header edits,
//! redirects, rewrites and mirrors, and what could not be resolved into
//! the route's ResolvedRefs reason.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::model::granted;
use super::table::{
    Action, HeaderEdit, Matcher, PathEdit, PathMatch, RedirectTo, Target, ValueMatch,
};
use super::types::*;
use crate::ingress::routes::{Backend, Services};

/// The features r8s's GatewayClass reports (sorted, as the specification
/// requires).
pub const FEATURES: &[&str] = &[
    "GRPCRoute",
    "Gateway",
    "HTTPRoute",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

/// Which kind of route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// HTTPRoute.
    Http,
    /// GRPCRoute.
    Grpc,
}

/// One compiled rule.
pub struct Rule {
    /// Any of these.
    pub matchers: Vec<Matcher>,
    /// What it does.
    pub action: Arc<Action>,
}

/// A compiled route.
pub struct Compiled {
    /// Kind.
    pub kind: RouteKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Creation (seconds).
    pub created: i64,
    /// Generation.
    pub generation: i64,
    /// Parents.
    pub parent_refs: Vec<ParentRef>,
    /// Host names.
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<Rule>,
    /// ResolvedRefs: Ok, or the first reason and message.
    pub resolved: Result<(), (&'static str, String)>,
    /// Why the route cannot be accepted (an unsupported field).
    pub unsupported: Option<String>,
}

struct Ctx<'a> {
    services: &'a Services,
    grants: &'a [Arc<ReferenceGrant>],
    kind: RouteKind,
    ns: String,
    resolved: Result<(), (&'static str, String)>,
    unsupported: Option<String>,
}

impl Ctx<'_> {
    fn fail(&mut self, reason: &'static str, msg: String) {
        if self.resolved.is_ok() {
            self.resolved = Err((reason, msg));
        }
    }

    fn unsupported(&mut self, msg: String) {
        self.unsupported.get_or_insert(msg);
    }

    /// A Service reference; None (and ResolvedRefs false) when it cannot
    /// be used.
    fn backend(&mut self, r: &ObjectRef) -> Option<Arc<Backend>> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            self.fail(
                "InvalidKind",
                format!(
                    "backend {kind}.{group} {}: only Services are supported",
                    r.name
                ),
            );
            return None;
        }
        let ns = r.namespace.clone().unwrap_or_else(|| self.ns.clone());
        if ns != self.ns
            && !granted(
                self.grants,
                (GROUP, self.kind_name(), &self.ns),
                &ns,
                ("", "Service", &r.name),
            )
        {
            self.fail(
                "RefNotPermitted",
                format!("backend Service {ns}/{} is in another namespace and no ReferenceGrant allows it", r.name),
            );
            return None;
        }
        if !self.services.exists(&ns, &r.name) {
            self.fail(
                "BackendNotFound",
                format!("Service {ns}/{} not found", r.name),
            );
            return None;
        }
        let Some(port) = r.port else {
            self.fail(
                "UnsupportedValue",
                format!("backend Service {ns}/{}: port is required", r.name),
            );
            return None;
        };
        let b = self.services.backend(&ns, &r.name, Some(port), None);
        if b.is_none() {
            self.fail(
                "BackendNotFound",
                format!("Service {ns}/{} has no port {port}", r.name),
            );
        }
        b
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }

    fn headers(&mut self, m: &HeaderModifier) -> HeaderEdit {
        let mut e = HeaderEdit::default();
        let mut pair = |h: &Header| match (
            HeaderName::try_from(h.name.as_str()),
            HeaderValue::from_str(&h.value),
        ) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => None,
        };
        e.set = m.set.iter().filter_map(&mut pair).collect();
        e.add = m.add.iter().filter_map(&mut pair).collect();
        e.remove = m
            .remove
            .iter()
            .filter_map(|n| HeaderName::try_from(n.as_str()).ok())
            .collect();
        e
    }

    fn action(&mut self, route: String, filters: &[Filter], backends: &[BackendRef]) -> Action {
        let mut a = Action {
            route,
            grpc: self.kind == RouteKind::Grpc,
            ..Action::default()
        };
        for f in filters {
            match (f.kind.as_str(), self.kind) {
                ("RequestHeaderModifier", _) => {
                    a.request_headers = f.request_header_modifier.as_ref().map(|m| self.headers(m))
                }
                ("ResponseHeaderModifier", _) => {
                    a.response_headers =
                        f.response_header_modifier.as_ref().map(|m| self.headers(m))
                }
                ("RequestMirror", _) => {
                    if let Some(b) = f
                        .request_mirror
                        .as_ref()
                        .and_then(|m| self.backend(&m.backend_ref))
                    {
                        a.mirrors.push(b);
                    }
                }
                ("RequestRedirect", RouteKind::Http) => {
                    if let Some(r) = &f.request_redirect {
                        a.redirect = Some(RedirectTo {
                            scheme: r.scheme.clone(),
                            hostname: r.hostname.clone(),
                            port: r.port.and_then(|p| u16::try_from(p).ok()),
                            path: r.path.as_ref().and_then(path_edit),
                            status: r
                                .status_code
                                .and_then(|c| u16::try_from(c).ok())
                                .unwrap_or(302),
                        });
                    }
                }
                ("URLRewrite", RouteKind::Http) => {
                    if let Some(r) = &f.url_rewrite {
                        a.rewrite_host = r.hostname.clone();
                        a.rewrite_path = r.path.as_ref().and_then(path_edit);
                    }
                }
                ("ExtensionRef", _) => {
                    a.broken = true;
                    self.fail(
                        "InvalidKind",
                        "ExtensionRef filters are not supported".into(),
                    );
                }
                (other, _) => self.unsupported(format!("filter type {other} is not supported")),
            }
        }
        for b in backends {
            let weight = b.weight.unwrap_or(1).max(0) as u32;
            if !b.filters.is_empty() {
                self.unsupported("filters on backendRefs are not supported".into());
            }
            let target = match self.backend(&b.target) {
                Some(be) => Target::Backend(be),
                None => Target::Invalid,
            };
            if weight > 0 {
                a.targets.push((target, weight));
            }
        }
        a
    }
}

fn path_edit(p: &PathModifier) -> Option<PathEdit> {
    match p.kind.as_str() {
        "ReplaceFullPath" => p.replace_full_path.clone().map(PathEdit::Full),
        "ReplacePrefixMatch" => p.replace_prefix_match.clone().map(PathEdit::Prefix),
        _ => None,
    }
}

/// A Gateway API duration (`1h2m3s`, `500ms`); zero means none.
pub fn duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(n), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(n * 3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(n * 60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(n), 1)
        } else {
            return None;
        };
        total += unit;
        rest = &rest[len..];
    }
    (!total.is_zero()).then_some(total)
}

fn regex(s: &str) -> Option<regex::Regex> {
    regex::Regex::new(&format!("^(?:{s})$")).ok()
}

fn value_matches(ms: &[NamedMatch], lower: bool) -> Option<Vec<(String, ValueMatch)>> {
    ms.iter()
        .map(|m| {
            let name = if lower {
                m.name.to_lowercase()
            } else {
                m.name.clone()
            };
            let v = match m.kind.as_deref() {
                Some("RegularExpression") => ValueMatch::Regex(regex(&m.value)?),
                _ => ValueMatch::Exact(m.value.clone()),
            };
            Some((name, v))
        })
        .collect()
}

fn meta(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String, i64, i64) {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
        m.creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        m.generation.unwrap_or(0),
    )
}

/// Compiles an HTTPRoute.
pub fn http(r: &HTTPRoute, services: &Services, grants: &[Arc<ReferenceGrant>]) -> Compiled {
    let (ns, name, created, generation) = meta(&r.metadata);
    let mut cx = Ctx {
        services,
        grants,
        kind: RouteKind::Http,
        ns: ns.clone(),
        resolved: Ok(()),
        unsupported: None,
    };
    let mut rules = Vec::new();
    for rule in &r.spec.rules {
        let mut action = cx.action(format!("{ns}/{name}"), &rule.filters, &rule.backend_refs);
        if let Some(t) = &rule.timeouts {
            action.timeout = t.request.as_deref().and_then(duration);
            action.backend_timeout = t.backend_request.as_deref().and_then(duration);
        }
        let mut matchers = Vec::new();
        let defaults = [HttpMatch::default()];
        let ms: &[HttpMatch] = if rule.matches.is_empty() {
            &defaults
        } else {
            &rule.matches
        };
        for m in ms {
            let value = m
                .path
                .as_ref()
                .and_then(|p| p.value.clone())
                .unwrap_or_else(|| "/".into());
            let path = match m.path.as_ref().and_then(|p| p.kind.as_deref()) {
                Some("Exact") => PathMatch::Exact(value),
                Some("RegularExpression") => match regex(&value) {
                    Some(re) => PathMatch::Regex(re),
                    None => {
                        cx.unsupported(format!(
                            "path regular expression {value:?} does not compile"
                        ));
                        continue;
                    }
                },
                _ => PathMatch::Prefix(value),
            };
            let (Some(headers), Some(query)) = (
                value_matches(&m.headers, true),
                value_matches(&m.query_params, false),
            ) else {
                cx.unsupported("a header or query regular expression does not compile".into());
                continue;
            };
            matchers.push(Matcher {
                path,
                method: m
                    .method
                    .as_deref()
                    .and_then(|s| Method::from_bytes(s.as_bytes()).ok()),
                headers,
                query,
            });
        }
        rules.push(Rule {
            matchers,
            action: Arc::new(action),
        });
    }
    Compiled {
        kind: RouteKind::Http,
        namespace: ns,
        name,
        created,
        generation,
        parent_refs: r.spec.parent_refs.clone(),
        hostnames: r.spec.hostnames.clone(),
        rules,
        resolved: cx.resolved,
        unsupported: cx.unsupported,
    }
}

/// Compiles a GRPCRoute: a method match is a match on the request path
/// `/<service>/<method>`.
pub fn grpc(r: &GRPCRoute, services: &Services, grants: &[Arc<ReferenceGrant>]) -> Compiled {
    let (ns, name, created, generation) = meta(&r.metadata);
    let mut cx = Ctx {
        services,
        grants,
        kind: RouteKind::Grpc,
        ns: ns.clone(),
        resolved: Ok(()),
        unsupported: None,
    };
    let mut rules = Vec::new();
    for rule in &r.spec.rules {
        let action = cx.action(format!("{ns}/{name}"), &rule.filters, &rule.backend_refs);
        let mut matchers = Vec::new();
        let defaults = [GrpcMatch::default()];
        let ms: &[GrpcMatch] = if rule.matches.is_empty() {
            &defaults
        } else {
            &rule.matches
        };
        for m in ms {
            let method = m.method.as_ref();
            let (svc, meth) = (
                method.and_then(|x| x.service.clone()),
                method.and_then(|x| x.method.clone()),
            );
            let re = method.and_then(|x| x.kind.as_deref()) == Some("RegularExpression");
            let path = match (svc, meth, re) {
                (None, None, _) => PathMatch::Prefix("/".into()),
                (Some(s), Some(m), false) => PathMatch::Exact(format!("/{s}/{m}")),
                (Some(s), None, false) => PathMatch::Prefix(format!("/{s}")),
                (s, m, _) => {
                    let part = |x: Option<String>| match (x, re) {
                        (Some(x), true) => x,
                        (Some(x), false) => regex::escape(&x),
                        (None, _) => "[^/]+".into(),
                    };
                    match regex(&format!("/{}/{}", part(s), part(m))) {
                        Some(r) => PathMatch::Regex(r),
                        None => {
                            cx.unsupported("a method regular expression does not compile".into());
                            continue;
                        }
                    }
                }
            };
            let Some(headers) = value_matches(&m.headers, true) else {
                cx.unsupported("a header regular expression does not compile".into());
                continue;
            };
            matchers.push(Matcher {
                path,
                method: None,
                headers,
                query: Vec::new(),
            });
        }
        rules.push(Rule {
            matchers,
            action: Arc::new(action),
        });
    }
    Compiled {
        kind: RouteKind::Grpc,
        namespace: ns,
        name,
        created,
        generation,
        parent_refs: r.spec.parent_refs.clone(),
        hostnames: r.spec.hostnames.clone(),
        rules,
        resolved: cx.resolved,
        unsupported: cx.unsupported,
    }
}
