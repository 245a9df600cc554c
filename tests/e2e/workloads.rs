//! Issue 3 end to end: the scheduler, the workload controllers and hollow
//! nodes, driven by the installed kubectl against a real `r8s server`.

#[path = "workloads/autoscaler.rs"]
mod autoscaler;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, node_of, phase};

const MIN: Duration = Duration::from_secs(60);

/// Waits until `sel` in `ns` has exactly `n` Running pods; returns them.
fn running(c: &Cluster, ns: &str, sel: &str, n: usize) -> Vec<serde_json::Value> {
    c.wait_for(&format!("{n} Running pods {sel} in {ns}"), MIN, || {
        let pods: Vec<_> = c
            .pods(ns, sel)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (pods.len() == n && pods.iter().all(|p| phase(p) == "Running")).then_some(pods)
    })
}

fn images(pods: &[serde_json::Value]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn deployment_create_scale_rolling_update_history_undo() {
    let c = Cluster::start();
    let _nodes = c.hollow("dep", 3, &[], &[]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=3",
    ]);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = running(&c, "default", "app=web", 3);
    for p in &pods {
        assert!(
            node_of(p).starts_with("dep-"),
            "bound to a hollow node: {p}"
        );
        assert!(p["status"]["podIP"].is_string(), "has a pod IP: {p}");
    }
    let ready = c.get_json(&["deployment", "web"]);
    assert_eq!(ready["status"]["availableReplicas"], 3, "{ready}");

    c.ok(&["scale", "deployment/web", "--replicas=5"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    running(&c, "default", "app=web", 5);

    c.ok(&["set", "image", "deployment/web", "busybox=busybox:1.37"]);
    c.ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=image 1.37",
    ]);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = running(&c, "default", "app=web", 5);
    assert!(
        images(&pods).iter().all(|i| i == "busybox:1.37"),
        "{:?}",
        images(&pods)
    );
    let rs = c.get_json(&["rs", "-l", "app=web"]);
    let mut replicas: Vec<i64> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(-1))
        .collect();
    replicas.sort();
    assert_eq!(replicas, vec![0, 5], "old ReplicaSet scaled to 0, new to 5");

    let hist = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(hist.contains("1 ") && hist.contains("2 "), "{hist}");

    c.ok(&["rollout", "undo", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pods = running(&c, "default", "app=web", 5);
    assert!(
        images(&pods).iter().all(|i| i == "busybox:1.36"),
        "{:?}",
        images(&pods)
    );
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3",
        "undo makes revision 1 the new revision 3: {d}"
    );
    let rs = c.get_json(&["rs", "-l", "app=web"]);
    assert_eq!(
        rs["items"].as_array().unwrap().len(),
        2,
        "undo reuses the old ReplicaSet"
    );
}

#[test]
fn daemonset_covers_every_node_and_follows_new_ones() {
    let c = Cluster::start();
    let _a = c.hollow("dsa", 3, &[], &[]);
    c.create(
        None,
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox:1.36}]
"#,
    );
    let pods = running(&c, "default", "app=agent", 3);
    let mut nodes: Vec<&str> = pods.iter().map(node_of).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["dsa-0", "dsa-1", "dsa-2"]);
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);

    let _b = c.hollow("dsb", 1, &[], &[]);
    let pods = running(&c, "default", "app=agent", 4);
    assert!(
        pods.iter().any(|p| node_of(p) == "dsb-0"),
        "new node gets a pod"
    );
}

#[test]
fn statefulset_creates_in_order_and_deletes_in_reverse() {
    let c = Cluster::start();
    let _n = c.hollow("sts", 2, &[], &["--pod-start-delay", "700ms"]);
    let log = c.watch_log(&["pods", "-l", "app=web"]);
    c.create(
        None,
        r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox:1.36}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#,
    );
    running(&c, "default", "app=web", 3);
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    let pvcs = c.ok(&["get", "pvc", "-o", "name"]);
    for i in 0..3 {
        assert!(pvcs.contains(&format!("data-web-{i}")), "{pvcs}");
    }
    c.ok(&["scale", "statefulset/web", "--replicas=0"]);
    c.wait_for("statefulset scaled to 0", MIN, || {
        c.pods("default", "app=web").is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let events = log.events();
    let name = |e: &serde_json::Value| {
        e["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let added: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(name)
        .collect();
    assert_eq!(
        added,
        vec!["web-0", "web-1", "web-2"],
        "created in ordinal order"
    );
    // Each pod is created only once its predecessor is Ready.
    for (prev, next) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let created = events
            .iter()
            .position(|e| e["type"] == "ADDED" && name(e) == next)
            .unwrap();
        let prev_ready = events[..created].iter().any(|e| {
            name(e) == prev
                && e["object"]["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
        });
        assert!(prev_ready, "{next} created before {prev} was Ready");
    }
    // Deletion starts from the highest ordinal.
    let deleting: Vec<String> = events
        .iter()
        .filter(|e| !e["object"]["metadata"]["deletionTimestamp"].is_null())
        .map(name)
        .fold(Vec::new(), |mut acc, n| {
            if !acc.contains(&n) {
                acc.push(n);
            }
            acc
        });
    assert_eq!(
        deleting,
        vec!["web-2", "web-1", "web-0"],
        "deleted in reverse order"
    );
}

#[test]
fn jobs_complete_fail_and_cronjobs_fire() {
    let c = Cluster::start();
    let _n = c.hollow("job", 2, &[], &[]);
    c.create(
        None,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata: {annotations: {r8s.io/hollow-run-duration: 300ms}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36, command: ["true"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: 1
  template:
    metadata: {annotations: {r8s.io/hollow-exit-code: "1", r8s.io/hollow-run-duration: 200ms}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36, command: ["false"]}]
"#,
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["job", "ok"]);
    assert_eq!(j["status"]["succeeded"], 3, "{j}");
    c.ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"]);
    let j = c.get_json(&["job", "bad"]);
    let failed = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .cloned()
        .unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{j}");
    assert_eq!(
        j["status"]["failed"], 2,
        "backoffLimit 1 allows one retry: {j}"
    );

    c.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox:1.36",
        "--schedule=*/1 * * * *",
        "--",
        "true",
    ]);
    let job = c.wait_for(
        "the cronjob to start a job",
        Duration::from_secs(75),
        || {
            let jobs = c.get_json(&["jobs"]);
            jobs["items"].as_array()?.iter().find_map(|j| {
                let owner = &j["metadata"]["ownerReferences"][0];
                (owner["kind"] == "CronJob" && owner["name"] == "tick")
                    .then(|| j["metadata"]["name"].as_str().unwrap_or("").to_string())
            })
        },
    );
    assert!(job.starts_with("tick-"), "{job}");
    c.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=60s",
    ]);
    c.wait_for("cronjob lastSuccessfulTime", MIN, || {
        let cj = c.get_json(&["cronjob", "tick"]);
        cj["status"]["lastSuccessfulTime"].is_string().then_some(())
    });
}

#[test]
fn deleting_namespace_and_cascades_remove_workloads() {
    let c = Cluster::start();
    let _n = c.hollow("ns", 2, &[], &[]);
    c.create_ns("team");
    c.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team",
        "--image=busybox:1.36",
        "--replicas=2",
    ]);
    running(&c, "team", "app=web", 2);
    c.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    let out = c.kubectl(&["get", "namespace", "team"]);
    assert!(!out.status.success(), "namespace gone");
    let all = c.get_json(&["pods", "-A"]);
    assert!(
        !all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["namespace"] == "team"),
        "no pods left in the deleted namespace"
    );

    // Foreground: the deployment goes only after its ReplicaSet and pods.
    c.ok(&[
        "create",
        "deployment",
        "fg",
        "--image=busybox:1.36",
        "--replicas=2",
    ]);
    running(&c, "default", "app=fg", 2);
    c.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(
        c.get_json(&["rs", "-l", "app=fg"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    c.wait_for("fg pods gone", MIN, || {
        c.pods("default", "app=fg").is_empty().then_some(())
    });

    // Orphan: ReplicaSet and pods stay, without an owner.
    c.ok(&[
        "create",
        "deployment",
        "or",
        "--image=busybox:1.36",
        "--replicas=2",
    ]);
    running(&c, "default", "app=or", 2);
    c.ok(&[
        "delete",
        "deployment",
        "or",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let rs = c.get_json(&["rs", "-l", "app=or"]);
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "orphaned ReplicaSet stays: {rs}");
    assert!(items[0]["metadata"]["ownerReferences"].is_null(), "{rs}");
    running(&c, "default", "app=or", 2);
}

#[test]
fn scheduling_honours_taints_affinity_and_zone_spread() {
    let c = Cluster::start();
    let _n = c.hollow("z", 6, &["za", "zb", "zc"], &[]);
    c.ok(&["taint", "nodes", "z-0", "dedicated=gpu:NoSchedule"]);
    c.ok(&["label", "nodes", "z-1", "disk=ssd"]);
    c.create(
        None,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 6
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: spread}}}
      containers: [{name: c, image: busybox:1.36}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ssd}
spec:
  replicas: 2
  selector: {matchLabels: {app: ssd}}
  template:
    metadata: {labels: {app: ssd}}
    spec:
      nodeSelector: {disk: ssd}
      containers: [{name: c, image: busybox:1.36}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: solo}
spec:
  replicas: 3
  selector: {matchLabels: {app: solo}}
  template:
    metadata: {labels: {app: solo}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: solo}}}
      containers: [{name: c, image: busybox:1.36}]
---
apiVersion: v1
kind: Pod
metadata: {name: gpu}
spec:
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [z-0]}]
  containers: [{name: c, image: busybox:1.36}]
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - name: c
    image: busybox:1.36
    resources: {requests: {cpu: "100"}}
"#,
    );
    let zone = |n: &str| match n {
        "z-0" | "z-3" => "za",
        "z-1" | "z-4" => "zb",
        _ => "zc",
    };
    let spread = running(&c, "default", "app=spread", 6);
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &spread {
        assert_ne!(node_of(p), "z-0", "untolerated taint: {p}");
        *per_zone.entry(zone(node_of(p))).or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{per_zone:?}"
    );
    for p in running(&c, "default", "app=ssd", 2) {
        assert_eq!(node_of(&p), "z-1");
    }
    let solo = running(&c, "default", "app=solo", 3);
    let mut hosts: Vec<&str> = solo.iter().map(node_of).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "anti-affinity puts each on its own node");
    c.wait_for("gpu pod on z-0", MIN, || {
        let p = c.get_json(&["pod", "gpu"]);
        (node_of(&p) == "z-0" && phase(&p) == "Running").then_some(())
    });
    let msg = c.wait_for("FailedScheduling for the huge pod", MIN, || {
        let ev = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=huge",
        ]);
        ev.contains("FailedScheduling").then_some(ev)
    });
    assert!(msg.contains("Insufficient cpu"), "{msg}");
    let p = c.get_json(&["pod", "huge"]);
    assert_eq!(phase(&p), "Pending");
}

#[test]
fn killed_node_pods_are_replaced_elsewhere_and_drain_honours_pdb() {
    let c = Cluster::start();
    let _keep = c.hollow("live", 2, &[], &[]);
    let mut doomed = c.hollow("doomed", 1, &[], &[]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=6",
    ]);
    let pods = running(&c, "default", "app=web", 6);
    assert!(
        pods.iter().any(|p| node_of(p) == "doomed-0"),
        "the scheduler spreads pods onto every node"
    );
    let t0 = Instant::now();
    doomed.kill();
    c.wait_for(
        "all 6 pods Running on live nodes",
        Duration::from_secs(120),
        || {
            let pods = c.pods("default", "app=web");
            let live: Vec<_> = pods
                .iter()
                .filter(|p| node_of(p).starts_with("live-") && phase(p) == "Running")
                .collect();
            (live.len() == 6).then_some(())
        },
    );
    eprintln!(
        "replacement pods running {:?} after the node died",
        t0.elapsed()
    );
    let node = c.get_json(&["node", "doomed-0"]);
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "Unknown", "{node}");
    let taints = node["spec"]["taints"].to_string();
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );

    // Drain one live node under a PDB allowing one disruption at a time.
    c.create(
        None,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: web}}\n",
    );
    c.wait_for("PDB status", MIN, || {
        let p = c.get_json(&["pdb", "web"]);
        (p["status"]["disruptionsAllowed"] == 1).then_some(())
    });
    let out = c.ok(&["drain", "live-0", "--ignore-daemonsets", "--timeout=90s"]);
    assert!(out.contains("drained"), "{out}");
    let pods = running(&c, "default", "app=web", 6);
    assert!(
        pods.iter().all(|p| node_of(p) == "live-1"),
        "all pods moved off the drained node"
    );

    // A budget that allows nothing blocks the drain with upstream's message.
    c.ok(&["uncordon", "live-0"]);
    c.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":0}}"#,
    ]);
    c.wait_for("PDB allows no disruption", MIN, || {
        let p = c.get_json(&["pdb", "web"]);
        (p["status"]["disruptionsAllowed"] == 0).then_some(())
    });
    let out = c.kubectl(&["drain", "live-1", "--ignore-daemonsets", "--timeout=8s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("disruption budget"), "{err}");
}

#[test]
fn pods_with_claims_wait_for_binding_and_land_on_their_volumes_node() {
    let c = Cluster::start();
    let _n = c.hollow("vol", 3, &[], &[]);
    c.wait_for("3 Ready nodes", MIN, || {
        let nodes = c.get_json(&["nodes"]);
        let ready = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready == 3).then_some(())
    });
    // A pod whose claim does not exist yet stays Pending with upstream's
    // message.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  containers: [{name: c, image: busybox:1.36}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: pinned}}]
"#,
    );
    c.wait_for("FailedScheduling for the missing claim", MIN, || {
        let p = c.get_json(&["pod", "user"]);
        let cond = p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")?
            .clone();
        (cond["status"] == "False"
            && cond["message"]
                .as_str()?
                .contains("persistentvolumeclaim \"pinned\" not found"))
        .then_some(())
    });
    // A local volume on vol-2 and its claim: the pod goes to vol-2.
    c.create(
        None,
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: on-vol-2}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: local
  local: {path: /mnt/disk}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [vol-2]}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pinned, namespace: default}
spec:
  storageClassName: local
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"#,
    );
    let node = c.wait_for("user to be scheduled", MIN, || {
        let p = c.get_json(&["pod", "user"]);
        let n = node_of(&p);
        (!n.is_empty()).then(|| n.to_string())
    });
    assert_eq!(node, "vol-2", "the pod follows its volume");
    assert_eq!(c.get_json(&["pvc", "pinned"])["status"]["phase"], "Bound");
    // Provisioned claims pin their pods too: every replica of a
    // StatefulSet lands where its volume was provisioned.
    c.create(
        Some("default"),
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: busybox:1.36}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#,
    );
    let pods = running(&c, "default", "app=db", 3);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let pvc = c.get_json(&["pvc", &format!("data-{name}")]);
        let pv = c.get_json(&["pv", pvc["spec"]["volumeName"].as_str().unwrap()]);
        let pinned = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
            [0]["values"][0];
        assert_eq!(
            pinned.as_str(),
            Some(node_of(p)),
            "{name} runs where its volume is"
        );
    }
}
