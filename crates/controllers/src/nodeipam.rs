//! Node IPAM, as upstream's node-ipam-controller with the range allocator:
//! every Node without a `spec.podCIDR` gets the lowest free /24 of the
//! cluster CIDR. A full range is a `CIDRNotAvailable` event on the Node,
//! not a crash; the Node is retried when others go away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::{Context, ControllerError};
use controller_runtime::Queue;

/// The prefix length of each node's range (upstream's
/// `--node-cidr-mask-size` default for IPv4).
pub const NODE_MASK: u8 = 24;

/// The lowest /`NODE_MASK` of `cluster` not in `used`.
pub fn next_free(
    cluster: ipnet::Ipv4Net,
    used: &HashSet<ipnet::Ipv4Net>,
) -> Option<ipnet::Ipv4Net> {
    if cluster.prefix_len() > NODE_MASK {
        return None;
    }
    cluster.subnets(NODE_MASK).ok()?.find(|s| {
        !used
            .iter()
            .any(|u| u.contains(&s.network()) || s.contains(&u.network()))
    })
}

/// Runs the allocator until the task is dropped (a no-op without a
/// cluster CIDR).
pub async fn run(ctx: Arc<Context>) {
    let Some(cluster) = ctx.opts.cluster_cidr else {
        return;
    };
    let nodes = ctx.informers.get::<Node>();
    let queue = Queue::named("nodeipam");
    // Any node change may free or need a range: one key for the lot.
    queue.watch(&nodes, |_| vec!["all".to_string()]);
    let recorder = ctx.recorder("node-ipam-controller");
    let client = ctx.client.clone();
    // Ranges this allocator has written that the informer may not show
    // yet: without them a stale cache would hand the same range to a
    // second node.
    let pending: Arc<Mutex<HashMap<String, ipnet::Ipv4Net>>> = Arc::default();
    queue
        .run(1, move |_| {
            let nodes = nodes.clone();
            let client = client.clone();
            let recorder = recorder.clone();
            let pending = pending.clone();
            async move {
                let all = nodes.list();
                let mut used: HashSet<ipnet::Ipv4Net> = all
                    .iter()
                    .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok())
                    .collect();
                let waiting: HashMap<String, ipnet::Ipv4Net> = {
                    let mut p = pending.lock().expect("pending ranges");
                    // Settled once the cache shows the node (with any
                    // range); forgotten when the node is gone.
                    p.retain(|name, _| {
                        all.iter()
                            .find(|n| n.metadata.name.as_deref() == Some(name))
                            .is_some_and(|n| pod_cidr(n).is_empty())
                    });
                    p.clone()
                };
                used.extend(waiting.values().copied());
                let mut full = false;
                for n in all.iter().filter(|n| {
                    pod_cidr(n).is_empty()
                        && n.metadata.deletion_timestamp.is_none()
                        && !waiting.contains_key(n.metadata.name.as_deref().unwrap_or(""))
                }) {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let Some(cidr) = next_free(cluster, &used) else {
                        recorder.warning(
                            n.as_ref(),
                            "CIDRNotAvailable",
                            format!("Node {name} status is now: CIDRNotAvailable"),
                        );
                        full = true;
                        continue;
                    };
                    // The resourceVersion makes a write from a stale view a
                    // conflict (retried) instead of a second range.
                    let patch = json!({
                        "metadata": {"resourceVersion": n.metadata.resource_version},
                        "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
                    });
                    Api::<Node>::all(client.clone())
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(ControllerError::from)?;
                    tracing::info!(node = %name, cidr = %cidr, "assigned pod CIDR");
                    pending.lock().expect("pending ranges").insert(name, cidr);
                    used.insert(cidr);
                }
                Ok::<_, ControllerError>(full.then_some(Duration::from_secs(30)))
            }
        })
        .await;
}

fn pod_cidr(n: &Node) -> &str {
    n.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_slash_24_and_none_when_full() {
        let cluster: ipnet::Ipv4Net = "10.42.0.0/23".parse().unwrap();
        let mut used = HashSet::new();
        let a = next_free(cluster, &used).unwrap();
        assert_eq!(a.to_string(), "10.42.0.0/24");
        used.insert(a);
        let b = next_free(cluster, &used).unwrap();
        assert_eq!(b.to_string(), "10.42.1.0/24");
        used.insert(b);
        assert_eq!(next_free(cluster, &used), None);
        // A range someone claimed by hand is skipped too.
        let mut hand = HashSet::new();
        hand.insert("10.42.0.0/24".parse().unwrap());
        assert_eq!(
            next_free(cluster, &hand).unwrap().to_string(),
            "10.42.1.0/24"
        );
    }
}
