//! The service proxy: watches Services, EndpointSlices and ServiceCIDRs and
//! keeps one nftables table in step with them, as kube-proxy's nftables
//! mode does. Events that arrive together are applied as one transaction;
//! a failed transaction (someone edited the table) is repaired by a full
//! resync.

pub mod conntrack;
pub mod health;
pub mod model;
pub mod render;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::NetworkError;
use model::SERVICE_NAME_LABEL;
use render::{Rendered, TableConfig};

/// Settings of the proxy on one node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The node's name (for local endpoints).
    pub node_name: String,
    /// The table, cluster ranges, node addresses, local service addresses.
    /// Service ranges come from the ServiceCIDR objects.
    pub table: TableConfig,
    /// The pod bridge: service ranges are routed onto it.
    pub bridge: Option<String>,
    /// Told of every change applied (`r8s bench network`).
    pub observer: Option<tokio::sync::mpsc::UnboundedSender<SyncReport>>,
}

/// One applied transaction.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Services whose rules changed.
    pub services: usize,
    /// Whether the whole table was rebuilt.
    pub full: bool,
    /// How long rendering and `nft` took.
    pub took: std::time::Duration,
    /// When it was in place.
    pub at: Instant,
    /// Services with rules in the table now.
    pub total: usize,
}

enum Ev {
    Svc(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Cidr(Box<watcher::Event<ServiceCIDR>>),
}

/// One kind's objects by `namespace/name`, with a relist in progress kept
/// apart until it completes.
pub(crate) struct Cache<K> {
    pub(crate) objs: HashMap<String, K>,
    relist: Option<HashMap<String, K>>,
    pub(crate) synced: bool,
}

impl<K: kube::Resource> Cache<K> {
    pub(crate) fn new() -> Self {
        Cache {
            objs: HashMap::new(),
            relist: None,
            synced: false,
        }
    }

    pub(crate) fn key(o: &K) -> String {
        let m = o.meta();
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or("")
        )
    }

    /// Applies an event; returns the objects it touched (before and after).
    pub(crate) fn apply(&mut self, ev: watcher::Event<K>) -> Vec<K>
    where
        K: Clone,
    {
        match ev {
            watcher::Event::Apply(o) => {
                let old = self.objs.insert(Self::key(&o), o.clone());
                old.into_iter().chain([o]).collect()
            }
            watcher::Event::Delete(o) => {
                self.objs.remove(&Self::key(&o));
                vec![o]
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                if let Some(r) = self.relist.as_mut() {
                    r.insert(Self::key(&o), o);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let new = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.objs, new);
                self.synced = true;
                old.into_values()
                    .chain(self.objs.values().cloned())
                    .collect()
            }
        }
    }
}

/// The proxy's whole state.
struct Proxy {
    cfg: ProxyConfig,
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    /// Slice keys by their Service's `namespace/name`: a Service's rules
    /// are rendered from its own slices without scanning all of them.
    by_service: HashMap<String, BTreeSet<String>>,
    cidrs: Cache<ServiceCIDR>,
    /// What is in the table, per Service (`namespace/name`).
    applied: HashMap<String, Rendered>,
    dirty: BTreeSet<String>,
    /// The base table must be rebuilt (start, new ranges, a failed change).
    full: bool,
    /// healthCheckNodePort servers.
    health: health::HealthServers,
    /// UDP flows each Service's rules send where (service address, port,
    /// endpoint): the ones that disappear get their conntrack entries
    /// cleared, or a client keeps sending into a dead endpoint.
    udp: HashMap<String, BTreeSet<conntrack::Flow>>,
}

fn slice_service(s: &EndpointSlice) -> Option<String> {
    let svc = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{svc}",
        s.metadata.namespace.as_deref().unwrap_or("")
    ))
}

impl Proxy {
    fn on(&mut self, ev: Ev) {
        match ev {
            Ev::Svc(e) => {
                for s in self.services.apply(*e) {
                    self.dirty.insert(Cache::key(&s));
                }
            }
            Ev::Slice(e) => {
                for s in self.slices.apply(*e) {
                    let key = Cache::key(&s);
                    if let Some(k) = slice_service(&s) {
                        if let Some(set) = self.by_service.get_mut(&k) {
                            set.remove(&key);
                            if set.is_empty() {
                                self.by_service.remove(&k);
                            }
                        }
                        self.dirty.insert(k);
                    }
                    // Index the slice under its Service as it is now.
                    if let Some(now) = self.slices.objs.get(&key)
                        && let Some(k) = slice_service(now)
                    {
                        self.by_service.entry(k).or_default().insert(key);
                    }
                }
            }
            Ev::Cidr(e) => {
                self.cidrs.apply(*e);
                let mut ranges: Vec<String> = self
                    .cidrs
                    .objs
                    .values()
                    .flat_map(|c| c.spec.iter().flat_map(|s| s.cidrs.iter().flatten()))
                    .filter(|c| c.parse::<ipnet::Ipv4Net>().is_ok())
                    .cloned()
                    .collect();
                ranges.sort();
                ranges.dedup();
                if ranges != self.cfg.table.service_cidrs {
                    self.cfg.table.service_cidrs = ranges;
                    self.full = true;
                }
            }
        }
    }

    fn synced(&self) -> bool {
        self.services.synced && self.slices.synced && self.cidrs.synced
    }

    /// The EndpointSlices of one Service.
    fn slices_of(&self, key: &str) -> Vec<&EndpointSlice> {
        self.by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.objs.get(k))
            .collect()
    }

    /// Where one Service's UDP ports send traffic now.
    fn udp_flows(&self, key: &str) -> BTreeSet<conntrack::Flow> {
        let Some(svc) = self.services.objs.get(key) else {
            return BTreeSet::new();
        };
        let mut out = BTreeSet::new();
        for port in model::service_rules(svc, &self.slices_of(key), &self.cfg.node_name) {
            if port.proto != "udp" {
                continue;
            }
            for ip in port.cluster_ips.iter().chain(&port.external_ips) {
                for ep in &port.endpoints {
                    out.insert((*ip, port.port, ep.ip));
                }
            }
        }
        out
    }

    /// Clears conntrack entries of UDP flows the last sync removed.
    fn clear_stale_udp(&mut self, keys: impl IntoIterator<Item = String>) {
        let mut stale = Vec::new();
        for key in keys {
            let now = self.udp_flows(&key);
            let before = if now.is_empty() {
                self.udp.remove(&key)
            } else {
                self.udp.insert(key, now.clone())
            };
            stale.extend(before.unwrap_or_default().difference(&now).copied());
        }
        if !stale.is_empty() {
            tokio::spawn(conntrack::clear(stale));
        }
    }

    /// The health check ports Services need, with their local endpoints.
    fn health_wants(&self) -> HashMap<u16, health::Health> {
        let mut out = HashMap::new();
        for (key, svc) in &self.services.objs {
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let Some(port) = spec
                .health_check_node_port
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            if spec.type_.as_deref() != Some("LoadBalancer")
                || spec.external_traffic_policy.as_deref() != Some("Local")
            {
                continue;
            }
            let slices = self.slices_of(key);
            let local: BTreeSet<std::net::Ipv4Addr> =
                model::service_rules(svc, &slices, &self.cfg.node_name)
                    .iter()
                    .flat_map(|r| r.endpoints.iter().filter(|e| e.local).map(|e| e.ip))
                    .collect();
            out.insert(port, (key.clone(), local.len()));
        }
        out
    }

    /// The table objects of one Service now.
    fn render_service(&self, key: &str) -> Option<Rendered> {
        let svc = self.services.objs.get(key)?;
        let slices = self.slices_of(key);
        let mut out = Rendered::default();
        for port in model::service_rules(svc, &slices, &self.cfg.node_name) {
            // A Service answered by this node itself (cluster DNS) is left
            // to that server.
            if port
                .cluster_ips
                .iter()
                .any(|ip| self.cfg.table.local_ips.contains(ip))
            {
                return None;
            }
            let r = render::render(&self.cfg.table, &port);
            out.chains.extend(r.chains);
            out.sets.extend(r.sets);
            out.elements.extend(r.elements);
        }
        (!out.chains.is_empty() || !out.elements.is_empty()).then_some(out)
    }

    async fn sync(&mut self) -> Result<(), NetworkError> {
        let started = Instant::now();
        let t = self.cfg.table.table.clone();
        let (script, next, changed, touched) = if self.full {
            if let Some(bridge) = &self.cfg.bridge {
                for cidr in &self.cfg.table.service_cidrs {
                    crate::host::route_service_range(cidr, bridge)?;
                }
            }
            let next: HashMap<String, Rendered> = self
                .services
                .objs
                .keys()
                .filter_map(|k| Some((k.clone(), self.render_service(k)?)))
                .collect();
            let changes: Vec<_> = next.values().map(|r| (None, Some(r))).collect();
            let script = render::base(&self.cfg.table, true) + &render::transaction(&t, &changes);
            let n = next.len();
            let touched: Vec<String> = self
                .services
                .objs
                .keys()
                .chain(self.udp.keys())
                .cloned()
                .collect();
            (script, next, n, touched)
        } else {
            let mut next = self.applied.clone();
            let mut changes = Vec::new();
            let dirty = std::mem::take(&mut self.dirty);
            for k in &dirty {
                let new = self.render_service(k);
                if new.as_ref() != self.applied.get(k) {
                    changes.push((k.clone(), new));
                }
            }
            let pairs: Vec<_> = changes
                .iter()
                .map(|(k, new)| (self.applied.get(k), new.as_ref()))
                .collect();
            let script = render::transaction(&t, &pairs);
            for (k, new) in &changes {
                match new {
                    Some(r) => next.insert(k.clone(), r.clone()),
                    None => next.remove(k),
                };
            }
            let touched = changes.iter().map(|(k, _)| k.clone()).collect();
            (script, next, changes.len(), touched)
        };
        self.dirty.clear();
        if script.is_empty() {
            return Ok(());
        }
        match nft(&script).await {
            Ok(()) => {
                self.applied = next;
                self.clear_stale_udp(touched);
                let full = std::mem::replace(&mut self.full, false);
                if let Some(obs) = &self.cfg.observer {
                    let _ = obs.send(SyncReport {
                        services: changed,
                        full,
                        took: started.elapsed(),
                        at: Instant::now(),
                        total: self.applied.len(),
                    });
                }
                tracing::debug!(
                    services = changed,
                    full,
                    took_us = started.elapsed().as_micros() as u64,
                    "proxy rules synced"
                );
                Ok(())
            }
            Err(e) => {
                self.full = true;
                Err(e)
            }
        }
    }
}

/// Pipes a script into `nft -f -`: one atomic transaction.
pub async fn nft(script: &str) -> Result<(), NetworkError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::Io {
            what: "running nft (Debian: nftables)".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|source| NetworkError::Io {
                what: "writing to nft".into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| NetworkError::Io {
            what: "waiting for nft".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Deletes the proxy's table (host clean-up).
pub async fn delete_table(table: &str) {
    let _ = nft(&format!("delete table ip {table}\n")).await;
}

/// Runs the proxy until the process ends.
pub async fn run(client: kube::Client, cfg: ProxyConfig) -> Result<(), NetworkError> {
    let wc = watcher::Config::default;
    let svcs = watcher(Api::<Service>::all(client.clone()), wc())
        .default_backoff()
        .map(|e| e.map(|e| Ev::Svc(Box::new(e))));
    let slices = watcher(Api::<EndpointSlice>::all(client.clone()), wc())
        .default_backoff()
        .map(|e| e.map(|e| Ev::Slice(Box::new(e))));
    let cidrs = watcher(Api::<ServiceCIDR>::all(client.clone()), wc())
        .default_backoff()
        .map(|e| e.map(|e| Ev::Cidr(Box::new(e))));
    let mut events = futures::stream::select_all([svcs.boxed(), slices.boxed(), cidrs.boxed()]);
    let mut p = Proxy {
        cfg,
        services: Cache::new(),
        slices: Cache::new(),
        by_service: HashMap::new(),
        cidrs: Cache::new(),
        applied: HashMap::new(),
        dirty: BTreeSet::new(),
        full: true,
        health: health::HealthServers::default(),
        udp: HashMap::new(),
    };
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Ok(ev) => p.on(ev),
                    Err(e) => tracing::warn!(error = %e, "proxy watch failed; retrying"),
                }
                // Take whatever else has arrived: one transaction for all.
                while let Some(Some(ev)) = events.next().now_or_never() {
                    if let Ok(ev) = ev {
                        p.on(ev);
                    }
                }
            }
            _ = retry.tick() => {
                if !p.full {
                    continue;
                }
            }
        }
        if !p.synced() || (p.dirty.is_empty() && !p.full) {
            continue;
        }
        if let Err(e) = p.sync().await {
            tracing::warn!(error = %e, "programming service rules failed; resyncing");
        }
        let want = p.health_wants();
        let ips = p.cfg.table.node_ips.clone();
        p.health.sync(want, &ips).await;
    }
}
