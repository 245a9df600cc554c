//! Priority: a new pod's `priorityClassName` resolves into its priority
//! and preemption policy.

use api::catalogue::{self, ResourceInfo};
use serde_json::{Value, json};

use super::{Context, Operation, Plugin, Request};
use crate::error::ApiError;

/// Upstream's Priority plugin.
pub struct Priority;

#[async_trait::async_trait]
impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool {
        op == Operation::Create && super::is_pods(info)
    }

    async fn admit(
        &self,
        ctx: &Context<'_>,
        _req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        pod_priority(ctx, obj).await
    }
}

/// The PriorityClasses upstream's API server creates at startup, as
/// `(name, value, description)`.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The built-in PriorityClass objects (for the server to create at start).
pub fn system_priority_classes() -> Vec<Value> {
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .map(|(name, value, desc)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": desc,
                "globalDefault": false, "preemptionPolicy": "PreemptLowerPriority",
            })
        })
        .collect()
}

/// Resolves `spec.priorityClassName` into `spec.priority` and
/// `spec.preemptionPolicy` as upstream's Priority admission plugin does: no
/// name takes the globalDefault class (or priority 0); an unknown name or a
/// conflicting explicit priority is Forbidden.
pub async fn pod_priority(ctx: &Context<'_>, pod: &mut Value) -> Result<(), ApiError> {
    let info = catalogue::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::internal("priorityclasses missing from the catalogue"))?;
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let forbidden =
        |why: String| ApiError::forbidden(format!("pods \"{name}\" is forbidden: {why}"));
    let wanted = pod["spec"]["priorityClassName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let class: Option<Value> = if wanted.is_empty() {
        let res = ctx.store.range(&info.storage_prefix(), None, 0, 0).await?;
        let mut best: Option<Value> = None;
        for kv in &res.kvs {
            let pc = crate::objects::decode_kv(info, kv)?;
            // Several defaults can exist transiently; upstream takes the lowest.
            if pc["globalDefault"] == json!(true)
                && best
                    .as_ref()
                    .is_none_or(|b| pc["value"].as_i64() < b["value"].as_i64())
            {
                best = Some(pc);
            }
        }
        best
    } else {
        match ctx.load(info, None, &wanted).await {
            Ok((pc, _)) => Some(pc),
            Err(e) if e.code == 404 => {
                let builtin = system_priority_classes()
                    .into_iter()
                    .find(|pc| pc["metadata"]["name"] == wanted.as_str());
                match builtin {
                    Some(pc) => Some(pc),
                    None => {
                        return Err(forbidden(format!(
                            "no PriorityClass with name {wanted} was found"
                        )));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    };
    let (value, policy) = match &class {
        Some(pc) => (
            pc["value"].as_i64().unwrap_or(0),
            pc["preemptionPolicy"]
                .as_str()
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
        ),
        None => (0, "PreemptLowerPriority".to_string()),
    };
    if let Some(p) = pod["spec"]["priority"].as_i64()
        && p != value
    {
        return Err(forbidden(format!(
            "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    if let Some(p) = pod["spec"]["preemptionPolicy"].as_str()
        && class.is_some()
        && p != policy
    {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.insert("priority".into(), json!(value));
        if let Some(pc) = &class {
            spec.insert("priorityClassName".into(), pc["metadata"]["name"].clone());
            spec.insert("preemptionPolicy".into(), json!(policy));
        }
    }
    Ok(())
}
