//! Node pressure and eviction: conditions, taints, limits, thresholds.

use super::*;

#[test]
fn pressure_conditions_taint_the_node_and_refuse_pods() {
    let mut host = Host::new();
    // A threshold no host can meet puts the node under memory pressure.
    start_node_with(
        &mut host,
        &["--eviction-hard", "memory.available<1Ei"],
        |_| {},
    );
    let c = host.cluster.as_ref().unwrap();
    let condition = |t: &str| {
        let node = c.get_json(&["node", "e2e-node"]);
        node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["type"] == t).cloned())
            .unwrap_or_default()
    };
    let mp = condition("MemoryPressure");
    assert_eq!(mp["status"], "True", "{mp}");
    assert_eq!(mp["reason"], "KubeletHasInsufficientMemory");
    for t in ["DiskPressure", "PIDPressure"] {
        assert_eq!(condition(t)["status"], "False", "{t}");
    }
    assert_eq!(condition("Ready")["status"], "True");
    // The transition time stays put across heartbeats.
    let since = mp["lastTransitionTime"].clone();
    c.wait_for("a heartbeat", Duration::from_secs(30), || {
        (condition("MemoryPressure")["lastHeartbeatTime"] != mp["lastHeartbeatTime"]).then_some(())
    });
    assert_eq!(condition("MemoryPressure")["lastTransitionTime"], since);
    // The node lifecycle controller taints the node, so the scheduler
    // places nothing there.
    c.wait_for("the memory-pressure taint", Duration::from_secs(30), || {
        let node = c.get_json(&["node", "e2e-node"]);
        node["spec"]["taints"]
            .as_array()?
            .iter()
            .any(|t| {
                t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
            })
            .then_some(())
    });
    let pod_yaml = |name: &str, node: &str, resources: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    resources: {resources}
"#
        )
    };
    c.create(Some("default"), &pod_yaml("scheduled", "", "{}"));
    c.wait_for(
        "scheduled to be unschedulable",
        Duration::from_secs(30),
        || {
            let p = pod(c, "scheduled");
            let cond = p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|x| x["type"] == "PodScheduled")?
                .clone();
            (cond["reason"] == "Unschedulable"
                && cond["message"]
                    .as_str()?
                    .contains("node.kubernetes.io/memory-pressure"))
            .then_some(())
        },
    );
    // A pod sent straight to the node: BestEffort is refused, as upstream's
    // admission does; a pod with requests runs.
    c.create(
        Some("default"),
        &pod_yaml("besteffort", "nodeName: e2e-node", "{}"),
    );
    c.create(
        Some("default"),
        &pod_yaml(
            "burstable",
            "nodeName: e2e-node",
            "{requests: {cpu: 10m, memory: 16Mi}}",
        ),
    );
    let rejected = c.wait_for("besteffort to be refused", Duration::from_secs(30), || {
        let p = pod(c, "besteffort");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(rejected["status"]["reason"], "Evicted", "{rejected}");
    assert_eq!(
        rejected["status"]["message"],
        "Pod was rejected: The node had condition: [MemoryPressure]. "
    );
    // Admitted and started, then evicted: with memory below the threshold
    // the eviction manager ends pods one per pass, as upstream does.
    let p = c.wait_for("burstable to be evicted", Duration::from_secs(60), || {
        let p = pod(c, "burstable");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let msg = p["status"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1Ei, available: "
        ),
        "{p}"
    );
    assert!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"].is_string(),
        "it ran before it was evicted: {p}"
    );
    assert_evicted(c, "burstable", &msg);

    // Disk pressure refuses every pod.
    let c = host.cluster.as_mut().unwrap();
    c.restart_replacing("memory.available<1Ei", "nodefs.available<1Ei");
    let c = host.cluster.as_ref().unwrap();
    c.wait_for("DiskPressure", Duration::from_secs(30), || {
        let node = c.get_json(&["node", "e2e-node"]);
        let cs = node["status"]["conditions"].as_array()?.clone();
        let status = |t: &str| {
            cs.iter()
                .find(|x| x["type"] == t)
                .map(|x| x["status"].clone())
        };
        (status("DiskPressure")? == "True" && status("MemoryPressure")? == "False").then_some(())
    });
    c.create(
        Some("default"),
        &pod_yaml(
            "on-full-disk",
            "nodeName: e2e-node",
            "{requests: {cpu: 10m, memory: 16Mi}}",
        ),
    );
    let rejected = c.wait_for(
        "on-full-disk to be refused",
        Duration::from_secs(30),
        || {
            let p = pod(c, "on-full-disk");
            (p["status"]["phase"] == "Failed").then_some(p)
        },
    );
    assert_eq!(
        rejected["status"]["message"],
        "Pod was rejected: The node had condition: [DiskPressure]. "
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

/// Waits for `name` to be evicted and checks what upstream's kubelet shows
/// for an evicted pod; returns the pod.
fn assert_evicted(c: &Cluster, name: &str, message: &str) -> serde_json::Value {
    let p = c.wait_for(
        &format!("{name} to be evicted"),
        Duration::from_secs(60),
        || {
            let p = pod(c, name);
            (p["status"]["phase"] == "Failed").then_some(p)
        },
    );
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    assert_eq!(p["status"]["message"], message, "{p}");
    let dt = pod_condition(&p, "DisruptionTarget");
    assert_eq!(dt["status"], "True", "{p}");
    assert_eq!(dt["reason"], "TerminationByKubelet");
    for cs in p["status"]["containerStatuses"].as_array().unwrap() {
        assert!(cs["state"]["terminated"].is_object(), "{cs}");
    }
    c.wait_for(
        &format!("{name}'s Evicted event"),
        Duration::from_secs(20),
        || {
            pod_events(c, name)
                .iter()
                .any(|(r, m, e)| r == "Evicted" && m == message && e["type"] == "Warning")
                .then_some(())
        },
    );
    p
}

#[test]
fn pods_past_their_storage_limits_or_deadline_are_ended_by_the_kubelet() {
    let host = Host::started();
    let c = host.cluster();
    let pod_with = |name: &str, volumes: &str, containers: &str, extra: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  {extra}
  volumes: {volumes}
  containers:
{containers}
"#
        )
    };
    let ctr = |name: &str, script: &str, limit: &str| {
        format!(
            r#"  - name: {name}
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
    resources: {limit}
"#
        )
    };
    let scratch = r#"[{name: data, emptyDir: {sizeLimit: 5Mi}}]"#;
    let plain = r#"[{name: data, emptyDir: {}}]"#;
    let write = |path: &str, mib: u32| format!("dd if=/dev/zero of={path} bs=1M count={mib}");
    let limit5 = "{limits: {ephemeral-storage: 5Mi}}";
    // Within every limit: keeps running.
    c.create(
        Some("default"),
        &pod_with(
            "calm",
            scratch,
            &ctr(
                "calm",
                &format!("{} && {}", write("/data/f", 1), write("/tmp/f", 1)),
                limit5,
            ),
            "",
        ),
    );
    // An emptyDir past its sizeLimit.
    c.create(
        Some("default"),
        &pod_with(
            "scratch",
            scratch,
            &ctr("w", &write("/data/f", 8), "{}"),
            "",
        ),
    );
    // One container's writable layer past its own limit (the pod's total
    // is within the sum of both).
    c.create(
        Some("default"),
        &pod_with(
            "layers",
            plain,
            &format!(
                "{}{}",
                ctr("big", &write("/tmp/f", 8), limit5),
                ctr("small", "true", limit5)
            ),
            "",
        ),
    );
    // The pod's total (a container and an emptyDir) past its containers'.
    c.create(
        Some("default"),
        &pod_with(
            "total",
            plain,
            &ctr(
                "t",
                &format!("{} && {}", write("/data/f", 3), write("/tmp/f", 3)),
                limit5,
            ),
            "",
        ),
    );
    // Past activeDeadlineSeconds.
    c.create(
        Some("default"),
        &pod_with(
            "deadline",
            plain,
            &ctr("d", "true", "{}"),
            "activeDeadlineSeconds: 5",
        ),
    );
    c.wait_for("calm to run", Duration::from_secs(60), || {
        (pod(c, "calm")["status"]["phase"] == "Running").then_some(())
    });
    let scratch_pod = assert_evicted(
        c,
        "scratch",
        "Usage of EmptyDir volume \"data\" exceeds the limit \"5Mi\". ",
    );
    assert_evicted(
        c,
        "layers",
        "Container big exceeded its local ephemeral storage limit \"5Mi\". ",
    );
    assert_evicted(
        c,
        "total",
        "Pod ephemeral local storage usage exceeds the total limit of containers 5Mi. ",
    );
    // The evicted pod's processes, network and emptyDir data are gone; the
    // pod object stays until deleted.
    let uid = scratch_pod["metadata"]["uid"].as_str().unwrap();
    let left = leftovers(c, &host, uid);
    assert!(left.is_empty(), "{left:?}");
    let data = c.path().join("agent/pods").join(uid).join("volumes/data");
    assert!(!data.exists(), "{} is still there", data.display());

    let d = c.wait_for("deadline to fail", Duration::from_secs(60), || {
        let p = pod(c, "deadline");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(d["status"]["reason"], "DeadlineExceeded", "{d}");
    assert_eq!(
        d["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    assert!(pod_condition(&d, "DisruptionTarget").is_null(), "{d}");
    let t = &d["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 137, "{d}");

    let calm = pod(c, "calm");
    assert_eq!(calm["status"]["phase"], "Running", "{calm}");
    assert_eq!(calm["status"]["containerStatuses"][0]["restartCount"], 0);
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

/// Starts a node whose data dir is a 300 MiB tmpfs of its own (so what
/// the pods write is all that moves its free space); returns a reader of
/// the free bytes.
fn start_tmpfs_node(host: &mut Host, extra: &[&str]) -> impl Fn() -> u64 + use<> {
    let data = host.data.path().to_path_buf();
    nix::mount::mount(
        Some("tmpfs"),
        &data,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=300m"),
    )
    .expect("mounting a tmpfs for the node's data dir");
    start_node_with(host, extra, |_| {});
    move || {
        nix::sys::statvfs::statvfs(&data)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }
}

/// A pod writing `mib` MiB into an emptyDir, then sleeping.
fn disk_writer(name: &str, mib: u32, resources: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: data, emptyDir: {{}}}}]
  containers:
  - name: {name}
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count={mib}; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
    resources: {resources}
"#
    )
}

/// `--eviction-minimum-reclaim`: once disk pressure evicts, it goes on
/// until the threshold plus the margin is free, not just the threshold.
#[test]
fn minimum_reclaim_evicts_past_the_threshold() {
    let mut host = Host::new();
    let free = start_tmpfs_node(
        &mut host,
        &[
            "--eviction-hard",
            "nodefs.available<200Mi",
            "--eviction-minimum-reclaim",
            "nodefs.available=100Mi",
            "--eviction-pressure-transition-period",
            "5s",
        ],
    );
    let c = host.cluster.as_ref().unwrap();
    // Evicting the bigger writer alone brings the node back above 200 MiB
    // free, but not to 300 MiB: only the margin makes the second one go.
    assert!(
        free() > 250 << 20,
        "the node starts with room to spare: {}",
        free()
    );
    c.create(Some("default"), &disk_writer("small", 40, "{}"));
    c.wait_for("small to run", Duration::from_secs(60), || {
        (pod(c, "small")["status"]["phase"] == "Running").then_some(())
    });
    c.create(Some("default"), &disk_writer("big", 60, "{}"));
    let p = c.wait_for("big to be evicted", Duration::from_secs(90), || {
        let p = pod(c, "big");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    let p = c.wait_for(
        "small to be evicted for the margin",
        Duration::from_secs(90),
        || {
            let p = pod(c, "small");
            (p["status"]["phase"] == "Failed").then_some(p)
        },
    );
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    let msg = p["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 200Mi, available: "
        ),
        "{msg}"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[test]
fn disk_pressure_evicts_the_pod_using_the_most_disk() {
    let mut host = Host::new();
    let free = start_tmpfs_node(
        &mut host,
        &[
            "--eviction-hard",
            "nodefs.available<200Mi",
            "--eviction-pressure-transition-period",
            "5s",
        ],
    );
    let c = host.cluster.as_ref().unwrap();
    assert!(
        free() > 230 << 20,
        "the node starts with room to spare: {}",
        free()
    );
    // A pod within its request, then one that takes 100 MiB it never asked
    // for: only the second may go.
    c.create(
        Some("default"),
        &disk_writer("modest", 20, "{requests: {ephemeral-storage: 50Mi}}"),
    );
    c.wait_for("modest to run", Duration::from_secs(60), || {
        (pod(c, "modest")["status"]["phase"] == "Running").then_some(())
    });
    c.create(Some("default"), &disk_writer("hog", 100, "{}"));
    let p = c.wait_for("hog to be evicted", Duration::from_secs(90), || {
        let p = pod(c, "hog");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let msg = p["status"]["message"].as_str().unwrap_or("").to_string();
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    assert!(
        msg.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 200Mi, available: "
        ) && msg.contains("Container hog was using ")
            && msg.ends_with("request is 0, has larger consumption of ephemeral-storage. "),
        "{msg}"
    );
    assert_evicted(c, "hog", &msg);
    // Its emptyDir is reclaimed, the pressure ends, the other pod never
    // stopped.
    c.wait_for("the disk space back", Duration::from_secs(30), || {
        (free() > 230 << 20).then_some(())
    });
    c.wait_for("DiskPressure to clear", Duration::from_secs(60), || {
        let node = c.get_json(&["node", "e2e-node"]);
        let dp = node["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|x| x["type"] == "DiskPressure")?
            .clone();
        (dp["status"] == "False").then_some(())
    });
    let modest = pod(c, "modest");
    assert_eq!(modest["status"]["phase"], "Running", "{modest}");
    assert_eq!(modest["status"]["containerStatuses"][0]["restartCount"], 0);
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

/// Seconds between two RFC 3339 timestamps.
fn seconds_between(from: &serde_json::Value, to: &serde_json::Value) -> i64 {
    let t = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("not a timestamp: {v}"))
            .as_second()
    };
    t(to) - t(from)
}

#[test]
fn soft_thresholds_evict_after_their_grace_period_with_capped_pod_grace() {
    let mut host = Host::new();
    start_node_with(
        &mut host,
        &[
            "--eviction-hard",
            "",
            "--eviction-soft",
            "memory.available<1Ei",
            "--eviction-soft-grace-period",
            "memory.available=30s",
            "--eviction-max-pod-grace-period",
            "3",
        ],
        |_| {},
    );
    let c = host.cluster.as_ref().unwrap();
    // The condition is there at once; only evictions wait.
    c.wait_for("MemoryPressure", Duration::from_secs(30), || {
        let node = c.get_json(&["node", "e2e-node"]);
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|x| x["type"] == "MemoryPressure" && x["status"] == "True")
            .then_some(())
    });
    // It ignores SIGTERM and asks for 60 s of grace: the cap decides.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
spec:
  # Straight to the node: the scheduler keeps off the tainted node.
  nodeName: e2e-node
  terminationGracePeriodSeconds: 60
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"#,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let p = loop {
        let p = pod(c, "stubborn");
        if p["status"]["phase"] == "Failed" {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stubborn was not evicted: {p}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let msg = p["status"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.starts_with("The node was low on resource: memory. Threshold quantity: 1Ei"),
        "{p}"
    );
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    let ran = seconds_between(&t["startedAt"], &t["finishedAt"]);
    // Node start to eviction is at least the 30 s grace period; the pod
    // started a few seconds after the node.
    assert!(
        ran >= 20,
        "evicted after {ran} s, before the grace period: {p}"
    );
    let ev = c.wait_for("the Evicted event", Duration::from_secs(20), || {
        pod_events(c, "stubborn")
            .into_iter()
            .find(|(r, _, _)| r == "Evicted")
    });
    let stopped = seconds_between(&ev.2["firstTimestamp"], &t["finishedAt"]);
    assert!(
        (0..=8).contains(&stopped),
        "killed {stopped} s after the eviction: the 3 s cap, not the pod's 60 s"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}
