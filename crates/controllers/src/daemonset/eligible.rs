//! Which nodes a DaemonSet's pod belongs on (upstream's
//! nodeShouldRunDaemonPod): nodeSelector, required node affinity, and
//! NoSchedule/NoExecute taints against the pod's tolerations plus the ones
//! the DaemonSet controller always adds.

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration,
};

/// Whether a node should get a daemon pod, and whether a pod already
/// there may stay (an untolerated NoSchedule taint blocks new pods only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// A pod should be created there.
    pub should_run: bool,
    /// An existing pod may keep running there.
    pub should_continue: bool,
}

fn tol(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Adds the tolerations every daemon pod gets (upstream's
/// AddOrUpdateDaemonPodTolerations).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut add = vec![
        tol("node.kubernetes.io/not-ready", "NoExecute"),
        tol("node.kubernetes.io/unreachable", "NoExecute"),
        tol("node.kubernetes.io/disk-pressure", "NoSchedule"),
        tol("node.kubernetes.io/memory-pressure", "NoSchedule"),
        tol("node.kubernetes.io/pid-pressure", "NoSchedule"),
        tol("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        add.push(tol("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for t in add {
        if !tols
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect && x.operator == t.operator)
        {
            tols.push(t);
        }
    }
}

/// Whether a toleration tolerates a taint (core/v1 helper semantics).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let exists = t.operator.as_deref() == Some("Exists");
    if key.is_empty() {
        return exists;
    }
    if key != taint.key {
        return false;
    }
    exists || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
}

fn requirement_matches(r: &NodeSelectorRequirement, get: impl Fn(&str) -> Option<String>) -> bool {
    let v = get(&r.key);
    let vals = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| vals.contains(&v)),
        "NotIn" => v.is_none_or(|v| !vals.contains(&v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(want)) = (
                v.and_then(|v| v.parse::<i64>().ok()),
                vals.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > want
            } else {
                v < want
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches a node (an empty term matches
/// nothing, as upstream).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, |k| labels.get(k).cloned()))
        && fields
            .iter()
            .all(|r| requirement_matches(r, |k| (k == "metadata.name").then(|| name.clone())))
}

/// Decides whether `spec` (with daemon tolerations added) fits `node`.
pub fn fit(spec: &PodSpec, node: &Node) -> Fit {
    let no = Fit {
        should_run: false,
        should_continue: false,
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return no;
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !req
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
    {
        return no;
    }
    let tols = spec.tolerations.as_deref().unwrap_or_default();
    let mut f = Fit {
        should_run: true,
        should_continue: true,
    };
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
    {
        if tols.iter().any(|t| tolerates(t, taint)) {
            continue;
        }
        match taint.effect.as_str() {
            "NoExecute" => return no,
            "NoSchedule" => f.should_run = false,
            _ => {}
        }
    }
    f
}

/// The node a daemon pod is for: its nodeName, or else the node its
/// required affinity pins with `matchFields metadata.name In [node]`.
pub fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            (r.key == "metadata.name" && r.operator == "In")
                .then(|| r.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut s: PodSpec = serde_json::from_value(v).unwrap();
        add_daemon_tolerations(&mut s);
        s
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let n = node(json!({"metadata": {"name": "a", "labels": {"disk": "ssd", "zone": "1"}}}));
        let run = |s: PodSpec| fit(&s, &n).should_run;
        assert!(run(spec(json!({"containers": []}))));
        assert!(run(spec(
            json!({"containers": [], "nodeSelector": {"disk": "ssd"}})
        )));
        assert!(!run(spec(
            json!({"containers": [], "nodeSelector": {"disk": "hdd"}})
        )));
        let aff = |op: &str| {
            spec(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": op, "values": ["1"]}]}
            ]}}}}))
        };
        assert!(run(aff("In")));
        assert!(!run(aff("NotIn")));
        let by_name = spec(json!({"containers": [], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
        ]}}}}));
        assert!(!run(by_name));
    }

    #[test]
    fn taints_block_unless_tolerated() {
        let tainted = |effect: &str| {
            node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
                {"key": "dedicated", "value": "gpu", "effect": effect}
            ]}}))
        };
        let plain = spec(json!({"containers": []}));
        assert_eq!(
            fit(&plain, &tainted("NoSchedule")),
            Fit {
                should_run: false,
                should_continue: true
            }
        );
        assert_eq!(
            fit(&plain, &tainted("NoExecute")),
            Fit {
                should_run: false,
                should_continue: false
            }
        );
        assert!(fit(&plain, &tainted("PreferNoSchedule")).should_run);
        let tolerant = spec(json!({"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu"}
        ]}));
        assert!(fit(&tolerant, &tainted("NoExecute")).should_run);
        let wrong = spec(json!({"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "cpu"}
        ]}));
        assert!(!fit(&wrong, &tainted("NoSchedule")).should_run);
    }

    #[test]
    fn daemon_pods_tolerate_unschedulable_and_not_ready_nodes() {
        let n = node(
            json!({"metadata": {"name": "a"}, "spec": {"unschedulable": true, "taints": [
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
            ]}}),
        );
        assert!(fit(&spec(json!({"containers": []})), &n).should_run);
        let net = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}
        ]}}));
        assert!(!fit(&spec(json!({"containers": []})), &net).should_run);
        assert!(fit(&spec(json!({"containers": [], "hostNetwork": true})), &net).should_run);
    }

    #[test]
    fn pod_node_reads_the_pinning_affinity() {
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}}))
            .unwrap();
        assert_eq!(pod_node(&p).as_deref(), Some("n1"));
    }
}
