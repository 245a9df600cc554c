//! The ingress routing table, built from Ingresses, Services, EndpointSlices
//! and TLS Secrets with no I/O: hosts (exact before wildcard), then paths
//! with upstream's precedence (an Exact match before any Prefix, the
//! longest Prefix first, Prefix matching whole path elements;
//! ImplementationSpecific is treated as Prefix), then the Ingress's
//! `defaultBackend`. Backends are the ready endpoints of a Service port,
//! straight from its EndpointSlices.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

/// The IngressClass r8s serves.
pub const CLASS: &str = "r8s";
/// The controller name in that class.
pub const CONTROLLER: &str = "r8s.io/ingress";

/// Where a request goes: a Service port's ready endpoints.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Backend {
    /// `namespace/service:port`, for errors and logs.
    pub name: String,
    /// Ready endpoints.
    pub endpoints: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
enum Match {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: Match,
    backend: Arc<Backend>,
}

/// A TLS certificate for some hosts (PEM).
#[derive(Debug, Clone, PartialEq)]
pub struct Cert {
    /// The certificate chain.
    pub cert_pem: String,
    /// The key.
    pub key_pem: String,
}

/// The whole table.
#[derive(Debug, Default)]
pub struct Table {
    /// Host (lowercase; `*.example.com` for wildcards, "" for any) -> rules.
    hosts: BTreeMap<String, Vec<Rule>>,
    default: Option<Arc<Backend>>,
    /// SNI host (or wildcard) -> certificate.
    pub certs: BTreeMap<String, Cert>,
}

/// Whether an Ingress is ours: class `r8s`, or no class at all (r8s's
/// class is the default one).
pub fn ours(ing: &Ingress) -> bool {
    let spec_class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotation = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/ingress.class"))
        .map(String::as_str);
    match spec_class.or(annotation) {
        None => true,
        Some(c) => c == CLASS,
    }
}

/// Services and their ready endpoints, indexed once per table build.
pub struct Services {
    services: BTreeMap<(String, String), Arc<Service>>,
    slices: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>>,
}

impl Services {
    /// An index of `services` and `slices`.
    pub fn new(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Services {
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, n: String| {
            (m.namespace.clone().unwrap_or_default(), n)
        };
        let mut by_service: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for s in slices {
            if let Some(n) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            {
                by_service
                    .entry(key(&s.metadata, n.clone()))
                    .or_default()
                    .push(s.clone());
            }
        }
        Services {
            services: services
                .iter()
                .map(|s| {
                    (
                        key(&s.metadata, s.metadata.name.clone().unwrap_or_default()),
                        s.clone(),
                    )
                })
                .collect(),
            slices: by_service,
        }
    }

    /// Whether the Service exists.
    pub fn exists(&self, ns: &str, name: &str) -> bool {
        self.services
            .contains_key(&(ns.to_string(), name.to_string()))
    }

    /// A Service port (by number or name) and its ready endpoints; None
    /// when the Service or the port does not exist.
    pub fn backend(
        &self,
        ns: &str,
        name: &str,
        number: Option<i32>,
        port_name: Option<&str>,
    ) -> Option<Arc<Backend>> {
        let key = (ns.to_string(), name.to_string());
        let svc = self.services.get(&key)?;
        let sp = svc.spec.as_ref()?.ports.as_ref()?.iter().find(|p| {
            number.is_some_and(|n| n == p.port)
                || port_name.is_some_and(|n| Some(n) == p.name.as_deref())
        })?;
        let sp_name = sp.name.clone().unwrap_or_default();
        let mut endpoints = Vec::new();
        for s in self.slices.get(&key).into_iter().flatten() {
            if s.address_type != "IPv4" {
                continue;
            }
            let Some(target) = s
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == sp_name)
                .and_then(|p| p.port)
            else {
                continue;
            };
            for e in &s.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                        endpoints.push(SocketAddr::new(ip, target as u16));
                    }
                }
            }
        }
        endpoints.sort();
        endpoints.dedup();
        Some(Arc::new(Backend {
            name: format!("{ns}/{name}:{}", sp.port),
            endpoints,
        }))
    }
}

fn backend(ns: &str, b: &IngressBackend, services: &Services) -> Option<Arc<Backend>> {
    let svc_ref = b.service.as_ref()?;
    let port = svc_ref.port.as_ref()?;
    services.backend(ns, &svc_ref.name, port.number, port.name.as_deref())
}

/// Upstream's Prefix match: whole `/`-separated elements.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    path == p || path.starts_with(&format!("{p}/"))
}

impl Table {
    /// Builds the table from the cluster's objects.
    pub fn build(
        ingresses: &[Arc<Ingress>],
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        secrets: &[Arc<Secret>],
    ) -> Table {
        let services = Services::new(services, slices);
        let mut t = Table::default();
        let mut sorted: Vec<&Arc<Ingress>> = ingresses.iter().filter(|i| ours(i)).collect();
        // Older Ingresses win conflicts, as most controllers resolve them.
        sorted.sort_by_key(|i| {
            (
                i.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
                i.metadata.name.clone(),
            )
        });
        for ing in sorted {
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            let Some(spec) = ing.spec.as_ref() else {
                continue;
            };
            if let Some(d) = &spec.default_backend
                && t.default.is_none()
            {
                t.default = backend(&ns, d, &services);
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.clone().unwrap_or_default().to_lowercase();
                let Some(http) = &rule.http else {
                    continue;
                };
                for p in &http.paths {
                    let Some(b) = backend(&ns, &p.backend, &services) else {
                        continue;
                    };
                    let path = p.path.clone().unwrap_or_else(|| "/".into());
                    let matcher = match p.path_type.as_str() {
                        "Exact" => Match::Exact(path),
                        _ => Match::Prefix(path),
                    };
                    t.hosts.entry(host.clone()).or_default().push(Rule {
                        matcher,
                        backend: b,
                    });
                }
            }
            for tls in spec.tls.iter().flatten() {
                let Some(name) = &tls.secret_name else {
                    continue;
                };
                let Some(secret) = secrets.iter().find(|s| {
                    s.metadata.namespace.as_deref() == Some(ns.as_str())
                        && s.metadata.name.as_deref() == Some(name.as_str())
                }) else {
                    continue;
                };
                let data = secret.data.as_ref();
                let get = |k: &str| {
                    data.and_then(|d| d.get(k))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                };
                let (Some(cert_pem), Some(key_pem)) = (get("tls.crt"), get("tls.key")) else {
                    continue;
                };
                for h in tls.hosts.iter().flatten() {
                    t.certs.entry(h.to_lowercase()).or_insert(Cert {
                        cert_pem: cert_pem.clone(),
                        key_pem: key_pem.clone(),
                    });
                }
            }
        }
        // Within a host: Exact first, then the longest Prefix.
        for rules in t.hosts.values_mut() {
            rules.sort_by_key(|r| match &r.matcher {
                Match::Exact(p) => (0, std::cmp::Reverse(p.len())),
                Match::Prefix(p) => (1, std::cmp::Reverse(p.trim_end_matches('/').len())),
            });
        }
        t
    }

    fn host_rules(&self, host: &str) -> Option<&Vec<Rule>> {
        let host = host.to_lowercase();
        if let Some(r) = self.hosts.get(&host) {
            return Some(r);
        }
        // A wildcard covers exactly one more label.
        if let Some((_, rest)) = host.split_once('.')
            && let Some(r) = self.hosts.get(&format!("*.{rest}"))
        {
            return Some(r);
        }
        None
    }

    /// The backend for a request, if any rule or default takes it.
    pub fn route(&self, host: &str, path: &str) -> Option<Arc<Backend>> {
        let host = host.split(':').next().unwrap_or(host);
        let pick = |rules: &Vec<Rule>| {
            rules.iter().find_map(|r| {
                let ok = match &r.matcher {
                    Match::Exact(p) => p == path,
                    Match::Prefix(p) => prefix_matches(p, path),
                };
                ok.then(|| r.backend.clone())
            })
        };
        if let Some(b) = self.host_rules(host).and_then(pick) {
            return Some(b);
        }
        if let Some(b) = self.hosts.get("").and_then(pick) {
            return Some(b);
        }
        self.default.clone()
    }

    /// The certificate for an SNI name (exact, then wildcard).
    pub fn cert_for(&self, sni: &str) -> Option<&Cert> {
        let sni = sni.to_lowercase();
        self.certs.get(&sni).or_else(|| {
            let (_, rest) = sni.split_once('.')?;
            self.certs.get(&format!("*.{rest}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
            .unwrap(),
        )
    }

    fn slice(svc: &str, ip: &str) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": format!("{svc}-x"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": true}},
                              {"addresses": ["10.0.0.99"], "conditions": {"ready": false}}]}),
            )
            .unwrap(),
        )
    }

    fn ingress(spec: serde_json::Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": "i", "namespace": "default"}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    fn path(p: &str, t: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": t, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    }

    #[test]
    fn upstream_path_precedence_hosts_and_defaults() {
        let ing = ingress(json!({
            "defaultBackend": {"service": {"name": "fallback", "port": {"name": "http"}}},
            "rules": [
                {"host": "foo.example", "http": {"paths": [
                    path("/", "Prefix", "root"),
                    path("/aaa", "Prefix", "aaa"),
                    path("/aaa/bbb", "Prefix", "bbb"),
                    path("/aaa/bbb", "Exact", "exact"),
                ]}},
                {"host": "*.wild.example", "http": {"paths": [path("/", "Prefix", "wild")]}},
            ],
        }));
        let services: Vec<_> = ["root", "aaa", "bbb", "exact", "wild", "fallback"]
            .iter()
            .map(|s| svc(s))
            .collect();
        let slices: Vec<_> = ["root", "aaa", "bbb", "exact", "wild", "fallback"]
            .iter()
            .enumerate()
            .map(|(i, s)| slice(s, &format!("10.0.0.{}", i + 1)))
            .collect();
        let t = Table::build(&[ing], &services, &slices, &[]);
        let to = |host: &str, p: &str| t.route(host, p).map(|b| b.name.clone()).unwrap_or_default();
        assert_eq!(to("foo.example", "/aaa/bbb"), "default/exact:80");
        assert_eq!(to("foo.example", "/aaa/bbb/"), "default/bbb:80");
        assert_eq!(
            to("foo.example", "/aaa/bbbxyz"),
            "default/aaa:80",
            "prefixes match whole elements"
        );
        assert_eq!(to("foo.example", "/aaa"), "default/aaa:80");
        assert_eq!(to("FOO.example:8443", "/ccc"), "default/root:80");
        assert_eq!(to("a.wild.example", "/"), "default/wild:80");
        assert_eq!(
            to("a.b.wild.example", "/"),
            "default/fallback:80",
            "one label only"
        );
        assert_eq!(to("other", "/"), "default/fallback:80");
        let b = t.route("foo.example", "/").unwrap();
        assert_eq!(
            b.endpoints,
            vec!["10.0.0.1:8080".parse().unwrap()],
            "ready endpoints only"
        );
    }

    #[test]
    fn other_classes_are_left_alone() {
        let mut ing = (*ingress(json!({"rules": []}))).clone();
        assert!(ours(&ing));
        ing.spec.as_mut().unwrap().ingress_class_name = Some("nginx".into());
        assert!(!ours(&ing));
        ing.spec.as_mut().unwrap().ingress_class_name = Some(CLASS.into());
        assert!(ours(&ing));
    }
}
