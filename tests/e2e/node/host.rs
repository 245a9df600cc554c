//! The pod and its host: host ports, service variables, DNS config and sysctls.

use super::*;

#[test]
fn host_ports_reach_the_pod_from_the_node() {
    let host = Host::started();
    let c = host.cluster();
    let hp = free_port();
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: hp
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo via-host-port > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
    - containerPort: 8080
      hostPort: {hp}
"#
        ),
    );
    c.wait_for("hp to run", Duration::from_secs(60), || {
        (pod(c, "hp")["status"]["phase"] == "Running").then_some(())
    });
    let body = c.wait_for("the host port to answer", Duration::from_secs(20), || {
        http_get(&format!("127.0.0.1:{hp}")).filter(|b| b.contains("via-host-port"))
    });
    assert!(body.contains("200 OK"), "{body}");
    c.ok(&["delete", "pod", "hp", "--wait=true", "--timeout=60s"]);
    assert!(
        http_get(&format!("127.0.0.1:{hp}")).is_none(),
        "the host port is unmapped with its pod"
    );
}

#[test]
fn containers_get_service_environment_variables() {
    let host = Host::started();
    let c = host.cluster();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Service
metadata:
  name: my-db
spec:
  ports:
  - {name: sql, port: 5432}
  - {name: metrics, port: 9187}
"#,
    );
    let db_ip = c.get_json(&["service", "my-db"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let k8s_ip = c.get_json(&["service", "kubernetes"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let pod_yaml = |name: &str, links: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  enableServiceLinks: {links}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    env:
    - {{name: DB_URL, value: "postgres://$(MY_DB_SERVICE_HOST):$(MY_DB_SERVICE_PORT_SQL)/app"}}
    - {{name: MY_DB_SERVICE_PORT, value: "overridden"}}
"#
        )
    };
    c.create(Some("default"), &pod_yaml("linked", true));
    c.create(Some("default"), &pod_yaml("unlinked", false));
    for n in ["linked", "unlinked"] {
        c.wait_for(&format!("{n} to run"), Duration::from_secs(60), || {
            (pod(c, n)["status"]["phase"] == "Running").then_some(())
        });
    }
    let env_of = |p: &str| -> std::collections::HashMap<String, String> {
        c.ok(&["exec", p, "--", "env"])
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    };
    let env = env_of("linked");
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some(k8s_ip.as_str()));
    assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
    assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
    assert_eq!(get("MY_DB_SERVICE_HOST"), Some(db_ip.as_str()));
    assert_eq!(get("MY_DB_SERVICE_PORT_METRICS"), Some("9187"));
    assert_eq!(
        get("MY_DB_PORT"),
        Some(format!("tcp://{db_ip}:5432").as_str())
    );
    // The container's own variables may use them, and win over them.
    assert_eq!(
        get("DB_URL"),
        Some(format!("postgres://{db_ip}:5432/app").as_str())
    );
    assert_eq!(get("MY_DB_SERVICE_PORT"), Some("overridden"));
    // enableServiceLinks: false keeps only the API server's.
    let env = env_of("unlinked");
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        Some(k8s_ip.as_str())
    );
    assert!(!env.contains_key("MY_DB_SERVICE_HOST"), "{env:?}");
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}

#[test]
fn pods_get_their_hosts_dns_config_and_sysctls() {
    let host = Host::started();
    let c = host.cluster();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: tuned
spec:
  hostname: db-0
  subdomain: db
  hostAliases:
  - ip: 10.1.2.3
    hostnames: [foo.local, bar.local]
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53]
    searches: [ns1.svc.cluster-domain.example, my.dns.search.suffix]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  securityContext:
    sysctls:
    - {name: net.ipv4.ip_local_port_range, value: "20000 20100"}
    - {name: kernel.shm_rmid_forced, value: "1"}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    c.wait_for("tuned to run", Duration::from_secs(60), || {
        (pod(c, "tuned")["status"]["phase"] == "Running").then_some(())
    });
    let ip = pod(c, "tuned")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let hosts = c.ok(&["exec", "tuned", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{ip}\tdb-0.db.default.svc.cluster.local\tdb-0\n")),
        "{hosts}"
    );
    assert!(
        hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"),
        "{hosts}"
    );
    assert_eq!(
        c.ok(&["exec", "tuned", "--", "cat", "/etc/resolv.conf"]),
        "nameserver 192.0.2.53\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n"
    );
    assert_eq!(c.ok(&["exec", "tuned", "--", "hostname"]).trim(), "db-0");
    let range = c.ok(&[
        "exec",
        "tuned",
        "--",
        "cat",
        "/proc/sys/net/ipv4/ip_local_port_range",
    ]);
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "20100"]
    );
    assert_eq!(
        c.ok(&[
            "exec",
            "tuned",
            "--",
            "cat",
            "/proc/sys/kernel/shm_rmid_forced"
        ])
        .trim(),
        "1"
    );
    // The host's own value is untouched.
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    assert_ne!(
        host_range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "20100"]
    );

    // subPathExpr expands the container's variables; a subPath that a
    // container turned into a symlink out of the volume is refused.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: sub
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: plant
    image: busybox:latest
    imagePullPolicy: Never
    command: ["ln", "-s", "/", "/data/escape"]
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: named
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hi > /mnt/f; sleep 3600"]
    env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts: [{name: data, mountPath: /mnt, subPathExpr: "dirs/$(POD)"}]
  - name: escaper
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{name: data, mountPath: /host, subPath: escape}]
"#,
    );
    let p = c.wait_for("escaper to be refused", Duration::from_secs(60), || {
        let p = pod(c, "sub");
        let st = p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "escaper")?
            .clone();
        (st["state"]["waiting"]["reason"] == "CreateContainerError").then_some((p, st))
    });
    assert!(
        p.1["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("resolves outside of the volume"),
        "{}",
        p.1
    );
    let uid = p.0["metadata"]["uid"].as_str().unwrap();
    let f = c
        .path()
        .join("agent/pods")
        .join(uid)
        .join("volumes/data/dirs/sub/f");
    c.wait_for(
        "named to write through its subPathExpr",
        Duration::from_secs(30),
        || (std::fs::read_to_string(&f).ok()? == "hi\n").then_some(()),
    );

    // An unsafe sysctl is refused by the node.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: greedy
spec:
  securityContext:
    sysctls: [{name: kernel.msgmax, value: "65536"}]
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    let p = c.wait_for("greedy to be refused", Duration::from_secs(60), || {
        let p = pod(c, "greedy");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "SysctlForbidden", "{p}");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );
    c.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}
