//! ControllerRevisions for StatefulSets and DaemonSets: one per distinct
//! template, named `<owner>-<hash>`, numbered in order of use, so that
//! `kubectl rollout history/undo` work.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::ControllerError;
use crate::job::common;
use controller_runtime::Informer;

/// Label with a revision's hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The template as stored in a revision (`$patch: replace`, as upstream).
pub fn replace_patch<T: Serialize>(tpl: &T) -> Value {
    let mut v = serde_json::to_value(tpl).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    v
}

/// The revisions `owner` controls.
pub fn owned<K: Resource>(
    revs: &Informer<ControllerRevision>,
    owner: &K,
) -> Vec<ControllerRevision> {
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    revs.list_ns(&ns)
        .into_iter()
        .filter(|r| common::controlled_by(r.as_ref(), &uid))
        .map(|r| (*r).clone())
        .collect()
}

/// Makes sure the revision holding `data` exists and is the newest;
/// returns its name.
pub async fn ensure<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    revs: &Informer<ControllerRevision>,
    owner: &K,
    data: Value,
) -> Result<String, ControllerError> {
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let existing = owned(revs, owner);
    let max = existing.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut collisions = 0;
    loop {
        let hash = common::hash_value(&data, (collisions > 0).then_some(collisions));
        let name = format!("{}-{hash}", owner.meta().name.clone().unwrap_or_default());
        let found = match existing.iter().find(|r| r.name_any() == name) {
            Some(r) => Some(r.clone()),
            None => api.get_opt(&name).await?,
        };
        match found {
            Some(r) if r.data.as_ref().map(|d| &d.0) == Some(&data) => {
                if r.revision < max {
                    // Rolled back to an older template: it becomes newest.
                    let p = json!({"revision": max + 1});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                        .await?;
                }
                return Ok(name);
            }
            Some(_) => collisions += 1,
            None => {
                let mut labels = data
                    .pointer("/spec/template/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                let _: &mut std::collections::BTreeMap<String, String> = &mut labels;
                labels.insert(HASH_LABEL.into(), hash.clone());
                let cr = ControllerRevision {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(labels),
                        owner_references: Some(vec![common::controller_ref(owner)]),
                        ..Default::default()
                    },
                    data: Some(RawExtension(data.clone())),
                    revision: max + 1,
                };
                match api.create(&PostParams::default(), &cr).await {
                    Ok(_) => return Ok(name),
                    // Someone (our stale cache) made it: look again.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if collisions > 100 {
            return Err(ControllerError::Invalid(
                "too many revision hash collisions".into(),
            ));
        }
    }
}

/// Deletes the oldest revisions not in `live` beyond `limit`.
pub async fn prune<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    revs: &Informer<ControllerRevision>,
    owner: &K,
    live: &BTreeSet<String>,
    limit: usize,
) {
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let mut old: Vec<ControllerRevision> = owned(revs, owner)
        .into_iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    if old.len() <= limit {
        return;
    }
    old.sort_by_key(|r| r.revision);
    let extra = old.len() - limit;
    for r in old.into_iter().take(extra) {
        if let Err(e) = api.delete(&r.name_any(), &DeleteParams::default()).await {
            tracing::debug!(revision = %r.name_any(), error = %e, "pruning revision");
        }
    }
}
