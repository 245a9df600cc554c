//! Dynamic admission through kube-rs: webhook servers written here
//! (HTTPS with their own CA, reached by URL), registered as Mutating- and
//! ValidatingWebhookConfigurations, and ValidatingAdmissionPolicies with
//! their bindings and parameters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use apiserver::testing::{TestServer, https_server};

/// A webhook server: every AdmissionReview it got, by path.
struct Webhooks {
    port: u16,
    ca_bundle: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

fn answer(path: &str, review: &Value) -> Value {
    let req = &review["request"];
    let uid = req["uid"].clone();
    let obj = &req["object"];
    match path {
        "/label" => {
            let patch = if obj["metadata"]["labels"].is_object() {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
            };
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                   "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
        }
        "/deny" => {
            let forbidden = obj["data"].get("forbidden").is_some()
                || (req["operation"] == "DELETE" && req["name"] == "undeletable");
            if forbidden {
                json!({"uid": uid, "allowed": false,
                       "status": {"code": 403, "message": "the key \"forbidden\" is not allowed"}})
            } else {
                json!({"uid": uid, "allowed": true, "warnings": ["deny.r8s.test looked at it"]})
            }
        }
        _ => json!({"uid": uid, "allowed": true}),
    }
}

async fn webhook_server() -> Webhooks {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let record = seen.clone();
    let (port, ca_bundle) = https_server("127.0.0.1", move |head, body| {
        let record = record.clone();
        async move {
            let path = head.uri.path().to_string();
            let review: Value = serde_json::from_slice(&body).unwrap();
            record.lock().unwrap().push((path.clone(), review.clone()));
            if path == "/slow" {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            (
                200,
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "response": answer(&path, &review)}),
            )
        }
    })
    .await;
    Webhooks {
        port,
        ca_bundle,
        seen,
    }
}

fn hook(w: &Webhooks, name: &str, path: &str, rules: Value, extra: Value) -> Value {
    let mut h = json!({
        "name": name,
        "clientConfig": {"url": format!("https://127.0.0.1:{}{path}", w.port), "caBundle": w.ca_bundle},
        "rules": rules,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(h), Some(e)) = (h.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            h.insert(k.clone(), v.clone());
        }
    }
    h
}

fn cm(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap()
}

fn api_error(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn webhooks_mutate_refuse_and_fail_by_policy() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let w = webhook_server().await;
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // A mutating webhook adds a label to the ConfigMaps its object
    // selector picks.
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "label"},
        "webhooks": [hook(&w, "label.r8s.test", "/label",
            json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]),
            json!({"objectSelector": {"matchLabels": {"webhook": "on"}}, "reinvocationPolicy": "Never"}))]
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &mutating)
        .await
        .unwrap();
    let picked = cms
        .create(&pp, &cm("picked", json!({"webhook": "on"}), json!({})))
        .await
        .unwrap();
    assert_eq!(
        picked
            .metadata
            .labels
            .unwrap()
            .get("mutated")
            .map(String::as_str),
        Some("yes")
    );
    let left = cms
        .create(&pp, &cm("left", json!({}), json!({})))
        .await
        .unwrap();
    assert!(
        !left
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("mutated")
    );
    let reviews: Vec<(String, Value)> = w.seen.lock().unwrap().clone();
    let (_, review) = reviews
        .iter()
        .find(|(p, _)| p == "/label")
        .expect("the webhook was called");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["request"]["operation"], "CREATE");
    assert_eq!(
        review["request"]["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(review["request"]["namespace"], "default");
    assert_eq!(review["request"]["userInfo"]["username"], "system:admin");

    // A validating webhook refuses, for the objects its match condition
    // picks, on create, update and delete.
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "deny"},
        "webhooks": [hook(&w, "deny.r8s.test", "/deny",
            json!([{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]),
            json!({"matchConditions": [{"name": "guarded", "expression": "(object != null ? object : oldObject).metadata.name.startsWith('guarded-') || request.name == 'undeletable'"}]}))]
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &validating)
        .await
        .unwrap();
    let e = api_error(
        cms.create(&pp, &cm("guarded-a", json!({}), json!({"forbidden": "x"})))
            .await,
    );
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "admission webhook \"deny.r8s.test\" denied the request: the key \"forbidden\" is not allowed"
    );
    cms.create(&pp, &cm("other-a", json!({}), json!({"forbidden": "x"})))
        .await
        .expect("the match condition leaves other names alone");
    cms.create(&pp, &cm("guarded-b", json!({}), json!({"fine": "x"})))
        .await
        .unwrap();
    let e = api_error(
        cms.patch(
            "guarded-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"forbidden": "y"}})),
        )
        .await,
    );
    assert!(e.message.contains("denied the request"), "{}", e.message);
    cms.create(&pp, &cm("undeletable", json!({}), json!({})))
        .await
        .unwrap();
    let e = api_error(cms.delete("undeletable", &DeleteParams::default()).await);
    assert_eq!(e.code, 403);
    assert!(cms.get_opt("undeletable").await.unwrap().is_some());

    // A webhook that does not answer in time: refused under Fail...
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let slow = |policy: &str| -> ValidatingWebhookConfiguration {
        serde_json::from_value(json!({
            "metadata": {"name": "slow"},
            "webhooks": [hook(&w, "slow.r8s.test", "/slow",
                json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"]}]),
                json!({"timeoutSeconds": 1, "failurePolicy": policy}))]
        }))
        .unwrap()
    };
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    vwcs.create(&pp, &slow("Fail")).await.unwrap();
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s1"}})).unwrap();
    let started = std::time::Instant::now();
    let e = api_error(secrets.create(&pp, &secret).await);
    assert_eq!(e.code, 500);
    assert!(
        e.message.starts_with("Internal error occurred: failed calling webhook \"slow.r8s.test\": failed to call webhook: Post \"https://127.0.0.1:")
            && e.message.ends_with("/slow\": context deadline exceeded"),
        "{}",
        e.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the 1 s timeout was kept"
    );
    // ... and let through under Ignore.
    let mut ignore = slow("Ignore");
    ignore.metadata.resource_version = vwcs.get("slow").await.unwrap().metadata.resource_version;
    vwcs.replace("slow", &pp, &ignore).await.unwrap();
    secrets
        .create(&pp, &secret)
        .await
        .expect("failurePolicy Ignore admits");
}

#[tokio::test]
async fn validating_admission_policies_deny_and_read_params() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let pp = PostParams::default();
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": "max-replicas.r8s.test"},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "variables": [{"name": "limit", "expression": "int(params.data.max)"}],
            "validations": [{
                "expression": "object.spec.replicas <= variables.limit",
                "messageExpression": "'replicas must be no greater than ' + string(variables.limit)",
            }]
        }
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&pp, &policy)
        .await
        .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": "max-replicas-binding"},
        "spec": {
            "policyName": "max-replicas.r8s.test",
            "validationActions": ["Deny"],
            "paramRef": {"name": "limits", "namespace": "default", "parameterNotFoundAction": "Deny"},
        }
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deploy = |name: &str, replicas: i32| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap()
    };
    // Without its parameter the binding denies (parameterNotFoundAction).
    let e = api_error(deploys.create(&pp, &deploy("early", 1)).await);
    assert!(e.message.contains("no params found"), "{}", e.message);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&pp, &cm("limits", json!({}), json!({"max": "5"})))
        .await
        .unwrap();
    let e = api_error(deploys.create(&pp, &deploy("big", 6)).await);
    assert_eq!(e.code, 422);
    assert_eq!(e.reason, "Invalid");
    assert_eq!(
        e.message,
        "ValidatingAdmissionPolicy 'max-replicas.r8s.test' with binding 'max-replicas-binding' denied request: replicas must be no greater than 5"
    );
    deploys
        .create(&pp, &deploy("small", 5))
        .await
        .expect("5 replicas are allowed");
    let e = api_error(
        deploys
            .patch(
                "small",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 9}})),
            )
            .await,
    );
    assert_eq!(e.code, 422);
    // The parameter is read on each request.
    cms.patch(
        "limits",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"max": "10"}})),
    )
    .await
    .unwrap();
    deploys
        .patch(
            "small",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}})),
        )
        .await
        .expect("the raised limit applies");
}
