//! The cluster autoscaler on hollow nodes: a NodeGroup grows for pods no
//! node fits, stops at its maximum, and shrinks to its minimum when the
//! load goes, held by a PodDisruptionBudget while it forbids a drain.

use std::time::Duration;

use super::{MIN, running};
use crate::common::{Cluster, node_of};

/// The nodes of node group `g`, by name.
fn group_nodes(c: &Cluster, g: &str) -> Vec<String> {
    let v = c.get_json(&["nodes", "-l", &format!("autoscaling.r8s.io/node-group={g}")]);
    let mut names: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn event_messages(c: &Cluster, reason: &str) -> Vec<String> {
    let v = c.get_json(&[
        "events",
        "-A",
        "--field-selector",
        &format!("reason={reason}"),
    ]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

fn deployment(name: &str, replicas: usize, cpu: &str, affinity: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      {affinity}
      containers:
      - name: c
        image: busybox:1.36
        resources: {{requests: {{cpu: {cpu}}}}}
"#
    )
}

#[test]
fn the_cluster_autoscaler_grows_and_shrinks_a_hollow_node_group() {
    let c = Cluster::start_in(
        tempfile::tempdir().unwrap(),
        &[
            "--cluster-autoscaler-scan-interval",
            "1s",
            "--scale-down-unneeded-time",
            "3s",
        ],
    );
    c.wait_for("the NodeGroup kind", MIN, || {
        c.kubectl(&["get", "nodegroups"])
            .status
            .success()
            .then_some(())
    });
    c.create(
        None,
        r#"
apiVersion: autoscaling.r8s.io/v1alpha1
kind: NodeGroup
metadata: {name: workers}
spec:
  minSize: 1
  maxSize: 3
  provider: hollow
  template:
    capacity: {cpu: "2", memory: 4Gi, pods: "110"}
    labels: {pool: workers}
"#,
    );
    // The minimum is there first.
    let first = c.wait_for("the group's first node", MIN, || {
        let n = group_nodes(&c, "workers");
        (n.len() == 1).then(|| n[0].clone())
    });
    c.create(Some("default"), &deployment("keep", 1, "1500m", ""));
    running(&c, "default", "app=keep", 1);

    // Two pods that fit no node: the group grows by two, to its maximum.
    c.create(Some("default"), &deployment("big", 2, "1500m", ""));
    running(&c, "default", "app=big", 2);
    assert_eq!(group_nodes(&c, "workers").len(), 3);
    let triggered = event_messages(&c, "TriggeredScaleUp");
    // One scale-up of two, or two of one as the pods turn unschedulable.
    assert!(
        triggered
            .iter()
            .any(|m| m == "pod triggered scale-up: [{workers 1->3 (max: 3)}]")
            || triggered
                .iter()
                .any(|m| m == "pod triggered scale-up: [{workers 2->3 (max: 3)}]"),
        "{triggered:?}"
    );
    // The group's status follows its nodes on the autoscaler's next pass.
    c.wait_for(
        "the node group's status to count three ready nodes",
        Duration::from_secs(30),
        || {
            let table = c.ok(&["get", "nodegroup", "workers", "--no-headers"]);
            let cols: Vec<&str> = table.split_whitespace().collect();
            (cols.len() >= 6 && cols[..6] == ["workers", "1", "3", "3", "3", "hollow"])
                .then_some(())
        },
    );

    // One more fits nowhere and the group is full.
    c.ok(&["scale", "deployment", "big", "--replicas=3"]);
    c.wait_for("NotTriggerScaleUp at the maximum", MIN, || {
        event_messages(&c, "NotTriggerScaleUp")
            .iter()
            .any(|m| m == "pod didn't trigger scale-up: 1 max node group size reached")
            .then_some(())
    });
    let status = c.get_json(&[
        "configmap",
        "-n",
        "kube-system",
        "cluster-autoscaler-status",
    ]);
    let text = status["data"]["status"].as_str().unwrap_or("");
    assert!(
        text.contains("autoscalerStatus: Running") && text.contains("name: workers"),
        "{text}"
    );
    c.ok(&["scale", "deployment", "big", "--replicas=2"]);

    // A pod that prefers the second node (and may also run on the first),
    // guarded by a PodDisruptionBudget that allows no disruption.
    let nodes = group_nodes(&c, "workers");
    let second = nodes.iter().find(|n| **n != first).unwrap().clone();
    let affinity = format!(
        r#"affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{first}, {second}]}}]
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference:
              matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{second}]}}]"#
    );
    c.create(
        Some("default"),
        &deployment("guarded", 1, "100m", &affinity),
    );
    let guarded = running(&c, "default", "app=guarded", 1);
    assert_eq!(node_of(&guarded[0]), second);
    c.ok(&[
        "create",
        "poddisruptionbudget",
        "guarded",
        "--selector=app=guarded",
        "--min-available=1",
    ]);

    // The load goes: the node left empty is removed; the guarded one is
    // held by its budget.
    c.ok(&["delete", "deployment", "big"]);
    c.wait_for("the empty node removed", MIN, || {
        let n = group_nodes(&c, "workers");
        (n.len() == 2 && n.contains(&first) && n.contains(&second)).then_some(())
    });
    c.wait_for("the budget to stop a drain", MIN, || {
        event_messages(&c, "ScaleDownFailed")
            .iter()
            .any(|m| m.contains("failed to drain the node") && m.contains("guarded"))
            .then_some(())
    });
    let node = c.get_json(&["node", &second]);
    assert!(
        !node["spec"]["taints"]
            .to_string()
            .contains("ToBeDeletedByClusterAutoscaler"),
        "a node whose drain failed is schedulable again"
    );
    assert_eq!(group_nodes(&c, "workers").len(), 2);

    // Without the budget the pod moves and the node goes, down to the
    // minimum and no further.
    c.ok(&["delete", "poddisruptionbudget", "guarded"]);
    c.wait_for("the guarded node removed", MIN, || {
        (group_nodes(&c, "workers") == [first.clone()]).then_some(())
    });
    let moved = running(&c, "default", "app=guarded", 1);
    assert_eq!(node_of(&moved[0]), first);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        group_nodes(&c, "workers"),
        std::slice::from_ref(&first),
        "minSize holds"
    );
    let g = c.get_json(&["nodegroup", "workers"]);
    assert_eq!(g["status"]["currentSize"], 1);
}
