//! Dynamic admission: the admission webhooks and ValidatingAdmissionPolicies
//! users register through the API (admissionregistration.k8s.io/v1), run at
//! upstream's points of the write path: mutating webhooks after the
//! built-in mutating plugins, then (after the kind's own validation)
//! ValidatingAdmissionPolicies and validating webhooks.
//!
//! The registered configurations are read from a cache each server keeps
//! in step with the store by watching it ([`Registered`]); a write of a
//! configuration waits until the cache has it, so the next request of the
//! same client is admitted under it.

mod client;
mod policy;
mod rules;
mod webhook;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::catalogue::ResourceInfo;
use futures::StreamExt;
use serde_json::Value;
use store::{Revision, SharedStore};

use crate::auth::User;
use crate::error::ApiError;

pub use policy::validate as validate_policies;
pub use webhook::{mutate, validate};

/// One kind of registered configuration, cached.
pub struct Registered {
    prefix: String,
    items: RwLock<Arc<Vec<Value>>>,
    synced: tokio::sync::watch::Sender<Revision>,
    kick: tokio::sync::Notify,
}

impl Registered {
    fn new(group: &str, plural: &str) -> Arc<Registered> {
        let prefix = api::catalogue::find(group, "v1", plural)
            .map(|i| i.storage_prefix())
            .unwrap_or_else(|| format!("/registry/{plural}/"));
        Arc::new(Registered {
            prefix,
            items: RwLock::new(Arc::new(Vec::new())),
            synced: tokio::sync::watch::channel(0).0,
            kick: tokio::sync::Notify::new(),
        })
    }

    /// The configurations now.
    pub fn items(&self) -> Arc<Vec<Value>> {
        self.items.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn run(self: Arc<Self>, store: SharedStore) {
        loop {
            let rev = match store.range(&self.prefix, None, 0, 0).await {
                Ok(res) => {
                    let mut items: Vec<Value> = res
                        .kvs
                        .iter()
                        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                        .collect();
                    // Upstream calls webhooks in configuration-name order.
                    items.sort_by(|a: &Value, b: &Value| {
                        a["metadata"]["name"]
                            .as_str()
                            .cmp(&b["metadata"]["name"].as_str())
                    });
                    *self.items.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(items);
                    res.revision
                }
                Err(e) => {
                    tracing::warn!(prefix = %self.prefix, error = %e, "admission configuration read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.synced.send_replace(rev);
            let mut watch = store.watch(&self.prefix, rev).await.ok();
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
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    async fn wait_synced(&self, revision: Revision) {
        let mut rx = self.synced.subscribe();
        self.kick.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|r| *r >= revision)).await;
    }
}

/// Every registered admission configuration.
pub struct Extensions {
    /// MutatingWebhookConfigurations.
    pub mutating: Arc<Registered>,
    /// ValidatingWebhookConfigurations.
    pub validating: Arc<Registered>,
    /// ValidatingAdmissionPolicies.
    pub policies: Arc<Registered>,
    /// ValidatingAdmissionPolicyBindings.
    pub bindings: Arc<Registered>,
}

const GROUP: &str = "admissionregistration.k8s.io";

impl Extensions {
    /// Empty caches; [`Extensions::start`] fills them.
    pub fn new() -> Extensions {
        Extensions {
            mutating: Registered::new(GROUP, "mutatingwebhookconfigurations"),
            validating: Registered::new(GROUP, "validatingwebhookconfigurations"),
            policies: Registered::new(GROUP, "validatingadmissionpolicies"),
            bindings: Registered::new(GROUP, "validatingadmissionpolicybindings"),
        }
    }

    /// Starts keeping the caches in step with `store`, and waits for the
    /// first read.
    pub async fn start(&self, store: &SharedStore) {
        let all = [
            &self.mutating,
            &self.validating,
            &self.policies,
            &self.bindings,
        ];
        for r in all {
            tokio::spawn(r.clone().run(store.clone()));
        }
        if let Ok(rev) = store.current_revision().await {
            for r in all {
                r.wait_synced(rev).await;
            }
        }
    }

    /// After a write of `info` at `revision`: when it was an admission
    /// configuration, waits until the cache has it.
    pub async fn written(&self, info: &ResourceInfo, revision: Revision) {
        if info.group != GROUP {
            return;
        }
        let r = match info.plural {
            "mutatingwebhookconfigurations" => &self.mutating,
            "validatingwebhookconfigurations" => &self.validating,
            "validatingadmissionpolicies" => &self.policies,
            "validatingadmissionpolicybindings" => &self.bindings,
            _ => return,
        };
        r.wait_synced(revision).await;
    }
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions::new()
    }
}

/// What dynamic admission knows about one request.
pub struct Attributes<'a> {
    /// CREATE, UPDATE or DELETE.
    pub op: super::Operation,
    /// The resource written (at the request's version).
    pub info: &'static ResourceInfo,
    /// The subresource written, if any.
    pub sub: Option<&'a str>,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<&'a str>,
    /// The object's name.
    pub name: &'a str,
    /// The requester.
    pub user: &'a User,
    /// The object an update or delete replaces.
    pub old: Option<&'a Value>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl Attributes<'_> {
    fn operation(&self) -> &'static str {
        match self.op {
            super::Operation::Create => "CREATE",
            super::Operation::Update => "UPDATE",
            super::Operation::Delete => "DELETE",
        }
    }

    /// Whether dynamic admission applies: upstream never sends its own
    /// configurations to webhooks, so a broken webhook cannot lock them.
    fn applies(&self) -> bool {
        self.info.group != GROUP
    }

    /// The `request` of an AdmissionReview (and of CEL expressions).
    fn request(&self, uid: &str, object: &Value) -> Value {
        let info = self.info;
        let mut r = serde_json::json!({
            "uid": uid,
            "kind": {"group": info.group, "version": info.version, "kind": info.kind},
            "resource": {"group": info.group, "version": info.version, "resource": info.plural},
            "requestKind": {"group": info.group, "version": info.version, "kind": info.kind},
            "requestResource": {"group": info.group, "version": info.version, "resource": info.plural},
            "name": self.name,
            "operation": self.operation(),
            "userInfo": {"username": self.user.name, "groups": self.user.groups},
            "object": if self.op == super::Operation::Delete { Value::Null } else { object.clone() },
            "oldObject": self.old.cloned().unwrap_or(Value::Null),
            "dryRun": self.dry_run,
            "options": Value::Null,
        });
        if let Some(ns) = self.namespace {
            r["namespace"] = ns.into();
        }
        if let Some(s) = self.sub {
            r["subResource"] = s.into();
            r["requestSubResource"] = s.into();
        }
        r
    }
}

/// The labels the namespace selectors of a request see: the namespace's
/// (a Namespace's own for namespaces), none for cluster-scoped kinds.
async fn namespace_object(
    store: &SharedStore,
    attrs: &Attributes<'_>,
    object: &Value,
) -> Result<Option<Value>, ApiError> {
    if attrs.info.group.is_empty() && attrs.info.plural == "namespaces" {
        return Ok(Some(object.clone()));
    }
    let Some(ns) = attrs.namespace.filter(|_| attrs.info.namespaced) else {
        return Ok(None);
    };
    let Some(info) = api::catalogue::find("", "v1", "namespaces") else {
        return Ok(None);
    };
    match crate::objects::load(store, info, None, ns).await {
        Ok((v, _)) => Ok(Some(v)),
        Err(e) if e.code == 404 => Ok(Some(serde_json::json!({"metadata": {"name": ns}}))),
        Err(e) => Err(e),
    }
}
