//! Dynamic admission: the admission webhooks and ValidatingAdmissionPolicies
//! users register through the API (admissionregistration.k8s.io/v1), run at
//! upstream's points of the write path: mutating webhooks after the
//! built-in mutating plugins, then (after the kind's own validation)
//! ValidatingAdmissionPolicies and validating webhooks.
//!
//! The registered configurations are read from a cache each server keeps
//! in step with the store by watching it ([`Watched`]); a write of a
//! configuration waits until the cache has it, so the next request of the
//! same client is admitted under it.

mod policy;
mod rules;
mod webhook;

use std::sync::Arc;

use api::catalogue::ResourceInfo;
use serde_json::Value;
use store::{Revision, SharedStore};

use crate::watched::Watched;

use crate::auth::User;
use crate::error::ApiError;

pub use policy::validate as validate_policies;
pub use webhook::{mutate, validate};

/// Every registered admission configuration.
pub struct Extensions {
    /// MutatingWebhookConfigurations.
    pub mutating: Arc<Watched>,
    /// ValidatingWebhookConfigurations.
    pub validating: Arc<Watched>,
    /// ValidatingAdmissionPolicies.
    pub policies: Arc<Watched>,
    /// ValidatingAdmissionPolicyBindings.
    pub bindings: Arc<Watched>,
}

const GROUP: &str = "admissionregistration.k8s.io";

impl Extensions {
    /// Empty caches; [`Extensions::start`] fills them.
    pub fn new() -> Extensions {
        Extensions {
            mutating: Watched::of(GROUP, "mutatingwebhookconfigurations"),
            validating: Watched::of(GROUP, "validatingwebhookconfigurations"),
            policies: Watched::of(GROUP, "validatingadmissionpolicies"),
            bindings: Watched::of(GROUP, "validatingadmissionpolicybindings"),
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
            r.clone().spawn(store.clone());
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
