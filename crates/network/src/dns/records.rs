//! The cluster's DNS records (the Kubernetes DNS-based service discovery
//! specification, https://github.com/kubernetes/dns/blob/master/docs/specification.md)
//! as an in-memory index fed by Service and EndpointSlice events.
//!
//! Every event rebuilds the records of the one Service it concerns; queries
//! then cost one hash lookup of the query name and an `Arc` clone of a
//! prebuilt answer, so the answering path never walks Services or copies maps.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::objects::{Key, Kind, ServiceInfo, SliceInfo, key_of};
use super::publish::{address, fqdn, record, service_records, soa};
use crate::NetworkError;

/// TTL of cluster records: CoreDNS's kubernetes plugin default, short so
/// that clients notice endpoint changes quickly.
pub const CLUSTER_TTL: u32 = 5;
/// The schema version published at `dns-version.<domain>`.
const SCHEMA_VERSION: &str = "1.0.1";
/// Owner of the records that exist regardless of Services (SOA, version);
/// no namespace is empty, so it cannot collide with a Service.
const STATIC_OWNER: (&str, &str) = ("", "");

/// The records answering one query.
#[derive(Debug, Default, PartialEq)]
pub struct RecordSet {
    /// The answer section.
    pub answers: Vec<Record>,
    /// The additional section (the addresses of SRV targets).
    pub additionals: Vec<Record>,
}

/// What the cluster DNS says about a name and type.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The name has records of that type (or a CNAME).
    Records(Arc<RecordSet>),
    /// The name exists without records of that type: NOERROR with this SOA in the authority section.
    NoData(Arc<Record>),
    /// The name does not exist: NXDOMAIN with this SOA in the authority section.
    NxDomain(Arc<Record>),
    /// Not a cluster name: ask the upstream resolvers.
    NotOurs,
    /// A cluster name, but Services and EndpointSlices are not listed yet: SERVFAIL rather than a wrong NXDOMAIN.
    NotReady,
}

/// Most CNAMEs one answer follows through the cluster records (CoreDNS's limit).
pub const MAX_CNAME_HOPS: usize = 8;

/// A cluster answer with its CNAMEs (ExternalName Services) followed through
/// the cluster records, as CoreDNS's kubernetes plugin answers them: stub
/// resolvers (glibc, musl) do not chase a CNAME-only answer themselves.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The CNAME records followed, in order, each owned by the previous one's
    /// target; empty when the query name has no CNAME or the query asks for CNAMEs.
    pub chain: Vec<Record>,
    /// Where the chain ends: the query name when `chain` is empty, else the last CNAME's target.
    pub target: Name,
    /// What the cluster says about `target` for the query type: [`Answer::NotOurs`]
    /// when it lies outside the cluster (to be asked upstream). A chain that loops or
    /// exceeds [`MAX_CNAME_HOPS`] ends as [`Answer::NoData`], with the CNAMEs so far.
    pub answer: Answer,
}

/// One name of the index.
#[derive(Debug, Default)]
struct Node {
    /// Records per owning Service, kept apart so one Service's update replaces only its share
    /// (reverse names and empty non-terminals are shared).
    owned: Vec<(Key, Vec<Record>)>,
    /// Owned names strictly below this one: keeps an empty non-terminal answering NODATA, not NXDOMAIN.
    below: usize,
    /// The merged answers per type, rebuilt whenever `owned` changes.
    sets: Vec<(RecordType, Arc<RecordSet>)>,
}

impl Node {
    fn set(&self, rtype: RecordType) -> Option<&Arc<RecordSet>> {
        self.sets.iter().find(|(t, _)| *t == rtype).map(|(_, s)| s)
    }
}

/// The cluster DNS records, indexed by lower-case name.
#[derive(Debug)]
pub struct Records {
    domain: Name,
    pod_zone: Name,
    in_addr: Name,
    ip6: Name,
    soa: Arc<Record>,
    soa_v4: Arc<Record>,
    soa_v6: Arc<Record>,
    services: HashMap<Key, ServiceInfo>,
    slices: HashMap<Key, SliceInfo>,
    /// Service key to the names of its EndpointSlices.
    slices_of: HashMap<Key, BTreeSet<String>>,
    nodes: HashMap<Name, Node>,
    /// Owner to the names it has records at.
    owned_names: HashMap<Key, Vec<Name>>,
    services_synced: bool,
    slices_synced: bool,
}

impl Records {
    /// An empty cache for cluster domain `domain` ("cluster.local"), answering as fully listed.
    pub fn new(domain: &str) -> Result<Self, NetworkError> {
        let domain = fqdn(domain.trim_end_matches('.'))?;
        if domain.is_root() {
            return Err(NetworkError::Config(
                "the cluster domain is empty".to_string(),
            ));
        }
        let in_addr = fqdn("in-addr.arpa.")?;
        let ip6 = fqdn("ip6.arpa.")?;
        let mut records = Self {
            pod_zone: fqdn(&format!("pod.{domain}"))?,
            soa: soa(&domain, &domain)?,
            soa_v4: soa(&in_addr, &domain)?,
            soa_v6: soa(&ip6, &domain)?,
            in_addr,
            ip6,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            nodes: HashMap::new(),
            owned_names: HashMap::new(),
            services_synced: true,
            slices_synced: true,
            domain,
        };
        let version = record(
            &fqdn(&format!("dns-version.{}", records.domain))?,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        );
        let owner = (STATIC_OWNER.0.to_string(), STATIC_OWNER.1.to_string());
        let statics = [
            (records.domain.clone(), vec![(*records.soa).clone()]),
            (version.name.clone(), vec![version]),
            (fqdn(&format!("svc.{}", records.domain))?, Vec::new()),
            (records.pod_zone.clone(), Vec::new()),
        ];
        for (name, recs) in statics {
            records.add_owned(&owner, name, recs, &mut HashSet::new());
        }
        let touched = records.nodes.keys().cloned().collect();
        records.rebuild(touched);
        Ok(records)
    }

    /// Marks both lists as pending: cluster names answer SERVFAIL until
    /// [`Records::replace_services`] and [`Records::replace_slices`] ran once.
    pub fn unsynced(mut self) -> Self {
        self.services_synced = false;
        self.slices_synced = false;
        self
    }

    /// The cluster domain, lower case and fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// Adds or updates a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        let Some(key) = key_of(&svc.metadata) else {
            return;
        };
        let info = ServiceInfo::from_service(svc);
        if self.services.get(&key) != Some(&info) {
            self.services.insert(key.clone(), info);
            self.reindex(&key);
        }
    }

    /// Removes a Service and its records.
    pub fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = key_of(&svc.metadata)
            && self.services.remove(&key).is_some()
        {
            self.reindex(&key);
        }
    }

    /// Replaces all Services with a fresh list (a watch (re)start), and marks Services as listed.
    pub fn replace_services(&mut self, services: &[Service]) {
        let new: HashMap<Key, ServiceInfo> = services
            .iter()
            .filter_map(|s| Some((key_of(&s.metadata)?, ServiceInfo::from_service(s))))
            .collect();
        let changed: BTreeSet<Key> = self
            .services
            .keys()
            .chain(new.keys())
            .filter(|k| self.services.get(*k) != new.get(*k))
            .cloned()
            .collect();
        self.services = new;
        for key in &changed {
            self.reindex(key);
        }
        self.services_synced = true;
    }

    /// Adds or updates an EndpointSlice.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = key_of(&slice.metadata) {
            let info = SliceInfo::from_slice(slice);
            for service in self.set_slice(key, info) {
                self.endpoints_changed(&service);
            }
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = key_of(&slice.metadata) {
            for service in self.set_slice(key, None) {
                self.endpoints_changed(&service);
            }
        }
    }

    /// Replaces all EndpointSlices with a fresh list (a watch (re)start), and marks them as listed.
    pub fn replace_slices(&mut self, slices: &[EndpointSlice]) {
        let new: HashMap<Key, SliceInfo> = slices
            .iter()
            .filter_map(|s| Some((key_of(&s.metadata)?, SliceInfo::from_slice(s)?)))
            .collect();
        let keys: BTreeSet<Key> = self.slices.keys().chain(new.keys()).cloned().collect();
        let mut affected = BTreeSet::new();
        for key in keys {
            let info = new.get(&key).cloned();
            affected.extend(self.set_slice(key, info));
        }
        for service in &affected {
            self.endpoints_changed(service);
        }
        self.slices_synced = true;
    }

    /// Stores (or with None removes) a slice; returns the Services whose endpoints changed.
    fn set_slice(&mut self, key: Key, info: Option<SliceInfo>) -> Vec<Key> {
        if self.slices.get(&key) == info.as_ref() {
            return Vec::new();
        }
        let (ns, name) = key.clone();
        let mut affected = Vec::new();
        let old = match info {
            Some(info) => {
                let service = (ns.clone(), info.service.clone());
                self.slices_of
                    .entry(service.clone())
                    .or_default()
                    .insert(name.clone());
                affected.push(service);
                self.slices.insert(key, info)
            }
            None => self.slices.remove(&key),
        };
        if let Some(old) = old {
            let service = (ns, old.service);
            if !affected.contains(&service) {
                // The slice left this Service (deleted or relabelled).
                if let Some(names) = self.slices_of.get_mut(&service) {
                    names.remove(&name);
                    if names.is_empty() {
                        self.slices_of.remove(&service);
                    }
                }
                affected.push(service);
            }
        }
        affected
    }

    /// Endpoints only publish records for headless Services: skip the rebuild for all others.
    fn endpoints_changed(&mut self, service: &Key) {
        if matches!(
            self.services.get(service).map(|s| &s.kind),
            Some(Kind::Headless)
        ) {
            self.reindex(service);
        }
    }

    /// All records a Service publishes, from its current info and slices.
    fn service_records(&self, key: &Key) -> Vec<Record> {
        let Some(svc) = self.services.get(key) else {
            return Vec::new();
        };
        let slices = self.slices_of.get(key).into_iter().flatten();
        let slices = slices.filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())));
        service_records(&self.domain, key, svc, slices)
    }

    /// Replaces the records of `owner` in the index with freshly generated ones.
    fn reindex(&mut self, owner: &Key) {
        let records = self.service_records(owner);
        let mut touched = HashSet::new();
        for name in self.owned_names.remove(owner).unwrap_or_default() {
            if let Some(node) = self.nodes.get_mut(&name) {
                node.owned.retain(|(k, _)| k != owner);
            }
            for ancestor in self.ancestors(&name) {
                if let Some(node) = self.nodes.get_mut(&ancestor) {
                    node.below = node.below.saturating_sub(1);
                }
                touched.insert(ancestor);
            }
            touched.insert(name);
        }
        let mut by_name: HashMap<Name, Vec<Record>> = HashMap::new();
        for rec in records {
            by_name.entry(rec.name.clone()).or_default().push(rec);
        }
        for (name, recs) in by_name {
            self.add_owned(owner, name, recs, &mut touched);
        }
        self.rebuild(touched);
    }

    fn add_owned(
        &mut self,
        owner: &Key,
        name: Name,
        recs: Vec<Record>,
        touched: &mut HashSet<Name>,
    ) {
        for ancestor in self.ancestors(&name) {
            self.nodes.entry(ancestor.clone()).or_default().below += 1;
            touched.insert(ancestor);
        }
        self.nodes
            .entry(name.clone())
            .or_default()
            .owned
            .push((owner.clone(), recs));
        self.owned_names
            .entry(owner.clone())
            .or_default()
            .push(name.clone());
        touched.insert(name);
    }

    /// Names strictly above `name` up to the cluster domain; none for reverse names, whose
    /// unknown names go upstream rather than answering NODATA.
    fn ancestors(&self, name: &Name) -> Vec<Name> {
        let mut out = Vec::new();
        if !self.domain.zone_of(name) {
            return out;
        }
        let mut current = name.base_name();
        while current.num_labels() >= self.domain.num_labels() {
            let next = current.base_name();
            out.push(current);
            current = next;
        }
        out
    }

    /// Recomputes the answers of `touched` names, dropping names that no longer exist.
    fn rebuild(&mut self, touched: HashSet<Name>) {
        let mut with_srv = Vec::new();
        for name in touched {
            let Some(node) = self.nodes.get_mut(&name) else {
                continue;
            };
            if node.owned.is_empty() && node.below == 0 {
                self.nodes.remove(&name);
                continue;
            }
            node.sets = merge(&node.owned);
            if node.set(RecordType::SRV).is_some() {
                with_srv.push(name);
            }
        }
        // Second pass: SRV additionals are the targets' addresses, which the first pass just rebuilt.
        for name in with_srv {
            let Some(srv) = self.nodes.get(&name).and_then(|n| n.set(RecordType::SRV)) else {
                continue;
            };
            let mut seen = HashSet::new();
            let mut additionals = Vec::new();
            for rec in &srv.answers {
                if let RData::SRV(data) = &rec.data
                    && seen.insert(data.target.clone())
                    && let Some(target) = self.nodes.get(&data.target)
                {
                    for rtype in [RecordType::A, RecordType::AAAA] {
                        if let Some(set) = target.set(rtype) {
                            additionals.extend(set.answers.iter().cloned());
                        }
                    }
                }
            }
            let answers = srv.answers.clone();
            if let Some(node) = self.nodes.get_mut(&name) {
                for (rtype, set) in &mut node.sets {
                    if *rtype == RecordType::SRV {
                        *set = Arc::new(RecordSet {
                            answers: answers.clone(),
                            additionals: additionals.clone(),
                        });
                    }
                }
            }
        }
    }

    /// Answers a query for `name` (any case, with or without the trailing dot) and `qtype`.
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Answer {
        let name = if name.is_fqdn() {
            Cow::Borrowed(name)
        } else {
            let mut name = name.clone();
            name.set_fqdn(true);
            Cow::Owned(name)
        };
        let (soa, reverse) = if self.domain.zone_of(&name) {
            if !(self.services_synced && self.slices_synced) {
                return Answer::NotReady;
            }
            (&self.soa, false)
        } else if self.in_addr.zone_of(&name) {
            (&self.soa_v4, true)
        } else if self.ip6.zone_of(&name) {
            (&self.soa_v6, true)
        } else {
            return Answer::NotOurs;
        };
        match self.nodes.get(name.as_ref()) {
            Some(node) => node_answer(node, qtype).unwrap_or_else(|| Answer::NoData(soa.clone())),
            None if reverse => Answer::NotOurs,
            None => self.pod_answer(&name, qtype),
        }
    }

    /// Answers a query as [`Records::lookup`], then follows a CNAME answer through
    /// the cluster records (for every query type but CNAME) until the chain reaches
    /// a name with records, a negative answer, a name outside the cluster, a loop,
    /// or [`MAX_CNAME_HOPS`] CNAMEs.
    pub fn resolve(&self, name: &Name, qtype: RecordType) -> Resolution {
        let mut target = name.clone();
        target.set_fqdn(true);
        let mut chain: Vec<Record> = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let answer = self.lookup(&target, qtype);
            let next = match &answer {
                Answer::Records(set) if qtype != RecordType::CNAME => cname_of(set),
                _ => None,
            };
            let Some((cname, next)) = next else {
                return Resolution {
                    chain,
                    target,
                    answer,
                };
            };
            if chain.len() >= MAX_CNAME_HOPS {
                tracing::debug!(name = %name, %target, "CNAME chain too long; not followed further");
                return self.cut(chain, target);
            }
            let next = next.clone();
            chain.push(cname.clone());
            seen.insert(target);
            target = next;
            // Name's Eq and Hash ignore case; CNAME targets are fully qualified.
            if seen.contains(&target) {
                tracing::debug!(name = %name, %target, "CNAME loop; not followed further");
                return self.cut(chain, target);
            }
        }
    }

    /// The end of a chain that is not followed further: NODATA, as CoreDNS answers.
    fn cut(&self, chain: Vec<Record>, target: Name) -> Resolution {
        Resolution {
            chain,
            target,
            answer: Answer::NoData(self.soa.clone()),
        }
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>`: answered from the name alone ("pods insecure").
    fn pod_answer(&self, name: &Name, qtype: RecordType) -> Answer {
        let nxdomain = Answer::NxDomain(self.soa.clone());
        if !self.pod_zone.zone_of(name) {
            return nxdomain;
        }
        // iter() rather than num_labels(), which does not count a wildcard label.
        let depth = name.iter().count() - self.pod_zone.iter().count();
        if depth == 1 {
            // `<ns>.pod.<domain>`: an empty non-terminal for every namespace.
            return Answer::NoData(self.soa.clone());
        }
        let Some(label) = name.iter().next().filter(|_| depth == 2) else {
            return nxdomain;
        };
        let Ok(label) = std::str::from_utf8(label) else {
            return nxdomain;
        };
        let ip = match label.replace('-', ".").parse::<Ipv4Addr>() {
            Ok(ip) => IpAddr::V4(ip),
            Err(_) => match label.replace('-', ":").parse::<Ipv6Addr>() {
                Ok(ip) => IpAddr::V6(ip),
                Err(_) => return nxdomain,
            },
        };
        let rec = address(name, ip);
        if qtype == rec.record_type() || qtype == RecordType::ANY {
            Answer::Records(Arc::new(RecordSet {
                answers: vec![rec],
                additionals: Vec::new(),
            }))
        } else {
            Answer::NoData(self.soa.clone())
        }
    }
}

/// The CNAME record of a CNAME answer and its target.
fn cname_of(set: &RecordSet) -> Option<(&Record, &Name)> {
    let rec = set.answers.first()?;
    match &rec.data {
        RData::CNAME(cname) => Some((rec, &cname.0)),
        _ => None,
    }
}

/// The answer of an existing name, None for NODATA.
fn node_answer(node: &Node, qtype: RecordType) -> Option<Answer> {
    // A CNAME answers every type (the name has no other records).
    if let Some(set) = node.set(RecordType::CNAME).or_else(|| node.set(qtype)) {
        return Some(Answer::Records(set.clone()));
    }
    if qtype == RecordType::ANY && !node.sets.is_empty() {
        let answers = node
            .sets
            .iter()
            .flat_map(|(_, s)| s.answers.iter().cloned())
            .collect();
        return Some(Answer::Records(Arc::new(RecordSet {
            answers,
            additionals: Vec::new(),
        })));
    }
    None
}

/// Merges the owners' records of one name into one deduplicated set per type.
fn merge(owned: &[(Key, Vec<Record>)]) -> Vec<(RecordType, Arc<RecordSet>)> {
    let mut sets: Vec<(RecordType, Vec<Record>)> = Vec::new();
    let mut seen: HashSet<(RecordType, &RData)> = HashSet::new();
    for rec in owned.iter().flat_map(|(_, recs)| recs) {
        let rtype = rec.record_type();
        if !seen.insert((rtype, &rec.data)) {
            continue;
        }
        match sets.iter_mut().find(|(t, _)| *t == rtype) {
            Some((_, set)) => set.push(rec.clone()),
            None => sets.push((rtype, vec![rec.clone()])),
        }
    }
    sets.into_iter()
        .map(|(rtype, answers)| {
            let set = RecordSet {
                answers,
                additionals: Vec::new(),
            };
            (rtype, Arc::new(set))
        })
        .collect()
}

#[cfg(test)]
mod tests;
