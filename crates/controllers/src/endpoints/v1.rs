//! Endpoints controller: for every Service with a selector, a v1 Endpoints
//! object of the same name whose subsets list the ready pods in
//! `addresses` and the others in `notReadyAddresses`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};

use super::{
    HEADLESS_LABEL, PodIndex, TRIGGER_TIME, headless, hostname_for, managed_selector, now_rfc3339,
    pod_in_endpoints, pod_ipv4, pod_ready, resolve_port, selects, wait_ready,
};
use crate::{Context, ControllerError};
use controller_runtime::{Queue, key_of, split_key};

/// Label naming the controller that manages an Endpoints object (KEP-4770).
pub const ENDPOINTS_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// This controller's value of [`ENDPOINTS_MANAGED_BY`].
pub const ENDPOINTS_CONTROLLER: &str = "endpoint-controller";
/// Upstream's cap on addresses in one Endpoints object.
const MAX_ADDRESSES: usize = 1000;
/// Annotation set when addresses were dropped over [`MAX_ADDRESSES`].
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// One address with the ports it serves on.
struct Entry {
    ports: Vec<EndpointPort>,
    addr: EndpointAddress,
    ready: bool,
}

/// The subsets of a Service's Endpoints: addresses grouped by identical
/// port sets, sorted (upstream's RepackSubsets), plus whether addresses
/// beyond the cap were dropped.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> (Vec<EndpointSubset>, bool) {
    let Some(spec) = svc.spec.as_ref() else {
        return (Vec::new(), false);
    };
    let tolerate = spec.publish_not_ready_addresses == Some(true);
    let mut entries = Vec::new();
    for pod in pods {
        if !selects(svc, pod.metadata.labels.as_ref()) || !pod_in_endpoints(pod, tolerate) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let addr = EndpointAddress {
            ip,
            hostname: hostname_for(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let ready = tolerate || pod_ready(pod);
        let svc_ports = spec.ports.as_deref().unwrap_or_default();
        if svc_ports.is_empty() {
            // Only headless Services may have port-less endpoints.
            if headless(svc) {
                entries.push(Entry {
                    ports: Vec::new(),
                    addr,
                    ready,
                });
            }
            continue;
        }
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port: resolve_port(pod, sp)?,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        if !ports.is_empty() {
            entries.push(Entry { ports, addr, ready });
        }
    }
    // Ready addresses are kept first when truncating, as upstream.
    let total = entries.len();
    let truncated = total > MAX_ADDRESSES;
    if truncated {
        entries.sort_by_key(|e| !e.ready);
        entries.truncate(MAX_ADDRESSES);
    }
    let mut by_ports: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    for mut e in entries {
        e.ports
            .sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let k = serde_json::to_string(&e.ports).unwrap_or_default();
        let sub = by_ports.entry(k).or_insert_with(|| EndpointSubset {
            ports: (!e.ports.is_empty()).then(|| e.ports.clone()),
            ..Default::default()
        });
        let list = if e.ready {
            sub.addresses.get_or_insert_with(Vec::new)
        } else {
            sub.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(e.addr);
    }
    let mut subsets: Vec<EndpointSubset> = by_ports.into_values().collect();
    let order = |a: &EndpointAddress| {
        (
            a.ip.parse::<std::net::Ipv4Addr>().ok(),
            a.target_ref.as_ref().and_then(|r| r.uid.clone()),
        )
    };
    for s in &mut subsets {
        for l in [&mut s.addresses, &mut s.not_ready_addresses]
            .into_iter()
            .flatten()
        {
            l.sort_by_key(order);
        }
    }
    (subsets, truncated)
}

/// Labels of a Service's Endpoints: the Service's own, headless-ness and
/// the manager.
fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    l.remove(HEADLESS_LABEL);
    if headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l.insert(ENDPOINTS_MANAGED_BY.into(), ENDPOINTS_CONTROLLER.into());
    l
}

/// Runs the Endpoints controller until the task is dropped.
pub async fn run_endpoints(ctx: Arc<Context>) {
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let endpoints = ctx.informers.get::<Endpoints>();
    let index = PodIndex::default();
    wait_ready(&services).await;
    wait_ready(&endpoints).await;
    wait_ready(&pods).await;
    let q = Queue::named("endpoint");
    q.watch(&services, |s: &Service| vec![key_of(s)]);
    q.watch_changes(&pods, index.mapper(services.clone()));
    q.watch(&endpoints, |e: &Endpoints| vec![key_of(e)]);
    let client = ctx.client.clone();
    q.run(ctx.opts.workers, move |key: String| {
        let (services, endpoints, index, client) = (
            services.clone(),
            endpoints.clone(),
            index.clone(),
            client.clone(),
        );
        async move {
            let (Some(ns), name) = split_key(&key) else {
                return Ok::<_, ControllerError>(None);
            };
            let api = Api::<Endpoints>::namespaced(client, ns);
            let cur = endpoints.get(Some(ns), name);
            let Some(svc) = services.get(Some(ns), name) else {
                // Service gone: remove the Endpoints this controller made.
                let ours = cur.as_ref().is_some_and(|e| {
                    e.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(ENDPOINTS_MANAGED_BY))
                        .map(String::as_str)
                        == Some(ENDPOINTS_CONTROLLER)
                });
                if ours {
                    match api.delete(name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok(None);
            };
            if managed_selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
                return Ok(None);
            }
            let (subsets, truncated) = desired_subsets(&svc, &index.pods(ns));
            let labels = endpoints_labels(&svc);
            let subsets_opt = (!subsets.is_empty()).then_some(subsets);
            let pp = PostParams::default();
            let res = match cur {
                Some(cur) => {
                    let cur_truncated = cur
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(OVER_CAPACITY));
                    if cur.subsets.clone().unwrap_or_default()
                        == subsets_opt.clone().unwrap_or_default()
                        && cur.metadata.labels.as_ref() == Some(&labels)
                        && cur_truncated == truncated
                    {
                        return Ok(None);
                    }
                    let mut e = (*cur).clone();
                    e.subsets = subsets_opt;
                    e.metadata.labels = Some(labels);
                    let ann = e.metadata.annotations.get_or_insert_with(BTreeMap::new);
                    ann.insert(TRIGGER_TIME.into(), now_rfc3339());
                    if truncated {
                        ann.insert(OVER_CAPACITY.into(), "truncated".into());
                    } else {
                        ann.remove(OVER_CAPACITY);
                    }
                    api.replace(name, &pp, &e).await.map(|_| ())
                }
                None => {
                    let mut ann = BTreeMap::from([(TRIGGER_TIME.to_string(), now_rfc3339())]);
                    if truncated {
                        ann.insert(OVER_CAPACITY.into(), "truncated".into());
                    }
                    let e = Endpoints {
                        metadata: ObjectMeta {
                            name: Some(name.to_string()),
                            namespace: Some(ns.to_string()),
                            labels: Some(labels),
                            annotations: Some(ann),
                            ..Default::default()
                        },
                        subsets: subsets_opt,
                    };
                    api.create(&pp, &e).await.map(|_| ())
                }
            };
            match res {
                Ok(()) => Ok(None),
                // The cache is behind (created or changed meanwhile).
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::from_millis(100))),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::super::testutil::pod;
    use super::*;
    use serde_json::json;

    fn web(publish: bool) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))
        .unwrap()
    }

    #[test]
    fn ready_and_not_ready_pods_split_into_address_lists() {
        let pods = vec![
            Arc::new(pod("b", Some("10.0.0.10"), true)),
            Arc::new(pod("a", Some("10.0.0.9"), true)),
            Arc::new(pod("c", Some("10.0.0.3"), false)),
            Arc::new(pod("d", None, true)),
        ];
        let (subs, truncated) = desired_subsets(&web(false), &pods);
        assert!(!truncated);
        assert_eq!(subs.len(), 1);
        let ips = |l: &Option<Vec<EndpointAddress>>| {
            l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        // Sorted numerically by IP.
        assert_eq!(ips(&subs[0].addresses), vec!["10.0.0.9", "10.0.0.10"]);
        assert_eq!(ips(&subs[0].not_ready_addresses), vec!["10.0.0.3"]);
        let ports = subs[0].ports.as_ref().unwrap();
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].port),
            (Some("http"), 8080)
        );
        let (subs, _) = desired_subsets(&web(true), &pods);
        assert_eq!(ips(&subs[0].addresses).len(), 3, "publishNotReadyAddresses");
        assert!(subs[0].not_ready_addresses.is_none());
    }
}
