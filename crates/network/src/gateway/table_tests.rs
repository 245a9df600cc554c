use super::*;

fn backend(name: &str) -> Arc<Backend> {
    Arc::new(Backend {
        name: name.into(),
        endpoints: vec!["10.0.0.1:80".parse().unwrap()],
    })
}

fn action(name: &str) -> Arc<Action> {
    Arc::new(Action {
        route: name.into(),
        targets: vec![(Target::Backend(backend(name)), 1)],
        ..Action::default()
    })
}

fn prefix(p: &str) -> Matcher {
    Matcher {
        path: PathMatch::Prefix(p.into()),
        method: None,
        headers: vec![],
        query: vec![],
    }
}

fn rule(host: Host, m: Matcher, name: &str, created: i64) -> RouteRule {
    RouteRule {
        host,
        matcher: m,
        action: action(name),
        created,
        route: format!("default/{name}"),
        rule: 0,
        index: 0,
    }
}

fn to(
    t: &PortTable,
    host: &str,
    path_query: &str,
    method: Method,
    headers: &[(&str, &str)],
) -> String {
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let r = Request {
        host,
        path,
        query,
        method: &method,
        headers: &h,
    };
    t.route(&r)
        .map(|r| r.action.route.clone())
        .unwrap_or_default()
}

#[test]
fn hosts_exact_before_longer_wildcard_before_any() {
    let t = PortTable::new(
        false,
        vec![
            rule(Host::Any, prefix("/"), "any", 0),
            rule(Host::parse(Some("*.example.com")), prefix("/"), "wild", 0),
            rule(
                Host::parse(Some("*.b.example.com")),
                prefix("/"),
                "wild-b",
                0,
            ),
            rule(
                Host::parse(Some("a.b.example.com")),
                prefix("/only"),
                "exact",
                0,
            ),
        ],
        BTreeMap::new(),
    );
    assert_eq!(
        to(&t, "a.b.example.com", "/only/x", Method::GET, &[]),
        "exact"
    );
    assert_eq!(
        to(&t, "a.b.example.com", "/other", Method::GET, &[]),
        "wild-b",
        "no exact rule matches: the longest wildcard"
    );
    assert_eq!(
        to(&t, "x.y.example.com", "/", Method::GET, &[]),
        "wild",
        "wildcards are suffix matches over any number of labels"
    );
    assert_eq!(to(&t, "example.com", "/", Method::GET, &[]), "any");
}

#[test]
fn match_precedence_as_the_specification_orders_it() {
    let mut by_method = prefix("/");
    by_method.method = Some(Method::POST);
    let mut two_headers = prefix("/");
    two_headers.headers = vec![
        ("x-a".into(), ValueMatch::Exact("1".into())),
        (
            "x-b".into(),
            ValueMatch::Regex(regex::Regex::new("^b.*$").unwrap()),
        ),
    ];
    let mut one_header = prefix("/");
    one_header.headers = vec![("x-a".into(), ValueMatch::Exact("1".into()))];
    let mut query = prefix("/");
    query.query = vec![("v".into(), ValueMatch::Exact("2".into()))];
    let t = PortTable::new(
        false,
        vec![
            rule(Host::Any, prefix("/"), "newer-root", 20),
            rule(Host::Any, prefix("/"), "older-root", 10),
            rule(Host::Any, query, "query", 30),
            rule(Host::Any, one_header, "one-header", 30),
            rule(Host::Any, two_headers, "two-headers", 30),
            rule(Host::Any, by_method, "post", 30),
            rule(Host::Any, prefix("/api"), "api", 30),
            rule(Host::Any, prefix("/api/v1/"), "api-v1", 30),
            rule(
                Host::Any,
                Matcher {
                    path: PathMatch::Exact("/api".into()),
                    ..prefix("/")
                },
                "exact-api",
                30,
            ),
        ],
        BTreeMap::new(),
    );
    let get = |p: &str, h: &[(&str, &str)]| to(&t, "h", p, Method::GET, h);
    assert_eq!(get("/api", &[]), "exact-api");
    assert_eq!(
        get("/api/v1", &[]),
        "api-v1",
        "a prefix matches whole elements"
    );
    assert_eq!(get("/api/v10", &[]), "api");
    assert_eq!(
        to(&t, "h", "/", Method::POST, &[("x-a", "1"), ("x-b", "bee")]),
        "post"
    );
    assert_eq!(get("/", &[("x-a", "1"), ("x-b", "bee")]), "two-headers");
    assert_eq!(get("/", &[("x-a", "1"), ("x-b", "no")]), "one-header");
    assert_eq!(get("/?a=1&v=2", &[]), "query");
    assert_eq!(
        get("/?v=3", &[]),
        "older-root",
        "ties go to the oldest route"
    );
}

#[test]
fn weights_split_exactly_over_a_cycle_and_interleave() {
    let a = Action {
        targets: vec![
            (Target::Backend(backend("stable")), 90),
            (Target::Backend(backend("canary")), 10),
        ],
        ..Action::default()
    };
    let picks: Vec<String> = (0..1000)
        .map(|_| match a.pick() {
            Some(Target::Backend(b)) => b.name.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(picks.iter().filter(|p| *p == "canary").count(), 100);
    assert!(
        picks[..20].iter().any(|p| p == "canary"),
        "the canary's turns are spread out, not saved for the end of a cycle"
    );
    let none = Action::default();
    assert!(none.pick().is_none());
}

#[test]
fn prefix_rewrites_keep_the_rest_of_the_path() {
    let e = PathEdit::Prefix("/v2".into());
    assert_eq!(e.apply("/v1/items", Some("/v1")), "/v2/items");
    assert_eq!(e.apply("/v1", Some("/v1")), "/v2");
    let root = PathEdit::Prefix("/".into());
    assert_eq!(root.apply("/v1/items", Some("/v1")), "/items");
    assert_eq!(root.apply("/v1", Some("/v1/")), "/");
    assert_eq!(PathEdit::Full("/x".into()).apply("/a/b", None), "/x");
}

#[test]
fn listener_and_route_hosts_intersect() {
    let h = |s: &str| Host::parse(Some(s));
    assert_eq!(
        h("*.example.com").intersect(&h("a.example.com")),
        Some(h("a.example.com"))
    );
    assert_eq!(
        h("*.example.com").intersect(&h("*.a.example.com")),
        Some(h("*.a.example.com"))
    );
    assert_eq!(h("a.example.com").intersect(&h("b.example.com")), None);
    assert_eq!(h("*.example.com").intersect(&h("example.com")), None);
    assert_eq!(Host::Any.intersect(&h("x.io")), Some(h("x.io")));
}
