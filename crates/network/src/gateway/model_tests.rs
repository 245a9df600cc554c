use super::*;
use serde_json::json;

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

struct Fixture {
    classes: Vec<Arc<GatewayClass>>,
    gateways: Vec<Arc<Gateway>>,
    routes: Vec<Arc<HTTPRoute>>,
    grants: Vec<Arc<ReferenceGrant>>,
    namespaces: Vec<Arc<Namespace>>,
    services: Vec<Arc<Service>>,
    unavailable: HashMap<u16, String>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            classes: vec![obj(json!({"metadata": {"name": "r8s", "generation": 1},
                "spec": {"controllerName": CONTROLLER}}))],
            gateways: vec![obj(
                json!({"metadata": {"name": "gw", "namespace": "infra", "generation": 2},
                "spec": {"gatewayClassName": "r8s", "listeners": [
                    {"name": "web", "port": 8080, "protocol": "HTTP",
                     "allowedRoutes": {"namespaces": {"from": "Selector",
                        "selector": {"matchLabels": {"gateway": "yes"}}}}},
                    {"name": "secure", "port": 8443, "protocol": "HTTPS", "hostname": "*.example.com",
                     "tls": {"certificateRefs": [{"name": "missing"}]}},
                    {"name": "tcp", "port": 9000, "protocol": "TCP"},
                ]}}),
            )],
            routes: vec![],
            grants: vec![],
            namespaces: vec![
                obj(json!({"metadata": {"name": "app", "labels": {"gateway": "yes"}}})),
                obj(json!({"metadata": {"name": "other"}})),
            ],
            services: vec![
                obj(json!({"metadata": {"name": "web", "namespace": "app"},
                    "spec": {"ports": [{"port": 80}]}})),
                obj(json!({"metadata": {"name": "db", "namespace": "data"},
                    "spec": {"ports": [{"port": 80}]}})),
            ],
            unavailable: HashMap::new(),
        }
    }

    fn build(&self) -> Outcome {
        build(&World {
            classes: &self.classes,
            gateways: &self.gateways,
            http_routes: &self.routes,
            grpc_routes: &[],
            grants: &self.grants,
            namespaces: &self.namespaces,
            services: &self.services,
            slices: &[],
            secrets: &[],
            address: "192.0.2.10",
            unavailable: &self.unavailable,
            fixed: BTreeMap::from([(80, false), (443, true)]),
        })
    }
}

fn status<'a>(o: &'a Outcome, kind: &str, name: &str) -> &'a Value {
    &o.statuses
        .iter()
        .find(|s| s.kind == kind && s.name == name)
        .unwrap_or_else(|| panic!("no status for {kind} {name}"))
        .status
}

fn condition<'a>(conds: &'a Value, kind: &str) -> (&'a str, &'a str) {
    let c = conds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {conds}"));
    (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap())
}

fn route(ns: &str, name: &str, backend: Value) -> Arc<HTTPRoute> {
    obj(
        json!({"metadata": {"name": name, "namespace": ns, "generation": 3},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "web"}],
            "rules": [{"backendRefs": [backend]}]}}),
    )
}

#[test]
fn listeners_report_what_they_serve_and_why_not() {
    let f = Fixture::new();
    let o = f.build();
    assert_eq!(
        condition(&status(&o, "GatewayClass", "r8s")["conditions"], "Accepted"),
        ("True", "Accepted")
    );
    let gw = status(&o, "Gateway", "gw");
    assert_eq!(
        condition(&gw["conditions"], "Accepted"),
        ("True", "Accepted")
    );
    assert_eq!(
        condition(&gw["conditions"], "Programmed"),
        ("True", "Programmed")
    );
    assert_eq!(
        gw["addresses"][0],
        json!({"type": "IPAddress", "value": "192.0.2.10"})
    );
    let l = |name: &str| {
        gw["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        condition(&l("web")["conditions"], "Programmed"),
        ("True", "Programmed")
    );
    assert_eq!(l("web")["supportedKinds"].as_array().unwrap().len(), 2);
    assert_eq!(
        condition(&l("secure")["conditions"], "ResolvedRefs"),
        ("False", "InvalidCertificateRef")
    );
    assert_eq!(
        condition(&l("secure")["conditions"], "Programmed"),
        ("False", "Invalid")
    );
    assert_eq!(
        condition(&l("tcp")["conditions"], "Accepted"),
        ("False", "UnsupportedProtocol")
    );
    assert_eq!(l("tcp")["supportedKinds"], json!([]));
    assert!(o.table.ports.contains_key(&8080));
    assert!(
        !o.table.ports.contains_key(&8443),
        "a listener with no certificate is not served"
    );
    assert_eq!(gw["conditions"][0]["observedGeneration"], 2);
}

#[test]
fn routes_attach_by_namespace_selector_and_need_grants_across_namespaces() {
    let mut f = Fixture::new();
    f.routes = vec![
        route("app", "ok", json!({"name": "web", "port": 80})),
        route(
            "other",
            "unlabelled",
            json!({"name": "web", "namespace": "app", "port": 80}),
        ),
        route(
            "app",
            "cross",
            json!({"name": "db", "namespace": "data", "port": 80}),
        ),
        route("app", "missing", json!({"name": "nope", "port": 80})),
    ];
    let o = f.build();
    let parent = |name: &str| status(&o, "HTTPRoute", name)["parents"][0].clone();
    assert_eq!(parent("ok")["controllerName"], CONTROLLER);
    assert_eq!(parent("ok")["parentRef"]["sectionName"], "web");
    assert_eq!(
        condition(&parent("ok")["conditions"], "Accepted"),
        ("True", "Accepted")
    );
    assert_eq!(
        condition(&parent("ok")["conditions"], "ResolvedRefs"),
        ("True", "ResolvedRefs")
    );
    assert_eq!(
        condition(&parent("unlabelled")["conditions"], "Accepted"),
        ("False", "NotAllowedByListeners")
    );
    assert_eq!(
        condition(&parent("cross")["conditions"], "ResolvedRefs"),
        ("False", "RefNotPermitted")
    );
    assert_eq!(
        condition(&parent("missing")["conditions"], "ResolvedRefs"),
        ("False", "BackendNotFound")
    );
    let gw = status(&o, "Gateway", "gw");
    assert_eq!(
        gw["listeners"][0]["attachedRoutes"], 3,
        "ok, cross and missing attach"
    );

    f.grants = vec![obj(json!({"metadata": {"name": "g", "namespace": "data"},
        "spec": {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "app"}],
                 "to": [{"group": "", "kind": "Service"}]}}))];
    let o = f.build();
    let cross = status(&o, "HTTPRoute", "cross")["parents"][0].clone();
    assert_eq!(
        condition(&cross["conditions"], "ResolvedRefs"),
        ("True", "ResolvedRefs")
    );
}

#[test]
fn ports_held_elsewhere_or_with_another_protocol_are_refused() {
    let mut f = Fixture::new();
    f.gateways = vec![obj(
        json!({"metadata": {"name": "gw", "namespace": "infra"},
        "spec": {"gatewayClassName": "r8s", "listeners": [
            {"name": "on-https-port", "port": 443, "protocol": "HTTP"},
            {"name": "busy", "port": 8081, "protocol": "HTTP"},
            {"name": "a", "port": 8082, "protocol": "HTTP", "hostname": "a.example"},
            {"name": "dup", "port": 8082, "protocol": "HTTP", "hostname": "a.example"},
        ]}}),
    )];
    f.unavailable
        .insert(8081, "cannot listen on port 8081: in use".into());
    let o = f.build();
    let gw = status(&o, "Gateway", "gw");
    let l = |i: usize| gw["listeners"][i]["conditions"].clone();
    assert_eq!(condition(&l(0), "Conflicted"), ("True", "ProtocolConflict"));
    assert_eq!(condition(&l(1), "Accepted"), ("False", "PortUnavailable"));
    assert_eq!(condition(&l(2), "Accepted"), ("True", "Accepted"));
    assert_eq!(condition(&l(3), "Conflicted"), ("True", "HostnameConflict"));
    // Another class's Gateways are not ours to report on.
    f.classes = vec![obj(
        json!({"metadata": {"name": "r8s"}, "spec": {"controllerName": "example.com/other"}}),
    )];
    assert!(f.build().statuses.is_empty());
}
