//! MutatingAdmissionWebhook and ValidatingAdmissionWebhook: an
//! admission.k8s.io/v1 AdmissionReview to every webhook whose rules,
//! selectors and match conditions cover the request, with upstream's
//! failure policies, JSONPatch responses, warnings, dry-run side-effect
//! rules and reinvocation.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use store::SharedStore;

use super::{Attributes, Extensions, namespace_object, rules};
use crate::backend as client;
use crate::error::ApiError;

/// A webhook that applies to the request, with its configuration's name.
struct Hook<'a> {
    hook: &'a Value,
}

impl Hook<'_> {
    fn name(&self) -> &str {
        self.hook["name"].as_str().unwrap_or("")
    }

    fn ignores_failure(&self) -> bool {
        self.hook["failurePolicy"].as_str() == Some("Ignore")
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(
            self.hook["timeoutSeconds"]
                .as_u64()
                .unwrap_or(10)
                .clamp(1, 30),
        )
    }
}

/// Upstream's `ToStatusErr`: a refusal is at least a 400 and names the
/// webhook.
fn denied(name: &str, status: &Value) -> ApiError {
    let code = status["code"].as_u64().unwrap_or(0) as u16;
    let code = if code < 400 { 400 } else { code };
    let by = format!("admission webhook \"{name}\" denied the request");
    let message = match (status["message"].as_str(), status["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{by}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    ApiError::remote(code, status["reason"].as_str().unwrap_or(""), message)
}

fn failed(name: &str, why: &str) -> ApiError {
    ApiError::internal(format!("failed calling webhook \"{name}\": {why}"))
}

/// The webhooks of `configs` that cover the request.
async fn matching<'a>(
    store: &SharedStore,
    configs: &'a [Value],
    attrs: &Attributes<'_>,
    object: &Value,
) -> Result<Vec<Hook<'a>>, ApiError> {
    let mut out = Vec::new();
    let mut ns_obj: Option<Option<Value>> = None;
    for cfg in configs {
        for hook in cfg["webhooks"].as_array().into_iter().flatten() {
            if !rules::any_rule_matches(&hook["rules"], attrs) {
                continue;
            }
            if ns_obj.is_none() {
                ns_obj = Some(namespace_object(store, attrs, object).await?);
            }
            let namespace = ns_obj.as_ref().and_then(Option::as_ref);
            let obj_for_select = if object.is_null() {
                Value::Null
            } else {
                object.clone()
            };
            if !rules::selectors_match(hook, namespace, &obj_for_select, attrs.old) {
                continue;
            }
            let h = Hook { hook };
            let request = attrs.request("", object);
            let null = Value::Null;
            let vars = [
                (
                    "object",
                    if attrs.op == super::super::Operation::Delete {
                        &null
                    } else {
                        object
                    },
                ),
                ("oldObject", attrs.old.unwrap_or(&null)),
                ("request", &request),
            ];
            match rules::conditions_match(&hook["matchConditions"], &vars) {
                Ok(true) => out.push(h),
                Ok(false) => {}
                Err(e) if h.ignores_failure() => {
                    tracing::warn!(webhook = h.name(), error = %e, "match condition failed; ignored");
                }
                Err(e) => return Err(failed(h.name(), &e)),
            }
        }
    }
    Ok(out)
}

/// Sends one AdmissionReview; `Ok(None)` when the call failed and the
/// failure policy says to go on.
async fn review(
    store: &SharedStore,
    h: &Hook<'_>,
    attrs: &Attributes<'_>,
    object: &Value,
) -> Result<Option<Value>, ApiError> {
    let side_effects = h.hook["sideEffects"].as_str().unwrap_or("Unknown");
    if attrs.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{}\" does not support dry run",
            h.name()
        )));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let version = h.hook["admissionReviewVersions"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .filter_map(Value::as_str)
                .find(|v| matches!(*v, "v1" | "v1beta1"))
        })
        .unwrap_or("v1");
    let body = json!({
        "apiVersion": format!("admission.k8s.io/{version}"),
        "kind": "AdmissionReview",
        "request": attrs.request(&uid, object),
    });
    match client::post(store, &h.hook["clientConfig"], &body, h.timeout()).await {
        Ok(resp) => {
            let r = &resp["response"];
            if r.is_null() {
                let e = "the webhook returned no response";
                return if h.ignores_failure() {
                    Ok(None)
                } else {
                    Err(failed(h.name(), e))
                };
            }
            if let Some(u) = r["uid"].as_str()
                && u != uid
            {
                let e = format!("expected response.uid=\"{uid}\", got \"{u}\"");
                return if h.ignores_failure() {
                    Ok(None)
                } else {
                    Err(failed(h.name(), &e))
                };
            }
            Ok(Some(r.clone()))
        }
        Err(e) if h.ignores_failure() => {
            tracing::warn!(webhook = h.name(), error = %e, "webhook failed; ignored (failurePolicy Ignore)");
            Ok(None)
        }
        Err(e) => Err(failed(h.name(), &e.0)),
    }
}

fn warnings_of(r: &Value, out: &mut Vec<String>) {
    for w in r["warnings"].as_array().into_iter().flatten() {
        if let Some(s) = w.as_str() {
            out.push(s.to_string());
        }
    }
}

/// Runs the mutating webhooks on `obj` (at the request's version);
/// returns their warnings.
pub async fn mutate(
    store: &SharedStore,
    ext: &Extensions,
    attrs: &Attributes<'_>,
    obj: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if !attrs.applies() {
        return Ok(warnings);
    }
    let configs = ext.mutating.items();
    if configs.is_empty() {
        return Ok(warnings);
    }
    let hooks = matching(store, &configs, attrs, obj).await?;
    // A webhook with reinvocationPolicy IfNeeded runs again (once) when a
    // later webhook changed the object after it ran.
    let mut ran_at: Vec<(usize, Value)> = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        call_mutating(store, h, attrs, obj, &mut warnings).await?;
        if h.hook["reinvocationPolicy"].as_str() == Some("IfNeeded") {
            ran_at.push((i, obj.clone()));
        }
    }
    for (i, seen) in ran_at {
        if *obj != seen {
            call_mutating(store, &hooks[i], attrs, obj, &mut warnings).await?;
        }
    }
    Ok(warnings)
}

async fn call_mutating(
    store: &SharedStore,
    h: &Hook<'_>,
    attrs: &Attributes<'_>,
    obj: &mut Value,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let Some(r) = review(store, h, attrs, obj).await? else {
        return Ok(());
    };
    warnings_of(&r, warnings);
    if r["allowed"].as_bool() != Some(true) {
        return Err(denied(h.name(), &r["status"]));
    }
    if let Some(p) = r["patch"].as_str().filter(|p| !p.is_empty()) {
        if r["patchType"].as_str().unwrap_or("JSONPatch") != "JSONPatch" {
            return Err(failed(
                h.name(),
                "the only supported patchType is JSONPatch",
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p)
            .map_err(|e| failed(h.name(), &format!("patch is not base64: {e}")))?;
        let patched = api::patch::json_patch(obj, &bytes)
            .map_err(|e| failed(h.name(), &format!("applying the patch: {e}")))?;
        *obj = patched;
    }
    Ok(())
}

/// Runs the validating webhooks (in parallel, as upstream); the first
/// refusal (in configuration order) is the answer. Returns warnings.
pub async fn validate(
    store: &SharedStore,
    ext: &Extensions,
    attrs: &Attributes<'_>,
    obj: &Value,
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if !attrs.applies() {
        return Ok(warnings);
    }
    let configs = ext.validating.items();
    if configs.is_empty() {
        return Ok(warnings);
    }
    let hooks = matching(store, &configs, attrs, obj).await?;
    let answers =
        futures::future::join_all(hooks.iter().map(|h| review(store, h, attrs, obj))).await;
    for (h, a) in hooks.iter().zip(answers) {
        let Some(r) = a? else {
            continue;
        };
        warnings_of(&r, &mut warnings);
        if r["allowed"].as_bool() != Some(true) {
            return Err(denied(h.name(), &r["status"]));
        }
    }
    Ok(warnings)
}
