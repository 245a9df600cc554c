//! The built-in service load balancer, as k3s's ServiceLB: a
//! `LoadBalancer` Service gets the addresses of the Ready nodes as its
//! `status.loadBalancer.ingress`, and every node's service proxy forwards
//! the Service's ports on those addresses. A Service that names another
//! `loadBalancerClass` is left to that implementation.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::{Context, ControllerError};
use controller_runtime::{Queue, key_of, split_key};

/// The class a Service may name to ask for this load balancer explicitly.
pub const CLASS: &str = "r8s.io/servicelb";

/// Whether this controller serves `svc`.
pub fn serves(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == CLASS)
}

/// The ingress list for the given nodes: each Ready node's ExternalIP, else
/// its InternalIP, sorted.
pub fn ingress(nodes: &[Arc<Node>]) -> Vec<Value> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| controller_runtime::node_ready(n))
        .filter_map(|n| {
            let addrs = n.status.as_ref()?.addresses.as_ref()?;
            addrs
                .iter()
                .find(|a| a.type_ == "ExternalIP")
                .or_else(|| addrs.iter().find(|a| a.type_ == "InternalIP"))
                .map(|a| a.address.clone())
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect()
}

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let services = ctx.informers.get::<Service>();
    let nodes = ctx.informers.get::<Node>();
    let queue = Queue::named("servicelb");
    queue.watch(&services, |s| {
        if serves(s) {
            vec![key_of(s)]
        } else {
            Vec::new()
        }
    });
    let svcs = services.clone();
    queue.watch(&nodes, move |_| {
        svcs.list()
            .iter()
            .filter(|s| serves(s))
            .map(|s| key_of(s.as_ref()))
            .collect()
    });
    let client = ctx.client.clone();
    queue
        .run(ctx.opts.workers, move |key| {
            let (services, nodes, client) = (services.clone(), nodes.clone(), client.clone());
            async move {
                let (ns, name) = split_key(&key);
                let Some(svc) = services.get(ns, name) else {
                    return Ok(None);
                };
                if !serves(&svc) {
                    return Ok(None);
                }
                let want = ingress(&nodes.list());
                let have = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
                    .unwrap_or(json!([]));
                if have == json!(want) {
                    return Ok(None);
                }
                let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
                Api::<Service>::namespaced(client, ns.unwrap_or("default"))
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(ControllerError::from)?;
                Ok::<_, ControllerError>(None)
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_load_balancers_of_no_or_our_class_and_ready_node_addresses() {
        let svc =
            |spec: Value| -> Service { serde_json::from_value(json!({"spec": spec})).unwrap() };
        assert!(serves(&svc(json!({"type": "LoadBalancer"}))));
        assert!(serves(&svc(
            json!({"type": "LoadBalancer", "loadBalancerClass": CLASS})
        )));
        assert!(!serves(&svc(
            json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/other"})
        )));
        assert!(!serves(&svc(json!({"type": "NodePort"}))));
        let node = |ip: &str, ready: &str| -> Arc<Node> {
            Arc::new(serde_json::from_value(json!({"status": {
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "h"}],
                "conditions": [{"type": "Ready", "status": ready}],
            }})).unwrap())
        };
        let got = ingress(&[
            node("10.0.0.2", "True"),
            node("10.0.0.1", "True"),
            node("10.0.0.3", "False"),
        ]);
        assert_eq!(
            got,
            vec![
                json!({"ip": "10.0.0.1", "ipMode": "VIP"}),
                json!({"ip": "10.0.0.2", "ipMode": "VIP"})
            ]
        );
    }
}
