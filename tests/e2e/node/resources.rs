//! Resources: stats, cgroup limits and accounting, image garbage collection.

use super::*;

#[test]
fn stats_summary_reports_node_and_pod_usage_through_the_api_server() {
    let host = Host::started();
    let c = host.cluster();
    run_web(c, "stats");
    // Some CPU and memory use in the pod.
    c.ok(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    ]);
    let raw = c.ok(&["get", "--raw", "/api/v1/nodes/e2e-node/proxy/stats/summary"]);
    let s = common::json(&raw);
    assert_eq!(s["node"]["nodeName"], "e2e-node");
    assert!(
        s["node"]["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{raw}"
    );
    assert!(s["node"]["fs"]["capacityBytes"].as_u64() > Some(0), "{raw}");
    let web = s["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "web")
        .unwrap_or_else(|| panic!("no web pod in {raw}"));
    assert_eq!(web["podRef"]["namespace"], "default");
    let ctr = &web["containers"][0];
    assert_eq!(ctr["name"], "web");
    assert!(
        ctr["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{raw}"
    );
    assert!(ctr["memory"]["workingSetBytes"].as_u64() > Some(0), "{raw}");
    assert!(
        web["cpu"]["usageCoreNanoSeconds"].as_u64() >= ctr["cpu"]["usageCoreNanoSeconds"].as_u64()
    );
    assert!(
        web["process_stats"]["process_count"].as_u64() >= Some(1),
        "{raw}"
    );
    // A node that does not exist is a 404.
    let out = c.kubectl(&["get", "--raw", "/api/v1/nodes/nope/proxy/stats/summary"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{:?}",
        out
    );
}

fn image_list(c: &Cluster) -> String {
    let out = Command::new(r8s_bin())
        .args(["image", "ls", "--data-dir"])
        .arg(c.dir.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn image_gc_removes_unused_images_but_never_one_a_pod_uses() {
    let mut host = Host::new();
    // A second, distinct image: busybox with one byte appended (still a
    // valid static ELF, a different layer).
    let build_other = |dir: &Path| {
        let bin = dir.join("busybox-other");
        let mut bytes = std::fs::read("/bin/busybox").expect("Debian's busybox-static");
        bytes.push(0);
        std::fs::write(&bin, bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tar = dir.join("other.tar");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/build-busybox-image.sh");
        let st = Command::new("bash")
            .arg(&script)
            .arg(&tar)
            .arg("other:1")
            .env("BUSYBOX", &bin)
            .status()
            .unwrap();
        assert!(st.success());
        let st = Command::new(r8s_bin())
            .args(["image", "import", "--data-dir"])
            .arg(dir)
            .arg(&tar)
            .status()
            .unwrap();
        assert!(st.success());
    };
    // Every pass finds the disk "too full" (thresholds 0), so only the
    // in-use rule protects an image.
    start_node_with(
        &mut host,
        &[
            "--image-gc-high-threshold",
            "0",
            "--image-gc-low-threshold",
            "0",
            "--image-gc-period",
            "1s",
            "--minimum-image-ttl-duration",
            "12s",
        ],
        build_other,
    );
    let c = host.cluster.as_ref().unwrap();
    let listed = image_list(c);
    assert!(
        listed.contains("other:1") && listed.contains("busybox"),
        "{listed}"
    );
    c.ok(&[
        "run",
        "keeper",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--",
        "sleep",
        "3600",
    ]);
    c.wait_for("keeper to run", Duration::from_secs(60), || {
        (pod(c, "keeper")["status"]["phase"] == "Running").then_some(())
    });
    c.wait_for(
        "the unused image to be collected",
        Duration::from_secs(60),
        || (!image_list(c).contains("other:1")).then_some(()),
    );
    assert!(
        image_list(c).contains("busybox"),
        "the image a pod uses stays"
    );
    assert_eq!(pod(c, "keeper")["status"]["phase"], "Running");
    c.ok(&["delete", "pod", "keeper", "--wait=true", "--grace-period=1"]);
    c.wait_for("busybox to go once unused", Duration::from_secs(60), || {
        (!image_list(c).contains("busybox")).then_some(())
    });
}

/// The cgroup files of a container, on either layout: (memory limit, CPU
/// quota as "quota period", pids limit).
fn container_limits(cgroup: &Path, v2: bool) -> (String, String, String) {
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    if v2 {
        (
            read(cgroup.join("memory.max")),
            read(cgroup.join("cpu.max")),
            read(cgroup.join("pids.max")),
        )
    } else {
        let rel = cgroup.strip_prefix("/sys/fs/cgroup").unwrap();
        let at = |ctl: &str, f: &str| read(Path::new("/sys/fs/cgroup").join(ctl).join(rel).join(f));
        (
            at("memory", "memory.limit_in_bytes"),
            format!(
                "{} {}",
                at("cpu", "cpu.cfs_quota_us"),
                at("cpu", "cpu.cfs_period_us")
            ),
            at("pids", "pids.max"),
        )
    }
}

/// Limits, OOM kills, usage and cleanup through the host's cgroups, on
/// the v1 hybrid layout of this machine and on a pure cgroup v2 host
/// (`tools/cgroup-v2-vm.sh` runs it in a v2 VM). Timeouts are generous
/// for the emulated VM.
#[test]
fn cgroups_limit_and_account_containers() {
    let host = Host::started();
    let c = host.cluster();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    eprintln!("cgroup layout: {}", if v2 { "v2" } else { "v1" });
    let slow = Duration::from_secs(240);
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: limited
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    image: busybox:latest
    imagePullPolicy: Never
    restartPolicy: Always
    command: ["sleep", "3600"]
    resources:
      limits: {memory: 32Mi, cpu: 100m}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    resources:
      limits: {memory: 64Mi, cpu: 250m}
"#,
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: hungry
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "tail /dev/zero"]
    resources:
      limits: {memory: 32Mi}
"#,
    );
    let p = c.wait_for("limited to run", slow, || {
        let p = pod(c, "limited");
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(p["status"]["qosClass"], "Guaranteed");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let cid = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("r8s://")
        .to_string();
    let base = if v2 {
        Path::new("/sys/fs/cgroup").to_path_buf()
    } else {
        Path::new("/sys/fs/cgroup/memory").to_path_buf()
    };
    let pod_cg = base.join(&host.cgroup).join(format!("pod{uid}"));
    let ctr_cg = Path::new("/sys/fs/cgroup")
        .join(&host.cgroup)
        .join(format!("pod{uid}"))
        .join(&cid);
    let (mem, cpu, _pids) = container_limits(&ctr_cg, v2);
    assert_eq!(mem, (64u64 << 20).to_string(), "memory limit");
    assert_eq!(cpu, "25000 100000", "a quarter CPU");
    // The container's process is in its cgroup.
    let procs = if v2 {
        ctr_cg.join("cgroup.procs")
    } else {
        Path::new("/sys/fs/cgroup/memory")
            .join(ctr_cg.strip_prefix("/sys/fs/cgroup").unwrap())
            .join("cgroup.procs")
    };
    let pids = std::fs::read_to_string(&procs).unwrap();
    assert!(!pids.trim().is_empty(), "no process in {}", procs.display());

    c.wait_for("hungry to be OOMKilled", slow, || {
        let p = pod(c, "hungry");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        (p["status"]["phase"] == "Failed" && t["reason"] == "OOMKilled" && t["exitCode"] == 137)
            .then_some(())
    });

    // Usage from the cgroups reaches /stats/summary.
    let summary = c.wait_for("the pod's memory in the summary", slow, || {
        let raw = c.ok(&["get", "--raw", "/api/v1/nodes/e2e-node/proxy/stats/summary"]);
        let v: serde_json::Value = serde_json::from_str(&raw).ok()?;
        let p = v["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "limited")?
            .clone();
        (p["memory"]["workingSetBytes"].as_u64()? > 0).then_some(p)
    });
    assert!(
        summary["containers"][0]["memory"]["usageBytes"].as_u64() > Some(0),
        "{summary}"
    );

    // In-place resize: the cgroup follows, the container keeps running.
    let resize = |cpu: &str, mem: &str| {
        format!(
            r#"{{"spec":{{"containers":[{{"name":"c","resources":{{"requests":{{"cpu":"{cpu}","memory":"{mem}"}},"limits":{{"cpu":"{cpu}","memory":"{mem}"}}}}}}]}}}}"#
        )
    };
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        &resize("500m", "96Mi"),
    ]);
    let p = c.wait_for("limited resized in place", slow, || {
        let p = pod(c, "limited");
        let st = &p["status"]["containerStatuses"][0];
        (st["resources"]["limits"]["cpu"] == "500m"
            && st["resources"]["limits"]["memory"] == "96Mi")
            .then_some(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["allocatedResources"]["cpu"],
        "500m"
    );
    let (mem, cpu, _pids) = container_limits(&ctr_cg, v2);
    assert_eq!(mem, (96u64 << 20).to_string(), "memory limit after resize");
    assert_eq!(cpu, "50000 100000", "half a CPU after resize");
    // A resize may not change the QoS class, nor more than CPU and memory.
    let err = c.fails(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"100m"}}}]}}"#,
    ]);
    assert!(
        err.contains("Pod QOS Class may not change as a result of resizing"),
        "{err}"
    );
    // More than the node has stays pending.
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        &resize("1000", "96Mi"),
    ]);
    let p = c.wait_for("the resize to be infeasible", slow, || {
        let p = pod(c, "limited");
        (pod_condition(&p, "PodResizePending")["reason"] == "Infeasible").then_some(p)
    });
    let msg = pod_condition(&p, "PodResizePending")["message"].clone();
    assert!(
        msg.as_str()
            .unwrap_or("")
            // 1000 CPUs for the app and the sidecar's 100m.
            .starts_with("Node didn't have enough capacity: cpu, requested: 1000100, capacity: "),
        "{msg}"
    );
    let (_, cpu, _) = container_limits(&ctr_cg, v2);
    assert_eq!(cpu, "50000 100000", "unchanged while pending");
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        &resize("250m", "64Mi"),
    ]);
    c.wait_for("the pending resize to clear", slow, || {
        let p = pod(c, "limited");
        (pod_condition(&p, "PodResizePending").is_null()
            && p["status"]["containerStatuses"][0]["resources"]["limits"]["cpu"] == "250m")
            .then_some(())
    });
    let (mem, cpu, _pids) = container_limits(&ctr_cg, v2);
    assert_eq!(
        (mem.as_str(), cpu.as_str()),
        ((64u64 << 20).to_string().as_str(), "25000 100000")
    );

    // A sidecar resizes in place too; a regular init container would not.
    let p = pod(c, "limited");
    let side_id = p["status"]["initContainerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("r8s://")
        .to_string();
    let side_cg = Path::new("/sys/fs/cgroup")
        .join(&host.cgroup)
        .join(format!("pod{uid}"))
        .join(&side_id);
    assert_eq!(container_limits(&side_cg, v2).1, "10000 100000");
    c.ok(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        r#"{"spec":{"initContainers":[{"name":"side","resources":{"requests":{"cpu":"200m","memory":"48Mi"},"limits":{"cpu":"200m","memory":"48Mi"}}}]}}"#,
    ]);
    let p = c.wait_for("the sidecar resized in place", slow, || {
        let p = pod(c, "limited");
        let st = &p["status"]["initContainerStatuses"][0];
        (st["resources"]["limits"]["cpu"] == "200m").then_some(p)
    });
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    let (mem, cpu, _) = container_limits(&side_cg, v2);
    assert_eq!(
        (mem.as_str(), cpu.as_str()),
        ((48u64 << 20).to_string().as_str(), "20000 100000")
    );
    // Removing a limit is refused, as upstream.
    let err = c.fails(&[
        "patch",
        "pod",
        "limited",
        "--subresource=resize",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","resources":{"limits":{"memory":null}}}]}}"#,
    ]);
    assert!(err.contains("resource limits cannot be removed"), "{err}");

    // Deleting the pods removes their cgroups.
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=240s"]);
    c.wait_for("the pod's cgroups to go", slow, || {
        (!pod_cg.exists() && !ctr_cg.exists()).then_some(())
    });
}
