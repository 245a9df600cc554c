//! Built-in admission: an ordered chain of small plugins, each for the
//! kinds it [`Plugin::handles`], as upstream's admission chain. The write
//! path runs the chain's three steps at fixed points:
//!
//! 1. [`default`]: defaulting the requester owns, before managedFields
//!    are recorded (the service account name);
//! 2. [`admit`]: mutating admission, before the object is validated;
//! 3. [`validate`]: after the strategy validated the object (namespace
//!    lifecycle, then allocation, which must only happen for an object
//!    that will be stored).
//!
//! Plugins read other objects through a [`Context`] rather than the REST
//! layer, so that the REST layer depends on admission and not back.

pub mod dynamic;
pub mod ipalloc;
pub mod limitrange;
pub mod namespace;
pub mod podsecurity;
pub mod priority;
pub mod quota;
pub mod service_alloc;
pub mod serviceaccount;
pub mod storageclass;
pub mod tolerations;

use api::catalogue::ResourceInfo;
use serde_json::Value;
use store::{KeyValue, SharedStore};

use crate::error::ApiError;

/// The write an admission request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A create (POST, apply or PUT on an absent object).
    Create,
    /// An update of the main resource.
    Update,
    /// A delete.
    Delete,
}

/// What the plugins may use of the server.
pub struct Context<'a> {
    /// The store.
    pub store: &'a SharedStore,
    /// Serialises IP and port allocation.
    pub alloc_lock: &'a tokio::sync::Mutex<()>,
    /// The `--service-cidr` cluster IPs come from first.
    pub service_cidr: ipnet::Ipv4Net,
    /// The ResourceQuotas (which namespaces have any).
    pub quotas: &'a crate::watched::Watched,
    /// The LimitRanges.
    pub limit_ranges: &'a crate::watched::Watched,
    /// Serializes this server's quota charges per namespace.
    pub quota_locks: &'a quota::Locks,
}

impl Context<'_> {
    /// Reads an object, 404 if absent.
    pub async fn load(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(Value, KeyValue), ApiError> {
        crate::objects::load(self.store, info, ns, name).await
    }
}

/// One write under admission.
pub struct Request<'a> {
    /// Create or update.
    pub op: Operation,
    /// The kind written.
    pub info: &'static ResourceInfo,
    /// The namespace of the request path, if any.
    pub namespace: Option<&'a str>,
    /// The stored object an update replaces.
    pub old: Option<&'a Value>,
    /// `dryRun=All`: nothing may be reserved for good.
    pub dry_run: bool,
}

/// An admission plugin. Every step defaults to doing nothing.
#[async_trait::async_trait]
pub trait Plugin: Send + Sync {
    /// The plugin's name (upstream's, where it has one).
    fn name(&self) -> &'static str;

    /// Whether the plugin has anything to do for `op` on `info`'s kind.
    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool;

    /// Defaulting that counts as the requester's (see [`default`]).
    fn default(&self, _obj: &mut Value) {}

    /// Mutating admission.
    async fn admit(
        &self,
        _ctx: &Context<'_>,
        _req: &Request<'_>,
        _obj: &mut Value,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Admission of a validated object (it may still fill in what is
    /// allocated for it).
    async fn validate(
        &self,
        _ctx: &Context<'_>,
        _req: &Request<'_>,
        _obj: &mut Value,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// The chain, in upstream's order (`NamespaceLifecycle, LimitRanger,
/// ServiceAccount, NodeRestriction, TaintNodesByCondition, Priority,
/// DefaultTolerationSeconds, DefaultStorageClass, …`; the plugins r8s does
/// not have are left out), then ResourceQuota and allocation.
pub static PLUGINS: &[&dyn Plugin] = &[
    &namespace::NamespaceLifecycle,
    &limitrange::LimitRanger,
    &serviceaccount::ServiceAccount,
    &priority::Priority,
    &tolerations::DefaultTolerationSeconds,
    &storageclass::DefaultStorageClass,
    &quota::ResourceQuota,
    &service_alloc::ServiceAllocation,
];

fn handling<'a>(req: &'a Request<'_>) -> impl Iterator<Item = &'static dyn Plugin> + 'a {
    PLUGINS
        .iter()
        .copied()
        .filter(|p| p.handles(req.info, req.op))
}

/// Runs the chain's requester-owned defaulting.
pub fn default(req: &Request<'_>, obj: &mut Value) {
    for p in handling(req) {
        p.default(obj);
    }
}

/// Runs the chain's mutating admission; the first refusal wins.
pub async fn admit(ctx: &Context<'_>, req: &Request<'_>, obj: &mut Value) -> Result<(), ApiError> {
    for p in handling(req) {
        p.admit(ctx, req, obj).await?;
    }
    Ok(())
}

/// Runs the chain's admission of a validated object; the first refusal
/// wins.
pub async fn validate(
    ctx: &Context<'_>,
    req: &Request<'_>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    for p in handling(req) {
        p.validate(ctx, req, obj).await?;
    }
    Ok(())
}

/// Whether `info` is core pods (most plugins are about pods).
fn is_pods(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "pods"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(group: &str, plural: &str, op: Operation) -> Vec<&'static str> {
        let info = api::catalogue::find(group, "v1", plural).unwrap();
        let req = Request {
            op,
            info,
            namespace: Some("default"),
            old: None,
            dry_run: false,
        };
        handling(&req).map(|p| p.name()).collect()
    }

    #[test]
    fn the_chain_runs_in_upstreams_order_for_the_kinds_it_handles() {
        assert_eq!(
            names("", "pods", Operation::Create),
            [
                "NamespaceLifecycle",
                "LimitRanger",
                "ServiceAccount",
                "Priority",
                "DefaultTolerationSeconds",
                "ResourceQuota"
            ]
        );
        assert_eq!(
            names("", "services", Operation::Create),
            ["NamespaceLifecycle", "ResourceQuota", "ServiceAllocation"]
        );
        assert_eq!(
            names("", "persistentvolumeclaims", Operation::Create),
            [
                "NamespaceLifecycle",
                "LimitRanger",
                "DefaultStorageClass",
                "ResourceQuota"
            ]
        );
        assert_eq!(
            names("", "services", Operation::Update),
            ["ServiceAllocation"]
        );
        assert!(names("", "pods", Operation::Update).is_empty());
        assert!(names("", "namespaces", Operation::Create).is_empty());
    }
}
