//! The aggregation layer through kube-rs: an API server written here (its
//! own TLS CA), registered as an APIService behind a Service, reached
//! through r8s, listed in discovery, its availability tracked.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use apiserver::testing::{TestServer, sample_api_server, wait_for};

const GROUP: &str = "sample.r8s.test";

fn available(s: &APIService) -> Option<(String, String)> {
    let c = s
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Available")?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn an_aggregated_api_server_is_proxied_and_discovered() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let pp = PostParams::default();
    let apiservices: Api<APIService> = Api::all(client.clone());

    // The built-in group versions are local APIServices.
    let apps = wait_for(10, "v1.apps available", || {
        let apiservices = apiservices.clone();
        async move {
            let s = apiservices.get("v1.apps").await.ok()?;
            (available(&s)? == ("True".into(), "Local".into())).then_some(s)
        }
    })
    .await;
    assert_eq!(apps.spec.unwrap().group.as_deref(), Some("apps"));

    // A backend behind a Service with one ready endpoint.
    let (port, ca_bundle) = sample_api_server().await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "sample-api"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&pp, &svc)
        .await
        .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "sample-api-1", "labels": {"kubernetes.io/service-name": "sample-api"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .create(&pp, &slice)
        .await
        .unwrap();
    let reg: APIService = serde_json::from_value(json!({
        "metadata": {"name": "v1beta1.sample.r8s.test"},
        "spec": {"group": GROUP, "version": "v1beta1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "caBundle": ca_bundle, "service": {"namespace": "default", "name": "sample-api", "port": 443}}
    }))
    .unwrap();
    apiservices.create(&pp, &reg).await.unwrap();
    wait_for(10, "the APIService available", || {
        let apiservices = apiservices.clone();
        async move {
            let s = apiservices.get("v1beta1.sample.r8s.test").await.ok()?;
            (available(&s)? == ("True".into(), "Passed".into())).then_some(())
        }
    })
    .await;

    // Requests reach the backend, with the caller named.
    let req = http::Request::get("/apis/sample.r8s.test/v1beta1/namespaces/default/flunders")
        .body(Vec::new())
        .unwrap();
    let list: Value = client.request(req).await.unwrap();
    assert_eq!(list["items"][0]["spec"]["user"], "system:admin");
    // The group is discovered like any other.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == GROUP)
        .expect("the aggregated group is discovered");
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.plural)
        .collect();
    assert_eq!(kinds, ["flunders"]);
    let groups: Value = client
        .request(http::Request::get("/apis").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == GROUP),
        "{groups}"
    );

    // A Service that is not there: not available, with upstream's reason.
    let missing: APIService = serde_json::from_value(json!({
        "metadata": {"name": "v1.missing.r8s.test"},
        "spec": {"group": "missing.r8s.test", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "insecureSkipTLSVerify": true, "service": {"namespace": "default", "name": "nothing", "port": 443}}
    }))
    .unwrap();
    apiservices.create(&pp, &missing).await.unwrap();
    let s = wait_for(10, "the missing APIService judged", || {
        let apiservices = apiservices.clone();
        async move {
            let s = apiservices.get("v1.missing.r8s.test").await.ok()?;
            available(&s).map(|_| s)
        }
    })
    .await;
    let cond = s.status.unwrap().conditions.unwrap().remove(0);
    assert_eq!(cond.status, "False");
    assert_eq!(cond.reason.as_deref(), Some("ServiceNotFound"));
    assert_eq!(
        cond.message.as_deref(),
        Some("service/nothing in \"default\" is not present")
    );
}
