//! What the proxy must do for one Service, decided from the Service and its
//! EndpointSlices alone: pure, so every rule of upstream's endpoint choice
//! is unit-tested without a kernel.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Pod (or hand-made) address.
    pub ip: Ipv4Addr,
    /// Target port.
    pub port: u16,
    /// Whether it runs on this node.
    pub local: bool,
}

/// Everything the proxy programs for one port of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// `namespace/name/port-name/proto`: unique, stable, readable.
    pub key: String,
    /// The Service's `namespace/name`.
    pub service: String,
    /// `tcp`, `udp` or `sctp`.
    pub proto: &'static str,
    /// The Service port.
    pub port: u16,
    /// Cluster IPs (IPv4).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// External IPs and load-balancer ingress IPs: reached from outside.
    pub external_ips: Vec<Ipv4Addr>,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// Endpoints that cluster traffic goes to (ready ones, or serving
    /// terminating ones when none is ready), sorted.
    pub endpoints: Vec<Endpoint>,
    /// `internalTrafficPolicy: Local`: cluster IP traffic only to endpoints
    /// on this node.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: outside traffic only to endpoints on
    /// this node, keeping the client's address.
    pub external_local: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_seconds: Option<u32>,
}

impl PortRules {
    /// Endpoints for cluster IP traffic.
    pub fn internal_endpoints(&self) -> Vec<&Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| !self.internal_local || e.local)
            .collect()
    }

    /// Endpoints for traffic from outside (node ports, external IPs).
    pub fn external_endpoints(&self) -> Vec<&Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| !self.external_local || e.local)
            .collect()
    }
}

/// Upstream's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// The service port rules of `svc` given its slices, seen from `node`.
/// Services without cluster IPs (headless, ExternalName) get none: only DNS
/// serves them.
pub fn service_rules(svc: &Service, slices: &[&EndpointSlice], node: &str) -> Vec<PortRules> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let mut cluster_ips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    cluster_ips.sort();
    cluster_ips.dedup();
    if cluster_ips.is_empty() {
        return Vec::new(); // headless, or not allocated yet
    }
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if ty == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        external_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    external_ips.sort();
    external_ips.dedup();
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local")
        && (ty == "NodePort" || ty == "LoadBalancer");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let proto = match p.protocol.as_deref().unwrap_or("TCP") {
            "UDP" => "udp",
            "SCTP" => "sctp",
            _ => "tcp",
        };
        let pname = p.name.clone().unwrap_or_default();
        let node_port = if ty == "NodePort" || ty == "LoadBalancer" {
            p.node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
        } else {
            None
        };
        out.push(PortRules {
            key: format!("{ns}/{name}/{pname}/{proto}"),
            service: format!("{ns}/{name}"),
            proto,
            port,
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            node_port,
            endpoints: endpoints_for(slices, &pname, proto, node),
            internal_local,
            external_local,
            affinity_seconds,
        });
    }
    out
}

/// The endpoints of the port named `pname`: the ready ones; when none is
/// ready, the serving-and-terminating ones (upstream's
/// ProxyTerminatingEndpoints), so a rolling update never drops traffic.
fn endpoints_for(slices: &[&EndpointSlice], pname: &str, proto: &str, node: &str) -> Vec<Endpoint> {
    let mut ready = BTreeSet::new();
    let mut fallback = BTreeSet::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(port) = s.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or("") == pname;
            let same_proto = p
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .eq_ignore_ascii_case(proto);
            (same_name && same_proto)
                .then_some(p.port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for e in &s.endpoints {
            let c = e.conditions.as_ref();
            // Unset conditions mean ready and serving, as upstream reads them.
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = e.node_name.as_deref() == Some(node);
            for a in &e.addresses {
                let Ok(ip) = a.parse::<Ipv4Addr>() else {
                    continue;
                };
                let ep = Endpoint { ip, port, local };
                if is_ready {
                    ready.insert(ep);
                } else if serving && terminating {
                    fallback.insert(ep);
                }
            }
        }
    }
    if ready.is_empty() {
        fallback.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn slice(ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_per_named_port_and_protocol() {
        let s = svc(
            json!({"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"], "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]}),
        );
        let sl = slice(
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([
                {"addresses": ["10.42.0.2"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.42.0.3"], "conditions": {"ready": false, "serving": false}},
                {"addresses": ["10.42.0.4"]},
            ]),
        );
        let rules = service_rules(&s, &[&sl], "n1");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].key, "shop/web/http/tcp");
        assert_eq!(rules[0].port, 80);
        let eps: Vec<_> = rules[0]
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.port, e.local))
            .collect();
        assert_eq!(
            eps,
            vec![
                ("10.42.0.2".into(), 8080, true),
                ("10.42.0.4".into(), 8080, false)
            ]
        );
        assert_eq!(rules[1].proto, "udp");
        assert_eq!(rules[1].endpoints[0].port, 5353);
        assert_eq!(rules[1].node_port, None);
    }

    #[test]
    fn terminating_serving_endpoints_only_when_none_is_ready() {
        let s = svc(json!({"clusterIP": "10.43.0.5", "ports": [{"port": 80}]}));
        let only_terminating = slice(
            json!([{"port": 8080}]),
            json!([
                {"addresses": ["10.42.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.3"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            ]),
        );
        let r = service_rules(&s, &[&only_terminating], "n1");
        assert_eq!(r[0].endpoints.len(), 1);
        assert_eq!(r[0].endpoints[0].ip.to_string(), "10.42.0.2");
        let with_ready = slice(
            json!([{"port": 8080}]),
            json!([
                {"addresses": ["10.42.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.9"], "conditions": {"ready": true}},
            ]),
        );
        let r = service_rules(&s, &[&with_ready], "n1");
        assert_eq!(r[0].endpoints.len(), 1);
        assert_eq!(r[0].endpoints[0].ip.to_string(), "10.42.0.9");
    }

    #[test]
    fn headless_and_external_name_get_no_rules() {
        assert!(
            service_rules(
                &svc(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
                &[],
                "n"
            )
            .is_empty()
        );
        assert!(
            service_rules(
                &svc(json!({"type": "ExternalName", "externalName": "x.example"})),
                &[],
                "n"
            )
            .is_empty()
        );
    }

    #[test]
    fn node_ports_external_ips_policies_and_affinity() {
        let mut s = svc(json!({
            "type": "LoadBalancer", "clusterIP": "10.43.0.5",
            "externalIPs": ["192.168.50.1"],
            "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
            "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "ports": [{"port": 80, "nodePort": 30080}],
        }));
        s.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.168.50.9"}]}}))
                .unwrap(),
        );
        let sl = slice(
            json!([{"port": 8080}]),
            json!([
                {"addresses": ["10.42.0.2"], "nodeName": "n1"},
                {"addresses": ["10.42.1.2"], "nodeName": "n2"},
            ]),
        );
        let r = &service_rules(&s, &[&sl], "n1")[0];
        assert_eq!(r.node_port, Some(30080));
        assert_eq!(r.external_ips.len(), 2);
        assert_eq!(r.affinity_seconds, Some(60));
        assert_eq!(r.internal_endpoints().len(), 1);
        assert_eq!(r.external_endpoints().len(), 1);
        assert!(r.external_endpoints()[0].local);
        // ClusterIP services ignore externalTrafficPolicy and node ports.
        let c = svc(
            json!({"clusterIP": "10.43.0.5", "externalTrafficPolicy": "Local",
            "sessionAffinity": "ClientIP", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let r = &service_rules(&c, &[&sl], "n1")[0];
        assert_eq!(r.node_port, None);
        assert_eq!(r.external_endpoints().len(), 2);
        assert_eq!(r.affinity_seconds, Some(10_800));
    }
}
