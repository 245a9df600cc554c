//! Keeps the served custom kinds in step with the stored
//! CustomResourceDefinitions, as upstream's naming, establishing and
//! finalizer controllers do together: each definition's names are
//! accepted unless another definition in its group holds them (the older
//! one wins), an accepted definition is Established and served, and a
//! deleted definition has its objects deleted before it goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::catalogue;
use api::crd::{CLEANUP_FINALIZER, Definition, Names};
use futures::StreamExt;
use serde_json::{Value, json};
use store::{KeyValue, Revision, SharedStore, StoreError};

use super::Registry;

/// Runs the controller; `synced` reports the store revision each pass has
/// caught up with, `kick` starts a pass at once.
pub struct Controller {
    store: SharedStore,
    registry: Arc<Registry>,
    kick: tokio::sync::Notify,
    synced: tokio::sync::watch::Sender<Revision>,
}

fn crd_prefix() -> String {
    catalogue::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .map(|i| i.storage_prefix())
        .unwrap_or_else(|| "/registry/apiextensions.k8s.io/customresourcedefinitions/".into())
}

impl Controller {
    /// A controller over `store` publishing into `registry`.
    pub fn new(store: SharedStore, registry: Arc<Registry>) -> Arc<Controller> {
        Arc::new(Controller {
            store,
            registry,
            kick: tokio::sync::Notify::new(),
            synced: tokio::sync::watch::channel(0).0,
        })
    }

    /// One pass now, then one after every change to a definition.
    pub async fn run(self: Arc<Self>) {
        let prefix = crd_prefix();
        loop {
            let rev = match self.sync(&prefix).await {
                Ok(rev) => rev,
                Err(e) => {
                    tracing::warn!(error = %e, "custom resource definitions: sync failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.synced.send_replace(rev);
            let mut watch = match self.store.watch(&prefix, rev).await {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::debug!(error = %e, "custom resource definitions: watch failed");
                    None
                }
            };
            // A periodic pass finishes deletions that waited on finalizers.
            let next = async {
                match watch.as_mut() {
                    Some(w) => {
                        let _ = w.next().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = next => {}
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Waits until a pass has seen the store at `revision` (a definition
    /// just written), at most `timeout`, so that a client may use its kind
    /// as soon as the write returns.
    pub async fn wait_synced(&self, revision: Revision, timeout: Duration) {
        let mut rx = self.synced.subscribe();
        self.kick.notify_one();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
    }

    async fn sync(&self, prefix: &str) -> Result<Revision, StoreError> {
        let res = self.store.range(prefix, None, 0, 0).await?;
        let mut crds: Vec<(KeyValue, Value)> = res
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let v = serde_json::from_slice(&kv.value).ok()?;
                Some((kv, v))
            })
            .collect();
        // The older definition keeps contested names.
        crds.sort_by(|a, b| {
            let ts = |v: &Value| {
                v["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            };
            ts(&a.1).cmp(&ts(&b.1)).then(
                a.1["metadata"]["name"]
                    .as_str()
                    .cmp(&b.1["metadata"]["name"].as_str()),
            )
        });
        let mut taken: HashMap<String, Vec<Names>> = HashMap::new();
        let mut served: Vec<(Definition, Names)> = Vec::new();
        for (kv, obj) in crds {
            let def = Definition::from_json(&obj);
            let names = def.names.clone();
            let conflict = conflict(
                taken.get(&def.group).map(Vec::as_slice).unwrap_or(&[]),
                &names,
            )
            .or_else(|| builtin_conflict(&def.group, &names));
            let deleting = obj["metadata"]["deletionTimestamp"].is_string();
            if conflict.is_none() {
                taken
                    .entry(def.group.clone())
                    .or_default()
                    .push(names.clone());
                served.push((def.clone(), names.clone()));
            }
            let mut status = desired_status(&obj, &def, &names, conflict.as_deref(), deleting);
            if deleting {
                let finished = self.delete_instances(&def, &names).await?;
                if finished {
                    self.finish_deletion(&kv, &obj).await?;
                    continue;
                }
                status = desired_status(&obj, &def, &names, conflict.as_deref(), true);
            }
            if obj.get("status") != Some(&status) {
                let mut new = obj.clone();
                new["status"] = status;
                match self
                    .store
                    .update(
                        &kv.key,
                        serde_json::to_vec(&new).unwrap_or_default(),
                        kv.mod_revision,
                    )
                    .await
                {
                    Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.registry.publish(&served);
        self.register_apiservices(&served).await?;
        Ok(res.revision)
    }

    /// Lists the served custom group versions as local APIServices (label
    /// `kube-aggregator.kubernetes.io/automanaged: "true"`), as upstream's
    /// CRD registration controller does, and drops those no longer served.
    async fn register_apiservices(&self, served: &[(Definition, Names)]) -> Result<(), StoreError> {
        const LABEL: &str = "kube-aggregator.kubernetes.io/automanaged";
        let Some(info) = catalogue::find("apiregistration.k8s.io", "v1", "apiservices") else {
            return Ok(());
        };
        let mut want: Vec<(String, String)> = Vec::new();
        for (def, _) in served {
            for v in def.served() {
                let gv = (def.group.clone(), v.name.clone());
                if !want.contains(&gv) {
                    want.push(gv);
                }
            }
        }
        let existing = self.store.range(&info.storage_prefix(), None, 0, 0).await?;
        for kv in &existing.kvs {
            let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if obj["metadata"]["labels"][LABEL] != "true" {
                continue;
            }
            let gv = (
                obj["spec"]["group"].as_str().unwrap_or("").to_string(),
                obj["spec"]["version"].as_str().unwrap_or("").to_string(),
            );
            if !want.contains(&gv) {
                match self.store.delete(&kv.key, kv.mod_revision).await {
                    Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for (group, version) in want {
            let name = format!("{version}.{group}");
            let key = crate::objects::object_key(info, None, &name);
            if self.store.get(&key).await?.is_some() {
                continue;
            }
            let obj = json!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {
                    "name": name,
                    "uid": uuid::Uuid::new_v4().to_string(),
                    "creationTimestamp": crate::rest::now_rfc3339(),
                    "labels": {LABEL: "true"},
                },
                "spec": {"group": group, "version": version, "groupPriorityMinimum": 1000, "versionPriority": 100},
            });
            match self
                .store
                .create(&key, serde_json::to_vec(&obj).unwrap_or_default())
                .await
            {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes the definition's objects; true when none is left.
    async fn delete_instances(&self, def: &Definition, names: &Names) -> Result<bool, StoreError> {
        let prefix = format!("/registry/{}/{}/", def.group, names.plural);
        let res = self.store.range(&prefix, None, 0, 0).await?;
        let mut left = false;
        for kv in res.kvs {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
                let _ = self.store.delete(&kv.key, kv.mod_revision).await;
                continue;
            };
            let has_finalizers = obj["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if !has_finalizers {
                match self.store.delete(&kv.key, kv.mod_revision).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(StoreError::Conflict { .. }) => left = true,
                    Err(e) => return Err(e),
                }
                continue;
            }
            left = true;
            // Objects with finalizers go the normal way: marked, and gone
            // when their controllers remove the finalizers.
            if !obj["metadata"]["deletionTimestamp"].is_string() {
                obj["metadata"]["deletionTimestamp"] = json!(crate::rest::now_rfc3339());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let _ = self
                    .store
                    .update(
                        &kv.key,
                        serde_json::to_vec(&obj).unwrap_or_default(),
                        kv.mod_revision,
                    )
                    .await;
            }
        }
        Ok(!left)
    }

    /// Drops the cleanup finalizer; the definition goes with the last one.
    async fn finish_deletion(&self, kv: &KeyValue, obj: &Value) -> Result<(), StoreError> {
        let mut new = obj.clone();
        let rest: Vec<Value> = obj["metadata"]["finalizers"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter(|x| x.as_str() != Some(CLEANUP_FINALIZER))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let result = if rest.is_empty() {
            self.store
                .delete(&kv.key, kv.mod_revision)
                .await
                .map(|_| ())
        } else if rest.len() != obj["metadata"]["finalizers"].as_array().map_or(0, Vec::len) {
            new["metadata"]["finalizers"] = json!(rest);
            self.store
                .update(
                    &kv.key,
                    serde_json::to_vec(&new).unwrap_or_default(),
                    kv.mod_revision,
                )
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        match result {
            Ok(()) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Which of `names` another definition in the group already holds.
fn conflict(taken: &[Names], names: &Names) -> Option<String> {
    for t in taken {
        let theirs = [&t.plural, &t.singular];
        if theirs.contains(&&names.plural) || t.short_names.contains(&names.plural) {
            return Some(format!("\"{}\" is already in use", names.plural));
        }
        if theirs.contains(&&names.singular) || t.short_names.contains(&names.singular) {
            return Some(format!("\"{}\" is already in use", names.singular));
        }
        for s in &names.short_names {
            if theirs.contains(&s) || t.short_names.contains(s) {
                return Some(format!("\"{s}\" is already in use"));
            }
        }
        if t.kind == names.kind || t.list_kind == names.kind {
            return Some(format!("\"{}\" is already in use", names.kind));
        }
        if t.kind == names.list_kind || t.list_kind == names.list_kind {
            return Some(format!("\"{}\" is already in use", names.list_kind));
        }
    }
    None
}

fn builtin_conflict(group: &str, names: &Names) -> Option<String> {
    catalogue::RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .find(|r| r.plural == names.plural || r.kind == names.kind)
        .map(|r| format!("\"{}\" is already in use", r.plural))
}

fn condition(old: &Value, type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let prior = old["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_));
    let since = match prior {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(crate::rest::now_rfc3339()),
    };
    json!({
        "type": type_,
        "status": status,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    })
}

/// The status a definition should have.
fn desired_status(
    obj: &Value,
    def: &Definition,
    names: &Names,
    conflict: Option<&str>,
    deleting: bool,
) -> Value {
    let mut conditions = Vec::new();
    match conflict {
        None => {
            conditions.push(condition(
                obj,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            ));
            conditions.push(condition(
                obj,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ));
        }
        Some(why) => {
            let reason = if why.contains(&format!("\"{}\"", names.kind))
                || why.contains(&format!("\"{}\"", names.list_kind))
            {
                "KindConflict"
            } else {
                "PluralConflict"
            };
            conditions.push(condition(obj, "NamesAccepted", "False", reason, why));
            conditions.push(condition(
                obj,
                "Established",
                "False",
                "NotAccepted",
                "not all names are accepted",
            ));
        }
    }
    if deleting {
        conditions.push(condition(
            obj,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    let mut stored: Vec<Value> = obj["status"]["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(sv) = def.storage_version()
        && !stored.iter().any(|s| s == sv.name.as_str())
    {
        stored.push(json!(sv.name));
    }
    let accepted = if conflict.is_none() {
        names.to_json()
    } else {
        obj["status"]["acceptedNames"].clone()
    };
    let accepted = if accepted.is_null() {
        json!({"kind": "", "plural": ""})
    } else {
        accepted
    };
    json!({
        "conditions": conditions,
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}
