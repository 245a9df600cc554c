//! What the autoscaler reports: the ConfigMap
//! `kube-system/cluster-autoscaler-status` (key `status`, the YAML
//! cluster-autoscaler 1.30+ writes: cluster-wide and per-group health,
//! scale-up and scale-down state) and each NodeGroup's `status`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::group::NodeGroup;
use super::{Memory, group_of, now, resource};

fn counts<'a>(nodes: impl Iterator<Item = &'a Arc<Node>>) -> Value {
    let (mut total, mut ready) = (0, 0);
    for n in nodes {
        total += 1;
        if controller_runtime::node_ready(n) {
            ready += 1;
        }
    }
    json!({"registered": {"total": total, "ready": ready, "notStarted": 0,
        "unready": {"total": total - ready}}})
}

/// Writes the status ConfigMap and the groups' statuses.
pub(super) async fn write(
    client: &kube::Client,
    groups: &[NodeGroup],
    nodes: &[Arc<Node>],
    sizes: &BTreeMap<String, usize>,
    memory: &Memory,
    candidates: usize,
) {
    let t = now();
    let in_progress = memory.upcoming.values().any(|l| !l.is_empty());
    let up_status = if in_progress {
        "InProgress"
    } else {
        "NoActivity"
    };
    let down_status = if candidates > 0 {
        "CandidatesPresent"
    } else {
        "NoCandidates"
    };
    let mut group_entries = Vec::new();
    for g in groups {
        let members: Vec<&Arc<Node>> = nodes
            .iter()
            .filter(|n| group_of(n) == Some(g.name.as_str()))
            .collect();
        let upcoming = memory.upcoming.get(&g.name).map_or(0, Vec::len);
        let target = sizes.get(&g.name).copied().unwrap_or(0) + upcoming;
        group_entries.push(json!({
            "name": g.name,
            "health": {
                "status": "Healthy",
                "nodeCounts": counts(members.iter().copied()),
                "cloudProviderTarget": target,
                "minSize": g.min_size,
                "maxSize": g.max_size,
                "lastProbeTime": t,
            },
            "scaleUp": {"status": if upcoming > 0 { "InProgress" } else { "NoActivity" }, "lastProbeTime": t},
            "scaleDown": {"status": down_status, "lastProbeTime": t},
        }));
        let mut names: Vec<String> = members
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        names.sort();
        let mut st = json!({"currentSize": members.len(), "targetSize": target, "nodes": names});
        if let Some(u) = &memory.last_scale_up {
            st["lastScaleUpTime"] = json!(u);
        }
        if let Some(d) = &memory.last_scale_down {
            st["lastScaleDownTime"] = json!(d);
        }
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
        if let Err(e) = api
            .patch_status(
                &g.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": st})),
            )
            .await
        {
            tracing::debug!(group = %g.name, error = %e, "node group status");
        }
    }
    let doc = json!({
        "time": t,
        "autoscalerStatus": "Running",
        "clusterWide": {
            "health": {"status": "Healthy", "nodeCounts": counts(nodes.iter()), "lastProbeTime": t},
            "scaleUp": {"status": up_status, "lastProbeTime": t},
            "scaleDown": {"status": down_status, "candidates": candidates, "lastProbeTime": t},
        },
        "nodeGroups": group_entries,
    });
    let yaml = serde_yaml_ng::to_string(&doc).unwrap_or_default();
    let cm: ConfigMap = match serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-autoscaler-status", "namespace": "kube-system",
            "annotations": {"cluster-autoscaler.kubernetes.io/last-updated": t}},
        "data": {"status": yaml},
    })) {
        Ok(c) => c,
        Err(_) => return,
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let pp = PatchParams::apply("cluster-autoscaler").force();
    if let Err(e) = api
        .patch("cluster-autoscaler-status", &pp, &Patch::Apply(&cm))
        .await
    {
        tracing::debug!(error = %e, "cluster-autoscaler-status");
    }
}
