//! The Gateway routing table, per listening port, pure: which rule of
//! which route takes a request, by the specification's precedence —
//! the host first (an exact host before wildcards, the longer wildcard
//! first, then routes with no host), then the match (an Exact path, the
//! longest PathPrefix, a method, the most header matches, the most query
//! matches), then the oldest route, then `namespace/name`, then the rule's
//! place in its route. Wildcard hosts are suffix matches (`*.example.com`
//! takes `a.b.example.com`), unlike Ingress.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method};

use crate::ingress::routes::{Backend, Cert};

/// A host pattern a rule is reachable under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// Exactly this name (lowercase).
    Exact(String),
    /// Any name ending in `.suffix`.
    Wildcard(String),
    /// Any name.
    Any,
}

impl Host {
    /// From a hostname field (`*.x` for wildcards, None for any).
    pub fn parse(h: Option<&str>) -> Host {
        match h {
            None | Some("") => Host::Any,
            Some(h) => match h.strip_prefix("*.") {
                Some(rest) => Host::Wildcard(rest.to_lowercase()),
                None => Host::Exact(h.to_lowercase()),
            },
        }
    }

    /// Whether `name` (lowercase, no port) falls under this pattern.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Host::Exact(h) => h == name,
            Host::Wildcard(s) => {
                name.len() > s.len() + 1 && name.ends_with(s.as_str()) && {
                    name.as_bytes()[name.len() - s.len() - 1] == b'.'
                }
            }
            Host::Any => true,
        }
    }

    /// Where a listener's host and a route's host meet, if they do.
    pub fn intersect(&self, other: &Host) -> Option<Host> {
        match (self, other) {
            (Host::Any, h) | (h, Host::Any) => Some(h.clone()),
            (Host::Exact(a), Host::Exact(b)) => (a == b).then(|| self.clone()),
            (Host::Exact(a), w @ Host::Wildcard(_)) | (w @ Host::Wildcard(_), Host::Exact(a)) => {
                w.covers(a).then(|| Host::Exact(a.clone()))
            }
            (Host::Wildcard(a), Host::Wildcard(b)) => {
                if a == b || a.ends_with(&format!(".{b}")) {
                    Some(self.clone())
                } else if b.ends_with(&format!(".{a}")) {
                    Some(other.clone())
                } else {
                    None
                }
            }
        }
    }

    /// Sort key: exact before wildcard (longer first) before any.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            Host::Exact(h) => (0, std::cmp::Reverse(h.len())),
            Host::Wildcard(s) => (1, std::cmp::Reverse(s.len())),
            Host::Any => (2, std::cmp::Reverse(0)),
        }
    }
}

/// How a path (or gRPC method) is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Whole `/`-separated elements.
    Prefix(String),
    /// A regular expression over the whole path.
    Regex(regex::Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || path == p
                    || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            PathMatch::Exact(p) => (0, std::cmp::Reverse(p.len())),
            PathMatch::Prefix(p) => (1, std::cmp::Reverse(p.trim_end_matches('/').len())),
            PathMatch::Regex(r) => (2, std::cmp::Reverse(r.as_str().len())),
        }
    }
}

/// A value match (headers, query parameters).
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// A regular expression.
    Regex(regex::Regex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => e == v,
            ValueMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// Everything one match requires.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The path.
    pub path: PathMatch,
    /// The method.
    pub method: Option<Method>,
    /// Headers (names lowercase).
    pub headers: Vec<(String, ValueMatch)>,
    /// Query parameters (names exact).
    pub query: Vec<(String, ValueMatch)>,
}

/// The parts of a request routing looks at.
pub struct Request<'a> {
    /// Host, lowercase, no port.
    pub host: &'a str,
    /// Path.
    pub path: &'a str,
    /// Raw query.
    pub query: Option<&'a str>,
    /// Method.
    pub method: &'a Method,
    /// Headers.
    pub headers: &'a HeaderMap,
}

impl Matcher {
    fn matches(&self, r: &Request<'_>) -> bool {
        self.path.matches(r.path)
            && self.method.as_ref().is_none_or(|m| m == r.method)
            && self.headers.iter().all(|(name, m)| {
                r.headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| m.matches(v))
            })
            && self.query.iter().all(|(name, m)| {
                r.query.is_some_and(|q| {
                    // The first value of a repeated parameter counts, as
                    // the specification suggests.
                    q.split('&')
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (k == name).then_some(v)
                        })
                        .next()
                        .is_some_and(|v| m.matches(v))
                })
            })
    }

    fn rank(&self) -> impl Ord {
        (
            self.path.rank(),
            self.method.is_none(),
            std::cmp::Reverse(self.headers.len()),
            std::cmp::Reverse(self.query.len()),
        )
    }
}

/// Header changes.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdit {
    /// Replace.
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Append.
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Remove.
    pub remove: Vec<http::HeaderName>,
}

impl HeaderEdit {
    /// Applies the edit.
    pub fn apply(&self, h: &mut HeaderMap) {
        for (k, v) in &self.set {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            h.append(k.clone(), v.clone());
        }
        for k in &self.remove {
            h.remove(k);
        }
    }
}

/// A path change (redirects and rewrites).
#[derive(Debug, Clone)]
pub enum PathEdit {
    /// The whole path.
    Full(String),
    /// The matched prefix.
    Prefix(String),
}

impl PathEdit {
    /// The new path for `path`, matched by `prefix` when a prefix matched.
    pub fn apply(&self, path: &str, prefix: Option<&str>) -> String {
        match self {
            PathEdit::Full(p) => p.clone(),
            PathEdit::Prefix(new) => {
                let old = prefix.unwrap_or("").trim_end_matches('/');
                let rest = path.get(old.len()..).unwrap_or("");
                let new = new.trim_end_matches('/');
                match (new.is_empty(), rest.is_empty()) {
                    (true, true) => "/".into(),
                    (true, false) => rest.into(),
                    _ => format!("{new}{rest}"),
                }
            }
        }
    }
}

/// A redirect answer.
#[derive(Debug, Clone, Default)]
pub struct RedirectTo {
    /// Scheme.
    pub scheme: Option<String>,
    /// Host.
    pub hostname: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Path.
    pub path: Option<PathEdit>,
    /// 301 or 302.
    pub status: u16,
}

/// A backend of a rule.
#[derive(Debug)]
pub enum Target {
    /// A resolved Service port.
    Backend(Arc<Backend>),
    /// An unresolved reference: requests sent here get a 500.
    Invalid,
}

/// What a rule does with the requests it takes.
#[derive(Debug, Default)]
pub struct Action {
    /// `namespace/name` of the route, for logs.
    pub route: String,
    /// Answer with a redirect.
    pub redirect: Option<RedirectTo>,
    /// Request header edits.
    pub request_headers: Option<HeaderEdit>,
    /// Response header edits.
    pub response_headers: Option<HeaderEdit>,
    /// Host rewrite.
    pub rewrite_host: Option<String>,
    /// Path rewrite.
    pub rewrite_path: Option<PathEdit>,
    /// Mirrors (copies, answers ignored).
    pub mirrors: Vec<Arc<Backend>>,
    /// Weighted backends (weight > 0).
    pub targets: Vec<(Target, u32)>,
    /// The rule itself is unusable (an unresolvable filter): 500.
    pub broken: bool,
    /// gRPC: speak HTTP/2 to the backends.
    pub grpc: bool,
    /// Whole-request timeout.
    pub timeout: Option<Duration>,
    /// Per-try timeout.
    pub backend_timeout: Option<Duration>,
    pub(crate) next: AtomicUsize,
}

impl Action {
    /// The next target by weight (smooth: over any `sum of weights`
    /// consecutive requests each target gets exactly its share).
    pub fn pick(&self) -> Option<&Target> {
        let total: u32 = self.targets.iter().map(|(_, w)| *w).sum();
        if total == 0 {
            return None;
        }
        // Visit the slots with a stride coprime with the total (near its
        // golden section), so the targets' turns interleave instead of
        // running in blocks, and every cycle still gives each its share.
        let n = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let total64 = total as u64;
        let mut stride = (total64 * 618 / 1000).max(1);
        while gcd(stride, total64) != 1 {
            stride += 1;
        }
        let slot = ((n % total64) * stride % total64) as u32;
        let mut acc = 0;
        for (t, w) in &self.targets {
            acc += w;
            if slot < acc {
                return Some(t);
            }
        }
        None
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One rule as reachable under one host by one match.
#[derive(Debug, Clone)]
struct Entry {
    matcher: Matcher,
    action: Arc<Action>,
}

/// What a rule's match is, with its precedence among others.
pub struct RouteRule {
    /// Where it is reachable.
    pub host: Host,
    /// The match.
    pub matcher: Matcher,
    /// What it does.
    pub action: Arc<Action>,
    /// The route's creation time (seconds).
    pub created: i64,
    /// `namespace/name`.
    pub route: String,
    /// Rule index.
    pub rule: usize,
    /// Match index within the rule.
    pub index: usize,
}

/// What one listening port serves.
#[derive(Debug, Default)]
pub struct PortTable {
    /// Whether the port terminates TLS.
    pub tls: bool,
    /// Rules by host, in precedence order.
    exact: HashMap<String, Vec<Entry>>,
    wildcard: Vec<(Host, Vec<Entry>)>,
    any: Vec<Entry>,
    /// Certificates by host pattern.
    pub certs: BTreeMap<Host, Cert>,
}

/// A routing decision.
pub struct Routed<'a> {
    /// The rule's action.
    pub action: &'a Arc<Action>,
    /// The prefix the path matched, when it was a prefix match.
    pub prefix: Option<&'a str>,
}

impl PortTable {
    /// A table of `rules`.
    pub fn new(tls: bool, mut rules: Vec<RouteRule>, certs: BTreeMap<Host, Cert>) -> PortTable {
        rules.sort_by(|a, b| {
            (a.matcher.rank(), a.created, &a.route, a.rule, a.index).cmp(&(
                b.matcher.rank(),
                b.created,
                &b.route,
                b.rule,
                b.index,
            ))
        });
        let mut t = PortTable {
            tls,
            certs,
            ..PortTable::default()
        };
        let mut wild: BTreeMap<(u8, std::cmp::Reverse<usize>, String), Vec<Entry>> =
            BTreeMap::new();
        for r in rules {
            let e = Entry {
                matcher: r.matcher,
                action: r.action,
            };
            match &r.host {
                Host::Exact(h) => t.exact.entry(h.clone()).or_default().push(e),
                Host::Wildcard(s) => {
                    let (a, b) = r.host.rank();
                    wild.entry((a, b, s.clone())).or_default().push(e)
                }
                Host::Any => t.any.push(e),
            }
        }
        t.wildcard = wild
            .into_iter()
            .map(|((_, _, s), v)| (Host::Wildcard(s), v))
            .collect();
        t
    }

    /// The rule that takes `r`, if any.
    pub fn route<'a>(&'a self, r: &Request<'_>) -> Option<Routed<'a>> {
        let first = |entries: &'a [Entry]| {
            entries
                .iter()
                .find(|e| e.matcher.matches(r))
                .map(|e| Routed {
                    action: &e.action,
                    prefix: match &e.matcher.path {
                        PathMatch::Prefix(p) => Some(p.as_str()),
                        _ => None,
                    },
                })
        };
        if let Some(x) = self.exact.get(r.host).and_then(|v| first(v)) {
            return Some(x);
        }
        for (h, v) in &self.wildcard {
            if h.covers(r.host)
                && let Some(x) = first(v)
            {
                return Some(x);
            }
        }
        first(&self.any)
    }

    /// The certificate for an SNI name: exact, then the longest wildcard,
    /// then one for any name.
    pub fn cert_for(&self, sni: &str) -> Option<&Cert> {
        let sni = sni.to_lowercase();
        if let Some(c) = self.certs.get(&Host::Exact(sni.clone())) {
            return Some(c);
        }
        let mut best: Option<(&Host, &Cert)> = None;
        for (h, c) in &self.certs {
            if matches!(h, Host::Wildcard(_))
                && h.covers(&sni)
                && best.is_none_or(|(b, _)| h.rank() < b.rank())
            {
                best = Some((h, c));
            }
        }
        best.map(|(_, c)| c).or_else(|| self.certs.get(&Host::Any))
    }

    /// How many rule matches the table holds.
    pub fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>()
            + self.wildcard.iter().map(|(_, v)| v.len()).sum::<usize>()
            + self.any.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every port's table.
#[derive(Debug, Default)]
pub struct Table {
    /// By port.
    pub ports: HashMap<u16, PortTable>,
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
