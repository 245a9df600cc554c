//! Strategic merge patches as `kubectl apply`, `kubectl patch` and
//! controllers send them, applied to real kinds through the public API.

use api::patch::{PatchError, json_patch, merge_patch, strategic_merge_patch};
use serde_json::{Value, json};

const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

fn live_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "fe"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [
                    {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "sidecar", "image": "busybox", "args": ["sleep", "1d"]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}}}
    })
}

fn containers(v: &Value) -> &Vec<Value> {
    v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
}

#[test]
fn apply_changes_image_and_env_keeping_everything_else() {
    // What `kubectl apply` sends after editing the image and the env list.
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"name": "web", "image": "nginx:1.27",
            "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
            "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "A"}]}]}}}});
    let out = strategic_merge_patch(&live_deployment(), &patch, DEPLOY).unwrap();
    let cs = containers(&out);
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["image"], "nginx:1.27");
    assert_eq!(
        cs[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        cs[0]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data"}])
    );
    assert_eq!(
        cs[0]["env"],
        json!([{"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(
        cs[1],
        live_deployment()["spec"]["template"]["spec"]["containers"][1]
    );
    assert_eq!(out["spec"]["replicas"], 2);
}

#[test]
fn apply_removes_a_container_and_a_label() {
    let patch = json!({
        "metadata": {"labels": {"tier": null}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}]}}}});
    let out = strategic_merge_patch(&live_deployment(), &patch, DEPLOY).unwrap();
    assert_eq!(containers(&out).len(), 1);
    assert_eq!(containers(&out)[0]["name"], "web");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
}

#[test]
fn apply_switches_to_recreate_with_retain_keys() {
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let out = strategic_merge_patch(&live_deployment(), &patch, DEPLOY).unwrap();
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn apply_replaces_a_volume_source_with_retain_keys() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/volumes": [{"name": "data"}],
        "volumes": [{"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "cfg"}, "emptyDir": null}]}}}});
    let out = strategic_merge_patch(&live_deployment(), &patch, DEPLOY).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cfg"}}])
    );
}

#[test]
fn kubectl_set_image_style_patch() {
    // `kubectl set image deployment/web web=nginx:2` sends a plain strategic
    // patch naming only the container.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
    let out = strategic_merge_patch(&live_deployment(), &patch, DEPLOY).unwrap();
    assert_eq!(containers(&out)[0]["image"], "nginx:2");
    assert_eq!(containers(&out)[1]["name"], "sidecar");
}

#[test]
fn kubectl_rollout_restart_adds_an_annotation() {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    let out = strategic_merge_patch(&live_deployment(), &patch, DEPLOY).unwrap();
    assert_eq!(
        out["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2026-01-01T00:00:00Z"
    );
}

#[test]
fn service_ports_merge_by_port() {
    let svc = json!({"spec": {"type": "ClusterIP", "ports": [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/ports": [{"port": 80}, {"port": 9090}],
        "ports": [{"port": 80, "targetPort": 8081}, {"port": 9090, "name": "metrics"}, {"$patch": "delete", "port": 443}]}});
    let out = strategic_merge_patch(&svc, &patch, "io.k8s.api.core.v1.Service").unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([
        {"name": "http", "port": 80, "targetPort": 8081, "protocol": "TCP"},
        {"port": 9090, "name": "metrics"}])
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let node = json!({"status": {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
        "addresses": [{"type": "Hostname", "address": "n1"}]}});
    let out = strategic_merge_patch(&node, &patch, "io.k8s.api.core.v1.Node").unwrap();
    let conds = out["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 2);
    assert!(conds.contains(&json!({"type": "Ready", "status": "True"})));
    assert_eq!(out["status"]["addresses"].as_array().unwrap().len(), 2);
}

#[test]
fn finalizers_and_owner_references() {
    let cm = json!({"metadata": {"name": "c", "finalizers": ["a/x", "b/y"],
        "ownerReferences": [{"uid": "1", "name": "o1", "kind": "K", "apiVersion": "v1"}]}});
    let patch = json!({"metadata": {
        "$deleteFromPrimitiveList/finalizers": ["a/x"],
        "ownerReferences": [{"uid": "2", "name": "o2", "kind": "K", "apiVersion": "v1"}]}});
    let out = strategic_merge_patch(&cm, &patch, "io.k8s.api.core.v1.ConfigMap").unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b/y"]));
    let owners: Vec<&str> = out["metadata"]["ownerReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uid"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["2", "1"]);
}

#[test]
fn configmap_data_merges_and_nulls_delete() {
    let cm = json!({"data": {"a": "1", "b": "2"}});
    let out = strategic_merge_patch(
        &cm,
        &json!({"data": {"a": null, "c": "3"}}),
        "io.k8s.api.core.v1.ConfigMap",
    )
    .unwrap();
    assert_eq!(out["data"], json!({"b": "2", "c": "3"}));
}

#[test]
fn errors_name_the_path() {
    let bad = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let e = strategic_merge_patch(&live_deployment(), &bad, DEPLOY).unwrap_err();
    assert!(
        matches!(e, PatchError::Strategic { ref path, .. } if path == ".spec.template.spec.containers"),
        "{e}"
    );
    let bad = json!({"spec": {"$patch": "bogus"}});
    let e = strategic_merge_patch(&live_deployment(), &bad, DEPLOY).unwrap_err();
    assert!(e.to_string().starts_with(".spec:"), "{e}");
}

#[test]
fn json_patch_and_merge_patch() {
    let d = live_deployment();
    let out = json_patch(&d, br#"[{"op":"replace","path":"/spec/replicas","value":5},{"op":"add","path":"/metadata/labels/x","value":"y"}]"#).unwrap();
    assert_eq!(out["spec"]["replicas"], 5);
    assert_eq!(out["metadata"]["labels"]["x"], "y");
    let e = json_patch(&d, br#"[{"op":"remove","path":"/spec/nope"}]"#).unwrap_err();
    assert!(e.to_string().contains("/spec/nope"), "{e}");
    assert!(matches!(
        json_patch(&d, b"{}"),
        Err(PatchError::InvalidJsonPatch(_))
    ));
    // A merge patch replaces lists wholesale.
    let out = merge_patch(
        &d,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}}),
    );
    assert_eq!(containers(&out), &vec![json!({"name": "only"})]);
}
