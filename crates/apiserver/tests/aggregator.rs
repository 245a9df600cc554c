//! The aggregation layer through kube-rs: an API server written here (its
//! own TLS CA), registered as an APIService behind a Service, reached
//! through r8s, listed in discovery, its availability tracked.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use apiserver::testing::{TestServer, wait_for};

const GROUP: &str = "sample.r8s.test";

/// Serves `sample.r8s.test/v1beta1` with one namespaced kind, Flunder.
async fn sample_server() -> (u16, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["sample-api.default.svc".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(cert.pem());
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let user = req
                            .headers()
                            .get("X-Remote-User")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = match req.uri().path() {
                            "/apis/sample.r8s.test/v1beta1" => json!({
                                "kind": "APIResourceList", "apiVersion": "v1",
                                "groupVersion": "sample.r8s.test/v1beta1",
                                "resources": [{"name": "flunders", "singularName": "flunder", "namespaced": true,
                                    "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]}]
                            }),
                            "/apis/sample.r8s.test/v1beta1/namespaces/default/flunders" => json!({
                                "kind": "FlunderList", "apiVersion": "sample.r8s.test/v1beta1", "metadata": {},
                                "items": [{"kind": "Flunder", "apiVersion": "sample.r8s.test/v1beta1",
                                    "metadata": {"name": "seen-by", "namespace": "default"}, "spec": {"user": user}}]
                            }),
                            _ => {
                                let mut r =
                                    http::Response::new(Full::new(Bytes::from_static(b"{}")));
                                *r.status_mut() = http::StatusCode::NOT_FOUND;
                                return Ok::<_, std::convert::Infallible>(r);
                            }
                        };
                        Ok(http::Response::new(Full::new(Bytes::from(
                            body.to_string(),
                        ))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca_bundle)
}

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
    let (port, ca_bundle) = sample_server().await;
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
