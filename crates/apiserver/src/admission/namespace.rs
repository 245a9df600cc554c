//! NamespaceLifecycle: no new content in a namespace that does not exist
//! or is being terminated.

use api::catalogue::{self, ResourceInfo};

use super::{Context, Operation, Plugin, Request};
use crate::error::ApiError;

/// Upstream's NamespaceLifecycle plugin (its validating half: it runs
/// once the object is known valid, so an invalid object is reported as
/// such first).
pub struct NamespaceLifecycle;

#[async_trait::async_trait]
impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool {
        op == Operation::Create && info.namespaced
    }

    async fn validate(
        &self,
        ctx: &Context<'_>,
        req: &Request<'_>,
        _obj: &mut serde_json::Value,
    ) -> Result<(), ApiError> {
        namespace_lifecycle(ctx, req.info, req.namespace).await
    }
}

/// Refuses creates in a namespace that does not exist or is terminating,
/// as upstream's NamespaceLifecycle admission plugin does.
pub async fn namespace_lifecycle(
    ctx: &Context<'_>,
    info: &ResourceInfo,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let Some(ns) = ns.filter(|_| info.namespaced) else {
        return Ok(());
    };
    let nsinfo = catalogue::find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces missing from the catalogue"))?;
    match ctx.load(nsinfo, None, ns).await {
        Ok((obj, _)) => {
            if obj["metadata"]["deletionTimestamp"].is_string()
                || obj["status"]["phase"] == "Terminating"
            {
                return Err(ApiError::forbidden(format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    info.plural
                )));
            }
            Ok(())
        }
        Err(e) if e.code == 404 => Err(ApiError::not_found("", "namespaces", ns)),
        Err(e) => Err(e),
    }
}
