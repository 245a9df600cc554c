//! The write path's admission beyond the built-in chain, and what a write
//! waits for before it returns: RBAC escalation and NodeRestriction
//! checks, Pod Security, ValidatingAdmissionPolicies and webhooks; the
//! caches (definitions, admission configurations, RBAC, quotas) that must
//! have seen a write before the writer's next request.

use api::catalogue::ResourceInfo;
use serde_json::Value;

use super::Rest;
use crate::admission::dynamic;
use crate::convert;
use crate::error::ApiError;

/// The mutating webhooks, which see (and patch) the object at the
/// request's version.
pub(super) async fn mutating_webhooks(
    rest: &Rest,
    attrs: &dynamic::Attributes<'_>,
    obj: &mut Value,
) -> Result<Vec<String>, ApiError> {
    if rest.extensions.mutating.items().is_empty() {
        return Ok(Vec::new());
    }
    let mut versioned = obj.clone();
    convert::to_version(attrs.info, &mut versioned);
    let warnings = dynamic::mutate(&rest.store, &rest.extensions, attrs, &mut versioned).await?;
    convert::to_storage(attrs.info, &mut versioned);
    *obj = versioned;
    Ok(warnings)
}

/// ValidatingAdmissionPolicies, then the validating webhooks.
pub(super) async fn validating_admission(
    rest: &Rest,
    attrs: &dynamic::Attributes<'_>,
    obj: &Value,
) -> Result<Vec<String>, ApiError> {
    if attrs.op == crate::admission::Operation::Create {
        crate::authz::node::restrict_create(attrs.user, attrs.info, obj)?;
    }
    // Quota for what an update adds (creates are charged in the chain).
    if attrs.op == crate::admission::Operation::Update
        && attrs.sub.is_none()
        && crate::admission::quota::charges_updates(attrs.info)
    {
        use crate::admission::Plugin;
        let req = crate::admission::Request {
            op: attrs.op,
            info: attrs.info,
            namespace: attrs.namespace,
            old: attrs.old,
            dry_run: attrs.dry_run,
        };
        crate::admission::quota::ResourceQuota
            .validate(&rest.admission_context(), &req, &mut obj.clone())
            .await?;
    }
    if attrs.op != crate::admission::Operation::Delete {
        crate::authz::escalation::check(
            &rest.authz,
            &rest.store,
            attrs.user,
            attrs.info,
            attrs.namespace,
            obj,
        )
        .await?;
    }
    // Pod Security runs with the validating admission because it may
    // warn as well as refuse.
    let mut warnings = crate::admission::podsecurity::check(
        &rest.admission_context(),
        attrs.info,
        attrs.op,
        attrs.sub,
        attrs.namespace,
        obj,
        attrs.old,
    )
    .await?;
    let mut versioned = obj.clone();
    convert::to_version(attrs.info, &mut versioned);
    warnings.extend(
        dynamic::validate_policies(&rest.store, &rest.extensions, &rest.crds, attrs, &versioned)
            .await?,
    );
    warnings.extend(dynamic::validate(&rest.store, &rest.extensions, attrs, &versioned).await?);
    Ok(warnings)
}

/// A written CustomResourceDefinition's kind is served when the write
/// returns (as far as the definition allows), so that the next request
/// of a client that just applied it finds the kind.
pub(super) async fn wait_established(rest: &Rest, info: &ResourceInfo, revision: i64) {
    rest.extensions.written(info, revision).await;
    rest.aggregator.written(info, revision).await;
    rest.authz.written(info, revision).await;
    rest.quotas.written(info, revision).await;
    rest.limit_ranges.written(info, revision).await;
    if (info.group, info.plural) == ("apiextensions.k8s.io", "customresourcedefinitions") {
        rest.crd_controller
            .wait_synced(revision, std::time::Duration::from_secs(2))
            .await;
    }
}
