//! Pod garbage collection, as upstream's podgc controller: pods bound to
//! nodes that no longer exist, terminating pods that no kubelet will ever
//! finish (unscheduled, or on a node tainted out-of-service), and finished
//! pods beyond the retention threshold are deleted for good.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};

use crate::Context;

/// How often the collector looks (upstream's gcCheckPeriod).
const PERIOD: Duration = Duration::from_secs(20);
/// Finished pods kept before the oldest are deleted (upstream's
/// --terminated-pod-gc-threshold default).
const TERMINATED_THRESHOLD: usize = 12_500;
/// The taint an operator puts on a node that is known to be down.
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// Runs the collector until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    pods.ready().await;
    nodes.ready().await;
    // Nodes missing at the previous pass: a pod is collected only when its
    // node was missing twice in a row (upstream quarantines for 40 s too).
    let mut missing_before: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        let all = pods.list();
        let node_names: HashSet<String> = nodes
            .list()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let plan = plan(&all, &node_names, &nodes.list(), &missing_before);
        missing_before = plan.missing_nodes;
        for (ns, name) in plan.delete {
            force_delete(&ctx.client, &ns, &name).await;
        }
    }
}

/// What one pass decides.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Pods to force-delete, as (namespace, name).
    delete: Vec<(String, String)>,
    /// Nodes referenced by pods but absent now.
    missing_nodes: HashSet<String>,
}

fn plan(
    pods: &[Arc<Pod>],
    node_names: &HashSet<String>,
    nodes: &[Arc<Node>],
    missing_before: &HashSet<String>,
) -> Plan {
    let mut out = Plan::default();
    let out_of_service: HashSet<&str> = nodes
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE))
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut finished: Vec<&Arc<Pod>> = Vec::new();
    for p in pods {
        let (Some(ns), Some(name)) = (p.metadata.namespace.clone(), p.metadata.name.clone()) else {
            continue;
        };
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        let terminating = p.metadata.deletion_timestamp.is_some();
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if node.is_empty() {
            if terminating {
                out.delete.push((ns, name));
            }
            continue;
        }
        if !node_names.contains(node) {
            out.missing_nodes.insert(node.to_string());
            if missing_before.contains(node) {
                out.delete.push((ns, name));
            }
            continue;
        }
        if terminating && out_of_service.contains(node) {
            out.delete.push((ns, name));
            continue;
        }
        if matches!(phase, "Succeeded" | "Failed") && !terminating {
            finished.push(p);
        }
    }
    if finished.len() > TERMINATED_THRESHOLD {
        finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let excess = finished.len() - TERMINATED_THRESHOLD;
        for p in finished.into_iter().take(excess) {
            if let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) {
                out.delete.push((ns.clone(), name.clone()));
            }
        }
    }
    out
}

async fn force_delete(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    match api
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => tracing::info!(namespace = ns, pod = name, "garbage-collected pod"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => tracing::debug!(namespace = ns, pod = name, error = %e, "pod gc delete failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, terminating: bool, phase: &str) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"containers": []}, "status": {"phase": phase}});
        if !node.is_empty() {
            v["spec"]["nodeName"] = json!(node);
        }
        if terminating {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn node(name: &str, taint: Option<&str>) -> Arc<Node> {
        let mut v = json!({"metadata": {"name": name}});
        if let Some(t) = taint {
            v["spec"] = json!({"taints": [{"key": t, "effect": "NoExecute"}]});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn collects_orphans_after_a_quarantine_and_stuck_terminating_pods() {
        let nodes = vec![node("a", None), node("down", Some(OUT_OF_SERVICE))];
        let names: HashSet<String> = ["a".to_string(), "down".to_string()].into();
        let pods = vec![
            pod("live", "a", false, "Running"),
            pod("orphan", "gone", false, "Running"),
            pod("pending-deleted", "", true, "Pending"),
            pod("stuck", "down", true, "Running"),
            pod("finishing", "a", true, "Running"),
        ];
        let first = plan(&pods, &names, &nodes, &HashSet::new());
        let del: Vec<&str> = first.delete.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            del,
            vec!["pending-deleted", "stuck"],
            "orphans wait one pass"
        );
        let second = plan(&pods, &names, &nodes, &first.missing_nodes);
        let del: Vec<&str> = second.delete.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(del, vec!["orphan", "pending-deleted", "stuck"]);
    }
}
