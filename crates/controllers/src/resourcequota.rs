//! ResourceQuota controller: keeps each quota's `status.hard` equal to its
//! `spec.hard` and `status.used` equal to what its namespace consumes of
//! every resource named there. Changes to the tracked kinds mark their
//! namespace dirty; dirty namespaces are recomputed at most twice a second
//! (debounce), and every quota is recomputed every 5 minutes regardless.
//! Enforcement happens at admission, in the API server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::broadcast;

use crate::endpoints::wait_ready;
use crate::resources::{self, Res};
use crate::{Context, ControllerError};
use controller_runtime::informer::Kind;
use controller_runtime::{Change, Informer, Queue, key_of, split_key};

/// How often every quota is recomputed even without changes.
const RESYNC: Duration = Duration::from_secs(300);
/// How long changes in a namespace are collected before recomputing.
const DEBOUNCE: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------- quantities

/// How a quantity is written (upstream resource.Format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decimal SI suffixes: m, k, M, G...
    DecimalSI,
    /// Binary suffixes: Ki, Mi, Gi...
    BinarySI,
    /// Decimal exponents: 1e3.
    DecimalExponent,
}

/// A resource quantity, exact to the nano-unit (as upstream's int64
/// representation with scale down to nano).
#[derive(Clone, Copy, Debug)]
pub struct Qty {
    /// Value in units of 10^-9.
    pub nanos: i128,
    /// Format used when printing.
    pub format: Format,
}

impl PartialEq for Qty {
    fn eq(&self, o: &Self) -> bool {
        self.nanos == o.nanos
    }
}

const NANO: i128 = 1_000_000_000;

impl Qty {
    /// Zero (printed "0").
    pub const ZERO: Qty = Qty {
        nanos: 0,
        format: Format::DecimalSI,
    };

    /// An integer count.
    pub fn count(n: i64) -> Qty {
        Qty {
            nanos: i128::from(n) * NANO,
            format: Format::DecimalSI,
        }
    }

    /// Parses Kubernetes quantity syntax ("500m", "1Gi", "1.5", "2e3").
    /// Precision below a nano-unit rounds up, as upstream.
    pub fn parse(s: &str) -> Option<Qty> {
        let s = s.trim();
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (num, suffix) = body.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let digits = format!("{int}{frac}");
        let mantissa: i128 = digits.parse().ok()?;
        let frac_len = i32::try_from(frac.len()).ok()?;
        let (format, ten_exp, two_exp): (Format, i32, u32) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            "Ki" => (Format::BinarySI, 0, 10),
            "Mi" => (Format::BinarySI, 0, 20),
            "Gi" => (Format::BinarySI, 0, 30),
            "Ti" => (Format::BinarySI, 0, 40),
            "Pi" => (Format::BinarySI, 0, 50),
            "Ei" => (Format::BinarySI, 0, 60),
            e if e.starts_with(['e', 'E']) => {
                (Format::DecimalExponent, e[1..].parse::<i32>().ok()?, 0)
            }
            _ => return None,
        };
        let mut v = mantissa.checked_mul(1i128.checked_shl(two_exp)?)?;
        // Scale to nano-units: value = v * 10^(ten_exp - frac_len).
        let exp = ten_exp - frac_len + 9;
        if exp >= 0 {
            v = v.checked_mul(10i128.checked_pow(u32::try_from(exp).ok()?)?)?;
        } else {
            let d = 10i128
                .checked_pow(u32::try_from(-exp).ok()?)
                .unwrap_or(i128::MAX);
            v = v / d + i128::from(v % d != 0);
        }
        Some(Qty {
            nanos: if neg { -v } else { v },
            format,
        })
    }

    /// Adds `o`; a zero takes the other's format, as upstream's Add.
    pub fn add(&mut self, o: Qty) {
        if self.nanos == 0 {
            self.format = o.format;
        }
        self.nanos = self.nanos.saturating_add(o.nanos);
    }

    /// The canonical text, as upstream's Quantity.String(): the largest
    /// suffix that keeps the number whole ("1500m", "2k", "1Gi", "1536Mi").
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let mut format = self.format;
        let whole = self.nanos % NANO == 0;
        if format == Format::BinarySI && (!whole || (self.nanos / NANO).abs() < 1024) {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let units = self.nanos / NANO;
            let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut k = 0;
            while k < 6 && units % (1i128 << (10 * (k + 1))) == 0 {
                k += 1;
            }
            return format!("{}{}", units >> (10 * k), suffixes[k]);
        }
        // Decimal: exponent -9..=18 in steps of 3, the largest that divides.
        let mut exp: i32 = -9;
        let mut mant = self.nanos;
        while exp < 18 && mant % 1000 == 0 {
            mant /= 1000;
            exp += 3;
        }
        let suffix = match format {
            Format::DecimalExponent if exp == 0 => String::new(),
            Format::DecimalExponent => format!("e{exp}"),
            _ => match exp {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            }
            .to_string(),
        };
        format!("{mant}{suffix}")
    }
}

fn qty_of(q: &Quantity) -> Option<Qty> {
    Qty::parse(&q.0)
}

// ---------------------------------------------------------------- usage

/// Sums of quantities by resource name.
pub type Usage = BTreeMap<String, Qty>;

fn add_to(u: &mut Usage, k: &str, q: Qty) {
    u.entry(k.to_string()).or_insert(Qty::ZERO).add(q);
}

fn resources_of(
    c: &k8s_openapi::api::core::v1::Container,
    limits: bool,
) -> Option<&BTreeMap<String, Quantity>> {
    let r = c.resources.as_ref()?;
    if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }
}

/// A pod's effective requests (or limits): containers and sidecars summed,
/// each regular init container (with the sidecars started before it) taken
/// as a floor, plus the pod overhead (upstream resourcehelper.PodRequests).
pub fn pod_resources(pod: &Pod, limits: bool) -> Usage {
    let mut sum = Usage::new();
    let Some(spec) = pod.spec.as_ref() else {
        return sum;
    };
    let add_all = |u: &mut Usage, c: &k8s_openapi::api::core::v1::Container| {
        for (k, v) in resources_of(c, limits).into_iter().flatten() {
            if let Some(q) = qty_of(v) {
                add_to(u, k, q);
            }
        }
    };
    for c in &spec.containers {
        add_all(&mut sum, c);
    }
    let mut sidecars = Usage::new();
    let mut floor = Usage::new();
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            add_all(&mut sum, c);
            add_all(&mut sidecars, c);
        } else {
            let mut this = sidecars.clone();
            add_all(&mut this, c);
            for (k, q) in this {
                let f = floor.entry(k).or_insert(Qty::ZERO);
                if q.nanos > f.nanos {
                    *f = q;
                }
            }
        }
    }
    for (k, f) in floor {
        let s = sum.entry(k).or_insert(Qty::ZERO);
        if f.nanos > s.nanos {
            *s = f;
        }
    }
    for (k, v) in spec.overhead.iter().flatten() {
        if let Some(q) = qty_of(v)
            && (!limits || sum.contains_key(k))
        {
            add_to(&mut sum, k, q);
        }
    }
    sum
}

/// Whether a pod still counts against quota (upstream QuotaV1Pod): not
/// terminal, and not past its deletion grace period.
pub fn pod_counts(pod: &Pod, now: k8s_openapi::jiff::Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    if let (Some(ts), Some(grace)) = (
        pod.metadata.deletion_timestamp.as_ref(),
        pod.metadata.deletion_grace_period_seconds,
    ) {
        let end = ts.0.as_second().saturating_add(grace);
        if now.as_second() > end {
            return false;
        }
    }
    true
}

/// Whether a resource name is one the pod evaluator tracks.
fn pod_resource(k: &str) -> bool {
    matches!(
        k,
        "pods" | "count/pods" | "cpu" | "memory" | "ephemeral-storage"
    ) || (k.starts_with("requests.") && k != "requests.storage")
        || k.starts_with("limits.")
        || k.starts_with("hugepages-")
}

/// A pod's usage, named as quota resources.
pub fn pod_usage(pod: &Pod) -> Usage {
    let mut u = Usage::new();
    u.insert("pods".into(), Qty::count(1));
    u.insert("count/pods".into(), Qty::count(1));
    for (k, q) in pod_resources(pod, false) {
        match k.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                u.insert(k.clone(), q);
                u.insert(format!("requests.{k}"), q);
            }
            _ if k.starts_with("hugepages-") => {
                u.insert(format!("requests.{k}"), q);
            }
            _ => {
                u.insert(format!("requests.{k}"), q);
            }
        }
    }
    for (k, q) in pod_resources(pod, true) {
        if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            u.insert(format!("limits.{k}"), q);
        }
    }
    u
}

/// BestEffort QoS: no container has cpu or memory requests or limits.
fn best_effort(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    !spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            [false, true].iter().any(|&l| {
                resources_of(c, l)
                    .is_some_and(|r| r.contains_key("cpu") || r.contains_key("memory"))
            })
        })
}

/// Whether a pod falls under every scope of a quota.
pub fn pod_in_scopes(quota: &ResourceQuota, pod: &Pod) -> bool {
    let Some(spec) = quota.spec.as_ref() else {
        return true;
    };
    let pspec = pod.spec.as_ref();
    let terminating = pspec.and_then(|s| s.active_deadline_seconds).is_some();
    let pc = pspec
        .and_then(|s| s.priority_class_name.clone())
        .unwrap_or_default();
    let scope_ok = |scope: &str| match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => !pc.is_empty(),
        // CrossNamespacePodAffinity and unknown scopes: not evaluated.
        _ => true,
    };
    if !spec.scopes.iter().flatten().all(|s| scope_ok(s)) {
        return false;
    }
    let exprs = spec
        .scope_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref());
    exprs.into_iter().flatten().all(|e| {
        if e.scope_name != "PriorityClass" {
            return scope_ok(&e.scope_name);
        }
        let vals = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => vals.contains(&pc),
            "NotIn" => !vals.contains(&pc),
            "Exists" => !pc.is_empty(),
            "DoesNotExist" => pc.is_empty(),
            _ => false,
        }
    })
}

fn scoped(quota: &ResourceQuota) -> bool {
    quota.spec.as_ref().is_some_and(|s| {
        s.scopes.as_ref().is_some_and(|v| !v.is_empty())
            || s.scope_selector
                .as_ref()
                .and_then(|s| s.match_expressions.as_ref())
                .is_some_and(|v| !v.is_empty())
    })
}

/// What a namespace holds, for computing a quota's usage.
#[derive(Default)]
pub struct Snapshot {
    /// The namespace's pods.
    pub pods: Vec<Arc<Pod>>,
    /// The namespace's Services.
    pub services: Vec<Arc<Service>>,
    /// The namespace's claims.
    pub pvcs: Vec<Arc<PersistentVolumeClaim>>,
    /// Object counts by quota resource name (`count/configmaps`,
    /// `count/deployments.apps`, ...).
    pub counts: HashMap<String, i64>,
}

/// The quota resource name of a count: `configmaps` → `count/configmaps`.
fn count_key(k: &str) -> Option<String> {
    match k {
        "configmaps"
        | "secrets"
        | "services"
        | "replicationcontrollers"
        | "resourcequotas"
        | "persistentvolumeclaims"
        | "pods" => Some(format!("count/{k}")),
        _ => k.strip_prefix("count/").map(|_| k.to_string()),
    }
}

const SC_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// `status.used` for a quota: every resource of `spec.hard` this
/// controller knows how to measure.
pub fn compute_used(
    quota: &ResourceQuota,
    snap: &Snapshot,
    now: k8s_openapi::jiff::Timestamp,
) -> Usage {
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.as_ref())
        .cloned()
        .unwrap_or_default();
    let is_scoped = scoped(quota);
    let mut total = Usage::new();
    if hard.keys().any(|k| pod_resource(k)) {
        for p in &snap.pods {
            if pod_counts(p, now) && pod_in_scopes(quota, p) {
                for (k, q) in pod_usage(p) {
                    add_to(&mut total, &k, q);
                }
            }
        }
    }
    if !is_scoped {
        for s in &snap.services {
            let spec = s.spec.as_ref();
            let ty = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
            let ports = spec.and_then(|s| s.ports.as_ref()).map_or(0, Vec::len);
            let node_ports = match ty {
                "NodePort" => ports,
                "LoadBalancer"
                    if spec.and_then(|s| s.allocate_load_balancer_node_ports) != Some(false) =>
                {
                    ports
                }
                _ => 0,
            };
            add_to(
                &mut total,
                "services.nodeports",
                Qty::count(node_ports as i64),
            );
            if ty == "LoadBalancer" {
                add_to(&mut total, "services.loadbalancers", Qty::count(1));
            }
        }
        for c in &snap.pvcs {
            let req = c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(qty_of)
                .unwrap_or(Qty::ZERO);
            add_to(&mut total, "requests.storage", req);
            if let Some(sc) = c
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
            {
                add_to(&mut total, &format!("{sc}{SC_SUFFIX}requests.storage"), req);
                add_to(
                    &mut total,
                    &format!("{sc}{SC_SUFFIX}persistentvolumeclaims"),
                    Qty::count(1),
                );
            }
        }
    }
    let mut used = Usage::new();
    for k in hard.keys() {
        let v = if pod_resource(k) {
            Some(total.get(k).copied().unwrap_or(Qty::ZERO))
        } else if is_scoped {
            None
        } else if let Some(ck) = count_key(k) {
            snap.counts.get(&ck).map(|&n| Qty::count(n))
        } else if k.starts_with("services.") || k == "requests.storage" || k.contains(SC_SUFFIX) {
            Some(total.get(k).copied().unwrap_or(Qty::ZERO))
        } else {
            None
        };
        if let Some(v) = v {
            used.insert(k.clone(), v);
        }
    }
    used
}

// ---------------------------------------------------------------- controller

/// Namespaces with changes not yet recomputed (`None`: all of them).
#[derive(Clone, Default)]
struct Dirty(Arc<Mutex<Option<HashSet<String>>>>);

impl Dirty {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashSet<String>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn mark(&self, ns: &str) {
        if let Some(s) = self.lock().as_mut() {
            s.insert(ns.to_string());
        }
    }
    fn mark_all(&self) {
        *self.lock() = None;
    }
    fn take(&self) -> Option<HashSet<String>> {
        self.lock().replace(HashSet::new())
    }
}

/// Marks namespaces dirty from one kind's change feed.
fn track<K: Kind>(inf: &Informer<K>, dirty: &Dirty) {
    let mut rx = inf.subscribe();
    let dirty = dirty.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Change::Apply(o)) | Ok(Change::Delete(o)) => {
                    if let Some(ns) = o.meta().namespace.as_deref() {
                        dirty.mark(ns);
                    }
                }
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    dirty.mark_all()
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Object counts per namespace from a cache.
type Counter = Arc<dyn Fn(&str) -> i64 + Send + Sync>;

fn counter<K: Kind>(inf: Informer<K>) -> Counter {
    Arc::new(move |ns: &str| inf.list_ns(ns).len() as i64)
}

/// Discovered resources, refreshed at most once a minute, for counting
/// kinds without a cache here (`count/widgets.example.com`).
#[derive(Clone, Default)]
struct Discovered(Arc<tokio::sync::Mutex<Option<Found>>>);

/// When resources were discovered, and what was found.
type Found = (Instant, Vec<Res>);

impl Discovered {
    async fn find(&self, client: &kube::Client, name: &str) -> Result<Option<Res>, kube::Error> {
        let (plural, group) = name.split_once('.').unwrap_or((name, ""));
        let mut g = self.0.lock().await;
        let stale = g
            .as_ref()
            .is_none_or(|(t, _)| t.elapsed() > Duration::from_secs(60));
        if stale {
            *g = Some((Instant::now(), resources::discover(client).await?));
        }
        Ok(g.as_ref().and_then(|(_, rs)| {
            rs.iter()
                .find(|r| r.ar.plural == plural && r.ar.group == group && r.namespaced())
                .cloned()
        }))
    }
}

/// Runs the ResourceQuota controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let inf = &ctx.informers;
    let quotas = inf.get::<ResourceQuota>();
    let pods = inf.get::<Pod>();
    let services = inf.get::<Service>();
    let pvcs = inf.get::<PersistentVolumeClaim>();
    let dirty = Dirty::default();
    let mut counters: HashMap<String, Counter> = HashMap::new();
    macro_rules! counted {
        ($k:ty, $name:expr) => {{
            let i = inf.get::<$k>();
            wait_ready(&i).await;
            track(&i, &dirty);
            counters.insert(format!("count/{}", $name), counter(i));
        }};
    }
    counted!(Pod, "pods");
    counted!(Service, "services");
    counted!(PersistentVolumeClaim, "persistentvolumeclaims");
    counted!(ConfigMap, "configmaps");
    counted!(Secret, "secrets");
    counted!(ReplicationController, "replicationcontrollers");
    counted!(ResourceQuota, "resourcequotas");
    counted!(Deployment, "deployments.apps");
    counted!(ReplicaSet, "replicasets.apps");
    counted!(StatefulSet, "statefulsets.apps");
    counted!(DaemonSet, "daemonsets.apps");
    counted!(Job, "jobs.batch");
    counted!(CronJob, "cronjobs.batch");
    let counters = Arc::new(counters);
    let q = Queue::new();
    q.watch(&quotas, |r: &ResourceQuota| vec![key_of(r)]);
    // Debounce: recompute the quotas of the namespaces changed lately.
    {
        let (q, quotas, dirty) = (q.clone(), quotas.clone(), dirty.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DEBOUNCE);
            let mut last_full = Instant::now();
            loop {
                tick.tick().await;
                // The periodic full recount catches what no event reported
                // (kinds counted through discovery, missed changes).
                if last_full.elapsed() >= RESYNC {
                    last_full = Instant::now();
                    dirty.mark_all();
                }
                let list = match dirty.take() {
                    None => quotas.list(),
                    Some(ns) if ns.is_empty() => continue,
                    Some(ns) => quotas
                        .list()
                        .into_iter()
                        .filter(|r| {
                            r.metadata
                                .namespace
                                .as_ref()
                                .is_some_and(|n| ns.contains(n))
                        })
                        .collect(),
                };
                for r in list {
                    q.add(key_of(r.as_ref()));
                }
            }
        });
    }
    let client = ctx.client.clone();
    let discovered = Discovered::default();
    q.run(ctx.opts.workers, move |key: String| {
        let (quotas, pods, services, pvcs, counters, client, discovered) = (
            quotas.clone(),
            pods.clone(),
            services.clone(),
            pvcs.clone(),
            counters.clone(),
            client.clone(),
            discovered.clone(),
        );
        async move {
            let (Some(ns), name) = split_key(&key) else {
                return Ok::<_, ControllerError>(None);
            };
            let Some(quota) = quotas.get(Some(ns), name) else {
                return Ok(None);
            };
            let hard = quota
                .spec
                .as_ref()
                .and_then(|s| s.hard.clone())
                .unwrap_or_default();
            let mut snap = Snapshot {
                pods: pods.list_ns(ns),
                services: services.list_ns(ns),
                pvcs: pvcs.list_ns(ns),
                counts: HashMap::new(),
            };
            for k in hard.keys() {
                let Some(ck) = count_key(k) else { continue };
                if let Some(c) = counters.get(&ck) {
                    snap.counts.insert(ck, c(ns));
                } else if let Some(res) = discovered.find(&client, &ck["count/".len()..]).await? {
                    let n = res
                        .api(&client, Some(ns))
                        .list_metadata(&ListParams::default())
                        .await?
                        .items
                        .len();
                    snap.counts.insert(ck, n as i64);
                }
            }
            let used = compute_used(&quota, &snap, k8s_openapi::jiff::Timestamp::now());
            let status = quota.status.clone().unwrap_or_default();
            let same = |a: Option<&BTreeMap<String, Quantity>>, b: &BTreeMap<String, Qty>| {
                let a = a.cloned().unwrap_or_default();
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| qty_of(v).is_some_and(|v| b.get(k) == Some(&v)))
            };
            let hard_q: BTreeMap<String, Qty> = hard
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), qty_of(v)?)))
                .collect();
            if same(status.hard.as_ref(), &hard_q) && same(status.used.as_ref(), &used) {
                return Ok(None);
            }
            let mut next = (*quota).clone();
            let st = next.status.get_or_insert_with(Default::default);
            st.hard = Some(hard);
            st.used = Some(
                used.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.canonical())))
                    .collect(),
            );
            match Api::<ResourceQuota>::namespaced(client, ns)
                .replace_status(name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => Ok(None),
                // Changed meanwhile: the cache will show the new version.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::from_millis(100))),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(s: &str) -> String {
        Qty::parse(s).unwrap().canonical()
    }

    #[test]
    fn quantities_print_canonically() {
        assert_eq!(canon("500m"), "500m");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1.5"), "1500m");
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("2000"), "2k");
        assert_eq!(canon("1500"), "1500");
        assert_eq!(canon("1Gi"), "1Gi");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1.5Gi"), "1536Mi");
        assert_eq!(canon("512"), "512");
        assert_eq!(canon("1e3"), "1e3");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("128974848"), "128974848");
        assert_eq!(canon("129e6"), "129e6");
        assert!(Qty::parse("1Xi").is_none());
        assert!(Qty::parse("").is_none());
    }

    #[test]
    fn sums_keep_the_first_nonzero_format() {
        let mut q = Qty::ZERO;
        q.add(Qty::parse("64Mi").unwrap());
        q.add(Qty::parse("64Mi").unwrap());
        assert_eq!(q.canonical(), "128Mi");
        let mut c = Qty::ZERO;
        c.add(Qty::parse("250m").unwrap());
        c.add(Qty::parse("750m").unwrap());
        assert_eq!(c.canonical(), "1");
    }

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn quota(hard: serde_json::Value, extra: serde_json::Value) -> ResourceQuota {
        let mut spec = json!({"hard": hard});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": spec}))
            .unwrap()
    }

    fn res_pod(name: &str, cpu: &str, mem: &str, phase: &str) -> Arc<Pod> {
        pod(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"memory": mem}}},
                {"name": "b", "image": "i"},
            ], "initContainers": [
                {"name": "init", "image": "i", "resources": {"requests": {"cpu": "2"}}},
            ]},
            "status": {"phase": phase},
        }))
    }

    #[test]
    fn pod_usage_sums_requests_limits_and_skips_terminal_pods() {
        let q = quota(
            json!({"pods": "10", "requests.cpu": "10", "cpu": "10", "requests.memory": "1Gi",
                   "limits.memory": "1Gi", "limits.cpu": "4", "configmaps": "5", "count/deployments.apps": "3",
                   "services": "2", "services.nodeports": "2", "foo": "1"}),
            json!({}),
        );
        let mut snap = Snapshot {
            pods: vec![
                res_pod("a", "250m", "64Mi", "Running"),
                res_pod("b", "500m", "64Mi", "Pending"),
                res_pod("done", "1", "1Gi", "Succeeded"),
            ],
            services: vec![Arc::new(
                serde_json::from_value(
                    json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}}),
                )
                .unwrap(),
            )],
            ..Default::default()
        };
        snap.counts.insert("count/configmaps".into(), 3);
        snap.counts.insert("count/services".into(), 1);
        let used = compute_used(&q, &snap, k8s_openapi::jiff::Timestamp::now());
        let s = |k: &str| used.get(k).map(|q| q.canonical());
        assert_eq!(s("pods").as_deref(), Some("2"));
        // The init container's 2 CPUs exceed each pod's containers: a floor.
        assert_eq!(s("requests.cpu").as_deref(), Some("4"));
        assert_eq!(s("cpu").as_deref(), Some("4"));
        assert_eq!(s("requests.memory").as_deref(), Some("128Mi"));
        assert_eq!(s("limits.memory").as_deref(), Some("128Mi"));
        assert_eq!(s("limits.cpu").as_deref(), Some("0"));
        assert_eq!(s("configmaps").as_deref(), Some("3"));
        assert_eq!(s("services").as_deref(), Some("1"));
        assert_eq!(s("services.nodeports").as_deref(), Some("2"));
        assert_eq!(
            s("count/deployments.apps"),
            None,
            "not counted: unknown here"
        );
        assert_eq!(s("foo"), None);
    }

    #[test]
    fn scopes_select_pods() {
        let be = pod(
            json!({"metadata": {"name": "be"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}),
        );
        let burst = res_pod("burst", "1", "1Gi", "Running");
        let term = pod(
            json!({"metadata": {"name": "t"}, "spec": {"activeDeadlineSeconds": 5, "priorityClassName": "high", "containers": [{"name": "c"}]}}),
        );
        let snap = Snapshot {
            pods: vec![be, burst, term],
            ..Default::default()
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let count = |extra| {
            compute_used(
                &quota(json!({"pods": "9", "services": "1"}), extra),
                &snap,
                now,
            )
        };
        let u = count(json!({"scopes": ["BestEffort"]}));
        assert_eq!(u["pods"].canonical(), "2");
        assert!(!u.contains_key("services"), "scoped quotas track pods only");
        assert_eq!(
            count(json!({"scopes": ["NotBestEffort"]}))["pods"].canonical(),
            "1"
        );
        assert_eq!(
            count(json!({"scopes": ["Terminating"]}))["pods"].canonical(),
            "1"
        );
        assert_eq!(
            count(json!({"scopes": ["NotTerminating"]}))["pods"].canonical(),
            "2"
        );
        let pc = json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}});
        assert_eq!(count(pc)["pods"].canonical(), "1");
    }
}
