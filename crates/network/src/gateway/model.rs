//! From the cluster's Gateway API objects to what r8s serves and reports,
//! pure: the routing table per port ([`table`](super::table)) and the
//! status of every GatewayClass, Gateway and route r8s handles, with the
//! conditions and reasons the specification defines (Accepted,
//! Programmed, ResolvedRefs, Conflicted). Conditions carry no
//! `lastTransitionTime`: the writer keeps the stored one when a condition
//! did not change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::convert::{self, Compiled, RouteKind};
use super::table::{Host, PortTable, RouteRule, Table};
use super::types::*;
use crate::ingress::routes::{Cert, Services};

/// The controller name GatewayClasses name to be handled by r8s.
pub const CONTROLLER: &str = "r8s.io/gateway-controller";

/// Everything the model reads.
pub struct World<'a> {
    /// GatewayClasses.
    pub classes: &'a [Arc<GatewayClass>],
    /// Gateways.
    pub gateways: &'a [Arc<Gateway>],
    /// HTTPRoutes.
    pub http_routes: &'a [Arc<HTTPRoute>],
    /// GRPCRoutes.
    pub grpc_routes: &'a [Arc<GRPCRoute>],
    /// ReferenceGrants.
    pub grants: &'a [Arc<ReferenceGrant>],
    /// Namespaces (labels for `allowedRoutes` selectors).
    pub namespaces: &'a [Arc<Namespace>],
    /// Services.
    pub services: &'a [Arc<Service>],
    /// EndpointSlices.
    pub slices: &'a [Arc<EndpointSlice>],
    /// Secrets (listener certificates).
    pub secrets: &'a [Arc<Secret>],
    /// The address Gateways report.
    pub address: &'a str,
    /// Ports that cannot be served, with why (bind failures, or held by
    /// the ingress listener with the other protocol).
    pub unavailable: &'a HashMap<u16, String>,
    /// Ports whose protocol is fixed (the Ingress listeners: port -> TLS).
    pub fixed: BTreeMap<u16, bool>,
}

/// A status to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Kind (GatewayClass, Gateway, HTTPRoute, GRPCRoute).
    pub kind: &'static str,
    /// Namespace (None for classes).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The whole new status.
    pub status: Value,
}

/// What the model decided.
#[derive(Default)]
pub struct Outcome {
    /// The routing table.
    pub table: Table,
    /// Statuses to write.
    pub statuses: Vec<Status>,
}

/// A condition without its transition time.
pub fn cond(kind: &str, ok: bool, reason: &str, message: &str, generation: i64) -> Value {
    json!({"type": kind, "status": if ok {"True"} else {"False"}, "reason": reason,
        "message": message, "observedGeneration": generation})
}

/// Whether a ReferenceGrant in `to_ns` lets `from` (group, kind, ns) refer
/// to `to` (group, kind, name).
pub fn granted(
    grants: &[Arc<ReferenceGrant>],
    from: (&str, &str, &str),
    to_ns: &str,
    to: (&str, &str, &str),
) -> bool {
    grants
        .iter()
        .filter(|g| g.metadata.namespace.as_deref() == Some(to_ns))
        .any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == from.0 && f.kind == from.1 && f.namespace == from.2)
                && g.spec.to.iter().any(|t| {
                    t.group == to.0 && t.kind == to.1 && t.name.as_deref().is_none_or(|n| n == to.2)
                })
        })
}

fn created(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    m.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// A listener as evaluated.
struct ListenerState {
    name: String,
    port: u16,
    host: Host,
    /// Usable: routes may attach.
    usable: bool,
    kinds: Vec<&'static str>,
    from: String,
    selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    attached: i64,
    conditions: Vec<Value>,
    supported_kinds: Vec<Value>,
}

struct GatewayState {
    ns: String,
    name: String,
    generation: i64,
    listeners: Vec<ListenerState>,
    accepted: Option<(bool, String, String)>,
}

const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// Evaluates everything.
pub fn build(w: &World<'_>) -> Outcome {
    let mut out = Outcome::default();
    let ours: Vec<&Arc<GatewayClass>> = w
        .classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER)
        .collect();
    for c in &ours {
        let g = c.metadata.generation.unwrap_or(0);
        out.statuses.push(Status {
            kind: "GatewayClass",
            namespace: None,
            name: c.metadata.name.clone().unwrap_or_default(),
            status: json!({
                "conditions": [
                    cond("Accepted", true, "Accepted", "Handled by r8s", g),
                    cond("SupportedVersion", true, "SupportedVersion", "Gateway API v1.6", g),
                ],
                "supportedFeatures": convert::FEATURES.iter().map(|f| json!({"name": f})).collect::<Vec<_>>(),
            }),
        });
    }
    let class_ok = |name: &str| {
        ours.iter()
            .any(|c| c.metadata.name.as_deref() == Some(name))
    };
    let services = Services::new(w.services, w.slices);
    let ns_labels: HashMap<&str, BTreeMap<String, String>> = w
        .namespaces
        .iter()
        .map(|n| {
            (
                n.metadata.name.as_deref().unwrap_or(""),
                n.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect();

    // Gateways, oldest first: the first listener on a port decides its
    // protocol.
    let mut gws: Vec<&Arc<Gateway>> = w
        .gateways
        .iter()
        .filter(|g| class_ok(&g.spec.gateway_class_name))
        .collect();
    gws.sort_by_key(|g| {
        (
            created(&g.metadata),
            g.metadata.namespace.clone(),
            g.metadata.name.clone(),
        )
    });
    let mut port_tls: BTreeMap<u16, bool> = w.fixed.clone();
    let mut certs: BTreeMap<u16, BTreeMap<Host, Cert>> = BTreeMap::new();
    let mut states: Vec<GatewayState> = Vec::new();
    for gw in gws {
        states.push(gateway(w, gw, &mut port_tls, &mut certs));
    }

    // Routes: compile each once, attach to its parents' listeners.
    let mut rules: BTreeMap<u16, Vec<RouteRule>> = BTreeMap::new();
    let compiled: Vec<Compiled> = w
        .http_routes
        .iter()
        .map(|r| convert::http(r, &services, w.grants))
        .chain(
            w.grpc_routes
                .iter()
                .map(|r| convert::grpc(r, &services, w.grants)),
        )
        .collect();
    for route in &compiled {
        let mut parents = Vec::new();
        for pr in &route.parent_refs {
            let group = pr.group.as_deref().unwrap_or(GROUP);
            let kind = pr.kind.as_deref().unwrap_or("Gateway");
            let gw_ns = pr.namespace.as_deref().unwrap_or(&route.namespace);
            if group != GROUP || kind != "Gateway" {
                continue;
            }
            let Some(st) = states
                .iter_mut()
                .find(|s| s.ns == gw_ns && s.name == pr.name)
            else {
                continue;
            };
            let accepted = attach(route, pr, st, &ns_labels, &mut rules);
            let (ok, reason, msg) = match (&route.unsupported, accepted) {
                (Some(m), _) => (false, "UnsupportedValue".to_string(), m.clone()),
                (None, Err((r, m))) => (false, r.to_string(), m),
                (None, Ok(())) => (true, "Accepted".into(), "Route is accepted".into()),
            };
            let (rok, rreason, rmsg) = match &route.resolved {
                Ok(()) => (true, "ResolvedRefs", "All references resolved".to_string()),
                Err((r, m)) => (false, *r, m.clone()),
            };
            parents.push(json!({
                "parentRef": pr,
                "controllerName": CONTROLLER,
                "conditions": [
                    cond("Accepted", ok, &reason, &msg, route.generation),
                    cond("ResolvedRefs", rok, rreason, &rmsg, route.generation),
                ],
            }));
        }
        if !parents.is_empty() {
            out.statuses.push(Status {
                kind: route.kind.name(),
                namespace: Some(route.namespace.clone()),
                name: route.name.clone(),
                status: json!({"parents": parents}),
            });
        }
    }

    for st in states {
        let mut programmed_any = false;
        let listeners: Vec<Value> = st
            .listeners
            .into_iter()
            .map(|l| {
                programmed_any |= l.usable;
                json!({
                    "name": l.name,
                    "supportedKinds": l.supported_kinds,
                    "attachedRoutes": l.attached,
                    "conditions": l.conditions,
                })
            })
            .collect();
        let g = st.generation;
        let (aok, areason, amsg) = st.accepted.unwrap_or(if programmed_any {
            (true, "Accepted".into(), "Gateway is accepted".into())
        } else {
            (
                false,
                "ListenersNotValid".into(),
                "No listener is valid".into(),
            )
        });
        let addr_type = if w.address.parse::<std::net::IpAddr>().is_ok() {
            "IPAddress"
        } else {
            "Hostname"
        };
        out.statuses.push(Status {
            kind: "Gateway",
            namespace: Some(st.ns),
            name: st.name,
            status: json!({
                "addresses": [{"type": addr_type, "value": w.address}],
                "conditions": [
                    cond("Accepted", aok, &areason, &amsg, g),
                    if aok && programmed_any {
                        cond("Programmed", true, "Programmed", "Listening on the node", g)
                    } else {
                        cond("Programmed", false, "Invalid", "No listener is programmed", g)
                    },
                ],
                "listeners": listeners,
            }),
        });
    }

    for (port, tls) in port_tls {
        let r = rules.remove(&port).unwrap_or_default();
        let c = certs.remove(&port).unwrap_or_default();
        out.table.ports.insert(port, PortTable::new(tls, r, c));
    }
    out
}

/// Evaluates one Gateway's listeners (and claims their ports).
fn gateway(
    w: &World<'_>,
    gw: &Gateway,
    port_tls: &mut BTreeMap<u16, bool>,
    certs: &mut BTreeMap<u16, BTreeMap<Host, Cert>>,
) -> GatewayState {
    let ns = gw.metadata.namespace.clone().unwrap_or_default();
    let generation = gw.metadata.generation.unwrap_or(0);
    let accepted = (!gw.spec.addresses.is_empty()).then(|| {
        (
            false,
            "UnsupportedAddress".to_string(),
            "r8s serves Gateways on the node's own address; spec.addresses is not supported"
                .to_string(),
        )
    });
    let mut listeners = Vec::new();
    let mut seen: Vec<(u16, String, Host)> = Vec::new();
    for l in &gw.spec.listeners {
        let g = generation;
        let port = u16::try_from(l.port).unwrap_or(0);
        let host = Host::parse(l.hostname.as_deref());
        let tls = l.protocol == "HTTPS";
        let mut conds: Vec<Value> = Vec::new();
        let mut usable = true;
        // Kinds.
        let defaults: Vec<&'static str> = match l.protocol.as_str() {
            "HTTP" | "HTTPS" => ROUTE_KINDS.to_vec(),
            _ => Vec::new(),
        };
        let (mut kinds, mut bad_kind) = (defaults.clone(), false);
        if let Some(asked) = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
            kinds = Vec::new();
            for k in asked {
                let group_ok = k.group.as_deref().is_none_or(|g| g == GROUP);
                match defaults.iter().find(|d| **d == k.kind) {
                    Some(d) if group_ok => kinds.push(*d),
                    _ => bad_kind = true,
                }
            }
        }
        let supported_kinds: Vec<Value> = kinds
            .iter()
            .map(|k| json!({"group": GROUP, "kind": k}))
            .collect();
        // Protocol and port.
        let mut accepted_c = cond("Accepted", true, "Accepted", "Listener is accepted", g);
        let mut conflicted = cond("Conflicted", false, "NoConflicts", "No conflicts", g);
        if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") {
            usable = false;
            accepted_c = cond(
                "Accepted",
                false,
                "UnsupportedProtocol",
                &format!("protocol {} is not supported (HTTP, HTTPS)", l.protocol),
                g,
            );
        } else if tls
            && l.tls
                .as_ref()
                .and_then(|t| t.mode.as_deref())
                .unwrap_or("Terminate")
                != "Terminate"
        {
            usable = false;
            accepted_c = cond(
                "Accepted",
                false,
                "UnsupportedProtocol",
                "only TLS mode Terminate is supported",
                g,
            );
        } else if let Some(why) = w.unavailable.get(&port) {
            usable = false;
            accepted_c = cond("Accepted", false, "PortUnavailable", why, g);
        } else if port_tls.get(&port).is_some_and(|t| *t != tls) {
            usable = false;
            let why = format!("port {port} is already served with another protocol");
            accepted_c = cond("Accepted", false, "ProtocolConflict", &why, g);
            conflicted = cond("Conflicted", true, "ProtocolConflict", &why, g);
        } else if seen.iter().any(|(p, _, h)| *p == port && *h == host) {
            usable = false;
            let why = "another listener of this Gateway has the same port and hostname";
            accepted_c = cond("Accepted", false, "HostnameConflict", why, g);
            conflicted = cond("Conflicted", true, "HostnameConflict", why, g);
        }
        // References: route kinds, certificates.
        let mut resolved = cond(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references resolved",
            g,
        );
        if bad_kind {
            resolved = cond(
                "ResolvedRefs",
                false,
                "InvalidRouteKinds",
                "only HTTPRoute and GRPCRoute are supported",
                g,
            );
        }
        let mut listener_certs = Vec::new();
        if usable && tls {
            let refs = l
                .tls
                .as_ref()
                .map(|t| t.certificate_refs.clone())
                .unwrap_or_default();
            for r in &refs {
                match certificate(w, &ns, r) {
                    Ok(c) => listener_certs.push(c),
                    Err((reason, msg)) => {
                        resolved = cond("ResolvedRefs", false, reason, &msg, g);
                    }
                }
            }
            if listener_certs.is_empty() {
                usable = false;
                if refs.is_empty() {
                    resolved = cond(
                        "ResolvedRefs",
                        false,
                        "InvalidCertificateRef",
                        "an HTTPS listener needs tls.certificateRefs",
                        g,
                    );
                }
            }
        }
        if usable {
            port_tls.insert(port, tls);
            seen.push((port, l.name.clone(), host.clone()));
            if let Some(c) = listener_certs.into_iter().next() {
                certs
                    .entry(port)
                    .or_default()
                    .entry(host.clone())
                    .or_insert(c);
            }
        }
        let programmed = if usable {
            cond(
                "Programmed",
                true,
                "Programmed",
                "Listener is programmed",
                g,
            )
        } else {
            cond(
                "Programmed",
                false,
                "Invalid",
                "Listener is not programmed",
                g,
            )
        };
        let ns_cfg = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        conds.extend([accepted_c, programmed, resolved, conflicted]);
        listeners.push(ListenerState {
            name: l.name.clone(),
            port,
            host,
            usable,
            kinds,
            from: ns_cfg
                .and_then(|n| n.from.clone())
                .unwrap_or_else(|| "Same".into()),
            selector: ns_cfg.and_then(|n| n.selector.clone()),
            attached: 0,
            conditions: conds,
            supported_kinds,
        });
    }
    GatewayState {
        ns,
        name: gw.metadata.name.clone().unwrap_or_default(),
        generation,
        listeners,
        accepted,
    }
}

fn certificate(w: &World<'_>, gw_ns: &str, r: &ObjectRef) -> Result<Cert, (&'static str, String)> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!("certificateRefs: {kind}.{group} is not a Secret"),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(gw_ns);
    if ns != gw_ns
        && !granted(
            w.grants,
            (GROUP, "Gateway", gw_ns),
            ns,
            ("", "Secret", &r.name),
        )
    {
        return Err((
            "RefNotPermitted",
            format!(
                "Secret {ns}/{} is in another namespace and no ReferenceGrant allows it",
                r.name
            ),
        ));
    }
    let secret = w
        .secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata.name.as_deref() == Some(r.name.as_str())
        })
        .ok_or_else(|| {
            (
                "InvalidCertificateRef",
                format!("Secret {ns}/{} not found", r.name),
            )
        })?;
    let get = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let (Some(cert_pem), Some(key_pem)) = (get("tls.crt"), get("tls.key")) else {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {ns}/{} has no tls.crt and tls.key", r.name),
        ));
    };
    if crate::ingress::proxy::certified(&cert_pem, &key_pem).is_none() {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {ns}/{} holds no usable certificate and key", r.name),
        ));
    }
    Ok(Cert { cert_pem, key_pem })
}

/// Attaches `route` through `pr` to the Gateway's listeners; Err is the
/// Accepted reason and message when no listener takes it.
fn attach(
    route: &Compiled,
    pr: &ParentRef,
    gw: &mut GatewayState,
    ns_labels: &HashMap<&str, BTreeMap<String, String>>,
    rules: &mut BTreeMap<u16, Vec<RouteRule>>,
) -> Result<(), (&'static str, String)> {
    let candidates: Vec<usize> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            pr.section_name.as_deref().is_none_or(|s| s == l.name)
                && pr.port.is_none_or(|p| p == i32::from(l.port))
        })
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return Err((
            "NoMatchingParent",
            "no listener of the Gateway matches sectionName/port".into(),
        ));
    }
    let allowed: Vec<usize> = candidates
        .into_iter()
        .filter(|i| {
            let l = &gw.listeners[*i];
            l.usable
                && l.kinds.contains(&route.kind.name())
                && match l.from.as_str() {
                    "All" => true,
                    "Selector" => l.selector.as_ref().is_some_and(|s| {
                        ns_labels
                            .get(route.namespace.as_str())
                            .is_some_and(|labels| controller_runtime::selector_matches(s, labels))
                    }),
                    _ => route.namespace == gw.ns,
                }
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            "no listener allows this route (kind, namespace, or not programmed)".into(),
        ));
    }
    let hosts: Vec<Host> = if route.hostnames.is_empty() {
        vec![Host::Any]
    } else {
        route
            .hostnames
            .iter()
            .map(|h| Host::parse(Some(h)))
            .collect()
    };
    let mut any = false;
    for i in allowed {
        let l = &mut gw.listeners[i];
        let meets: Vec<Host> = hosts.iter().filter_map(|h| l.host.intersect(h)).collect();
        if meets.is_empty() {
            continue;
        }
        any = true;
        l.attached += 1;
        let port = l.port;
        for h in meets {
            for (ri, rule) in route.rules.iter().enumerate() {
                for (mi, m) in rule.matchers.iter().enumerate() {
                    rules.entry(port).or_default().push(RouteRule {
                        host: h.clone(),
                        matcher: m.clone(),
                        action: rule.action.clone(),
                        created: route.created,
                        route: format!("{}/{}", route.namespace, route.name),
                        rule: ri,
                        index: mi,
                    });
                }
            }
        }
    }
    if any {
        Ok(())
    } else {
        Err((
            "NoMatchingListenerHostname",
            "no listener hostname matches the route's hostnames".into(),
        ))
    }
}

impl RouteKind {
    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
