//! A pod's lifecycle: hooks, shared namespaces, termination messages, sidecars, clean-up.

use super::*;

#[test]
fn lifecycle_hooks_run_after_start_and_before_sigterm() {
    let host = Host::started();
    let c = host.cluster();
    let shared = tempfile::tempdir_in(host.data.path()).unwrap();
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: hooks
spec:
  terminationGracePeriodSeconds: 20
  volumes:
  - name: host
    hostPath:
      path: {dir}
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo term >> /host/log; exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts:
    - name: host
      mountPath: /host
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo poststart >> /host/log"]
      preStop:
        exec:
          command: ["sh", "-c", "echo prestop >> /host/log"]
"#,
            dir = shared.path().display()
        ),
    );
    c.wait_for("hooks to run", Duration::from_secs(60), || {
        (pod(c, "hooks")["status"]["phase"] == "Running").then_some(())
    });
    let log = shared.path().join("log");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "poststart\n",
        "postStart ran once the container started"
    );
    // A new definition restarts the container as upstream's kubelet kills
    // one: preStop, then SIGTERM (the trap exits at once, well inside the
    // 20 s grace), then a new run with its own postStart.
    c.ok(&["set", "image", "pod/hooks", "main=busybox"]);
    c.wait_for(
        "the redefined container to restart",
        Duration::from_secs(15),
        || {
            let p = pod(c, "hooks");
            let st = &p["status"]["containerStatuses"][0];
            (st["restartCount"] == 1 && st["state"]["running"].is_object()).then_some(())
        },
    );
    c.wait_for("the new run's postStart", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text == "poststart\nprestop\nterm\npoststart\n").then_some(())
    });
    let p = pod(c, "hooks");
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(
        last["exitCode"], 0,
        "the old run ended on its SIGTERM trap, not SIGKILL: {last}"
    );
    c.ok(&["delete", "pod", "hooks", "--wait=true"]);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "poststart\nprestop\nterm\npoststart\nprestop\nterm\n",
        "preStop ran before the container got SIGTERM"
    );
}

#[test]
fn pods_share_localhost_and_volumes_and_leave_nothing_behind() {
    let host = Host::started();
    let c = host.cluster();

    // Two containers: one serves what the other writes into their shared
    // emptyDir, and fetches it back over localhost.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - name: shared
    emptyDir: {}
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "8080", "-h", "/shared"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
  - name: client
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from-the-client > /shared/index.html; while true; do wget -qO- http://localhost:8080/ || true; sleep 1; done"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
"#,
    );
    c.wait_for(
        "the client to fetch its page over localhost",
        Duration::from_secs(60),
        || {
            let out = c.kubectl(&["logs", "duo", "-c", "client"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("from-the-client")
                .then_some(())
        },
    );

    // kubectl cp both ways (tar over exec).
    let local = tempfile::tempdir_in(host.data.path()).unwrap();
    let src = local.path().join("up.txt");
    std::fs::write(&src, "copied up\n").unwrap();
    c.ok(&[
        "cp",
        src.to_str().unwrap(),
        "default/duo:/shared/up.txt",
        "-c",
        "web",
    ]);
    assert_eq!(
        c.ok(&["exec", "duo", "-c", "client", "--", "cat", "/shared/up.txt"]),
        "copied up\n"
    );
    let back = local.path().join("back.txt");
    c.ok(&[
        "cp",
        "default/duo:/shared/index.html",
        back.to_str().unwrap(),
        "-c",
        "web",
    ]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from-the-client\n");

    // A Secret volume is a tmpfs, never on disk.
    c.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=pw=hunter2",
    ]);
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: secretive
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: creds
    secret: {secretName: creds}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: creds, mountPath: /etc/creds}
"#,
    );
    c.wait_for("secretive to run", Duration::from_secs(60), || {
        (pod(c, "secretive")["status"]["phase"] == "Running").then_some(())
    });
    assert_eq!(
        c.ok(&["exec", "secretive", "--", "cat", "/etc/creds/pw"]),
        "hunter2"
    );
    let mounts = c.ok(&["exec", "secretive", "--", "cat", "/proc/mounts"]);
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/etc/creds"))
        .unwrap_or_else(|| panic!("no /etc/creds mount in {mounts}"));
    assert_eq!(line.split_whitespace().nth(2), Some("tmpfs"), "{line}");

    // Over its memory limit: OOMKilled.
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
    c.wait_for("hungry to be OOMKilled", Duration::from_secs(60), || {
        let p = pod(c, "hungry");
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        (p["status"]["phase"] == "Failed" && t["reason"] == "OOMKilled" && t["exitCode"] == 137)
            .then_some(())
    });

    // A crash loop: --previous shows the last run's output, and the
    // back-off grows 10 s, 20 s.
    c.ok(&[
        "run",
        "crashy",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--",
        "sh",
        "-c",
        "echo run-$RANDOM; exit 1",
    ]);
    // The first exit restarts at once (upstream's doBackOff): by the first
    // back-off the container has run twice, and --previous has output.
    let first = c.wait_for("a first back-off", Duration::from_secs(60), || {
        let p = pod(c, "crashy");
        let cs = &p["status"]["containerStatuses"][0];
        (cs["state"]["waiting"]["reason"] == "CrashLoopBackOff").then(|| cs.clone())
    });
    assert!(first["restartCount"].as_i64() >= Some(1), "{first}");
    assert!(
        first["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("back-off 10s"),
        "{first}"
    );
    let prev = c.ok(&["logs", "crashy", "--previous"]);
    assert!(prev.starts_with("run-"), "{prev:?}");
    c.wait_for("a 20 s back-off", Duration::from_secs(60), || {
        let p = pod(c, "crashy");
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "CrashLoopBackOff" && w["message"].as_str()?.starts_with("back-off 20s"))
            .then_some(())
    });
    let prev = c.ok(&["logs", "crashy", "--previous"]);
    assert!(prev.starts_with("run-"), "{prev:?}");
    let uid = pod(c, "crashy")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let backoff =
        format!("Back-off restarting failed container crashy in pod crashy_default({uid})");
    c.wait_for("a BackOff event", Duration::from_secs(20), || {
        pod_events(c, "crashy")
            .iter()
            .any(|(r, m, e)| r == "BackOff" && *m == backoff && e["type"] == "Warning")
            .then_some(())
    });

    // A Job's pod runs to completion.
    c.create(
        Some("default"),
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "echo job-done"]
"#,
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    assert_eq!(c.ok(&["logs", "job/once"]), "job-done\n");

    // Deleting pods stops them within their grace period and leaves no
    // processes, mounts, veths, namespaces or IP leases behind.
    let uids: Vec<String> = ["duo", "secretive"]
        .iter()
        .map(|n| pod(c, n)["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    for uid in &uids {
        // The check sees a running pod's state (so it can fail).
        let l = leftovers(c, &host, uid);
        for kind in ["process", "mount", "veth", "netns", "IP lease"] {
            assert!(
                l.iter().any(|x| x.starts_with(kind)),
                "no {kind} seen for a running pod: {l:?}"
            );
        }
    }
    let t = std::time::Instant::now();
    c.ok(&[
        "delete",
        "pod",
        "duo",
        "secretive",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "deletion took {:?} (grace periods are 5 s and 1 s)",
        t.elapsed()
    );
    for uid in &uids {
        let left = c.wait_for(
            "the pod's host state to go",
            Duration::from_secs(20),
            || {
                let l = leftovers(c, &host, uid);
                l.is_empty().then_some(l)
            },
        );
        assert!(left.is_empty());
    }
}

#[test]
fn containers_of_a_pod_share_ipc_and_uts_and_with_share_process_namespace_pid() {
    let host = Host::started();
    let c = host.cluster();
    let pair = |name: &str, share: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  shareProcessNamespace: {share}
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3601"]
  - name: b
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3602"]
"#
        )
    };
    c.create(Some("default"), &pair("shared", true));
    c.create(Some("default"), &pair("apart", false));
    for n in ["shared", "apart"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let ns_of = |pod: &str, ctr: &str, kind: &str| {
        c.ok(&[
            "exec",
            pod,
            "-c",
            ctr,
            "--",
            "readlink",
            &format!("/proc/self/ns/{kind}"),
        ])
        .trim()
        .to_string()
    };
    let host_ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for kind in ["ipc", "uts"] {
        for p in ["shared", "apart"] {
            let (a, b) = (ns_of(p, "a", kind), ns_of(p, "b", kind));
            assert_eq!(a, b, "{p}: containers share the pod's {kind} namespace");
            assert_ne!(a, host_ns(kind), "{p}: not the host's {kind} namespace");
        }
    }
    assert_eq!(
        c.ok(&["exec", "shared", "-c", "b", "--", "hostname"])
            .trim(),
        "shared"
    );
    // Process namespace: shared only when asked, with pause as PID 1.
    assert_eq!(ns_of("shared", "a", "pid"), ns_of("shared", "b", "pid"));
    assert_ne!(ns_of("apart", "a", "pid"), ns_of("apart", "b", "pid"));
    let ps = c.ok(&["exec", "shared", "-c", "a", "--", "ps", "-o", "pid,args"]);
    assert!(
        ps.contains("sleep 3601") && ps.contains("sleep 3602"),
        "each container sees the other's processes: {ps}"
    );
    let init = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    assert!(init.contains("pause"), "PID 1 is the pause process: {ps}");
    let ps = c.ok(&["exec", "apart", "-c", "a", "--", "ps", "-o", "pid,args"]);
    assert!(!ps.contains("sleep 3602"), "{ps}");

    // Deleting the pod stops its pause process and releases the namespaces.
    let uid = pod(c, "shared")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let pause: i32 =
        std::fs::read_to_string(c.dir.path().join(format!("agent/pods/{uid}/ns/pause.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert!(Path::new(&format!("/proc/{pause}")).exists());
    c.ok(&[
        "delete",
        "pod",
        "shared",
        "apart",
        "--wait=true",
        "--timeout=60s",
    ]);
    c.wait_for(
        "pause and the ns mounts to go",
        Duration::from_secs(20),
        || {
            let l = leftovers(c, &host, &uid);
            let pause_left = std::fs::read(format!("/proc/{pause}/cmdline"))
                .is_ok_and(|cl| String::from_utf8_lossy(&cl).contains("pause"));
            (l.is_empty() && !pause_left).then_some(())
        },
    );
}

#[test]
fn termination_messages_come_from_the_file_or_the_logs() {
    let host = Host::started();
    let c = host.cluster();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: ends
spec:
  restartPolicy: Never
  containers:
  - name: file
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo -n 'disk quota gone' > /dev/termination-log; exit 3"]
  - name: custom-path
    image: busybox:latest
    imagePullPolicy: Never
    terminationMessagePath: /tmp/why
    command: ["sh", "-c", "echo done > /tmp/why"]
  - name: from-logs
    image: busybox:latest
    imagePullPolicy: Never
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "for i in $(seq 1 100); do echo line $i; done; exit 1"]
  - name: quiet
    image: busybox:latest
    imagePullPolicy: Never
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo fine"]
"#,
    );
    let p = c.wait_for("ends to finish", Duration::from_secs(60), || {
        let p = pod(c, "ends");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let term = |name: &str| {
        p["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["state"]["terminated"]
            .clone()
    };
    assert_eq!(term("file")["exitCode"], 3);
    assert_eq!(term("file")["message"], "disk quota gone");
    assert_eq!(term("custom-path")["message"], "done\n");
    // The last 80 lines of the log of a failed container.
    let m = term("from-logs")["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with("line 21\n") && m.ends_with("line 100\n"),
        "{m:?}"
    );
    // A container that succeeded has no message from its logs.
    assert!(term("quiet").get("message").is_none(), "{}", term("quiet"));
    c.ok(&["delete", "pod", "ends", "--wait=true", "--timeout=60s"]);
}

#[test]
fn sidecars_start_before_and_stop_after_the_app_and_gates_hold_readiness() {
    let host = Host::started();
    let c = host.cluster();
    let shared = tempfile::tempdir().unwrap();
    // A Job-like pod: the sidecar is up before the next init container
    // runs, the pod succeeds when its app container does, and the sidecar
    // is stopped (SIGTERM) only after that.
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: batch
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes: [{{name: shared, hostPath: {{path: {dir}}}}}]
  initContainers:
  - name: logger
    restartPolicy: Always
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo logger-term >> /shared/log; exit 0' TERM; sleep 1; echo logger-up >> /shared/log; while true; do sleep 1; done"]
    startupProbe:
      exec: {{command: ["grep", "-q", "logger-up", "/shared/log"]}}
      periodSeconds: 1
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: setup
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "grep -q logger-up /shared/log && echo setup >> /shared/log"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo main >> /shared/log; sleep 2"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#,
            dir = shared.path().display()
        ),
    );
    let p = c.wait_for("batch to succeed", Duration::from_secs(90), || {
        let p = pod(c, "batch");
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Succeeded", "{p}");
    assert_eq!(
        std::fs::read_to_string(shared.path().join("log")).unwrap(),
        "logger-up\nsetup\nmain\nlogger-term\n"
    );
    let logger = &p["status"]["initContainerStatuses"][0];
    assert_eq!(logger["name"], "logger");
    assert_eq!(logger["state"]["terminated"]["exitCode"], 0, "{p}");
    assert_eq!(logger["restartCount"], 0, "{p}");

    // A failed init container under Never ends the pod, sidecars included.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: broken
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    restartPolicy: Always
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
  - name: fails
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 1; exit 2"]
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: Never
    command: ["true"]
"#,
    );
    let p = c.wait_for(
        "broken to fail, its sidecar stopped",
        Duration::from_secs(60),
        || {
            let p = pod(c, "broken");
            (p["status"]["phase"] == "Failed"
                && p["status"]["initContainerStatuses"][0]["state"]["terminated"].is_object())
            .then_some(p)
        },
    );
    assert_eq!(
        p["status"]["initContainerStatuses"][1]["state"]["terminated"]["exitCode"], 2,
        "{p}"
    );

    // A long-running pod: its sidecar's readiness and a readiness gate
    // both hold the pod's Ready condition.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: gated
spec:
  readinessGates: [{conditionType: example.com/ready}]
  initContainers:
  - name: side
    restartPolicy: Always
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "while [ ! -f /tmp/exit ]; do sleep 1; done; exit 3"]
    readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    let ready = |p: &serde_json::Value| pod_condition(p, "Ready");
    c.wait_for(
        "gated to run, held back by its sidecar",
        Duration::from_secs(60),
        || {
            let p = pod(c, "gated");
            let r = ready(&p);
            (p["status"]["phase"] == "Running"
                && p["status"]["initContainerStatuses"][0]["started"] == true
                && r["status"] == "False"
                && r["reason"] == "ContainersNotReady"
                && r["message"] == "containers with unready status: [side]")
                .then_some(())
        },
    );
    c.ok(&["exec", "gated", "-c", "side", "--", "touch", "/tmp/ready"]);
    let p = c.wait_for(
        "the sidecar ready, the gate holding",
        Duration::from_secs(30),
        || {
            let p = pod(c, "gated");
            (pod_condition(&p, "ContainersReady")["status"] == "True"
                && ready(&p)["reason"] == "ReadinessGatesNotReady")
                .then_some(p)
        },
    );
    assert_eq!(
        ready(&p)["message"],
        "corresponding condition of pod readiness gate \"example.com/ready\" does not exist.",
        "{p}"
    );
    assert_eq!(p["status"]["initContainerStatuses"][0]["ready"], true);
    c.ok(&[
        "patch",
        "pod",
        "gated",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"example.com/ready","status":"True"}]}}"#,
    ]);
    c.wait_for("gated to be Ready", Duration::from_secs(30), || {
        (ready(&pod(c, "gated"))["status"] == "True").then_some(())
    });
    // The sidecar exits: it is restarted, the app container is not, and
    // the gate's condition survives the kubelet's status updates.
    c.ok(&["exec", "gated", "-c", "side", "--", "touch", "/tmp/exit"]);
    let p = c.wait_for("the sidecar restarted", Duration::from_secs(60), || {
        let p = pod(c, "gated");
        let side = &p["status"]["initContainerStatuses"][0];
        (side["restartCount"] == 1 && side["state"]["running"].is_object()).then_some(p)
    });
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["lastState"]["terminated"]["exitCode"], 3,
        "{p}"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    assert_eq!(
        pod_condition(&p, "example.com/ready")["status"],
        "True",
        "{p}"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}
