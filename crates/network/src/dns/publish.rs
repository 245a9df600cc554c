//! Which records a Service publishes (the Kubernetes DNS specification's
//! sections 2.3 to 2.5), as plain records for the index in `records`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record};

use super::objects::{Key, Kind, Port, ServiceInfo, SliceInfo};
use super::records::CLUSTER_TTL;
use crate::NetworkError;

/// A fully qualified, lower-case name: the index's key form.
pub(crate) fn fqdn(text: &str) -> Result<Name, NetworkError> {
    let mut name = Name::from_ascii(text)
        .map_err(|e| NetworkError::Config(format!("invalid DNS name {text:?}: {e}")))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// A cluster record, with the cluster TTL.
pub(crate) fn record(name: &Name, data: RData) -> Record {
    Record::from_rdata(name.clone(), CLUSTER_TTL, data)
}

/// The A or AAAA record of `ip`.
pub(crate) fn address(name: &Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(ip) => record(name, RData::A(A(ip))),
        IpAddr::V6(ip) => record(name, RData::AAAA(AAAA(ip))),
    }
}

/// The SOA record of `zone`, sent with negative answers.
pub(crate) fn soa(zone: &Name, domain: &Name) -> Result<Arc<Record>, NetworkError> {
    // CoreDNS's values; the serial only has to be stable, nobody transfers this zone.
    let data = SOA::new(
        fqdn(&format!("ns.dns.{domain}"))?,
        fqdn(&format!("hostmaster.{domain}"))?,
        1,
        7200,
        1800,
        86400,
        CLUSTER_TTL,
    );
    Ok(Arc::new(record(zone, RData::SOA(data))))
}

/// The generated hostname of an endpoint without one: its address with dashes, as CoreDNS.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// `<prefix>.<name>` as a fully qualified name.
pub(crate) fn fqdn_under(prefix: &str, name: &Name) -> Option<Name> {
    fqdn(&format!("{prefix}.{name}")).ok()
}

/// All records the Service `key` publishes in `domain`, given its EndpointSlices.
pub(crate) fn service_records<'a>(
    domain: &Name,
    key: &Key,
    svc: &ServiceInfo,
    slices: impl Iterator<Item = &'a SliceInfo>,
) -> Vec<Record> {
    let (ns, name) = key;
    let Ok(fqdn) = fqdn(&format!("{name}.{ns}.svc.{domain}")) else {
        tracing::warn!(namespace = %ns, service = %name, "Service name is not a DNS name");
        return Vec::new();
    };
    let mut out = Vec::new();
    match &svc.kind {
        Kind::Unpublished => {}
        Kind::ExternalName(target) => {
            out.push(record(&fqdn, RData::CNAME(CNAME(target.clone()))));
        }
        Kind::ClusterIp(ips) => {
            for ip in ips {
                out.push(address(&fqdn, *ip));
                out.push(record(&Name::from(*ip), RData::PTR(PTR(fqdn.clone()))));
            }
            if !ips.is_empty() {
                for port in &svc.ports {
                    push_srv(&mut out, &fqdn, port, &fqdn);
                }
            }
        }
        Kind::Headless => {
            // Sets: several slices may list one endpoint while the controller rebalances.
            let mut addresses = BTreeSet::new();
            let mut srvs = BTreeSet::new();
            for slice in slices {
                for ep in &slice.endpoints {
                    if !(ep.ready || svc.publish_not_ready) {
                        continue;
                    }
                    for ip in &ep.addresses {
                        let host = ep.hostname.clone().unwrap_or_else(|| dashed(*ip));
                        addresses.insert((*ip, host.clone()));
                        for port in &slice.ports {
                            srvs.insert((
                                port.name.clone(),
                                port.proto.clone(),
                                port.port,
                                host.clone(),
                            ));
                        }
                    }
                }
            }
            let host_name = |host: &str| fqdn_under(host, &fqdn);
            for (ip, host) in &addresses {
                out.push(address(&fqdn, *ip));
                if let Some(host) = host_name(host) {
                    out.push(address(&host, *ip));
                    out.push(record(&Name::from(*ip), RData::PTR(PTR(host))));
                }
            }
            for (port_name, proto, port, host) in srvs {
                if let Some(target) = host_name(&host) {
                    let port = Port {
                        name: port_name,
                        proto,
                        port,
                    };
                    push_srv(&mut out, &fqdn, &port, &target);
                }
            }
        }
    }
    out
}

/// The SRV records of one port: at the Service name (a CoreDNS extension) and,
/// for named ports, at `_<port>._<proto>.<service>`.
fn push_srv(out: &mut Vec<Record>, fqdn: &Name, port: &Port, target: &Name) {
    let data = RData::SRV(SRV::new(0, 100, port.port, target.clone()));
    out.push(record(fqdn, data.clone()));
    if port.name.is_empty() {
        return;
    }
    match fqdn_under(&format!("_{}._{}", port.name, port.proto), fqdn) {
        Some(owner) => out.push(record(&owner, data)),
        None => {
            tracing::warn!(port = %port.name, service = %fqdn, "port name is not a DNS label")
        }
    }
}
