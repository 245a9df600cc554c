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
//! Like upstream's GraphBuilder it keeps a graph of every object's uid,
//! owners and dependents, fed by one metadata-only watch per resource, and
//! a work queue of uids to look at when something changes. Before deleting
//! an apparent orphan it re-reads the owners, so a graph that lags a create
//! never deletes a live object's dependents.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Options;
use crate::resources::{self, Res};
use controller_runtime::Queue;

/// One object in the graph.
#[derive(Clone)]
struct Node {
    res: usize,
    namespace: Option<String>,
    name: String,
    deleting: bool,
    finalizers: Vec<String>,
    owners: Vec<OwnerReference>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Inserts or replaces a node; returns uids to look at.
    fn upsert(&mut self, uid: String, node: Node) -> Vec<String> {
        let mut touch = vec![uid.clone()];
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if !node.owners.iter().any(|n| n.uid == o.uid)
                    && let Some(d) = self.dependents.get_mut(&o.uid)
                {
                    d.remove(&uid);
                    // A foreground owner may have been waiting for this one.
                    touch.push(o.uid.clone());
                }
            }
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.nodes.insert(uid, node);
        touch
    }

    /// Removes a node; returns uids to look at (its owners and dependents).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touch = Vec::new();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                touch.push(o.uid.clone());
            }
        }
        if let Some(deps) = self.dependents.get(uid) {
            touch.extend(deps.iter().cloned());
        }
        touch
    }
}

type Shared = Arc<Mutex<Graph>>;

fn lock(g: &Shared) -> std::sync::MutexGuard<'_, Graph> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the collector until dropped.
pub async fn run(client: kube::Client, opts: Options) {
    let graph: Shared = Arc::default();
    let queue = Queue::named("garbage_collector_attempt_to_delete");
    let res: Arc<Mutex<Vec<Res>>> = Arc::default();
    let workers = {
        let (client, graph, queue, res) =
            (client.clone(), graph.clone(), queue.clone(), res.clone());
        tokio::spawn(async move {
            let q = queue.clone();
            q.run(opts.workers.max(1), move |uid| {
                let (client, graph, res) = (client.clone(), graph.clone(), res.clone());
                async move {
                    let res = res.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    process(&client, &graph, &res, &uid).await.map(|_| None)
                }
            })
            .await;
        })
    };
    // Watch every deletable resource; rediscover now and then so new
    // resource types are covered.
    let mut watched: HashSet<String> = HashSet::new();
    loop {
        match resources::discover(&client).await {
            Ok(found) => {
                let mut all = res.lock().unwrap_or_else(|e| e.into_inner());
                for r in found {
                    let id = format!("{}/{}", r.ar.api_version, r.ar.plural);
                    if watched.insert(id) {
                        all.push(r.clone());
                        tokio::spawn(watch(
                            client.clone(),
                            r,
                            all.len() - 1,
                            graph.clone(),
                            queue.clone(),
                        ));
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "gc discovery failed"),
        }
        tokio::time::sleep(opts.gc_interval.max(Duration::from_secs(1)) * 30).await;
        if workers.is_finished() {
            return;
        }
    }
}

/// Feeds one resource's metadata watch into the graph.
async fn watch(client: kube::Client, r: Res, index: usize, graph: Shared, queue: Queue) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &r.ar);
    let mut stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .boxed();
    // uids seen during a relist, to drop the ones that vanished meanwhile.
    let mut relist: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(resource = %r.ar.plural, error = %e, "gc watch error");
                continue;
            }
        };
        let touch = match ev {
            watcher::Event::Init => {
                relist = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                let Some((uid, node)) = node_of(index, &o) else {
                    continue;
                };
                if let Some(seen) = relist.as_mut() {
                    seen.insert(uid.clone());
                }
                // Plain objects with no owners and nothing to finalize
                // matter only as owners; they still go in the graph so
                // dependents can find them.
                lock(&graph).upsert(uid, node)
            }
            watcher::Event::Delete(o) => match o.metadata.uid.as_deref() {
                Some(uid) => lock(&graph).remove(uid),
                None => Vec::new(),
            },
            watcher::Event::InitDone => {
                let Some(seen) = relist.take() else { continue };
                let mut g = lock(&graph);
                let gone: Vec<String> = g
                    .nodes
                    .iter()
                    .filter(|(uid, n)| n.res == index && !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                let mut touch = Vec::new();
                for uid in gone {
                    touch.extend(g.remove(&uid));
                }
                // After a (re)list, look at everything of this resource that
                // has owners or is being deleted.
                touch.extend(
                    g.nodes
                        .iter()
                        .filter(|(_, n)| n.res == index && (!n.owners.is_empty() || n.deleting))
                        .map(|(uid, _)| uid.clone()),
                );
                touch
            }
        };
        for uid in touch {
            queue.add(uid);
        }
    }
}

fn node_of(index: usize, o: &PartialObjectMeta<DynamicObject>) -> Option<(String, Node)> {
    let m = &o.metadata;
    Some((
        m.uid.clone()?,
        Node {
            res: index,
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
            owners: m.owner_references.clone().unwrap_or_default(),
        },
    ))
}

/// Looks at one object: finishes its orphan/foreground deletion, or
/// collects it when all its owners are gone.
async fn process(
    client: &kube::Client,
    graph: &Shared,
    res: &[Res],
    uid: &str,
) -> Result<(), kube::Error> {
    let (node, deps) = {
        let g = lock(graph);
        let Some(n) = g.nodes.get(uid).cloned() else {
            return Ok(());
        };
        let deps: Vec<Node> = g
            .dependents
            .get(uid)
            .map(|d| d.iter().filter_map(|u| g.nodes.get(u).cloned()).collect())
            .unwrap_or_default();
        (n, deps)
    };
    let Some(r) = res.get(node.res) else {
        return Ok(());
    };
    if node.deleting {
        if node.finalizers.iter().any(|f| f == "orphan") {
            for d in &deps {
                if let Some(dr) = res.get(d.res) {
                    drop_owner_ref(client, dr, d, uid).await?;
                }
            }
            remove_finalizer(client, r, &node, "orphan").await?;
        } else if node.finalizers.iter().any(|f| f == "foregroundDeletion") {
            for d in &deps {
                if !d.deleting
                    && let Some(dr) = res.get(d.res)
                {
                    delete(client, dr, d, DeleteParams::foreground()).await?;
                }
            }
            if deps.is_empty() {
                remove_finalizer(client, r, &node, "foregroundDeletion").await?;
            }
        }
        return Ok(());
    }
    if node.owners.is_empty() {
        return Ok(());
    }
    // An owner that still exists (even one being deleted in the
    // foreground, which deletes its dependents itself) keeps it.
    if node
        .owners
        .iter()
        .any(|o| lock(graph).nodes.contains_key(o.uid.as_str()))
    {
        return Ok(());
    }
    // The graph's view of this object's owners can lag its own watch (an
    // owner deleted with `orphan` first drops its reference here, then
    // goes): judge by the object as it is now, as upstream's
    // attemptToDeleteItem re-reads it.
    let Some(live) = api_for(client, r, &node)
        .get_metadata_opt(&node.name)
        .await?
    else {
        return Ok(());
    };
    if live.metadata.uid.as_deref() != Some(uid) {
        return Ok(());
    }
    let mut node = node;
    node.owners = live.metadata.owner_references.clone().unwrap_or_default();
    if node.owners.is_empty() {
        return Ok(());
    }
    if owners_really_gone(client, res, &node).await? {
        // Only the object as read: a change since (an ownerReference
        // dropped or added) makes the delete a 409 and brings it back.
        let mut dp = DeleteParams::background();
        dp.preconditions = Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: live.metadata.resource_version.clone(),
        });
        delete(client, r, &node, dp).await?;
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

/// 404 (already gone) and 409 (changed meanwhile; the watch brings it back
/// to the queue) are not failures.
fn benign(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        other => other,
    }
}

async fn delete(
    client: &kube::Client,
    r: &Res,
    n: &Node,
    dp: DeleteParams,
) -> Result<(), kube::Error> {
    benign(api_for(client, r, n).delete(&n.name, &dp).await.map(|_| ()))
}

async fn remove_finalizer(
    client: &kube::Client,
    r: &Res,
    n: &Node,
    finalizer: &str,
) -> Result<(), kube::Error> {
    let rest: Vec<&String> = n.finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {"finalizers": rest}});
    benign(
        api_for(client, r, n)
            .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    )
}

async fn drop_owner_ref(
    client: &kube::Client,
    r: &Res,
    n: &Node,
    owner_uid: &str,
) -> Result<(), kube::Error> {
    let rest: Vec<_> = n.owners.iter().filter(|o| o.uid != owner_uid).collect();
    let patch = json!({"metadata": {"ownerReferences": rest}});
    benign(
        api_for(client, r, n)
            .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owners: &[&str]) -> Node {
        Node {
            res: 0,
            namespace: Some("ns".into()),
            name: "n".into(),
            deleting: false,
            finalizers: vec![],
            owners: owners
                .iter()
                .map(|u| OwnerReference {
                    uid: u.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn the_graph_tracks_dependents_and_reports_whom_a_change_affects() {
        let mut g = Graph::default();
        g.upsert("owner".into(), node(&[]));
        g.upsert("a".into(), node(&["owner"]));
        g.upsert("b".into(), node(&["owner"]));
        assert_eq!(g.dependents["owner"].len(), 2);
        // Dropping an owner reference touches the former owner (a
        // foreground deletion may be waiting on it).
        let touched = g.upsert("b".into(), node(&[]));
        assert!(touched.contains(&"owner".to_string()));
        assert_eq!(g.dependents["owner"].len(), 1);
        // Deleting the owner touches its remaining dependent.
        let touched = g.remove("owner");
        assert_eq!(touched, vec!["a".to_string()]);
        // Deleting the dependent touches the owner and forgets the edge.
        let touched = g.remove("a");
        assert_eq!(touched, vec!["owner".to_string()]);
        assert!(g.dependents.is_empty());
    }
}
