//! ResourceQuota admission: every new object in a namespace with quotas
//! is charged against them before it is stored, and refused with
//! upstream's `exceeded quota` message when it does not fit. The charge is
//! a compare-and-swap of the quota's `status.used`, so concurrent creates
//! (on one server or several) never admit more than the quota holds; the
//! quota controller later recomputes `status.used` from what exists.

use std::collections::BTreeMap;

use api::catalogue::{self, ResourceInfo};
use api::quota::{self, Qty, Usage};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota as Quota};
use serde_json::{Value, json};

use super::{Context, Operation, Plugin, Request};
use crate::error::ApiError;

/// The plugin.
pub struct ResourceQuota;

/// How often a batch is retried when another server's charge moved a
/// quota first.
const ATTEMPTS: usize = 64;

/// One object waiting to be charged.
struct Pending {
    usage: Usage,
    pod: Option<Pod>,
    /// The refusal (a quota's message) or the storage failure, if any.
    done: tokio::sync::oneshot::Sender<Result<(), Refusal>>,
}

enum Refusal {
    Quota(String),
    Api(ApiError),
}

/// The charges waiting in one namespace, and the right to write its
/// quotas.
#[derive(Default)]
struct Queue {
    pending: std::sync::Mutex<Vec<Pending>>,
    writer: tokio::sync::Mutex<()>,
}

/// Quota charges per namespace, batched: whoever holds a namespace's
/// writer charges everything waiting there with one compare-and-swap per
/// quota, so concurrent creates cost one quota write per batch instead of
/// one (and a conflict) each, as upstream's quota admission batches its
/// evaluations.
#[derive(Default)]
pub struct Locks(std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Queue>>>);

impl Locks {
    fn of(&self, ns: &str) -> std::sync::Arc<Queue> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(ns.to_string()).or_default().clone()
    }
}

/// Charges every waiting object against the namespace's quotas: each is
/// admitted if every quota has room after those before it.
async fn charge_batch(
    ctx: &Context<'_>,
    ns: &str,
    names: &[String],
    batch: &[Pending],
) -> Result<Vec<Option<String>>, ApiError> {
    let rq = catalogue::find("", "v1", "resourcequotas")
        .ok_or_else(|| ApiError::internal("resourcequotas missing from the catalogue"))?;
    'attempt: for attempt in 0..ATTEMPTS {
        let mut quotas = Vec::new();
        for name in names {
            match ctx.load(rq, Some(ns), name).await {
                Ok((q, kv)) => quotas.push((q, kv, false)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let mut verdicts = Vec::with_capacity(batch.len());
        for p in batch {
            let mut charged = Vec::new();
            let mut refusal = None;
            for (i, (q, _, _)) in quotas.iter().enumerate() {
                match check(q, p.pod.as_ref(), &p.usage) {
                    Ok(Check::Untouched) => {}
                    Ok(Check::Charge(out)) => charged.push((i, out)),
                    Err(why) => {
                        refusal = Some(why);
                        break;
                    }
                }
            }
            if refusal.is_none() {
                for (i, out) in charged {
                    quotas[i].0 = out;
                    quotas[i].2 = true;
                }
            }
            verdicts.push(refusal);
        }
        for (q, kv, changed) in &quotas {
            if !changed {
                continue;
            }
            let mut stored = q.clone();
            if let Some(m) = stored["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| ApiError::internal(e.to_string()))?;
            match ctx.store.update(&kv.key, bytes, kv.mod_revision).await {
                Ok(_) => {}
                // Another server charged it first: decide the batch again.
                // (Quotas written before this one keep this batch's charge
                // until the controller recomputes them: over-counting,
                // never over-admission.)
                Err(store::StoreError::Conflict { .. }) if attempt + 1 < ATTEMPTS => {
                    tokio::task::yield_now().await;
                    continue 'attempt;
                }
                Err(e) => return Err(ApiError::from(e)),
            }
        }
        return Ok(verdicts);
    }
    Err(ApiError::unavailable("quota charges kept conflicting"))
}

/// What `obj` (of kind `info`) uses, named as quota resources.
fn usage_of(info: &ResourceInfo, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let one = Qty::count(1);
    let count = if info.group.is_empty() {
        format!("count/{}", info.plural)
    } else {
        format!("count/{}.{}", info.plural, info.group)
    };
    u.insert(count, one);
    if info.group.is_empty()
        && matches!(
            info.plural,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "replicationcontrollers"
                | "resourcequotas"
                | "persistentvolumeclaims"
        )
    {
        u.insert(info.plural.to_string(), one);
    }
    match (info.group, info.plural) {
        ("", "pods") => {
            if let Ok(pod) = serde_json::from_value::<Pod>(obj.clone()) {
                u.extend(quota::pod_usage(&pod));
            }
        }
        ("", "services") => {
            let ty = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as i64;
            let node_ports = match ty {
                "NodePort" => ports,
                "LoadBalancer" if obj["spec"]["allocateLoadBalancerNodePorts"] != false => ports,
                _ => 0,
            };
            u.insert("services.nodeports".into(), Qty::count(node_ports));
            u.insert(
                "services.loadbalancers".into(),
                Qty::count(i64::from(ty == "LoadBalancer")),
            );
        }
        ("", "persistentvolumeclaims") => {
            let storage = obj["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(Qty::parse)
                .unwrap_or(Qty::ZERO);
            u.insert("requests.storage".into(), storage);
            if let Some(sc) = obj["spec"]["storageClassName"].as_str() {
                let prefix = format!("{sc}{}", quota::SC_SUFFIX);
                u.insert(format!("{prefix}requests.storage"), storage);
                u.insert(format!("{prefix}persistentvolumeclaims"), one);
            }
        }
        _ => {}
    }
    u
}

/// What an update adds: the resources whose usage grows, by how much.
fn growth(new: &Usage, old: &Usage) -> Usage {
    new.iter()
        .filter_map(|(k, n)| {
            let o = old.get(k).map_or(0, |o| o.nanos);
            (n.nanos > o).then(|| {
                let mut d = *n;
                d.nanos -= o;
                (k.clone(), d)
            })
        })
        .collect()
}

/// Whether an update of `info` can use more quota (a Service turning
/// NodePort or LoadBalancer, a claim asking for more storage), as
/// upstream's quota admission evaluates them; the write path charges
/// those after the update is validated.
pub fn charges_updates(info: &ResourceInfo) -> bool {
    info.group.is_empty() && matches!(info.plural, "services" | "persistentvolumeclaims")
}

fn pretty(items: &BTreeMap<String, Qty>) -> String {
    items
        .iter()
        .map(|(k, v)| format!("{k}={}", v.canonical()))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_list(
    v: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> BTreeMap<String, Qty> {
    v.into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), quota::qty_of(q)?)))
        .collect()
}

/// Resources a pod must name for every container when a quota limits
/// them (upstream's backward-compatible pod constraint).
fn missing_requests(pod: &Pod, hard: &BTreeMap<String, Qty>) -> Vec<String> {
    const CHECKED: &[&str] = &[
        "cpu",
        "memory",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ];
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in CHECKED.iter().copied().filter(|r| hard.contains_key(*r)) {
        let (limits, res) = match r.split_once('.') {
            Some(("limits", res)) => (true, res),
            Some((_, res)) => (false, res),
            None => (false, r),
        };
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let list = c.resources.as_ref().and_then(|rr| {
                if limits {
                    rr.limits.as_ref()
                } else {
                    rr.requests.as_ref()
                }
            });
            if !list.is_some_and(|l| l.contains_key(res)) {
                let names = missing.entry(r).or_default();
                if !names.contains(&c.name) {
                    names.push(c.name.clone());
                }
            }
        }
    }
    missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort();
            format!("{r} for: {}", names.join(","))
        })
        .collect()
}

/// The outcome of checking one quota.
enum Check {
    /// Nothing of the quota's is used by this object.
    Untouched,
    /// The quota's new `status.used`.
    Charge(Value),
}

/// Checks `obj` against one quota; the quota as it should be stored, or
/// why the object does not fit.
fn check(quota_obj: &Value, pod: Option<&Pod>, usage: &Usage) -> Result<Check, String> {
    let Ok(q) = serde_json::from_value::<Quota>(quota_obj.clone()) else {
        return Ok(Check::Untouched);
    };
    let name = q.metadata.name.clone().unwrap_or_default();
    let is_pod = pod.is_some();
    if quota::scoped(&q) && !is_pod {
        return Ok(Check::Untouched);
    }
    if let Some(p) = pod
        && !quota::pod_in_scopes(&q, p)
    {
        return Ok(Check::Untouched);
    }
    let status = q.status.clone().unwrap_or_default();
    let hard = parse_list(status.hard.as_ref());
    let used = parse_list(status.used.as_ref());
    let spec_hard = parse_list(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    // What of this quota the object touches.
    // (The pod evaluator answers for every compute resource, used or not.)
    let relevant: Vec<&String> = spec_hard
        .keys()
        .chain(hard.keys())
        .filter(|k| usage.contains_key(*k) || (is_pod && quota::pod_resource(k)))
        .collect();
    if relevant.is_empty() {
        return Ok(Check::Untouched);
    }
    let unknown: Vec<&str> = relevant
        .iter()
        .filter(|k| !hard.contains_key(**k) || !used.contains_key(**k))
        .map(|k| k.as_str())
        .collect();
    if !unknown.is_empty() {
        let mut u = unknown.clone();
        u.sort();
        u.dedup();
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            u.join(",")
        ));
    }
    if let Some(p) = pod {
        let missing = missing_requests(p, &hard);
        if !missing.is_empty() {
            return Err(format!(
                "failed quota: {name}: must specify {}",
                missing.join("; ")
            ));
        }
    }
    let (mut requested, mut failed_used, mut limited) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut next = used.clone();
    for (k, limit) in &hard {
        let Some(delta) = usage.get(k) else { continue };
        let mut total = used.get(k).copied().unwrap_or(Qty::ZERO);
        total.add(*delta);
        if total.nanos > limit.nanos {
            requested.insert(k.clone(), *delta);
            failed_used.insert(k.clone(), used.get(k).copied().unwrap_or(Qty::ZERO));
            limited.insert(k.clone(), *limit);
        }
        next.insert(k.clone(), total);
    }
    if !requested.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&requested),
            pretty(&failed_used),
            pretty(&limited)
        ));
    }
    let mut out = quota_obj.clone();
    out["status"]["used"] = json!(
        next.iter()
            .map(|(k, v)| (k.clone(), v.canonical()))
            .collect::<BTreeMap<_, _>>()
    );
    Ok(Check::Charge(out))
}

#[async_trait::async_trait]
impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool {
        op == Operation::Create && info.namespaced
    }

    async fn validate(
        &self,
        ctx: &Context<'_>,
        req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        let Some(ns) = req.namespace else {
            return Ok(());
        };
        if req.dry_run {
            return Ok(());
        }
        let names: Vec<String> = ctx
            .quotas
            .items()
            .iter()
            .filter(|q| q["metadata"]["namespace"] == ns)
            .filter_map(|q| q["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let info = req.info;
        let usage = match (req.op, req.old) {
            (Operation::Update, Some(old)) => growth(&usage_of(info, obj), &usage_of(info, old)),
            _ => usage_of(info, obj),
        };
        if usage.is_empty() {
            return Ok(());
        }
        let pod = (info.group.is_empty() && info.plural == "pods")
            .then(|| serde_json::from_value::<Pod>(obj.clone()).ok())
            .flatten();
        let refuse = |why: String| {
            let name = obj["metadata"]["name"].as_str().unwrap_or("");
            let mut e =
                ApiError::forbidden(format!("{} {name:?} is forbidden: {why}", qualified(info)));
            e.details = Some(Box::new(
                json!({"name": name, "group": info.group, "kind": info.plural}),
            ));
            e
        };
        let queue = ctx.quota_locks.of(ns);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        queue
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Pending {
                usage,
                pod,
                done: tx,
            });
        let verdict = {
            let _writer = queue.writer.lock().await;
            match rx.try_recv() {
                // The writer before charged this object with its batch.
                Ok(v) => Ok(v),
                Err(_) => {
                    let batch: Vec<Pending> = std::mem::take(
                        &mut *queue.pending.lock().unwrap_or_else(|e| e.into_inner()),
                    );
                    match charge_batch(ctx, ns, &names, &batch).await {
                        Ok(verdicts) => {
                            for (p, v) in batch.into_iter().zip(verdicts) {
                                let _ = p
                                    .done
                                    .send(v.map_or(Ok(()), |why| Err(Refusal::Quota(why))));
                            }
                        }
                        Err(e) => {
                            for p in batch {
                                let _ = p.done.send(Err(Refusal::Api(e.clone())));
                            }
                        }
                    }
                    // This object was in the batch just charged.
                    rx.await
                }
            }
        };
        match verdict {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Refusal::Quota(why))) => Err(refuse(why)),
            Ok(Err(Refusal::Api(e))) => Err(e),
            Err(_) => Err(ApiError::internal("the quota charge was dropped")),
        }
    }
}

fn qualified(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.plural.to_string()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"hard": hard},
            "status": {"hard": hard, "used": used}})
    }

    fn pod(cpu: Option<&str>) -> Value {
        let res = match cpu {
            Some(c) => {
                json!({"requests": {"cpu": c, "memory": "64Mi"}, "limits": {"cpu": c, "memory": "64Mi"}})
            }
            None => json!({}),
        };
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": res}]}})
    }

    fn run(q: &Value, obj: &Value) -> Result<Check, String> {
        let info = catalogue::find("", "v1", "pods").unwrap();
        let typed: Pod = serde_json::from_value(obj.clone()).unwrap();
        check(q, Some(&typed), &usage_of(info, obj))
    }

    #[test]
    fn the_pod_past_the_quota_is_refused_in_upstreams_words() {
        let q = quota(json!({"pods": "2"}), json!({"pods": "1"}));
        let Ok(Check::Charge(out)) = run(&q, &pod(None)) else {
            panic!("the second pod fits")
        };
        assert_eq!(out["status"]["used"]["pods"], "2");
        let err = run(&out, &pod(None)).err().unwrap();
        assert_eq!(
            err,
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
    }

    #[test]
    fn compute_quotas_need_requests_and_sum_them() {
        let q = quota(
            json!({"requests.cpu": "1", "limits.memory": "1Gi"}),
            json!({"requests.cpu": "500m", "limits.memory": "0"}),
        );
        assert_eq!(
            run(&q, &pod(None)).err().unwrap(),
            "failed quota: q: must specify limits.memory for: c; requests.cpu for: c"
        );
        let Ok(Check::Charge(out)) = run(&q, &pod(Some("250m"))) else {
            panic!("fits")
        };
        assert_eq!(out["status"]["used"]["requests.cpu"], "750m");
        assert_eq!(out["status"]["used"]["limits.memory"], "64Mi");
        let err = run(&q, &pod(Some("600m"))).err().unwrap();
        assert_eq!(
            err,
            "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
        );
    }

    #[test]
    fn updates_are_charged_what_they_add() {
        let svc = catalogue::find("", "v1", "services").unwrap();
        let cluster_ip = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        let grown = growth(&usage_of(svc, &lb), &usage_of(svc, &cluster_ip));
        assert_eq!(
            grown.keys().collect::<Vec<_>>(),
            ["services.loadbalancers", "services.nodeports"]
        );
        let q = quota(
            json!({"services.loadbalancers": "0"}),
            json!({"services.loadbalancers": "0"}),
        );
        assert_eq!(
            check(&q, None, &grown).err().unwrap(),
            "exceeded quota: q, requested: services.loadbalancers=1, used: services.loadbalancers=0, limited: services.loadbalancers=0"
        );
        assert!(growth(&usage_of(svc, &cluster_ip), &usage_of(svc, &lb)).is_empty());
    }

    #[test]
    fn a_quota_without_status_is_unknown_and_others_are_untouched() {
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
        assert_eq!(
            run(&q, &pod(None)).err().unwrap(),
            "status unknown for quota: q, resources: pods"
        );
        let other = quota(
            json!({"count/configmaps": "1"}),
            json!({"count/configmaps": "1"}),
        );
        assert!(matches!(run(&other, &pod(None)), Ok(Check::Untouched)));
    }
}
