//! What confines a pod: AppArmor, seccomp, user namespaces, unsupported volumes, service-account tokens.

use super::*;

/// A pod that asks for an AppArmor profile on a node that cannot enforce
/// one is held Pending, as upstream's kubelet holds it, not run
/// unconfined (`Unconfined` runs); one asking for a user namespace is not
/// run in the host's.
#[test]
fn pods_the_node_cannot_confine_are_held_not_run() {
    assert!(
        !kubelet::apparmor::enabled(),
        "this test checks a node without AppArmor, and this host's kernel has it enabled"
    );
    let host = Host::started();
    let c = host.cluster();
    let manifest = |name: &str, profile: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    securityContext:
      appArmorProfile: {{type: {profile}}}
"#
        )
    };
    c.create(Some("default"), &manifest("confined", "RuntimeDefault"));
    c.create(Some("default"), &manifest("free", "Unconfined"));
    c.wait_for("free to run", Duration::from_secs(60), || {
        (pod(c, "free")["status"]["phase"] == "Running").then_some(())
    });
    let p = c.wait_for("confined to be held", Duration::from_secs(30), || {
        let p = pod(c, "confined");
        (p["status"]["reason"] == "AppArmor").then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    assert_eq!(
        p["status"]["message"],
        "Cannot enforce AppArmor: AppArmor is not enabled on the host"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "Blocked",
        "{p}"
    );
    let events = pod_events(c, "confined");
    assert!(
        events.iter().any(|(reason, msg, e)| reason == "AppArmor"
            && e["type"] == "Warning"
            && msg == "Cannot enforce AppArmor: AppArmor is not enabled on the host"),
        "{events:?}"
    );
    // Held, not started: it stays so, and deleting it works.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pod(c, "confined")["status"]["phase"], "Pending");

    // A pod asking for its own user namespace is not run in the host's:
    // its sandbox fails, as upstream's does on a runtime without them.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: userns
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    let p = c.wait_for("userns to be held", Duration::from_secs(30), || {
        let p = pod(c, "userns");
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "ContainerCreating"
            && w["message"]
                .as_str()
                .is_some_and(|m| m.contains("user namespaces")))
        .then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    let events = pod_events(c, "userns");
    assert!(
        events
            .iter()
            .any(|(reason, _, e)| reason == "FailedCreatePodSandBox" && e["type"] == "Warning"),
        "{events:?}"
    );
    // A volume type the node cannot provide holds the pod with the
    // reason, instead of an empty directory where its data should be.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: wants-nfs
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    nfs: {server: 127.0.0.1, path: /exports}
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{name: shared, mountPath: /data}]
"#,
    );
    let want = "MountVolume.SetUp failed for volume \"shared\" : volume type \"nfs\" is not supported by this node";
    let p = c.wait_for("wants-nfs to be held", Duration::from_secs(30), || {
        let p = pod(c, "wants-nfs");
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "ContainerCreating"
            && w["message"].as_str().is_some_and(|m| m.contains(want)))
        .then_some(p)
    });
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    c.wait_for("a FailedMount event", Duration::from_secs(20), || {
        pod_events(c, "wants-nfs")
            .iter()
            .any(|(reason, msg, e)| {
                reason == "FailedMount" && msg == want && e["type"] == "Warning"
            })
            .then_some(())
    });
    c.ok(&[
        "delete",
        "pod",
        "confined",
        "free",
        "userns",
        "wants-nfs",
        "--wait=true",
        "--timeout=60s",
    ]);
}

#[test]
fn pods_get_a_bound_service_account_token() {
    let host = Host::started();
    let c = host.cluster();
    let sleeper = |name: &str, automount: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  automountServiceAccountToken: {automount}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
        )
    };
    c.create(Some("default"), &sleeper("with-token", true));
    c.create(Some("default"), &sleeper("without", false));
    for n in ["with-token", "without"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = c.ok(&["exec", "with-token", "--", "cat", &format!("{dir}/token")]);
    // The token is kept in memory (a tmpfs, as upstream's projected
    // volumes), never on the node's disk.
    let mounts = c.ok(&["exec", "with-token", "--", "cat", "/proc/mounts"]);
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(dir))
        .unwrap_or_else(|| panic!("no {dir} mount in {mounts}"));
    assert_eq!(line.split_whitespace().nth(2), Some("tmpfs"), "{line}");
    assert_eq!(
        c.ok(&[
            "exec",
            "with-token",
            "--",
            "cat",
            &format!("{dir}/namespace")
        ]),
        "default"
    );
    let ca = c.ok(&["exec", "with-token", "--", "cat", &format!("{dir}/ca.crt")]);
    assert_eq!(
        ca,
        std::fs::read_to_string(c.dir.path().join("tls/ca.crt")).unwrap(),
        "the cluster CA"
    );
    let out = c.kubectl(&["exec", "without", "--", "ls", dir]);
    assert!(
        !out.status.success(),
        "automountServiceAccountToken: false mounts nothing"
    );

    // The token authenticates as the pod's service account while the pod
    // exists.
    let as_token = |t: &str| {
        Command::new("kubectl")
            .args(["--kubeconfig=/dev/null", "--server", &c.url])
            .arg("--certificate-authority")
            .arg(c.dir.path().join("tls/ca.crt"))
            .args(["--token", t, "get", "pods", "-o", "name"])
            .env("HOME", c.dir.path())
            .output()
            .unwrap()
    };
    // Without a binding the service account may not list pods (RBAC).
    let out = as_token(&token);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            r#"User "system:serviceaccount:default:default" cannot list resource "pods""#
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    let out = as_token(&token);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pod/with-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&["delete", "pod", "with-token", "--wait=true"]);
    let out = as_token(&token);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "a token bound to a deleted pod no longer works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl create token: a fresh, unbound one.
    let fresh = c.ok(&["create", "token", "default", "--duration=15m"]);
    assert!(as_token(fresh.trim()).status.success());
}

#[test]
fn seccomp_profiles_confine_containers() {
    let mut host = Host::new();
    // A Localhost profile, in Docker's format, where the kubelet looks
    // for them: `<data-dir>/agent/seccomp/<localhostProfile>`.
    start_node_with(&mut host, &[], |data| {
        let dir = data.join("agent/seccomp/profiles");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("no-mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
    });
    let c = host.cluster.as_ref().unwrap();
    let run = |args: &[&str]| {
        let o = c.kubectl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let pod_with = |name: &str, pod_sc: &str, ctr_sc: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {pod_sc}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    securityContext: {ctr_sc}
"#
        )
    };
    c.create(Some("default"), &pod_with("unconfined", "{}", "{}"));
    c.create(
        Some("default"),
        &pod_with(
            "runtime-default",
            "{seccompProfile: {type: RuntimeDefault}, runAsUser: 1000}",
            "{}",
        ),
    );
    c.create(
        Some("default"),
        &pod_with(
            "local",
            "{seccompProfile: {type: RuntimeDefault}}",
            "{seccompProfile: {type: Localhost, localhostProfile: profiles/no-mkdir.json}}",
        ),
    );
    c.create(
        Some("default"),
        &pod_with(
            "missing-profile",
            "{}",
            "{seccompProfile: {type: Localhost, localhostProfile: profiles/absent.json}}",
        ),
    );
    for n in ["unconfined", "runtime-default", "local"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let mode = |pod: &str, pid: &str| {
        let status = c.ok(&["exec", pod, "--", "cat", &format!("/proc/{pid}/status")]);
        status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no Seccomp line in {status}"))
    };
    // Mode 0: no filter; mode 2: a filter, on the container's process and
    // on processes exec'd into it.
    assert_eq!(mode("unconfined", "1"), "0");
    assert_eq!(mode("unconfined", "self"), "0");
    for p in ["runtime-default", "local"] {
        assert_eq!(mode(p, "1"), "2", "{p}: PID 1 is filtered");
        assert_eq!(mode(p, "self"), "2", "{p}: exec'd processes are filtered");
    }

    // An exec'd process runs as the container's user, with exactly the
    // container's capabilities (the filter is loaded with CAP_SYS_ADMIN,
    // which is dropped again before the command runs).
    assert_eq!(
        c.ok(&["exec", "runtime-default", "--", "id", "-u"]).trim(),
        "1000"
    );
    let caps_of = |pod: &str, pid: &str| {
        let status = c.ok(&["exec", pod, "--", "cat", &format!("/proc/{pid}/status")]);
        status
            .lines()
            .filter(|l| l.starts_with("Cap"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for p in ["local", "unconfined"] {
        assert_eq!(
            caps_of(p, "self"),
            caps_of(p, "1"),
            "{p}: exec'd capabilities"
        );
    }

    // Creating a user namespace needs no capability, so only the filter
    // stops it: allowed unconfined, refused by RuntimeDefault.
    let (ok, out) = run(&["exec", "unconfined", "--", "unshare", "-U", "true"]);
    assert!(ok, "unconfined containers may unshare: {out}");
    let (ok, out) = run(&["exec", "runtime-default", "--", "unshare", "-U", "true"]);
    assert!(!ok, "RuntimeDefault refuses unshare");
    assert!(out.contains("Operation not permitted"), "{out}");
    // Everyday work is unaffected.
    let out = c.ok(&[
        "exec",
        "runtime-default",
        "--",
        "sh",
        "-c",
        "mkdir /tmp/d && echo hi > /tmp/d/f && cat /tmp/d/f && ps",
    ]);
    assert!(out.starts_with("hi"), "{out}");

    // The container's Localhost profile wins over the pod's RuntimeDefault.
    let (ok, out) = run(&["exec", "local", "--", "mkdir", "/tmp/x"]);
    assert!(!ok, "the local profile refuses mkdir: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    c.ok(&["exec", "local", "--", "touch", "/tmp/file"]);
    c.ok(&["exec", "local", "--", "unshare", "-U", "true"]);

    // A missing profile is the container's error, as upstream.
    let waiting = c.wait_for(
        "missing-profile to report its error",
        Duration::from_secs(30),
        || {
            let p = pod(c, "missing-profile");
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            (w["reason"] == "CreateContainerError").then_some(w)
        },
    );
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or("")
            .contains("profiles/absent.json"),
        "{waiting}"
    );

    // Bad profiles are refused by the API server, naming the field.
    let bad = pod_with(
        "bad",
        "{seccompProfile: {type: Localhost}}",
        "{seccompProfile: {type: Sometimes}}",
    );
    let o = c.kubectl_env(&["create", "-f", "-"], &[], Some(&bad));
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains("spec.securityContext.seccompProfile.localhostProfile: Required value"),
        "{out}"
    );
    assert!(
        out.contains("spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Sometimes\""),
        "{out}"
    );
}

/// Writes the client certificate and key of a kubeconfig for `user` (from
/// `r8s kubeconfig`) into `dir`; returns their paths.
fn user_cert(c: &Cluster, user: &str, groups: &[&str]) -> (String, String) {
    use base64::Engine;
    let mut cmd = Command::new(common::r8s_bin());
    cmd.args(["kubeconfig", "--user", user, "--data-dir"])
        .arg(c.path());
    for g in groups {
        cmd.args(["--group", g]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        let b64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in the kubeconfig"))
            .trim();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let cert = c.path().join(format!("{user}.crt"));
    let key = c.path().join(format!("{user}.key"));
    std::fs::write(&cert, field("client-certificate-data:")).unwrap();
    std::fs::write(&key, field("client-key-data:")).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn the_kubelet_api_authorizes_its_callers() {
    let host = Host::started();
    let c = host.cluster();
    let node = c.get_json(&["nodes"])["items"][0].clone();
    let ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap();
    let get = |who: &(String, String), path: &str| {
        let out = Command::new("curl")
            .args([
                "-sk",
                "--cert",
                &who.0,
                "--key",
                &who.1,
                "-w",
                "\n%{http_code}",
            ])
            .arg(format!("https://{ip}:{port}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A user of the cluster CA without RBAC rights gets nothing.
    let alice = user_cert(c, "alice", &["dev"]);
    let denied = get(&alice, "/stats/summary");
    assert!(
        denied.starts_with("Forbidden (user=alice, verb=get, resource=nodes, subresource=stats)")
            && denied.ends_with("403"),
        "{denied}"
    );
    let denied = get(&alice, "/containerLogs/default/p/c");
    assert!(
        denied.contains("subresource=proxy") && denied.ends_with("403"),
        "{denied}"
    );
    // With nodes/stats, the summary (and nothing more).
    c.ok(&[
        "create",
        "clusterrole",
        "node-stats",
        "--verb=get",
        "--resource=nodes/stats",
    ]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        "bob-stats",
        "--clusterrole=node-stats",
        "--user=bob",
    ]);
    let bob = user_cert(c, "bob", &[]);
    let summary = get(&bob, "/stats/summary");
    assert!(
        summary.ends_with("200") && summary.contains("\"node\""),
        "{summary}"
    );
    assert!(get(&bob, "/containerLogs/default/p/c").ends_with("403"));
}
