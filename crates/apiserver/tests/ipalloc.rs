//! Cluster IPs are allocated through IPAddress objects: each Service's
//! address has one naming it as parent, a taken address is refused with
//! upstream's message, a deleted Service's address is free again, and a
//! range given by an extra ServiceCIDR is used.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn server() -> (tempfile::TempDir, apiserver::Running, kube::Client) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = apiserver::Config {
        data_dir: dir.path().to_path_buf(),
        bind_address: "127.0.0.1".parse().unwrap(),
        https_port: 0,
        tls_sans: vec![],
        service_cidr: "10.96.0.0/24".parse().unwrap(),
        advertise_address: None,
        authorization_mode: Default::default(),
        encryption_provider_config: None,
        secrets_encryption: true,
        audit: None,
        metric_resolution: std::time::Duration::from_secs(15),
    };
    let store = Arc::new(store::memory::MemoryStore::new());
    let running = apiserver::start(cfg, store).await.unwrap();
    let kc = kube::config::Kubeconfig::read_from(&running.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    (dir, running, kube::Client::try_from(config).unwrap())
}

fn svc(name: &str, ip: Option<&str>) -> Service {
    let mut spec = json!({"ports": [{"port": 80}]});
    if let Some(ip) = ip {
        spec["clusterIP"] = json!(ip);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

#[tokio::test]
async fn cluster_ips_are_ipaddress_objects() {
    let (_dir, running, client) = server().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let addrs: Api<IPAddress> = Api::all(client.clone());
    // The bootstrap Services hold the range's first and tenth addresses.
    let k = addrs.get("10.96.0.1").await.unwrap();
    assert_eq!(k.spec.unwrap().parent_ref.name, "kubernetes");
    let dns = addrs.get("10.96.0.10").await.unwrap();
    assert_eq!(
        dns.spec.unwrap().parent_ref.namespace.as_deref(),
        Some("kube-system")
    );

    let pp = PostParams::default();
    let a = svcs.create(&pp, &svc("a", None)).await.unwrap();
    let ip = a.spec.unwrap().cluster_ip.unwrap();
    let held = addrs.get(&ip).await.unwrap().spec.unwrap().parent_ref;
    assert_eq!(
        (held.resource.as_str(), held.name.as_str()),
        ("services", "a")
    );

    svcs.create(&pp, &svc("b", Some("10.96.0.50")))
        .await
        .unwrap();
    let err = svcs
        .create(&pp, &svc("c", Some("10.96.0.50")))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message.contains("provided IP is already allocated"),
                "{}",
                e.message
            );
        }
        other => panic!("{other}"),
    }
    // Out of every range: named with the ranges.
    let err = svcs
        .create(&pp, &svc("d", Some("10.97.0.5")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("The range of valid IPs is 10.96.0.0/24"),
        "{err}"
    );

    svcs.delete("b", &DeleteParams::default()).await.unwrap();
    assert!(
        addrs.get_opt("10.96.0.50").await.unwrap().is_none(),
        "released on delete"
    );
    let c = svcs
        .create(&pp, &svc("c", Some("10.96.0.50")))
        .await
        .unwrap();
    assert_eq!(c.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.50"));

    // A second ServiceCIDR extends the range.
    let extra: ServiceCIDR = serde_json::from_value(json!({
        "metadata": {"name": "extra"}, "spec": {"cidrs": ["10.97.0.0/28"]}
    }))
    .unwrap();
    Api::<ServiceCIDR>::all(client.clone())
        .create(&pp, &extra)
        .await
        .unwrap();
    let d = svcs
        .create(&pp, &svc("d", Some("10.97.0.5")))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().cluster_ip.as_deref(), Some("10.97.0.5"));
    running.task.abort();
}

#[tokio::test]
async fn local_load_balancers_get_a_health_check_node_port() {
    let (_dir, running, client) = server().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let lb: Service = serde_json::from_value(json!({
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]},
    }))
    .unwrap();
    let made = svcs.create(&pp, &lb).await.unwrap();
    let spec = made.spec.unwrap();
    let hc = spec
        .health_check_node_port
        .expect("a health check node port");
    let np = spec.ports.unwrap()[0].node_port.unwrap();
    assert!(
        (30000..=32767).contains(&hc) && hc != np,
        "hc {hc}, node port {np}"
    );
    // Taken ports are refused for another Service.
    let clash: Service = serde_json::from_value(json!({
        "metadata": {"name": "clash"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": hc}]},
    }))
    .unwrap();
    let err = svcs.create(&pp, &clash).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("provided port is already allocated"),
        "{err}"
    );
    // Back to Cluster: the port goes.
    let patch = json!({"spec": {"externalTrafficPolicy": "Cluster"}});
    let after = svcs
        .patch(
            "lb",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().health_check_node_port, None);
    running.task.abort();
}
