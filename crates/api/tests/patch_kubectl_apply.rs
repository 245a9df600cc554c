//! Strategic merge patches exactly as the real kubectl (v1.32) computed them
//! for `kubectl apply` from r8s's own `/openapi/v3` documents (captured by
//! pointing kubectl at the generated documents), applied to live objects
//! that also carry server-set fields. Expected results follow upstream's
//! strategicpatch rules (merge keys, `$setElementOrder`, `$retainKeys`,
//! `$deleteFromPrimitiveList`, atomic lists).

use serde_json::{Value, json};

fn apply(live: &str, patch: &str, definition: &str) -> Value {
    let live: Value = serde_json::from_str(live).unwrap();
    let patch: Value = serde_json::from_str(patch).unwrap();
    api::patch::strategic_merge_patch(&live, &patch, definition).unwrap()
}

const DEPLOYMENT_IMAGE_ENV_AND_CONTAINER_REMOVAL_LIVE: &str = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "x"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\": \"apps/v1\", \"kind\": \"Deployment\", \"metadata\": {\"name\": \"web\", \"namespace\": \"default\", \"labels\": {\"app\": \"web\", \"tier\": \"x\"}}, \"spec\": {\"selector\": {\"matchLabels\": {\"app\": \"web\"}}, \"template\": {\"metadata\": {\"labels\": {\"app\": \"web\"}}, \"spec\": {\"containers\": [{\"name\": \"web\", \"image\": \"nginx:1\", \"env\": [{\"name\": \"A\", \"value\": \"1\"}, {\"name\": \"B\", \"value\": \"2\"}], \"ports\": [{\"containerPort\": 80}]}, {\"name\": \"side\", \"image\": \"busybox\"}]}}}}"}}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "SERVER", "value": "s"}], "ports": [{"containerPort": 80}]}, {"name": "side", "image": "busybox"}]}}}}"#;

const DEPLOYMENT_IMAGE_ENV_AND_CONTAINER_REMOVAL_PATCH: &str = r#"{"metadata": {"labels": {"tier": null}}, "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}], "containers": [{"$setElementOrder/env": [{"name": "A"}, {"name": "C"}], "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}], "image": "nginx:2", "name": "web"}, {"$patch": "delete", "name": "side"}]}}}}"#;

const SERVICE_PORTS_BY_PORT_LIVE: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"web\", \"namespace\": \"default\"}, \"spec\": {\"selector\": {\"app\": \"web\"}, \"ports\": [{\"name\": \"http\", \"port\": 80, \"targetPort\": 8080}, {\"name\": \"admin\", \"port\": 9000}]}}"}}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9000, "protocol": "TCP"}], "clusterIP": "10.43.0.5"}}"#;

const SERVICE_PORTS_BY_PORT_PATCH: &str = r#"{"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}], "ports": [{"port": 80, "targetPort": "http"}, {"name": "https", "port": 443}, {"$patch": "delete", "port": 9000}]}}"#;

const VOLUMES_TOLERATIONS_CONTAINERS_FINALIZERS_LIVE: &str = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default", "finalizers": ["a/b", "server/x"], "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\": \"apps/v1\", \"kind\": \"Deployment\", \"metadata\": {\"name\": \"web\", \"namespace\": \"default\", \"finalizers\": [\"a/b\"]}, \"spec\": {\"selector\": {\"matchLabels\": {\"app\": \"web\"}}, \"template\": {\"metadata\": {\"labels\": {\"app\": \"web\"}}, \"spec\": {\"tolerations\": [{\"key\": \"k\", \"operator\": \"Exists\"}], \"volumes\": [{\"name\": \"data\", \"emptyDir\": {}}, {\"name\": \"cfg\", \"configMap\": {\"name\": \"c1\"}}], \"containers\": [{\"name\": \"web\", \"image\": \"nginx\", \"volumeMounts\": [{\"name\": \"data\", \"mountPath\": \"/data\"}, {\"name\": \"cfg\", \"mountPath\": \"/cfg\"}]}]}}}}"}}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"tolerations": [{"key": "k", "operator": "Exists"}], "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c1"}}], "containers": [{"name": "web", "image": "nginx", "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/cfg"}], "imagePullPolicy": "Always"}]}}, "replicas": 3}}"#;

const VOLUMES_TOLERATIONS_CONTAINERS_FINALIZERS_PATCH: &str = r#"{"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/b"], "$setElementOrder/finalizers": ["c/d"], "finalizers": ["c/d"]}, "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "init-like"}, {"name": "web"}], "$setElementOrder/volumes": [{"name": "data"}, {"name": "cfg"}], "containers": [{"image": "busybox", "name": "init-like"}, {"$setElementOrder/volumeMounts": [{"mountPath": "/cfg"}], "name": "web", "volumeMounts": [{"$patch": "delete", "mountPath": "/data"}]}], "tolerations": [{"key": "other", "operator": "Exists"}], "volumes": [{"$retainKeys": ["hostPath", "name"], "emptyDir": null, "hostPath": {"path": "/srv"}, "name": "data"}]}}}}"#;

#[test]
fn deployment_image_env_and_container_removal() {
    let out = apply(
        DEPLOYMENT_IMAGE_ENV_AND_CONTAINER_REMOVAL_LIVE,
        DEPLOYMENT_IMAGE_ENV_AND_CONTAINER_REMOVAL_PATCH,
        "io.k8s.api.apps.v1.Deployment",
    );
    // `tier: null` removed the label; the other stays.
    assert_eq!(out["metadata"]["labels"], json!({ "app": "web" }));
    let containers = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    // The `side` container went with `$patch: delete`.
    assert_eq!(containers.len(), 1);
    let web = &containers[0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["image"], "nginx:2");
    // Untouched fields of the merged container survive.
    assert_eq!(web["ports"], json!([{ "containerPort": 80 }]));
    // B deleted, C added. Upstream lands the server-only SERVER entry
    // between A and C: deleting B and appending C write through Go's shared
    // backing array, so the "live order" it sorts by is [A, SERVER, C].
    assert_eq!(
        web["env"],
        json!([
            { "name": "A", "value": "1" },
            { "name": "SERVER", "value": "s" },
            { "name": "C", "value": "3" },
        ])
    );
    // No directive leaks into the stored object.
    assert!(!out.to_string().contains('$'));
}

#[test]
fn service_ports_by_port() {
    let out = apply(
        SERVICE_PORTS_BY_PORT_LIVE,
        SERVICE_PORTS_BY_PORT_PATCH,
        "io.k8s.api.core.v1.Service",
    );
    assert_eq!(
        out["spec"]["ports"],
        json!([
            // Merged by port: the server-defaulted protocol and the name stay.
            { "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" },
            { "name": "https", "port": 443 },
        ])
    );
    assert_eq!(out["spec"]["clusterIP"], "10.43.0.5");
    assert_eq!(out["spec"]["selector"], json!({ "app": "web" }));
    assert!(!out.to_string().contains('$'));
}

#[test]
fn volumes_tolerations_containers_finalizers() {
    let out = apply(
        VOLUMES_TOLERATIONS_CONTAINERS_FINALIZERS_LIVE,
        VOLUMES_TOLERATIONS_CONTAINERS_FINALIZERS_PATCH,
        "io.k8s.api.apps.v1.Deployment",
    );
    // Finalizers are a merged set: the applied one replaced, the server's
    // kept (after the patch's, as upstream orders server-only items).
    assert_eq!(out["metadata"]["finalizers"], json!(["c/d", "server/x"]));
    let spec = &out["spec"]["template"]["spec"];
    // `$retainKeys` dropped emptyDir when the volume became a hostPath.
    assert_eq!(
        spec["volumes"],
        json!([
            { "name": "data", "hostPath": { "path": "/srv" } },
            { "name": "cfg", "configMap": { "name": "c1" } },
        ])
    );
    // Tolerations are atomic: replaced as a whole.
    assert_eq!(
        spec["tolerations"],
        json!([{ "key": "other", "operator": "Exists" }])
    );
    // The new container goes first, as `$setElementOrder/containers` says.
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(
        containers[0],
        json!({ "name": "init-like", "image": "busybox" })
    );
    assert_eq!(containers[1]["name"], "web");
    assert_eq!(containers[1]["imagePullPolicy"], "Always");
    assert_eq!(
        containers[1]["volumeMounts"],
        json!([{ "name": "cfg", "mountPath": "/cfg" }])
    );
    // Server-set fields outside the patch stay.
    assert_eq!(out["spec"]["replicas"], 3);
    assert!(!out.to_string().contains("$retainKeys"));
}

#[test]
fn unknown_definition_behaves_like_merge_patch() {
    let live = json!({ "a": { "b": 1, "c": [1, 2] }, "d": 1 });
    let patch = json!({ "a": { "b": null, "c": [3] }, "e": 2 });
    let out = api::patch::strategic_merge_patch(&live, &patch, "example.com.v1.Unknown").unwrap();
    assert_eq!(out, api::patch::merge_patch(&live, &patch));
}
