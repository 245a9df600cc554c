//! The aggregation layer (apiregistration.k8s.io/v1): APIService objects
//! that put another API server behind `/apis/<group>/<version>`, as
//! kube-aggregator does. Requests for a registered group version are
//! proxied to the APIService's Service over TLS ([`proxy`]); its
//! resources join discovery; its `Available` condition says whether the
//! backend answers. The built-in group versions are registered as local
//! APIServices, as upstream lists them.

pub mod proxy;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use store::{SharedStore, StoreError};

use crate::watched::Watched;

/// An aggregated group version: the APIService and what its backend
/// serves.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The APIService.
    pub service: Value,
    /// The backend's APIResourceList `resources`, once it answered.
    pub resources: Option<Vec<Value>>,
}

/// The registered APIServices of this server.
pub struct Aggregator {
    services: Arc<Watched>,
    discovered: RwLock<HashMap<(String, String), Vec<Value>>>,
    kick: tokio::sync::Notify,
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator {
            services: Watched::of("apiregistration.k8s.io", "apiservices"),
            discovered: RwLock::new(HashMap::new()),
            kick: tokio::sync::Notify::new(),
        }
    }
}

fn is_local(svc: &Value) -> bool {
    svc["spec"]["service"].is_null()
}

impl Aggregator {
    /// Starts the cache and the availability checks.
    pub fn start(self: &Arc<Self>, store: &SharedStore) {
        self.services.clone().spawn(store.clone());
        let me = self.clone();
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                me.check(&store).await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = me.kick.notified() => {}
                }
            }
        });
    }

    /// After a write of an APIService: waits until the cache has it (so
    /// its group version is routed at once) and has it checked soon.
    pub async fn written(&self, info: &api::catalogue::ResourceInfo, revision: i64) {
        if (info.group, info.plural) != ("apiregistration.k8s.io", "apiservices") {
            return;
        }
        self.services.wait_synced(revision).await;
        self.kick.notify_one();
    }

    /// The remote (non-local) APIService for a group version.
    pub fn remote(&self, group: &str, version: &str) -> Option<Remote> {
        let items = self.services.items();
        let svc = items.iter().find(|s| {
            !is_local(s) && s["spec"]["group"] == group && s["spec"]["version"] == version
        })?;
        Some(Remote {
            service: svc.clone(),
            resources: self
                .discovered
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(group.to_string(), version.to_string()))
                .cloned(),
        })
    }

    /// Aggregated groups with their versions, by APIService priority.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let items = self.services.items();
        let mut remote: Vec<&Value> = items.iter().filter(|s| !is_local(s)).collect();
        remote.sort_by_key(|s| {
            (
                -s["spec"]["groupPriorityMinimum"].as_i64().unwrap_or(0),
                -s["spec"]["versionPriority"].as_i64().unwrap_or(0),
            )
        });
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for s in remote {
            let g = s["spec"]["group"].as_str().unwrap_or("").to_string();
            let v = s["spec"]["version"].as_str().unwrap_or("").to_string();
            match out.iter_mut().find(|(x, _)| *x == g) {
                Some((_, vs)) => vs.push(v),
                None => out.push((g, vec![v])),
            }
        }
        out
    }

    /// Checks every APIService and records its `Available` condition.
    async fn check(&self, store: &SharedStore) {
        let Some(info) = api::catalogue::find("apiregistration.k8s.io", "v1", "apiservices") else {
            return;
        };
        for svc in self.services.items().iter() {
            let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
            let (status, reason, message) = if is_local(svc) {
                (
                    "True",
                    "Local",
                    "Local APIServices are always available".to_string(),
                )
            } else {
                match self.probe(store, svc).await {
                    Ok(resources) => {
                        let key = (
                            svc["spec"]["group"].as_str().unwrap_or("").to_string(),
                            svc["spec"]["version"].as_str().unwrap_or("").to_string(),
                        );
                        self.discovered
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, resources);
                        ("True", "Passed", "all checks passed".to_string())
                    }
                    Err((reason, message)) => ("False", reason, message),
                }
            };
            let current = svc["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Available"));
            if current.is_some_and(|c| {
                c["status"] == status && c["reason"] == reason && c["message"] == message.as_str()
            }) {
                continue;
            }
            if let Err(e) = write_condition(store, info, &name, status, reason, &message).await {
                tracing::debug!(apiservice = %name, error = %e, "APIService status not written");
            }
        }
    }

    /// Asks the backend for its resources; on failure, upstream's reason
    /// and message.
    async fn probe(
        &self,
        store: &SharedStore,
        svc: &Value,
    ) -> Result<Vec<Value>, (&'static str, String)> {
        let r = &svc["spec"]["service"];
        let (ns, sname) = (
            r["namespace"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
        );
        let group = svc["spec"]["group"].as_str().unwrap_or("");
        let version = svc["spec"]["version"].as_str().unwrap_or("");
        let target = proxy::resolve(store, svc).await.map_err(|e| match e {
            proxy::ResolveError::ServiceNotFound => (
                "ServiceNotFound",
                format!("service/{sname} in \"{ns}\" is not present"),
            ),
            proxy::ResolveError::NoEndpoints(port) => (
                "MissingEndpoints",
                format!("endpoints for service/{sname} in \"{ns}\" have no addresses with port name \"{port}\""),
            ),
            proxy::ResolveError::Other(m) => ("FailedDiscoveryCheck", m),
        })?;
        let path = format!("/apis/{group}/{version}");
        let url = format!("https://{}:{}{path}", target.server_name, target.port);
        let list = proxy::get_json(&target, svc, &path, Duration::from_secs(5))
            .await
            .map_err(|e| {
                (
                    "FailedDiscoveryCheck",
                    format!("failing or missing response from {url}: {e}"),
                )
            })?;
        Ok(list["resources"].as_array().cloned().unwrap_or_default())
    }
}

async fn write_condition(
    store: &SharedStore,
    info: &api::catalogue::ResourceInfo,
    name: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<(), StoreError> {
    let key = crate::objects::object_key(info, None, name);
    let Some(kv) = store.get(&key).await? else {
        return Ok(());
    };
    let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
        return Ok(());
    };
    obj["status"] = json!({"conditions": [{
        "type": "Available",
        "status": status,
        "lastTransitionTime": crate::rest::now_rfc3339(),
        "reason": reason,
        "message": message,
    }]});
    match store
        .update(
            &key,
            serde_json::to_vec(&obj).unwrap_or_default(),
            kv.mod_revision,
        )
        .await
    {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The local APIServices upstream lists for the built-in group versions.
pub fn local_apiservices() -> Vec<Value> {
    let groups = api::catalogue::groups();
    let n = groups.len() as i64;
    let mut out = Vec::new();
    for (i, (group, versions)) in groups.into_iter().enumerate() {
        for (j, version) in versions.iter().enumerate() {
            out.push(json!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {
                    "name": format!("{version}.{group}"),
                    "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"},
                },
                "spec": {
                    "group": group,
                    "version": version,
                    "groupPriorityMinimum": 18000 - 100 * (i as i64).min(n),
                    "versionPriority": 15 - j as i64,
                },
            }));
        }
    }
    out
}
