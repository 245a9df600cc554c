//! The ServiceAccounts controller and root-CA publisher against a real API
//! server: a new namespace gets `default` and `kube-root-ca.crt`, and both
//! come back when deleted or edited.

use apiserver::testing::wait_for;

use apiserver::testing::TestServer;
use controllers::{Context, Options, serviceaccount};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_service_account_and_the_root_ca() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ctx = Context::new(client.clone(), Options::default());
    tokio::spawn(serviceaccount::run(ctx.clone()));
    tokio::spawn(serviceaccount::run_root_ca_publisher(
        ctx,
        Some(PEM.to_string()),
    ));

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap(),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    let first = wait_for(20, "default SA", || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    // The bootstrap namespaces get one too.
    let ks: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    wait_for(20, "kube-system SA", || async {
        ks.get_opt("default").await.unwrap()
    })
    .await;

    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    let again = wait_for(20, "recreated SA", || async {
        sas.get_opt("default")
            .await
            .unwrap()
            .filter(|s| s.metadata.uid != first.metadata.uid)
    })
    .await;
    assert_eq!(again.metadata.name.as_deref(), Some("default"));

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    let ca = wait_for(20, "root CA ConfigMap", || async {
        cms.get_opt("kube-root-ca.crt").await.unwrap()
    })
    .await;
    assert_eq!(ca.data.unwrap()["ca.crt"], PEM);
    // Edited by someone: the CA is put back.
    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": "junk"}})),
    )
    .await
    .unwrap();
    wait_for(20, "restored CA", || async {
        let cm = cms.get("kube-root-ca.crt").await.unwrap();
        (cm.data.unwrap()["ca.crt"] == PEM).then_some(())
    })
    .await;
}
