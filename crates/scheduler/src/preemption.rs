//! Default preemption: when a pod fits nowhere, find nodes where evicting
//! lower-priority pods makes it fit, keep as few victims as possible, and pick
//! the node with the least important victims.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cache::Cache;
use crate::framework::{Code, Status, histogram_message};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::plugins::{self, CycleState};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

/// Reason for nodes where evicting pods cannot help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Reason for nodes without lower-priority pods.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A node and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Node name.
    pub node: String,
    /// Pods to delete, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many victims a PodDisruptionBudget does not allow to disrupt.
    pub pdb_violations: usize,
}

/// Splits pods (most important first) into those whose eviction would
/// violate a PodDisruptionBudget and the others, spending each budget's
/// disruptionsAllowed as upstream does.
pub fn split_by_pdb(
    pods: Vec<Arc<PodInfo>>,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs
        .iter()
        .map(|p| p.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violates = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if pdb.metadata.namespace.as_deref() != Some(p.namespace.as_str()) {
                continue;
            }
            // A missing or empty selector matches nothing.
            let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue;
            };
            if (sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty()))
                || !crate::selector::matches(sel, p.labels())
            {
                continue;
            }
            let name = p.pod.metadata.name.as_deref().unwrap_or_default();
            // Pods already being disrupted were counted by the controller.
            if pdb
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(name))
            {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(p);
        } else {
            fine.push(p);
        }
    }
    (violating, fine)
}

/// Upstream's MoreImportantPod: higher priority, then earlier start.
fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.start_time().cmp(&b.start_time()))
}

/// Whether the pod may preempt at all; Err carries upstream's message.
pub fn eligible(cache: &Cache, pod: &PodInfo) -> Result<(), String> {
    if pod.preemption_policy.as_deref() == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    if let Some(nom) = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        && let Some(node) = cache.node(nom)
        && node
            .pods
            .iter()
            .any(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some())
    {
        return Err("not eligible due to a terminating pod on the nominated node.".into());
    }
    Ok(())
}

/// Dry-runs preemption on one node: Ok((victims, PDB violations)) or the
/// status explaining why not.
pub fn select_victims(
    state: &mut CycleState,
    node: &NodeInfo,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Result<(Vec<Arc<PodInfo>>, usize), Status> {
    let pod = state.pod.clone();
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if lower.is_empty() {
        return Err(Status::unresolvable("DefaultPreemption", NO_VICTIMS));
    }
    let ns = state.namespaces.clone();
    let mut trial = node.clone();
    for v in &lower {
        trial.remove_pod(&v.key);
        state.affinity.remove_pod(&pod, v, node, &ns);
        state.spread.update(&pod, v, node, -1);
    }
    let restore = |state: &mut CycleState, pods: &[Arc<PodInfo>]| {
        for v in pods {
            state.affinity.add_pod(&pod, v, node, &ns);
            state.spread.update(&pod, v, node, 1);
        }
    };
    if let Err(s) = plugins::filter(state, &trial) {
        restore(state, &lower);
        return Err(s);
    }
    // Try to keep the most important pods, PDB-protected ones first.
    lower.sort_by(|a, b| more_important(a, b));
    let (violating, fine) = split_by_pdb(lower, pdbs);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (v, protected) in violating
        .into_iter()
        .map(|v| (v, true))
        .chain(fine.into_iter().map(|v| (v, false)))
    {
        trial.add_pod(v.clone());
        state.affinity.add_pod(&pod, &v, node, &ns);
        state.spread.update(&pod, &v, node, 1);
        if plugins::filter(state, &trial).is_err() {
            trial.remove_pod(&v.key);
            state.affinity.remove_pod(&pod, &v, node, &ns);
            state.spread.update(&pod, &v, node, -1);
            violations += usize::from(protected);
            victims.push(v);
        }
    }
    restore(state, &victims);
    victims.sort_by(|a, b| more_important(a, b));
    Ok((victims, violations))
}

/// How many candidates to collect (upstream: 10% of nodes, at least 100).
fn num_candidates(num_nodes: usize) -> usize {
    (num_nodes / 10).max(100).min(num_nodes)
}

/// Why preemption did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPreempted {
    /// Upstream's explanation (shown after "preemption: ").
    pub message: String,
    /// Whether a stale nominatedNodeName should be cleared (no candidate
    /// was found, as opposed to the pod not being eligible).
    pub clear_nomination: bool,
}

/// Finds the node to preempt on, or explains why not.
pub fn preempt(
    cache: &Cache,
    state: &CycleState,
    statuses: &HashMap<String, Status>,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Result<Candidate, NotPreempted> {
    eligible(cache, &state.pod).map_err(|message| NotPreempted {
        message,
        clear_nomination: false,
    })?;
    let mut state = state.clone();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut candidates = Vec::new();
    let want = num_candidates(cache.num_nodes());
    for node in cache.nodes() {
        let name = &node.name;
        match statuses.get(name) {
            Some(s) if s.code == Code::Unschedulable => {}
            _ => {
                *reasons.entry(NOT_HELPFUL.to_string()).or_default() += 1;
                continue;
            }
        }
        if candidates.len() >= want {
            continue;
        }
        match select_victims(&mut state, node, pdbs) {
            Ok((victims, pdb_violations)) => candidates.push(Candidate {
                node: name.clone(),
                victims,
                pdb_violations,
            }),
            Err(s) => {
                for r in s.reasons {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    if candidates.is_empty() {
        let hist = reasons.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        return Err(NotPreempted {
            message: histogram_message(cache.num_nodes(), hist),
            clear_nomination: true,
        });
    }
    Ok(pick(candidates))
}

/// Upstream's pickOneNodeForPreemption: fewest PDB violations, then lowest
/// highest-victim priority, then lowest priority sum, then fewest victims,
/// then the latest start among the most important victims, then the first.
pub fn pick(mut candidates: Vec<Candidate>) -> Candidate {
    if let Some(i) = candidates.iter().position(|c| c.victims.is_empty()) {
        return candidates.swap_remove(i);
    }
    let key = |c: &Candidate| {
        let top = c
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        // Sum shifted so negative priorities still order correctly.
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| v.priority as i64 + i32::MAX as i64 + 1)
            .sum();
        let earliest_top = c
            .victims
            .iter()
            .filter(|v| v.priority == top)
            .filter_map(|v| v.start_time())
            .min();
        (
            c.pdb_violations,
            top,
            sum,
            c.victims.len(),
            std::cmp::Reverse(earliest_top),
        )
    };
    let mut best = 0;
    for i in 1..candidates.len() {
        if key(&candidates[i]) < key(&candidates[best]) {
            best = i;
        }
    }
    candidates.swap_remove(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    fn prio(name: &str, cpu: &str, priority: i32) -> Arc<PodInfo> {
        pod(
            name,
            json!({}),
            json!({"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    #[test]
    fn victims_are_minimal_and_least_important() {
        let mut n = node("a", json!({}), "3", "1Gi");
        n.add_pod(prio("low1", "1", 1));
        n.add_pod(prio("low2", "1", 2));
        n.add_pod(prio("high", "1", 100));
        let mut st = CycleState::simple(prio("p", "1", 10));
        let (v, violations) = select_victims(&mut st, &n, &[]).unwrap();
        assert_eq!(violations, 0);
        let names: Vec<&str> = v.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(names, vec!["default/low1"]);
    }

    #[test]
    fn no_lower_priority_pods_no_victims() {
        let mut n = node("a", json!({}), "1", "1Gi");
        n.add_pod(prio("high", "1", 100));
        let mut st = CycleState::simple(prio("p", "1", 10));
        assert_eq!(
            select_victims(&mut st, &n, &[]).unwrap_err().reasons,
            vec![NO_VICTIMS]
        );
    }

    #[test]
    fn pick_prefers_lowest_priority_victims_then_fewest() {
        let c = |node: &str, v: Vec<Arc<PodInfo>>| Candidate {
            node: node.into(),
            victims: v,
            pdb_violations: 0,
        };
        let picked = pick(vec![
            c("a", vec![prio("x", "1", 5)]),
            c("b", vec![prio("y", "1", 1), prio("z", "1", 1)]),
        ]);
        assert_eq!(picked.node, "b");
        let picked = pick(vec![
            c("a", vec![prio("x", "1", 1), prio("y", "1", 1)]),
            c("b", vec![prio("z", "1", 1)]),
        ]);
        assert_eq!(picked.node, "b");
    }

    #[test]
    fn pdb_protected_pods_are_spared_when_possible() {
        let labeled = |name: &str, cpu: &str, priority: i32| {
            pod(
                name,
                json!({"app": "guarded"}),
                json!({"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
            )
        };
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "guard", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
                       "expectedPods": 1, "observedGeneration": 1}
        }))
        .unwrap();
        let pdbs = [Arc::new(pdb)];
        // Either pod frees enough: the unprotected one goes even though it
        // is more important.
        let mut n = node("a", json!({}), "2", "1Gi");
        n.add_pod(labeled("guarded", "1", 1));
        n.add_pod(prio("plain", "1", 5));
        let mut st = CycleState::simple(prio("p", "1", 10));
        let (v, violations) = select_victims(&mut st, &n, &pdbs).unwrap();
        assert_eq!(violations, 0);
        assert_eq!(v[0].key, "default/plain");
        // A node whose only option violates the budget loses to one that does not.
        let c = |node: &str, v: Arc<PodInfo>, violations| Candidate {
            node: node.into(),
            victims: vec![v],
            pdb_violations: violations,
        };
        let picked = pick(vec![
            c("a", labeled("g", "1", 1), 1),
            c("b", prio("x", "1", 5), 0),
        ]);
        assert_eq!(picked.node, "b");
    }

    #[test]
    fn never_policy_is_not_eligible() {
        let p = pod(
            "p",
            json!({}),
            json!({"preemptionPolicy": "Never", "priority": 10}),
        );
        assert_eq!(
            eligible(&Cache::new(), &p).unwrap_err(),
            "not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn unresolvable_nodes_are_not_helpful() {
        let mut cache = Cache::new();
        let n = node("a", json!({}), "1", "1Gi");
        cache.upsert_node(n.node.clone().unwrap());
        let st = CycleState::simple(prio("p", "1", 10));
        let statuses: HashMap<String, Status> =
            [("a".to_string(), Status::unresolvable("NodeAffinity", "x"))].into();
        assert_eq!(
            preempt(&cache, &st, &statuses, &[]).unwrap_err().message,
            "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }
}
