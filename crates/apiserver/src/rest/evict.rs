//! The pods/eviction subresource: a delete that honours
//! PodDisruptionBudgets, as upstream's eviction REST handler does.
//!
//! - Pods that are Succeeded, Failed, Pending or already terminating can
//!   always be evicted (upstream's `canIgnorePDB`).
//! - No matching budget: plain delete. More than one: 500.
//! - An unready pod is evicted without using up the budget while the
//!   budget is healthy (`unhealthyPodEvictionPolicy: IfHealthyBudget`, the
//!   default), or always (`AlwaysAllow`).
//! - Otherwise the budget must allow a disruption: it is decremented and the
//!   pod recorded in `status.disruptedPods` (compare-and-swap, retried on
//!   conflict) before the pod is deleted; a budget at zero answers 429.

use http::{Method, Response};
use serde_json::{Value, json};

use super::write::{self, DeleteOptions, Outcome};
use super::{Call, Rest};
use crate::error::ApiError;
use crate::http::{self as h, Body};

/// Upstream's cap on not-yet-confirmed evictions recorded in a budget.
const MAX_DISRUPTED_PODS: usize = 2000;

/// Serves POST `pods/<name>/eviction` with the decoded Eviction body.
pub(super) async fn evict(
    rest: &Rest,
    call: &Call,
    name: &str,
    eviction: &Value,
) -> Result<Response<Body>, ApiError> {
    let opts_bytes = serde_json::to_vec(&eviction["deleteOptions"]).unwrap_or_default();
    let mut opts = if eviction["deleteOptions"].is_object() {
        write::delete_options(call, &opts_bytes)?
    } else {
        write::delete_options(call, b"")?
    };
    let pod_call = sibling_call(call, call.info(), None, Method::DELETE);
    let ns = call.ns().unwrap_or("default");
    for _ in 0..16 {
        let (pod, _) = rest.load(call.info(), call.ns(), name).await?;
        if can_ignore_pdb(&pod) {
            return delete_pod(rest, &pod_call, name, &opts).await;
        }
        let pdb = match matching_pdb(rest, ns, &pod).await? {
            None => return delete_pod(rest, &pod_call, name, &opts).await,
            Some(p) => p,
        };
        if !is_ready(&pod) {
            let policy = pdb["spec"]["unhealthyPodEvictionPolicy"]
                .as_str()
                .unwrap_or("IfHealthyBudget");
            let current = pdb["status"]["currentHealthy"].as_i64().unwrap_or(0);
            let desired = pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0);
            if policy == "AlwaysAllow" || (current >= desired && desired > 0) {
                // Upstream pins the pod's resourceVersion so the pod cannot
                // have become ready behind the check.
                if opts.resource_version.is_none() {
                    opts.resource_version = pod["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_string);
                }
                return delete_pod(rest, &pod_call, name, &opts).await;
            }
        }
        match check_and_decrement(rest, call, &pdb, name).await {
            Ok(()) => return delete_pod(rest, &pod_call, name, &opts).await,
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::retries_exhausted("", "pods", name))
}

/// A call like `call` on another resource (or the pod itself without the
/// subresource).
fn sibling_call(
    call: &Call,
    info: &'static api::catalogue::ResourceInfo,
    sub: Option<&str>,
    method: Method,
) -> Call {
    Call {
        route: crate::router::ResourceRoute {
            info,
            subresource: sub.map(str::to_string),
            ..call.route.clone()
        },
        method,
        query: call.query.clone(),
        headers: call.headers.clone(),
        user: call.user.clone(),
    }
}

async fn delete_pod(
    rest: &Rest,
    pod_call: &Call,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Response<Body>, ApiError> {
    write::delete_object(rest, pod_call, name, opts).await?;
    Ok(h::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Pods whose eviction cannot hurt availability (upstream `canIgnorePDB`).
fn can_ignore_pdb(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Pending")
    ) || pod["metadata"]["deletionTimestamp"].is_string()
}

/// Whether the pod's Ready condition is True.
pub(super) fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn pdb_info() -> Result<&'static api::catalogue::ResourceInfo, ApiError> {
    api::catalogue::find("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets missing from the catalogue"))
}

/// The one budget selecting `pod`, if any; more than one is an error, as
/// upstream.
async fn matching_pdb(rest: &Rest, ns: &str, pod: &Value) -> Result<Option<Value>, ApiError> {
    let info = pdb_info()?;
    let res = rest
        .store
        .range(&super::collection_prefix(info, Some(ns)), None, 0, 0)
        .await?;
    let mut found = Vec::new();
    for kv in &res.kvs {
        let pdb = super::decode_kv(info, kv)?;
        let Ok(sel) = api::selector::LabelSelector::from_label_selector(&pdb["spec"]["selector"])
        else {
            continue;
        };
        if sel.matches_object(pod) {
            found.push(pdb);
        }
    }
    if found.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    Ok(found.pop())
}

/// The 429 upstream answers when a budget forbids the eviction.
fn too_many_requests(message: &str, cause_message: String) -> ApiError {
    ApiError {
        code: 429,
        reason: "TooManyRequests",
        message: message.to_string(),
        details: Some(Box::new(json!({
            "causes": [{"reason": "DisruptionBudget", "message": cause_message}]
        }))),
        causes: Vec::new(),
    }
}

/// Refuses the eviction if the budget does not allow it, else takes one
/// disruption from it and records the pod (a CAS on the budget's status;
/// a Conflict error means "read again and retry").
async fn check_and_decrement(
    rest: &Rest,
    call: &Call,
    pdb: &Value,
    pod_name: &str,
) -> Result<(), ApiError> {
    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
    let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
    if observed < generation {
        return Err(too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            format!("The disruption budget {pdb_name} is still being processed by the server."),
        ));
    }
    let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = pdb["status"]["disruptedPods"]
        .as_object()
        .map_or(0, serde_json::Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                pdb["status"]["currentHealthy"].as_i64().unwrap_or(0)
            ),
        ));
    }
    if call.query.dry_run()? {
        return Ok(());
    }
    let mut new = pdb.clone();
    new["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !new["status"]["disruptedPods"].is_object() {
        new["status"]["disruptedPods"] = json!({});
    }
    new["status"]["disruptedPods"][pod_name] = json!(super::now_rfc3339());
    if allowed - 1 == 0 {
        set_disruption_allowed_false(&mut new);
    }
    let info = pdb_info()?;
    let status_call = sibling_call(call, info, Some("status"), Method::PUT);
    let status_call = Call {
        route: crate::router::ResourceRoute {
            name: Some(pdb_name.clone()),
            ..status_call.route
        },
        ..status_call
    };
    let (_, kv) = rest.load(info, call.ns(), &pdb_name).await?;
    match write::update_object(rest, &status_call, &pdb_name, new, pdb, &kv, true).await {
        Ok((Outcome::Stored(_) | Outcome::Deleted(_), _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Upstream flips the DisruptionAllowed condition as the last disruption is
/// taken, so readers see the budget exhausted before the controller runs.
fn set_disruption_allowed_false(pdb: &mut Value) {
    let generation = pdb["metadata"]["generation"].clone();
    let mut conds: Vec<Value> = pdb["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let now = super::now_rfc3339();
    match conds.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(c) => {
            if c["status"] != "False" {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!("False");
            c["reason"] = json!("InsufficientPods");
            c["message"] = json!("");
            c["observedGeneration"] = generation;
        }
        None => conds.push(json!({
            "type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
            "message": "", "lastTransitionTime": now, "observedGeneration": generation,
        })),
    }
    pdb["status"]["conditions"] = Value::Array(conds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_pending_and_terminating_pods_ignore_budgets() {
        assert!(can_ignore_pdb(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_pdb(&json!({"status": {"phase": "Succeeded"}})));
        assert!(can_ignore_pdb(
            &json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}})
        ));
        assert!(!can_ignore_pdb(&json!({"status": {"phase": "Running"}})));
    }

    #[test]
    fn exhausted_budget_message_is_upstreams() {
        let e = too_many_requests("m", "c".into());
        assert_eq!(e.code, 429);
        assert_eq!(
            e.status()["details"]["causes"][0]["reason"],
            "DisruptionBudget"
        );
    }
}
