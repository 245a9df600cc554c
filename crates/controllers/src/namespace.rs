//! Namespace lifecycle: deleting a namespace deletes everything in it, then
//! removes the `kubernetes` finalizer so the namespace itself goes away.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;

use crate::Options;
use crate::resources::{self, Res};

/// Watches namespaces and finalizes the terminating ones.
pub async fn run(client: kube::Client, opts: Options) {
    let api: Api<Namespace> = Api::all(client.clone());
    loop {
        let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut tick = tokio::time::interval(opts.namespace_resync);
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => { tracing::debug!(error = %e, "namespace watch error"); }
                    None => break,
                },
                _ = tick.tick() => {
                    if let Err(e) = sweep(&client, &api).await {
                        tracing::warn!(error = %e, "namespace controller pass failed");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn sweep(client: &kube::Client, api: &Api<Namespace>) -> Result<(), kube::Error> {
    let terminating: Vec<Namespace> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_some())
        .collect();
    if terminating.is_empty() {
        return Ok(());
    }
    let res = resources::discover(client).await?;
    for ns in terminating {
        finalize(client, api, &res, ns).await?;
    }
    Ok(())
}

/// Deletes a namespace's content; once none is left, drops the
/// `kubernetes` finalizer through the finalize subresource.
async fn finalize(
    client: &kube::Client,
    api: &Api<Namespace>,
    res: &[Res],
    ns: Namespace,
) -> Result<(), kube::Error> {
    let Some(name) = ns.metadata.name.clone() else {
        return Ok(());
    };
    let mut remaining = 0usize;
    for r in res.iter().filter(|r| r.namespaced()) {
        let rapi = r.api(client, Some(&name));
        let list = match rapi.list_metadata(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
            Err(e) => return Err(e),
        };
        for obj in list.items {
            remaining += 1;
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(n) = obj.metadata.name.as_deref() else {
                continue;
            };
            match rapi.delete(n, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "namespace still has content");
        return Ok(());
    }
    let mut ns = ns;
    if let Some(spec) = ns.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != "kubernetes")
                .collect(),
        );
    }
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
