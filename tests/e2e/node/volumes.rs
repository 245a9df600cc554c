//! Volumes: persistent volume claims, configMap and secret volumes.

use super::*;

fn run_to_end(c: &Cluster, name: &str, manifest: &str) -> (String, String) {
    c.create(Some("default"), manifest);
    let phase = c.wait_for(
        &format!("{name} to finish"),
        Duration::from_secs(60),
        || {
            let p = pod(c, name);
            let ph = p["status"]["phase"].as_str().unwrap_or("").to_string();
            (ph == "Succeeded" || ph == "Failed").then_some(ph)
        },
    );
    (phase, c.ok(&["logs", name]))
}

fn claim_pod(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {claim}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}"]
    volumeMounts:
    - name: data
      mountPath: /data
"#
    )
}

#[test]
fn persistent_volume_claims_keep_data_across_pods() {
    let host = Host::started();
    let c = host.cluster();

    // The default class provisions a directory on the node.
    let sc = c.get_json(&["storageclass", "local-path"]);
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
"#,
    );
    let pv_name = c.wait_for("the claim to bind", Duration::from_secs(30), || {
        let pvc = c.get_json(&["pvc", "data"]);
        (pvc["status"]["phase"] == "Bound")
            .then(|| pvc["spec"]["volumeName"].as_str().map(str::to_string))
            .flatten()
    });
    let pv = c.get_json(&["pv", &pv_name]);
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    let dir = pv["spec"]["hostPath"]["path"].as_str().unwrap().to_string();

    let (phase, _) = run_to_end(
        c,
        "writer",
        &claim_pod("writer", "data", "echo kept > /data/f && sync"),
    );
    assert_eq!(phase, "Succeeded");
    assert_eq!(
        std::fs::read_to_string(Path::new(&dir).join("f")).unwrap(),
        "kept\n",
        "the data is in the provisioned directory on the node"
    );
    c.ok(&["delete", "pod", "writer", "--wait=true"]);
    let (phase, logs) = run_to_end(c, "reader", &claim_pod("reader", "data", "cat /data/f"));
    assert_eq!((phase.as_str(), logs.as_str()), ("Succeeded", "kept\n"));

    // A pre-created hostPath volume binds to a claim of its class.
    let static_dir = tempfile::tempdir_in(host.data.path()).unwrap();
    std::fs::write(static_dir.path().join("seed"), "from the admin\n").unwrap();
    c.create(
        None,
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: static-{pid}
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  persistentVolumeReclaimPolicy: Retain
  hostPath:
    path: {path}
"#,
            pid = std::process::id(),
            path = static_dir.path().display()
        ),
    );
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: manual
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 100Mi
"#,
    );
    let (phase, logs) = run_to_end(
        c,
        "seeded",
        &claim_pod("seeded", "manual", "cat /data/seed"),
    );
    assert_eq!(
        (phase.as_str(), logs.as_str()),
        ("Succeeded", "from the admin\n")
    );

    // Deleting the claim deletes the provisioned volume and its directory,
    // and releases (keeps) the static one.
    c.ok(&["delete", "pod", "reader", "seeded", "--wait=true"]);
    c.ok(&["delete", "pvc", "data", "manual", "--wait=true"]);
    c.wait_for(
        "the provisioned volume to go",
        Duration::from_secs(30),
        || (!c.kubectl(&["get", "pv", &pv_name]).status.success()).then_some(()),
    );
    assert!(
        !Path::new(&dir).exists(),
        "{dir} was removed with its volume"
    );
    let static_name = format!("static-{}", std::process::id());
    c.wait_for(
        "the static volume to be Released",
        Duration::from_secs(30),
        || (c.get_json(&["pv", &static_name])["status"]["phase"] == "Released").then_some(()),
    );
    assert!(
        static_dir.path().join("seed").exists(),
        "Retain keeps the data"
    );
}

#[test]
fn configmap_and_secret_volumes_follow_updates_atomically() {
    let host = Host::started();
    let c = host.cluster();
    c.create_cm(Some("default"), "conf", &[("mode", "one")]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=pw=first",
    ]);
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: watcher
  labels: {tier: a}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: conf
    configMap: {name: conf}
  - name: sec
    secret: {secretName: sec}
  - name: meta
    downwardAPI:
      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: conf, mountPath: /conf}
    - {name: sec, mountPath: /sec}
    - {name: meta, mountPath: /meta}
"#,
    );
    c.wait_for("watcher to run", Duration::from_secs(60), || {
        (pod(c, "watcher")["status"]["phase"] == "Running").then_some(())
    });
    let read = |path: &str| c.ok(&["exec", "watcher", "--", "cat", path]);
    assert_eq!(read("/conf/mode"), "one");
    assert_eq!(read("/sec/pw"), "first");
    let before = c.ok(&["exec", "watcher", "--", "readlink", "/conf/..data"]);
    c.ok(&[
        "patch",
        "configmap",
        "conf",
        "-p",
        r#"{"data":{"mode":"two","extra":"new key"}}"#,
    ]);
    c.ok(&[
        "patch",
        "secret",
        "sec",
        "-p",
        r#"{"stringData":{"pw":"second"}}"#,
    ]);
    c.ok(&["label", "pod", "watcher", "tier=b", "--overwrite"]);
    c.wait_for(
        "the updates to reach the running pod",
        Duration::from_secs(60),
        || {
            (read("/conf/mode") == "two"
                && read("/conf/extra") == "new key"
                && read("/sec/pw") == "second"
                && read("/meta/labels").contains("tier=\"b\""))
            .then_some(())
        },
    );
    let after = c.ok(&["exec", "watcher", "--", "readlink", "/conf/..data"]);
    assert_ne!(before, after, "a new ..data generation was swapped in");
    assert_eq!(
        pod(c, "watcher")["status"]["containerStatuses"][0]["restartCount"],
        0,
        "updates do not restart the container"
    );
}
