//! What cluster DNS needs of Services and EndpointSlices, pulled out of the
//! API objects once per watch event so that rebuilding a Service's records
//! does not walk the full objects again, and so that unchanged updates
//! (resyncs, status-only changes) can be skipped by comparing these.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The pre-EndpointSlice way of asking for unready endpoints in DNS; the
/// DNS specification still names it.
const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// (namespace, name) of an object.
pub(crate) type Key = (String, String);

/// How a Service is published in DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A virtual IP per family; empty while not yet allocated.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoints are published directly.
    Headless,
    /// A CNAME to this name.
    ExternalName(Name),
    /// Nothing can be published (a malformed external name).
    Unpublished,
}

/// A Service or EndpointSlice port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Port {
    /// Lower-case port name, empty when unnamed.
    pub name: String,
    /// Lower-case protocol: tcp, udp or sctp.
    pub proto: String,
    pub port: u16,
}

/// The DNS-relevant part of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceInfo {
    pub kind: Kind,
    pub ports: Vec<Port>,
    /// Unready endpoints are published too.
    pub publish_not_ready: bool,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointInfo {
    pub addresses: Vec<IpAddr>,
    /// Lower-case `hostname`, when set.
    pub hostname: Option<String>,
    pub ready: bool,
}

/// The DNS-relevant part of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceInfo {
    /// Name of the Service (same namespace) the slice belongs to.
    pub service: String,
    pub ports: Vec<Port>,
    pub endpoints: Vec<EndpointInfo>,
}

/// The key of any object, None when name or namespace is missing.
pub(crate) fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn port(name: Option<&String>, proto: Option<&String>, number: Option<i32>) -> Option<Port> {
    Some(Port {
        name: name.map(|n| n.to_ascii_lowercase()).unwrap_or_default(),
        proto: proto
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_else(|| "tcp".to_string()),
        port: u16::try_from(number?).ok()?,
    })
}

impl ServiceInfo {
    /// The DNS view of a Service.
    pub(crate) fn from_service(svc: &Service) -> Self {
        let default = ServiceSpec::default();
        let spec = svc.spec.as_ref().unwrap_or(&default);
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref().unwrap_or_default();
            match Name::from_ascii(target) {
                Ok(mut name) if !target.is_empty() => {
                    name.set_fqdn(true);
                    Kind::ExternalName(name)
                }
                _ => {
                    tracing::warn!(
                        namespace = svc.metadata.namespace.as_deref().unwrap_or_default(),
                        service = svc.metadata.name.as_deref().unwrap_or_default(),
                        external_name = target,
                        "ExternalName Service has no valid externalName; not published in DNS"
                    );
                    Kind::Unpublished
                }
            }
        } else {
            let ips = match spec.cluster_ips.as_deref() {
                Some(ips) if !ips.is_empty() => ips.to_vec(),
                _ => spec.cluster_ip.iter().cloned().collect(),
            };
            if ips.iter().any(|ip| ip == "None") {
                Kind::Headless
            } else {
                Kind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
            }
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| port(p.name.as_ref(), p.protocol.as_ref(), Some(p.port)))
            .collect();
        let annotated = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOLERATE_UNREADY))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Self {
            kind,
            ports,
            publish_not_ready: annotated || spec.publish_not_ready_addresses == Some(true),
        }
    }
}

impl SliceInfo {
    /// The DNS view of an EndpointSlice; None when it names no Service.
    pub(crate) fn from_slice(slice: &EndpointSlice) -> Option<Self> {
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| port(p.name.as_ref(), p.protocol.as_ref(), p.port))
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .map(|ep| EndpointInfo {
                // FQDN-type slices have no addresses DNS can publish: they parse to nothing.
                addresses: ep.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                hostname: ep.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                // The spec: a missing condition means ready.
                ready: ep.conditions.as_ref().and_then(|c| c.ready) != Some(false),
            })
            .collect();
        Some(Self {
            service,
            ports,
            endpoints,
        })
    }
}
