//! The cluster autoscaler's decisions, from a snapshot of the cluster and
//! no I/O: which node group grows for the pods nothing fits (simulating
//! the scheduler on template nodes, packing pods first-fit as upstream's
//! binpacking estimator), and which nodes are unneeded (little requested,
//! and every pod they run fits elsewhere).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use scheduler::simulate::Simulator;
use serde_json::json;

use super::group::NodeGroup;

/// The label that ties a node to its group.
pub const GROUP_LABEL: &str = "autoscaling.r8s.io/node-group";
/// The annotation a pod uses to refuse eviction by the autoscaler.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// A template node of `group` named `name` (what a new node will be).
pub fn template_node(group: &NodeGroup, name: &str) -> Arc<Node> {
    let mut labels = group.template.labels.clone();
    labels.insert(GROUP_LABEL.into(), group.name.clone());
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels
        .entry("kubernetes.io/os".into())
        .or_insert_with(|| "linux".into());
    let capacity = json!({
        "cpu": group.template.cpu, "memory": group.template.memory,
        "pods": group.template.pods.to_string(),
    });
    let node = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": group.template.taints},
        "status": {"capacity": capacity, "allocatable": capacity,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    });
    Arc::new(serde_json::from_value(node).unwrap_or_default())
}

/// Whether the scheduler gave up on a pod (PodScheduled=False,
/// Unschedulable) and it still waits for a node.
pub fn unschedulable(p: &Pod) -> bool {
    let waiting = p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
        && p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    waiting
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
}

fn cpu_request(p: &Pod) -> i64 {
    p.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .filter_map(|q| controller_runtime::quantity::parse_scaled(&q.0, 1000))
                .sum()
        })
        .unwrap_or(0)
}

/// A proposed scale-up of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleUp {
    /// The group.
    pub group: String,
    /// Nodes to add.
    pub add: usize,
    /// The pods (namespace/name) the new nodes are for.
    pub pods: Vec<String>,
}

/// The scale-up plan: the chosen group, and why the other pods get none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpPlan {
    /// The chosen scale-up, if any.
    pub scale_up: Option<ScaleUp>,
    /// Pods no group can help, with upstream's reason text.
    pub not_helped: BTreeMap<String, String>,
    /// Pods that fit nodes that exist or are coming.
    pub fit_existing: Vec<String>,
}

/// `namespace/name` of a pod.
pub(super) fn key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Plans a scale-up for `pending` pods. `upcoming` counts, per group, the
/// nodes asked for that have not registered yet (they take pods in the
/// simulation, as nodes that will come).
pub fn plan_scale_up(
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    pending: &[Arc<Pod>],
    groups: &[NodeGroup],
    sizes: &BTreeMap<String, usize>,
    upcoming: &BTreeMap<String, usize>,
) -> UpPlan {
    let mut plan = UpPlan::default();
    let mut pending: Vec<Arc<Pod>> = pending.to_vec();
    // Big pods first: first-fit decreasing packs tighter.
    pending.sort_by_key(|p| std::cmp::Reverse(cpu_request(p)));
    // Pods that fit what exists (or is coming) need no new node.
    let mut sim = Simulator::new(nodes, pods);
    for g in groups {
        for i in 0..upcoming.get(&g.name).copied().unwrap_or(0) {
            sim.add_node(template_node(g, &format!("upcoming-{}-{i}", g.name)));
        }
    }
    let mut rest = Vec::new();
    for p in pending {
        if sim.place(p.clone()).is_ok() {
            plan.fit_existing.push(key(&p));
        } else {
            rest.push(p);
        }
    }
    if rest.is_empty() {
        return plan;
    }
    let mut best: Option<ScaleUp> = None;
    let mut reasons: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for g in groups {
        let size =
            sizes.get(&g.name).copied().unwrap_or(0) + upcoming.get(&g.name).copied().unwrap_or(0);
        let room = g.max_size.saturating_sub(size);
        // Why a pod would not fit this group's nodes, from one empty
        // template node alone.
        let mut alone = Simulator::new(&[template_node(g, &format!("template-{}", g.name))], &[]);
        let mut added = 0usize;
        let mut helped = Vec::new();
        let mut grown = Simulator::new(nodes, pods);
        for i in 0..upcoming.get(&g.name).copied().unwrap_or(0) {
            grown.add_node(template_node(g, &format!("upcoming-{}-{i}", g.name)));
        }
        for p in &rest {
            if let Err(why) = alone.place(p.clone()) {
                // "0/1 nodes are available: 1 Insufficient cpu, 1 ...":
                // each reason once per group, counted across groups.
                let list = why
                    .split_once(": ")
                    .map(|(_, r)| r.trim_end_matches('.').to_string())
                    .unwrap_or(why);
                for r in list.split(", ") {
                    let r = r.strip_prefix("1 ").unwrap_or(r).to_string();
                    *reasons.entry(key(p)).or_default().entry(r).or_default() += 1;
                }
                continue;
            }
            // Each simulation keeps its pod on the one template node:
            // start a fresh one per pod.
            alone = Simulator::new(&[template_node(g, &format!("template-{}", g.name))], &[]);
            if grown.place(p.clone()).is_ok() {
                helped.push(key(p));
                continue;
            }
            if added < room {
                added += 1;
                grown.add_node(template_node(g, &format!("new-{}-{added}", g.name)));
                if grown.place(p.clone()).is_ok() {
                    helped.push(key(p));
                    continue;
                }
            }
            *reasons
                .entry(key(p))
                .or_default()
                .entry("max node group size reached".into())
                .or_default() += 1;
        }
        if added == 0 {
            continue;
        }
        let candidate = ScaleUp {
            group: g.name.clone(),
            add: added,
            pods: helped,
        };
        // Upstream's `most-pods` expander, then the fewest nodes, then the
        // name.
        let better = match &best {
            None => true,
            Some(b) => {
                (candidate.pods.len(), std::cmp::Reverse(candidate.add))
                    > (b.pods.len(), std::cmp::Reverse(b.add))
            }
        };
        if better {
            best = Some(candidate);
        }
    }
    let helped: HashSet<&String> = best.iter().flat_map(|b| b.pods.iter()).collect();
    for p in &rest {
        let k = key(p);
        if helped.contains(&k) {
            continue;
        }
        let why = match reasons.get(&k) {
            Some(r) if !r.is_empty() => {
                let mut parts: Vec<String> = r.iter().map(|(r, n)| format!("{n} {r}")).collect();
                parts.sort();
                parts.join(", ")
            }
            _ if groups.is_empty() => "no node groups".into(),
            _ => "no node group can add a node it fits".into(),
        };
        plan.not_helped.insert(k, why);
    }
    plan.scale_up = best;
    plan
}

/// Whether the autoscaler may move a pod off its node; `Err` says why not.
pub fn movable(p: &Pod) -> Result<bool, String> {
    let meta = &p.metadata;
    // Mirror and DaemonSet pods stay with their node.
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        return Ok(false);
    }
    let owner = controller_runtime::controller_ref(meta);
    if owner.is_some_and(|o| o.kind == "DaemonSet") {
        return Ok(false);
    }
    if controller_runtime::pod_terminal(p) {
        return Ok(false);
    }
    if meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(SAFE_TO_EVICT))
        .is_some_and(|v| v == "false")
    {
        return Err(format!(
            "pod annotated as not safe to evict present: {}",
            meta.name.as_deref().unwrap_or("")
        ));
    }
    if owner.is_none() {
        return Err(format!(
            "non-controlled pod present: {}",
            meta.name.as_deref().unwrap_or("")
        ));
    }
    Ok(true)
}

/// A node that could go: its movable pods fit elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Unneeded {
    /// The node.
    pub node: String,
    /// Its group.
    pub group: String,
    /// The pods to evict (namespace/name).
    pub pods: Vec<String>,
}

/// Requested share of a node's allocatable (the larger of CPU and
/// memory), as upstream's utilization.
pub fn utilization(node: &Node, pods: &[&Arc<Pod>]) -> f64 {
    let alloc = |r: &str, scale: i128| {
        node.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(r))
            .and_then(|q| controller_runtime::quantity::parse_scaled(&q.0, scale))
            .unwrap_or(0)
    };
    let requested = |r: &str, scale: i128| -> i64 {
        pods.iter()
            .filter(|p| !controller_runtime::pod_terminal(p))
            .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
            .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(r))
            .filter_map(|q| controller_runtime::quantity::parse_scaled(&q.0, scale))
            .sum()
    };
    let share = |r: &str, scale| {
        let a = alloc(r, scale);
        if a <= 0 {
            0.0
        } else {
            requested(r, scale) as f64 / a as f64
        }
    };
    share("cpu", 1000).max(share("memory", 1))
}

/// The nodes of groups above their minimum that could be removed now:
/// below `threshold` utilization and with every movable pod fitting on
/// the nodes that stay. Nodes are considered in name order, each removal
/// taken into account for the next, and no group goes below its minimum.
pub fn plan_scale_down(
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    groups: &[NodeGroup],
    sizes: &BTreeMap<String, usize>,
    threshold: f64,
) -> (Vec<Unneeded>, BTreeMap<String, String>) {
    let mut out = Vec::new();
    let mut blocked = BTreeMap::new();
    let mut left: BTreeMap<String, usize> = sizes.clone();
    // The cluster as the removals so far leave it: their pods moved.
    let mut now_nodes: Vec<Arc<Node>> = nodes.to_vec();
    let mut now_pods: Vec<Arc<Pod>> = pods.to_vec();
    let on_node =
        |p: &Pod, name: &str| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name);
    // Empty nodes first (nothing to move), then by name, as upstream
    // removes empty nodes before it drains busy ones.
    let mut sorted: Vec<&Arc<Node>> = nodes.iter().collect();
    sorted.sort_by_key(|n| {
        let name = n.metadata.name.clone().unwrap_or_default();
        let busy = pods
            .iter()
            .any(|p| on_node(p, &name) && movable(p).unwrap_or(true));
        (busy, name)
    });
    for n in sorted {
        let name = n.metadata.name.clone().unwrap_or_default();
        let Some(group) = n
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(GROUP_LABEL))
            .and_then(|g| groups.iter().find(|x| &x.name == g))
        else {
            continue;
        };
        if !controller_runtime::node_ready(n) {
            continue;
        }
        if left.get(&group.name).copied().unwrap_or(0) <= group.min_size {
            continue;
        }
        let on: Vec<&Arc<Pod>> = now_pods.iter().filter(|p| on_node(p, &name)).collect();
        if utilization(n, &on) >= threshold {
            continue;
        }
        let mut to_move = Vec::new();
        let mut why = None;
        for p in &on {
            match movable(p) {
                Ok(true) => to_move.push((*p).clone()),
                Ok(false) => {}
                Err(e) => {
                    why = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = why {
            blocked.insert(name, e);
            continue;
        }
        // Try the move on the cluster without this node.
        let rest_nodes: Vec<Arc<Node>> = now_nodes
            .iter()
            .filter(|x| x.metadata.name.as_deref() != Some(name.as_str()))
            .cloned()
            .collect();
        let rest_pods: Vec<Arc<Pod>> = now_pods
            .iter()
            .filter(|p| !on_node(p, &name))
            .cloned()
            .collect();
        let mut trial = Simulator::new(&rest_nodes, &rest_pods);
        let mut moved = Vec::new();
        let mut fits = true;
        for p in &to_move {
            let mut copy = (**p).clone();
            if let Some(s) = copy.spec.as_mut() {
                s.node_name = None;
            }
            match trial.place(Arc::new(copy.clone())) {
                Ok(dest) => {
                    if let Some(s) = copy.spec.as_mut() {
                        s.node_name = Some(dest);
                    }
                    moved.push(Arc::new(copy));
                }
                Err(e) => {
                    blocked.insert(
                        name.clone(),
                        format!(
                            "no place to move pod {}: {e}",
                            p.metadata.name.as_deref().unwrap_or("")
                        ),
                    );
                    fits = false;
                    break;
                }
            }
        }
        if !fits {
            continue;
        }
        now_nodes = rest_nodes;
        now_pods = rest_pods;
        now_pods.extend(moved);
        *left.entry(group.name.clone()).or_default() -= 1;
        out.push(Unneeded {
            node: name,
            group: group.name.clone(),
            pods: to_move.iter().map(|p| key(p)).collect(),
        });
    }
    (out, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clusterautoscaler::group::Template;

    fn group(name: &str, min: usize, max: usize) -> NodeGroup {
        NodeGroup {
            name: name.into(),
            min_size: min,
            max_size: max,
            provider: "hollow".into(),
            template: Template {
                cpu: "2".into(),
                memory: "4Gi".into(),
                pods: 110,
                labels: BTreeMap::from([("pool".to_string(), name.to_string())]),
                taints: Vec::new(),
            },
            command: None,
            unneeded_secs: None,
        }
    }

    fn node(name: &str, g: &str) -> Arc<Node> {
        let grp = group(g, 0, 10);
        template_node(&grp, name)
    }

    fn pod(
        name: &str,
        cpu: &str,
        on: Option<&str>,
        owned: bool,
        selector: Option<&str>,
    ) -> Arc<Pod> {
        let mut spec = json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu}}}]});
        if let Some(n) = on {
            spec["nodeName"] = json!(n);
        }
        if let Some(s) = selector {
            spec["nodeSelector"] = json!({"pool": s});
        }
        let mut meta = json!({"name": name, "namespace": "default", "uid": name});
        if owned {
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": "u", "controller": true}]);
        }
        let status = if on.is_some() {
            json!({"phase": "Running"})
        } else {
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable"}]})
        };
        Arc::new(
            serde_json::from_value(json!({"metadata": meta, "spec": spec, "status": status}))
                .unwrap(),
        )
    }

    #[test]
    fn pending_pods_are_packed_onto_as_few_new_nodes_as_fit() {
        let nodes = [node("a-1", "a")];
        let pods = [pod("busy", "1900m", Some("a-1"), true, None)];
        // Four pods of 1 CPU on 2-CPU nodes: two new nodes.
        let pending: Vec<_> = (0..4)
            .map(|i| pod(&format!("p{i}"), "1", None, true, None))
            .collect();
        assert!(pending.iter().all(|p| unschedulable(p)));
        let sizes = BTreeMap::from([("a".to_string(), 1)]);
        let plan = plan_scale_up(
            &nodes,
            &pods,
            &pending,
            &[group("a", 1, 10)],
            &sizes,
            &BTreeMap::new(),
        );
        let up = plan.scale_up.unwrap();
        assert_eq!((up.group.as_str(), up.add, up.pods.len()), ("a", 2, 4));
        // At most max: one node more, two pods left with upstream's reason.
        let plan = plan_scale_up(
            &nodes,
            &pods,
            &pending,
            &[group("a", 1, 2)],
            &sizes,
            &BTreeMap::new(),
        );
        assert_eq!(plan.scale_up.as_ref().unwrap().add, 1);
        assert_eq!(plan.not_helped.len(), 2);
        assert!(
            plan.not_helped
                .values()
                .all(|r| r == "1 max node group size reached"),
            "{plan:?}"
        );
        // Nodes already asked for take the pods: nothing more to add.
        let upcoming = BTreeMap::from([("a".to_string(), 2)]);
        let plan = plan_scale_up(
            &nodes,
            &pods,
            &pending,
            &[group("a", 1, 10)],
            &sizes,
            &upcoming,
        );
        assert!(plan.scale_up.is_none());
        assert_eq!(plan.fit_existing.len(), 4);
    }

    #[test]
    fn the_group_whose_nodes_fit_is_chosen_and_others_explain_why_not() {
        let pending = [pod("gpu", "1", None, true, Some("b"))];
        let groups = [group("a", 0, 5), group("b", 0, 5)];
        let plan = plan_scale_up(
            &[],
            &[],
            &pending,
            &groups,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(plan.scale_up.unwrap().group, "b");
        let too_big = [pod("huge", "8", None, true, None)];
        let plan = plan_scale_up(
            &[],
            &[],
            &too_big,
            &groups,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(plan.scale_up.is_none());
        assert_eq!(plan.not_helped["default/huge"], "2 Insufficient cpu");
    }

    #[test]
    fn underused_nodes_whose_pods_fit_elsewhere_are_unneeded_down_to_min() {
        let nodes = [node("a-1", "a"), node("a-2", "a"), node("a-3", "a")];
        let pods = [
            pod("x", "500m", Some("a-1"), true, None),
            pod("y", "500m", Some("a-2"), true, None),
            pod("z", "1500m", Some("a-3"), true, None),
        ];
        let sizes = BTreeMap::from([("a".to_string(), 3)]);
        let (down, _) = plan_scale_down(&nodes, &pods, &[group("a", 1, 5)], &sizes, 0.5);
        // a-1 goes (x moves to the least allocated node, a-2); a-2 is then
        // half used and stays; a-3 is busy.
        let names: Vec<&str> = down.iter().map(|u| u.node.as_str()).collect();
        assert_eq!(names, ["a-1"]);
        assert_eq!(down[0].pods, ["default/x"]);
        // The minimum holds.
        let (down, _) = plan_scale_down(&nodes, &pods, &[group("a", 3, 5)], &sizes, 0.5);
        assert!(down.is_empty());
        // A bare pod pins its node.
        let pods = [pod("bare", "100m", Some("a-1"), false, None)];
        let (down, blocked) = plan_scale_down(
            &nodes[..1],
            &pods,
            &[group("a", 0, 5)],
            &BTreeMap::from([("a".to_string(), 1)]),
            0.5,
        );
        assert!(down.is_empty());
        assert_eq!(blocked["a-1"], "non-controlled pod present: bare");
    }
}
