//! The garbage collector: ownerReferences as upstream honours them.
//!
//! - An object all of whose owners are gone is deleted (background
//!   cascading deletion).
//! - An owner deleted with `propagationPolicy=Foreground` carries the
//!   `foregroundDeletion` finalizer: its dependents are deleted first, then
//!   the finalizer is removed.
//! - An owner deleted with `propagationPolicy=Orphan` carries the `orphan`
//!   finalizer: its dependents lose their ownerReference to it, then the
//!   finalizer is removed.
//!
//! It rescans metadata of every resource on an interval. Upstream keeps a
//! dependency graph fed by metadata informers; a rescan is simpler and is
//! fine at the object counts of one machine. Before deleting an apparent
//! orphan it re-reads the owner, so a scan that raced with a create never
//! deletes a live object's dependents.

use std::collections::HashMap;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::Options;
use crate::resources::{self, Res};

#[derive(Clone)]
struct Node {
    res: usize,
    namespace: Option<String>,
    name: String,
    deleting: bool,
    finalizers: Vec<String>,
    owners: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
}

/// Runs the collector until dropped.
pub async fn run(client: kube::Client, opts: Options) {
    let mut res: Vec<Res> = Vec::new();
    let mut tick = tokio::time::interval(opts.gc_interval);
    let mut passes = 0u64;
    loop {
        tick.tick().await;
        // Rediscover now and then so new resource types are covered.
        if res.is_empty() || passes.is_multiple_of(30) {
            match resources::discover(&client).await {
                Ok(r) => res = r,
                Err(e) => {
                    tracing::debug!(error = %e, "gc discovery failed");
                    continue;
                }
            }
        }
        passes += 1;
        if let Err(e) = pass(&client, &res).await {
            tracing::debug!(error = %e, "gc pass failed");
        }
    }
}

async fn pass(client: &kube::Client, res: &[Res]) -> Result<(), kube::Error> {
    let mut nodes: HashMap<String, Node> = HashMap::new();
    for (i, r) in res.iter().enumerate() {
        let api = r.api(client, None);
        // Page through metadata so a large cluster never costs one huge
        // response.
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(500);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let list = match api.list_metadata(&lp).await {
                Ok(l) => l,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => break,
                Err(e) => return Err(e),
            };
            for o in list.items {
                let (Some(uid), Some(name)) = (o.metadata.uid.clone(), o.metadata.name.clone())
                else {
                    continue;
                };
                // Objects with no owners, no finalizers and no deletion in
                // progress matter only as owners: keep just their uid.
                let owners = o.metadata.owner_references.clone().unwrap_or_default();
                let finalizers = o.metadata.finalizers.clone().unwrap_or_default();
                nodes.insert(
                    uid,
                    Node {
                        res: i,
                        namespace: o.metadata.namespace.clone(),
                        name,
                        deleting: o.metadata.deletion_timestamp.is_some(),
                        finalizers,
                        owners,
                    },
                );
            }
            match list.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
    }
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (uid, n) in &nodes {
        for o in &n.owners {
            dependents
                .entry(o.uid.as_str())
                .or_default()
                .push(uid.as_str());
        }
    }
    for (uid, n) in &nodes {
        if !n.deleting {
            continue;
        }
        let deps = dependents.get(uid.as_str()).cloned().unwrap_or_default();
        if n.finalizers.iter().any(|f| f == "orphan") {
            for d in &deps {
                if let Some(dn) = nodes.get(*d) {
                    drop_owner_ref(client, &res[dn.res], dn, uid).await?;
                }
            }
            remove_finalizer(client, &res[n.res], n, "orphan").await?;
        } else if n.finalizers.iter().any(|f| f == "foregroundDeletion") {
            let mut waiting = false;
            for d in &deps {
                if let Some(dn) = nodes.get(*d) {
                    waiting = true;
                    if !dn.deleting {
                        delete(client, &res[dn.res], dn, DeleteParams::foreground()).await?;
                    }
                }
            }
            if !waiting {
                remove_finalizer(client, &res[n.res], n, "foregroundDeletion").await?;
            }
        }
    }
    // Background: dependents whose owners are all gone.
    for n in nodes.values() {
        if n.owners.is_empty() || n.deleting {
            continue;
        }
        // An owner that still exists (even one being deleted in the
        // foreground, which deletes its dependents itself) keeps them.
        if n.owners.iter().any(|o| nodes.contains_key(o.uid.as_str())) {
            continue;
        }
        if owners_really_gone(client, res, n).await? {
            delete(client, &res[n.res], n, DeleteParams::background()).await?;
        }
    }
    Ok(())
}

/// Re-reads each owner by name: gone, or replaced by an object with another
/// uid, means gone.
async fn owners_really_gone(
    client: &kube::Client,
    res: &[Res],
    n: &Node,
) -> Result<bool, kube::Error> {
    for o in &n.owners {
        let group = o.api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        let Some(r) = res
            .iter()
            .find(|r| r.ar.group == group && r.ar.kind == o.kind)
        else {
            // Unknown owner kind: never collect on a guess.
            return Ok(false);
        };
        let api = r.api(client, n.namespace.as_deref());
        match api.get_metadata_opt(&o.name).await? {
            Some(live) if live.metadata.uid.as_deref() == Some(o.uid.as_str()) => return Ok(false),
            _ => {}
        }
    }
    Ok(true)
}

fn api_for(client: &kube::Client, r: &Res, n: &Node) -> Api<DynamicObject> {
    r.api(client, n.namespace.as_deref())
}

async fn delete(
    client: &kube::Client,
    r: &Res,
    n: &Node,
    dp: DeleteParams,
) -> Result<(), kube::Error> {
    match api_for(client, r, n).delete(&n.name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer(
    client: &kube::Client,
    r: &Res,
    n: &Node,
    finalizer: &str,
) -> Result<(), kube::Error> {
    let rest: Vec<&String> = n.finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {"finalizers": rest}});
    match api_for(client, r, n)
        .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn drop_owner_ref(
    client: &kube::Client,
    r: &Res,
    n: &Node,
    owner_uid: &str,
) -> Result<(), kube::Error> {
    let rest: Vec<_> = n.owners.iter().filter(|o| o.uid != owner_uid).collect();
    let patch = json!({"metadata": {"ownerReferences": rest}});
    match api_for(client, r, n)
        .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
