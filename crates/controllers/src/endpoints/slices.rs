//! EndpointSlice controller: for every Service with a selector, IPv4
//! EndpointSlices (at most 100 endpoints each, one set per distinct port
//! mapping) listing the matching pods that have an IP. Also mirrors the
//! API server's `kubernetes` Endpoints into the `kubernetes` EndpointSlice
//! (upstream's API server endpoint reconciler writes that one).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};

use super::{
    HEADLESS_LABEL, PodIndex, SERVICE_NAME_LABEL, TRIGGER_TIME, headless, hostname_for,
    managed_selector, now_rfc3339, pod_in_endpoints, pod_ipv4, pod_ready, resolve_port, selects,
    wait_ready,
};
use crate::{Context, ControllerError};
use controller_runtime::{Queue, key_of, split_key};

/// Label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`].
pub const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (upstream's --max-endpoints-per-slice default).
pub const MAX_PER_SLICE: usize = 100;
/// Node label holding the zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The endpoints a Service should have, each with the ports it serves on
/// (ports differ between pods when a named targetPort resolves differently).
pub fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone_of: impl Fn(&str) -> Option<String>,
) -> Vec<(Vec<EndpointPort>, Endpoint)> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let mut out = Vec::new();
    for pod in pods {
        if !selects(svc, pod.metadata.labels.as_ref()) || !pod_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let ports: Vec<EndpointPort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(resolve_port(pod, sp)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let serving = pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ep = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                // Never ready while terminating unless not-ready addresses
                // are published (as upstream, for compatibility).
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname_for(pod, svc),
            zone: node.as_deref().and_then(&zone_of),
            node_name: node,
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        out.push((ports, ep));
    }
    out
}

/// Writes to make a Service's slices match the desired endpoints.
#[derive(Debug, Default)]
pub struct SlicePlan {
    /// Slices to create (generateName set).
    pub create: Vec<EndpointSlice>,
    /// Slices to replace (changed only).
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

/// An endpoint's identity across recomputations: its pod, else its address.
fn endpoint_id(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone().or_else(|| r.name.clone()))
        .unwrap_or_else(|| e.addresses.join(","))
}

fn ports_key(ports: &[EndpointPort]) -> String {
    serde_json::to_string(ports).unwrap_or_default()
}

/// Labels of a Service's slices: the Service's own (minus the reserved
/// ones), the service name, the manager, headless-ness.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = svc
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != SERVICE_NAME_LABEL && k != MANAGED_BY && k != HEADLESS_LABEL)
        .collect();
    l.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(MANAGED_BY.into(), SLICE_CONTROLLER.into());
    if headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l
}

fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A slice's content as this controller wants it, on top of `base`.
fn shaped(
    svc: &Service,
    mut base: EndpointSlice,
    ports: Vec<EndpointPort>,
    eps: Vec<Endpoint>,
) -> EndpointSlice {
    base.metadata.labels = Some(slice_labels(svc));
    base.metadata.owner_references = Some(vec![owner_ref(svc)]);
    base.address_type = "IPv4".into();
    base.ports = if ports.is_empty() && eps.is_empty() {
        None
    } else {
        Some(ports)
    };
    base.endpoints = eps;
    base
}

fn same_content(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.endpoints == b.endpoints
        && a.ports.clone().unwrap_or_default() == b.ports.clone().unwrap_or_default()
        && a.address_type == b.address_type
        && a.metadata.labels == b.metadata.labels
        && a.metadata.owner_references == b.metadata.owner_references
}

/// Plans the slice writes for a Service: endpoints stay in the slice they
/// are in while they still exist (little churn for watchers), new ones fill
/// slices with room, then new slices of up to [`MAX_PER_SLICE`]. With no
/// endpoints at all one empty placeholder slice remains, as upstream.
pub fn plan_slices(
    svc: &Service,
    desired: Vec<(Vec<EndpointPort>, Endpoint)>,
    existing: &[Arc<EndpointSlice>],
) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let trigger = now_rfc3339();
    // Desired endpoints by port mapping, in order, by identity.
    let mut groups: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (ports, ep) in desired {
        let k = ports_key(&ports);
        let i = *group_of.entry(k).or_insert_with(|| {
            groups.push((ports, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(ep);
    }
    let total: usize = groups.iter().map(|g| g.1.len()).sum();
    let mut existing: Vec<&Arc<EndpointSlice>> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let new_meta = || ObjectMeta {
        generate_name: Some(format!(
            "{}-",
            svc.metadata.name.clone().unwrap_or_default()
        )),
        namespace: svc.metadata.namespace.clone(),
        annotations: Some(BTreeMap::from([(
            TRIGGER_TIME.to_string(),
            trigger.clone(),
        )])),
        ..Default::default()
    };
    let finish = |plan: &mut SlicePlan, old: &EndpointSlice, want: EndpointSlice| {
        if !same_content(old, &want) {
            let mut want = want;
            want.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(TRIGGER_TIME.into(), trigger.clone());
            plan.update.push(want);
        }
    };
    if total == 0 {
        let mut it = existing.into_iter();
        match it.next() {
            Some(keep) => {
                let want = shaped(svc, (**keep).clone(), Vec::new(), Vec::new());
                finish(&mut plan, keep, want);
            }
            None => plan.create.push(shaped(
                svc,
                EndpointSlice {
                    metadata: new_meta(),
                    ..Default::default()
                },
                Vec::new(),
                Vec::new(),
            )),
        }
        plan.delete
            .extend(it.filter_map(|s| s.metadata.name.clone()));
        return plan;
    }
    // Per group: the endpoints not yet placed, by identity.
    let mut pending: Vec<HashMap<String, Endpoint>> = groups
        .iter()
        .map(|(_, eps)| eps.iter().map(|e| (endpoint_id(e), e.clone())).collect())
        .collect();
    // Existing slices keep their still-wanted endpoints (refreshed).
    let mut kept: Vec<(usize, &Arc<EndpointSlice>, Vec<Endpoint>)> = Vec::new();
    for s in existing {
        let k = ports_key(s.ports.as_deref().unwrap_or_default());
        let Some(&g) = group_of.get(&k) else {
            plan.delete.extend(s.metadata.name.clone());
            continue;
        };
        let eps: Vec<Endpoint> = s
            .endpoints
            .iter()
            .filter_map(|e| pending[g].remove(&endpoint_id(e)))
            .collect();
        kept.push((g, s, eps));
    }
    // New endpoints fill kept slices with room, in desired order.
    for (g, (_, eps)) in groups.iter().enumerate() {
        let mut rest: Vec<Endpoint> = eps
            .iter()
            .filter_map(|e| pending[g].remove(&endpoint_id(e)))
            .collect();
        for (kg, _, keps) in kept.iter_mut() {
            if *kg != g || rest.is_empty() {
                continue;
            }
            let room = MAX_PER_SLICE.saturating_sub(keps.len()).min(rest.len());
            keps.extend(rest.drain(..room));
        }
        for chunk in rest.chunks(MAX_PER_SLICE) {
            plan.create.push(shaped(
                svc,
                EndpointSlice {
                    metadata: new_meta(),
                    ..Default::default()
                },
                groups[g].0.clone(),
                chunk.to_vec(),
            ));
        }
    }
    for (g, s, eps) in kept {
        if eps.is_empty() {
            plan.delete.extend(s.metadata.name.clone());
            continue;
        }
        let want = shaped(svc, (**s).clone(), groups[g].0.clone(), eps);
        finish(&mut plan, s, want);
    }
    plan
}

/// The `kubernetes` EndpointSlice mirroring the API server's Endpoints, as
/// upstream's endpoint reconciler writes it (service-name label only).
pub fn slice_for_apiserver(ep: &Endpoints) -> EndpointSlice {
    let subset = ep.subsets.as_ref().and_then(|s| s.first());
    let ports = subset.and_then(|s| s.ports.as_ref()).map(|ps| {
        ps.iter()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect()
    });
    let conv = |addrs: Option<&Vec<k8s_openapi::api::core::v1::EndpointAddress>>, ready: bool| {
        addrs
            .into_iter()
            .flatten()
            .map(move |a| Endpoint {
                addresses: vec![a.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    ..Default::default()
                }),
                hostname: a.hostname.clone().filter(|h| !h.is_empty()),
                node_name: a.node_name.clone(),
                target_ref: a.target_ref.clone(),
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    let mut endpoints = conv(subset.and_then(|s| s.addresses.as_ref()), true);
    endpoints.extend(conv(
        subset.and_then(|s| s.not_ready_addresses.as_ref()),
        false,
    ));
    EndpointSlice {
        metadata: ObjectMeta {
            name: ep.metadata.name.clone(),
            namespace: ep.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                ep.metadata.name.clone().unwrap_or_default(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports,
    }
}

/// Slices written by this controller and not yet seen in the cache, per
/// Service key: slice name → resourceVersion written (None: deleted).
/// Acting on a cache that does not show them yet would duplicate slices.
#[derive(Default, Clone)]
struct Tracker(Arc<Mutex<Written>>);

/// Per Service key: slice name → resourceVersion written (None: deleted).
type Written = HashMap<String, HashMap<String, Option<String>>>;

/// Whether a cached resourceVersion is at least the one written.
fn rv_at_least(cached: Option<&str>, written: &str) -> bool {
    match (
        cached.and_then(|c| c.parse::<u64>().ok()),
        written.parse::<u64>(),
    ) {
        (Some(c), Ok(w)) => c >= w,
        _ => cached == Some(written),
    }
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the cache shows every write made for `svc`; forgets the
    /// writes it shows.
    fn caught_up(&self, svc: &str, cached: &[Arc<EndpointSlice>]) -> bool {
        let mut all = self.lock();
        let Some(w) = all.get_mut(svc) else {
            return true;
        };
        w.retain(|name, rv| {
            let c = cached
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name.as_str()));
            let seen = match (rv, c) {
                (None, None) => true,
                (None, Some(_)) => false,
                (Some(_), None) => false,
                (Some(rv), Some(c)) => rv_at_least(c.metadata.resource_version.as_deref(), rv),
            };
            !seen
        });
        let done = w.is_empty();
        if done {
            all.remove(svc);
        }
        done
    }

    fn wrote(&self, svc: &str, name: String, rv: Option<String>) {
        self.lock()
            .entry(svc.to_string())
            .or_default()
            .insert(name, rv);
    }

    fn forget(&self, svc: &str) {
        self.lock().remove(svc);
    }
}

/// Runs the EndpointSlice controller until the task is dropped.
pub async fn run_slices(ctx: Arc<Context>) {
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let slices = ctx.informers.get::<EndpointSlice>();
    let nodes = ctx.informers.get::<Node>();
    let endpoints = ctx.informers.get::<Endpoints>();
    let index = PodIndex::default();
    let tracker = Tracker::default();
    wait_ready(&services).await;
    wait_ready(&slices).await;
    wait_ready(&nodes).await;
    wait_ready(&endpoints).await;
    wait_ready(&pods).await;
    let q = Queue::named("endpoint_slice");
    q.watch(&services, |s: &Service| vec![key_of(s)]);
    q.watch_changes(&pods, index.mapper(services.clone()));
    q.watch(&slices, |s: &EndpointSlice| {
        let owner = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        match (owner, s.metadata.namespace.as_deref()) {
            (Some(name), Some(ns)) => vec![format!("{ns}/{name}")],
            _ => Vec::new(),
        }
    });
    q.watch(&endpoints, |e: &Endpoints| {
        if e.metadata.namespace.as_deref() == Some("default")
            && e.metadata.name.as_deref() == Some("kubernetes")
        {
            vec!["default/kubernetes".into()]
        } else {
            Vec::new()
        }
    });
    let client = ctx.client.clone();
    q.run(ctx.opts.workers, move |key: String| {
        let (services, slices, nodes, endpoints, index, tracker, client) = (
            services.clone(),
            slices.clone(),
            nodes.clone(),
            endpoints.clone(),
            index.clone(),
            tracker.clone(),
            client.clone(),
        );
        async move {
            let (Some(ns), name) = split_key(&key) else {
                return Ok::<_, ControllerError>(None);
            };
            let api = Api::<EndpointSlice>::namespaced(client, ns);
            let Some(svc) = services.get(Some(ns), name) else {
                // The garbage collector removes the slices it owned.
                tracker.forget(&key);
                return Ok(None);
            };
            if managed_selector(&svc).is_none() {
                if key == "default/kubernetes" {
                    return mirror_apiserver(&api, &endpoints, &slices).await;
                }
                return Ok(None);
            }
            let mine: Vec<Arc<EndpointSlice>> = slices
                .list_ns(ns)
                .into_iter()
                .filter(|s| {
                    let l = s.metadata.labels.as_ref();
                    l.and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(name)
                        && l.and_then(|l| l.get(MANAGED_BY)).map(String::as_str)
                            == Some(SLICE_CONTROLLER)
                })
                .collect();
            if !tracker.caught_up(&key, &mine) {
                return Ok(Some(Duration::from_millis(100)));
            }
            if svc.metadata.deletion_timestamp.is_some() {
                return Ok(None);
            }
            let zone_of = |node: &str| {
                nodes
                    .get(None, node)
                    .and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned())
            };
            let desired = desired_endpoints(&svc, &index.pods(ns), zone_of);
            let plan = plan_slices(&svc, desired, &mine);
            let pp = PostParams::default();
            for s in plan.create {
                let made = api.create(&pp, &s).await?;
                if let Some(n) = made.metadata.name {
                    tracker.wrote(&key, n, made.metadata.resource_version);
                }
            }
            for s in plan.update {
                let n = s.metadata.name.clone().unwrap_or_default();
                match api.replace(&n, &pp, &s).await {
                    Ok(made) => tracker.wrote(&key, n, made.metadata.resource_version),
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                        return Ok(Some(Duration::from_millis(100)));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for n in plan.delete {
                match api.delete(&n, &DeleteParams::default()).await {
                    Ok(_) => tracker.wrote(&key, n, None),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(None)
        }
    })
    .await;
}

/// Keeps the `default/kubernetes` EndpointSlice equal to the API server's
/// `kubernetes` Endpoints.
async fn mirror_apiserver(
    api: &Api<EndpointSlice>,
    endpoints: &controller_runtime::Informer<Endpoints>,
    slices: &controller_runtime::Informer<EndpointSlice>,
) -> Result<Option<Duration>, ControllerError> {
    let Some(ep) = endpoints.get(Some("default"), "kubernetes") else {
        return Ok(None);
    };
    let want = slice_for_apiserver(&ep);
    let pp = PostParams::default();
    let res = match slices.get(Some("default"), "kubernetes") {
        None => api.create(&pp, &want).await.map(|_| ()),
        Some(cur) => {
            if cur.endpoints == want.endpoints
                && cur.ports == want.ports
                && cur.metadata.labels == want.metadata.labels
            {
                return Ok(None);
            }
            let mut s = (*cur).clone();
            s.endpoints = want.endpoints;
            s.ports = want.ports;
            s.metadata.labels = want.metadata.labels;
            api.replace("kubernetes", &pp, &s).await.map(|_| ())
        }
    };
    match res {
        Ok(()) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::from_millis(200))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::pod;
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))
    }

    #[test]
    fn endpoints_carry_conditions_ports_zone_and_pod_reference() {
        let pods = vec![
            Arc::new(pod("a", Some("10.0.0.1"), true)),
            Arc::new(pod("b", Some("10.0.0.2"), false)),
            Arc::new(pod("c", None, true)),
        ];
        let d = desired_endpoints(&web(), &pods, |n| Some(format!("zone-of-{n}")));
        assert_eq!(d.len(), 2, "the pod without an IP is left out");
        let (ports, a) = &d[0];
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(a.addresses, vec!["10.0.0.1"]);
        assert_eq!(a.zone.as_deref(), Some("zone-of-node-1"));
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        let c = a.conditions.as_ref().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(true), Some(true), Some(false))
        );
        let c = d[1].1.conditions.as_ref().unwrap();
        assert_eq!((c.ready, c.serving), (Some(false), Some(false)));
    }

    #[test]
    fn terminating_pods_are_served_but_not_ready() {
        let mut p = pod("a", Some("10.0.0.1"), true);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let d = desired_endpoints(&web(), &[Arc::new(p.clone())], |_| None);
        let c = d[0].1.conditions.as_ref().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
        let mut s = web();
        s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let d = desired_endpoints(&s, &[Arc::new(p)], |_| None);
        assert_eq!(d[0].1.conditions.as_ref().unwrap().ready, Some(true));
    }

    #[test]
    fn slices_hold_at_most_100_and_stay_put() {
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                Arc::new(pod(
                    &format!("p{i:03}"),
                    Some(&format!("10.0.{}.{}", i / 200, i % 200)),
                    true,
                ))
            })
            .collect();
        let s = web();
        let plan = plan_slices(&s, desired_endpoints(&s, &pods, |_| None), &[]);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let first = &plan.create[0];
        let labels = first.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY], SLICE_CONTROLLER);
        assert_eq!(labels["team"], "a");
        assert_eq!(first.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(
            first.metadata.owner_references.as_ref().unwrap()[0].uid,
            "svc-uid"
        );
        // Existing slices, unchanged: no writes at all.
        let existing: Vec<Arc<EndpointSlice>> = plan
            .create
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                s.metadata.name = Some(format!("web-{i}"));
                Arc::new(s)
            })
            .collect();
        let again = plan_slices(&s, desired_endpoints(&s, &pods, |_| None), &existing);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // One pod gone: only its slice is rewritten.
        let fewer: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| p.metadata.name.as_deref() != Some("p005"))
            .cloned()
            .collect();
        let p = plan_slices(&s, desired_endpoints(&s, &fewer, |_| None), &existing);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].metadata.name.as_deref(), Some("web-0"));
        assert_eq!(p.update[0].endpoints.len(), 99);
    }

    #[test]
    fn no_endpoints_leaves_one_placeholder() {
        let s = web();
        let plan = plan_slices(&s, Vec::new(), &[]);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
        assert!(plan.create[0].ports.is_none());
    }
}
