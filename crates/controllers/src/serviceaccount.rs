//! ServiceAccounts controller: every active namespace has a ServiceAccount
//! named `default` (recreated when deleted). The root-CA publisher puts the
//! cluster CA in a ConfigMap `kube-root-ca.crt` in every namespace, so pods
//! can verify the API server (upstream's root-ca-cert-publisher).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::endpoints::wait_ready;
use crate::{Context, ControllerError};
use controller_runtime::Queue;

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SA: &str = "default";
/// The ConfigMap holding the cluster CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The key of the CA bundle in [`ROOT_CA_CONFIGMAP`].
pub const ROOT_CA_KEY: &str = "ca.crt";
/// Upstream's description annotation on the CA ConfigMap.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Whether a namespace accepts new objects (not being deleted).
fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// Whether an error only says the object is there already or the namespace
/// is going away (nothing to retry).
fn benign(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 409
                || (s.code == 403 && s.message.contains("being terminated"))
                || s.code == 404
        }
        _ => false,
    }
}

/// Runs the ServiceAccounts controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let namespaces = ctx.informers.get::<Namespace>();
    let sas = ctx.informers.get::<ServiceAccount>();
    wait_ready(&namespaces).await;
    wait_ready(&sas).await;
    let q = Queue::named("serviceaccount");
    q.watch(&namespaces, |n: &Namespace| {
        n.metadata.name.clone().into_iter().collect()
    });
    q.watch(&sas, |sa: &ServiceAccount| {
        if sa.metadata.name.as_deref() == Some(DEFAULT_SA) {
            sa.metadata.namespace.clone().into_iter().collect()
        } else {
            Vec::new()
        }
    });
    let client = ctx.client.clone();
    q.run(ctx.opts.workers, move |ns: String| {
        let (namespaces, sas, client) = (namespaces.clone(), sas.clone(), client.clone());
        async move {
            match namespaces.get(None, &ns) {
                Some(n) if active(&n) => {}
                _ => return Ok::<_, ControllerError>(None),
            }
            if sas.get(Some(&ns), DEFAULT_SA).is_some() {
                return Ok(None);
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(DEFAULT_SA.into()),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match Api::<ServiceAccount>::namespaced(client, &ns)
                .create(&PostParams::default(), &sa)
                .await
            {
                Ok(_) => {
                    tracing::debug!(namespace = %ns, "created default ServiceAccount");
                    Ok(None)
                }
                Err(e) if benign(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await;
}

/// The `kube-root-ca.crt` ConfigMap for a namespace.
pub fn root_ca_configmap(ns: &str, ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIGMAP.into()),
            namespace: Some(ns.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CA_KEY.to_string(),
            ca_pem.to_string(),
        )])),
        ..Default::default()
    }
}

/// Runs the root-CA publisher until the task is dropped: `kube-root-ca.crt`
/// with `ca_pem` in every active namespace, restored when deleted or edited.
/// With `None` it does nothing (no CA known).
pub async fn run_root_ca_publisher(ctx: Arc<Context>, ca_pem: Option<String>) {
    let Some(ca) = ca_pem else {
        return std::future::pending().await;
    };
    let ca = Arc::new(ca);
    let namespaces = ctx.informers.get::<Namespace>();
    let cms = ctx.informers.get::<ConfigMap>();
    wait_ready(&namespaces).await;
    wait_ready(&cms).await;
    let q = Queue::named("root_ca_cert_publisher");
    q.watch(&namespaces, |n: &Namespace| {
        n.metadata.name.clone().into_iter().collect()
    });
    q.watch(&cms, |cm: &ConfigMap| {
        if cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
            cm.metadata.namespace.clone().into_iter().collect()
        } else {
            Vec::new()
        }
    });
    let client = ctx.client.clone();
    q.run(ctx.opts.workers, move |ns: String| {
        let (namespaces, cms, client, ca) =
            (namespaces.clone(), cms.clone(), client.clone(), ca.clone());
        async move {
            match namespaces.get(None, &ns) {
                Some(n) if active(&n) => {}
                _ => return Ok::<_, ControllerError>(None),
            }
            let api = Api::<ConfigMap>::namespaced(client, &ns);
            let want = root_ca_configmap(&ns, &ca);
            let res = match cms.get(Some(&ns), ROOT_CA_CONFIGMAP) {
                None => api.create(&PostParams::default(), &want).await.map(|_| ()),
                Some(cur) if cur.data == want.data => return Ok(None),
                Some(cur) => {
                    // Keep the user's other fields; restore the CA bundle.
                    let mut cm = (*cur).clone();
                    cm.data = want.data;
                    api.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                        .await
                        .map(|_| ())
                }
            };
            match res {
                Ok(()) => Ok(None),
                // A conflict means the cache is behind: look again shortly.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some(Duration::from_millis(200))),
                Err(e) if benign(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await;
}
