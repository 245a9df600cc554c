//! Pods as real containers: phases, logs, restarts, images, OOM.

use super::*;

#[test]
fn pods_run_as_real_containers() {
    let host = Host::new();
    let dir = tempfile::tempdir_in(host.data.path()).unwrap();
    let tar = common::busybox_tar(dir.path());
    // What `r8s image import` prints is checked here, so it runs by hand.
    let st = Command::new(r8s_bin())
        .args(["image", "import", "--data-dir"])
        .arg(dir.path())
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(String::from_utf8_lossy(&st.stdout).contains("docker.io/library/busybox:latest"));
    let ls = Command::new(r8s_bin())
        .args(["image", "ls", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains("docker.io/library/busybox:latest"));

    let mut host = host;
    let args = host.node_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.cluster = Some(Cluster::start_with(dir, &args));
    let c = host.cluster.as_ref().unwrap();
    c.wait_for("the node to be Ready", Duration::from_secs(30), || {
        let n = c.kubectl(&["get", "node", "e2e-node", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&n.stdout).ok()?;
        let images = v["status"]["images"].to_string();
        (images.contains("busybox")
            && v["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"))
        .then_some(())
    });

    // A web server in a container, reachable on its pod IP from the host,
    // seeing its configmap, env and downward API.
    c.create_cm(
        Some("default"),
        "site",
        &[("greeting", "hello from a configmap")],
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - mkdir -p /www && cat /cfg/greeting > /www/index.html && echo " $(GREETING_ENV) $POD_NAME $MY_IP" >> /www/index.html && echo ready && exec httpd -f -p 8080 -h /www
    env:
    - name: GREETING_ENV
      valueFrom: {configMapKeyRef: {name: site, key: greeting}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: MY_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
  volumes:
  - name: cfg
    configMap: {name: site}
"#,
    );
    let ip = c.wait_for("web to run with an IP", Duration::from_secs(60), || {
        let p = pod(c, "web");
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(str::to_string))
            .flatten()
    });
    assert!(
        ip.starts_with(&host.net),
        "{ip} is in the node's podCIDR {}",
        host.cidr
    );
    let body = c.wait_for("httpd to answer", Duration::from_secs(20), || {
        http_get(&format!("{ip}:8080"))
    });
    assert!(body.contains("hello from a configmap"), "{body}");
    assert!(
        body.contains(&format!("hello from a configmap web {ip}")),
        "env from configMapKeyRef and the downward API: {body}"
    );
    // Ready once the httpGet readiness probe has passed.
    let p = c.wait_for("web to be ready", Duration::from_secs(20), || {
        let p = pod(c, "web");
        (p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
    });
    let cs = &p["status"]["containerStatuses"][0];
    assert!(cs["containerID"].as_str().unwrap().starts_with("r8s://"));
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{p}");

    // Probes: readiness gates Ready; a failing liveness probe restarts.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "touch /tmp/alive; sleep 3; touch /tmp/ready; sleep 2; rm /tmp/alive; sleep 3600"]
    readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    let ready_of = |p: &serde_json::Value| p["status"]["containerStatuses"][0]["ready"].clone();
    c.wait_for(
        "probed to run but not be ready",
        Duration::from_secs(30),
        || {
            let p = pod(c, "probed");
            (p["status"]["phase"] == "Running" && ready_of(&p) == false).then_some(())
        },
    );
    c.wait_for("probed to become ready", Duration::from_secs(30), || {
        (ready_of(&pod(c, "probed")) == true).then_some(())
    });
    c.wait_for(
        "the liveness probe to restart probed",
        Duration::from_secs(60),
        || {
            let p = pod(c, "probed");
            (p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(())
        },
    );
    // What happened is told as events, in upstream's words, and shown by
    // `kubectl describe`.
    let want = [
        (
            "Scheduled",
            "Successfully assigned default/probed to e2e-node",
        ),
        (
            "Pulled",
            "Container image \"busybox:latest\" already present on machine",
        ),
        ("Created", "Created container: app"),
        ("Started", "Started container app"),
        ("Unhealthy", "Readiness probe failed: "),
        ("Unhealthy", "Liveness probe failed: "),
        (
            "Killing",
            "Container app failed liveness probe, will be restarted",
        ),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let evs = loop {
        let evs = pod_events(c, "probed");
        let missing: Vec<_> = want
            .iter()
            .filter(|(r, m)| !evs.iter().any(|(er, em, _)| er == r && em == m))
            .collect();
        if missing.is_empty() {
            break evs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events missing: {missing:?}; have {:?}",
            evs.iter().map(|(r, m, _)| (r, m)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let unhealthy = evs.iter().find(|(r, _, _)| r == "Unhealthy").unwrap();
    assert_eq!(unhealthy.2["type"], "Warning", "{:?}", unhealthy.2);
    assert_eq!(unhealthy.2["source"]["component"], "kubelet");
    assert_eq!(
        unhealthy.2["involvedObject"]["fieldPath"],
        "spec.containers{app}"
    );
    let described = c.ok(&["describe", "pod", "probed"]);
    assert!(
        described.contains("Liveness probe failed") && described.contains("Started container app"),
        "{described}"
    );

    // Capabilities: drop ALL, add NET_ADMIN (bit 12), and a user id.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: caps
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "grep CapBnd /proc/self/status; id -u"]
    securityContext:
      runAsUser: 1234
      capabilities: {drop: [ALL], add: [NET_ADMIN]}
"#,
    );
    c.wait_for("caps to finish", Duration::from_secs(30), || {
        (pod(c, "caps")["status"]["phase"] == "Succeeded").then_some(())
    });
    let caps = c.ok(&["logs", "caps"]);
    assert!(
        caps.contains("0000000000001000"),
        "bounding capabilities (a non-root user has no effective ones, as upstream): {caps}"
    );
    assert!(caps.contains("1234"), "runAsUser: {caps}");

    // Exit codes and restart policies.
    c.ok(&[
        "run",
        "fails",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo out-line; echo err-line >&2; exit 3",
    ]);
    c.ok(&[
        "run",
        "crashes",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    c.ok(&[
        "run",
        "done",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "true",
    ]);
    c.wait_for(
        "fails to fail with exit code 3",
        Duration::from_secs(60),
        || {
            let p = pod(c, "fails");
            let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
            (p["status"]["phase"] == "Failed" && t["exitCode"] == 3 && t["reason"] == "Error")
                .then_some(())
        },
    );
    // Logs through the API server and the kubelet API.
    let logs = c.ok(&["logs", "fails"]);
    assert!(
        logs.contains("out-line") && logs.contains("err-line"),
        "{logs:?}"
    );
    // exec over WebSocket, through the API server to the kubelet.
    assert_eq!(
        c.ok(&["exec", "web", "--", "cat", "/etc/hostname"]).trim(),
        "web"
    );
    let ps = c.ok(&["exec", "web", "--", "ps"]);
    assert!(ps.contains("httpd"), "the container's processes: {ps}");
    let echoed = c.ok_stdin(&["exec", "-i", "web", "--", "cat"], "through stdin\n");
    assert_eq!(echoed, "through stdin\n");
    let out = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 5"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "kubectl exec returns the command's exit code"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let web_logs = c.ok(&["logs", "web"]);
    assert_eq!(web_logs.trim(), "ready");
    let ts = c.ok(&["logs", "web", "--timestamps"]);
    assert!(
        ts.starts_with("20") && ts.trim_end().ends_with("Z ready"),
        "{ts}"
    );
    c.ok(&[
        "run",
        "counter",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "sleep 1; for i in 1 2 3; do echo line-$i; sleep 1; done",
    ]);
    c.wait_for("counter to run", Duration::from_secs(30), || {
        (pod(c, "counter")["status"]["phase"] == "Running").then_some(())
    });
    let followed = c.ok(&["logs", "-f", "counter"]);
    assert_eq!(
        followed, "line-1\nline-2\nline-3\n",
        "follow streams until the container ends"
    );
    let tail = c.ok(&["logs", "counter", "--tail=1"]);
    assert_eq!(tail, "line-3\n");
    c.wait_for("done to succeed", Duration::from_secs(60), || {
        let p = pod(c, "done");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        (p["status"]["phase"] == "Succeeded" && t["reason"] == "Completed").then_some(())
    });
    c.wait_for(
        "crashes to be restarted and back off",
        Duration::from_secs(60),
        || {
            let p = pod(c, "crashes");
            let cs = &p["status"]["containerStatuses"][0];
            (cs["restartCount"].as_i64() >= Some(1)
                && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && cs["lastState"]["terminated"]["exitCode"] == 1)
                .then_some(())
        },
    );

    // An image that is not there, with pull policy Never.
    c.ok(&[
        "run",
        "missing",
        "--image=nothere:1",
        "--image-pull-policy=Never",
    ]);
    c.wait_for("ErrImageNeverPull", Duration::from_secs(30), || {
        let p = pod(c, "missing");
        (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull")
            .then_some(())
    });

    // A killed and restarted server (and with it the agent) adopts the
    // running container instead of restarting it.
    let before = pod(c, "web");
    let cid = before["status"]["containerStatuses"][0]["containerID"].clone();
    host.cluster.as_mut().unwrap().restart();
    let c = host.cluster.as_ref().unwrap();
    assert!(
        http_get(&format!("{ip}:8080")).is_some(),
        "web kept serving"
    );
    c.wait_for(
        "the restarted agent to report web",
        Duration::from_secs(30),
        || {
            let p = pod(c, "web");
            let cs = &p["status"]["containerStatuses"][0];
            (cs["containerID"] == cid && cs["restartCount"] == 0 && cs["ready"] == true)
                .then_some(())
        },
    );
    assert!(c.ok(&["logs", "web"]).contains("ready"));

    // Deleting a pod stops its container and frees its network.
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cgroup_dir = if v2 {
        Path::new("/sys/fs/cgroup").join(&host.cgroup)
    } else {
        Path::new("/sys/fs/cgroup/memory").join(&host.cgroup)
    };
    let uid = pod(c, "web")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&[
        "delete",
        "pod",
        "web",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        http_get(&format!("{ip}:8080")).is_none(),
        "the deleted pod still answers"
    );
    let pod_cg = cgroup_dir.join(format!("pod{uid}"));
    assert!(
        cgroup_dir.exists(),
        "pods live under {}",
        cgroup_dir.display()
    );
    c.wait_for("the pod's cgroup to go", Duration::from_secs(20), || {
        (!pod_cg.exists()).then_some(())
    });
}
