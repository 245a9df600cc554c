//! Writes: create, update, patch, delete, deletecollection.

use api::catalogue::ResourceInfo;
use api::registry;
use http::Response;
use serde_json::{Value, json};
use store::{KeyValue, StoreError};

use super::admit::{mutating_webhooks, validating_admission, wait_established};
use super::{Call, Rest, decode_kv, meta, object_key};
use crate::admission::{self, Operation, dynamic};
use crate::convert;
use crate::error::{ApiError, cause};
use crate::http::{self as h, Body};

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

fn field_validation(call: &Call) -> Result<FieldValidation, ApiError> {
    match call.query.get("fieldValidation") {
        None | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}"
        ))),
    }
}

/// Decodes through the typed model and applies `fieldValidation`; returns
/// the normalised object and any warnings.
fn normalize(
    rest: &Rest,
    call: &Call,
    info: &ResourceInfo,
    obj: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let fv = field_validation(call)?;
    if let Some(served) = rest.crds.get(info) {
        let mut obj = obj;
        let unknown = served.strategy.prune(&mut obj);
        return unknown_fields(info, fv, &unknown).map(|w| (obj, w));
    }
    let Some(res) = registry::typed::normalize(info, &obj) else {
        return Ok((obj, Vec::new()));
    };
    let norm = res.map_err(|e| {
        ApiError::bad_request(format!("error decoding request body: {}", e.message))
    })?;
    let unknown = registry::typed::unknown_fields(&obj, &norm);
    unknown_fields(info, fv, &unknown).map(|w| (norm, w))
}

/// Applies `fieldValidation` to the unknown fields a decode found: an
/// error when strict, warnings by default.
fn unknown_fields(
    info: &ResourceInfo,
    fv: FieldValidation,
    unknown: &[String],
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match fv {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|u| format!("unknown field \"{u}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = info.kind,
                    v = info.version,
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
            }
            FieldValidation::Ignore => {}
        }
    }
    Ok(warnings)
}

fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(hv) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().append("Warning", hv);
        }
    }
    resp
}

fn validate(rest: &Rest, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let mut causes = meta::validate_meta(info, obj);
    causes.extend(
        rest.strategy(info)
            .validate(obj)
            .into_iter()
            .map(|f| cause(f.reason, &f.field, f.message)),
    );
    if causes.is_empty() {
        Ok(())
    } else {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        Err(ApiError::invalid(info.group, info.kind, name, causes))
    }
}

fn check_namespace(call: &Call, obj: &mut Value) -> Result<(), ApiError> {
    let info = call.info();
    if !info.namespaced {
        return Ok(());
    }
    let path_ns = call.ns().unwrap_or("");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() && ns != path_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            obj["metadata"]["namespace"] = json!(path_ns);
            Ok(())
        }
    }
}

/// Encodes an object for the store: at its storage version, without the
/// resourceVersion (the store's revision is the version).
fn encode(info: &ResourceInfo, obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    o["apiVersion"] = json!(convert::storage_api_version(info));
    serde_json::to_vec(&o).unwrap_or_default()
}

fn stamp(obj: &mut Value, rev: i64) {
    obj["metadata"]["resourceVersion"] = json!(rev.to_string());
}

/// The object as the client sees it after a write.
async fn present(rest: &Rest, info: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj = decode_kv(info, kv)?;
    rest.convert(info, std::slice::from_mut(&mut obj), &info.api_version())
        .await?;
    Ok(obj)
}

fn map_conflict(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(info.group, info.plural, name),
        StoreError::NotFound(_) => ApiError::not_found(info.group, info.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict(
            info.group,
            info.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        other => other.into(),
    }
}

/// Whether the request is a server-side apply (which records its own
/// managedFields entry).
fn is_apply(call: &Call) -> bool {
    call.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/apply-patch"))
}

/// Decodes a request body per its content type.
fn body_object(call: &Call, bytes: &[u8]) -> Result<Value, ApiError> {
    let ct = call
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    h::decode_body(bytes, ct)
}

/// POST to a collection.
pub async fn create(rest: &Rest, call: &Call, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let want = h::negotiate(&call.headers)?;
    let obj = body_object(call, bytes)?;
    let (out, warnings) = create_object(rest, call, obj).await?;
    let out = super::read::render_one(call, want, out);
    Ok(with_warnings(h::json(201, &out), &warnings))
}

/// The create pipeline, shared with apply-on-absent.
pub(super) async fn create_object(
    rest: &Rest,
    call: &Call,
    obj: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let info = call.info();
    // The options are checked before the object, as upstream's handler.
    let dry = call.query.dry_run()?;
    meta::check_type(info, &obj)?;
    let mut obj = obj;
    if obj.get("metadata").is_none_or(Value::is_null) {
        obj["metadata"] = json!({});
    }
    check_namespace(call, &mut obj)?;
    meta::apply_generate_name(&mut obj);
    let (mut obj, mut warnings) = normalize(rest, call, info, obj)?;
    meta::tidy_meta(&mut obj);
    convert::to_storage(info, &mut obj);
    meta::prepare_create_meta(&mut obj, call.ns().filter(|_| info.namespaced));
    let strategy = rest.strategy(info);
    strategy.prepare_for_create(info, &mut obj);
    strategy.record_requester(
        &mut obj,
        &registry::Requester {
            name: &call.user.name,
            groups: &call.user.groups,
            uid: &call.user.uid,
            extra: &call.user.extra,
        },
    );
    strategy.default(&mut obj);
    let ctx = rest.admission_context();
    let req = admission::Request {
        op: Operation::Create,
        info,
        namespace: call.ns(),
        old: None,
        dry_run: dry,
    };
    admission::default(&req, &mut obj);
    if !is_apply(call) {
        let shape = crate::shape::SchemaShape::root(info.definition);
        crate::apply::record_update(
            None,
            &mut obj,
            &call.manager(),
            &info.api_version(),
            None,
            &shape,
        );
    }
    admission::admit(&ctx, &req, &mut obj).await?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let attrs = dynamic::Attributes {
        op: Operation::Create,
        info,
        sub: None,
        namespace: call.ns().filter(|_| info.namespaced),
        name: &name,
        user: &call.user,
        old: None,
        dry_run: dry,
    };
    warnings.extend(mutating_webhooks(rest, &attrs, &mut obj).await?);
    validate(rest, info, &obj)?;
    warnings.extend(validating_admission(rest, &attrs, &obj).await?);
    admission::validate(&ctx, &req, &mut obj).await?;
    let key = object_key(info, call.ns(), &name);
    if dry {
        if rest.store.get(&key).await?.is_some() {
            return Err(ApiError::already_exists(info.group, info.plural, &name));
        }
        convert::to_version(info, &mut obj);
        return Ok((obj, warnings));
    }
    let obj = to_stored(rest, info, obj).await?;
    let kv = rest
        .store
        .create(&key, encode(info, &obj))
        .await
        .map_err(|e| map_conflict(info, &name, e))?;
    wait_established(rest, info, kv.mod_revision).await;
    Ok((present(rest, info, &kv).await?, warnings))
}

/// What an update does to the stored object.
pub(super) enum Outcome {
    /// Written (or unchanged) object.
    Stored(Value),
    /// The update removed the last finalizer of a deleted object: it is gone.
    Deleted(Value),
}

/// Replaces `old` (read at `old_kv`) with `new`, applying update
/// semantics. `status_only` for the status subresource.
pub(super) async fn update_object(
    rest: &Rest,
    call: &Call,
    name: &str,
    new: Value,
    old: &Value,
    old_kv: &KeyValue,
    status_only: bool,
) -> Result<(Outcome, Vec<String>), ApiError> {
    let info = call.info();
    // The options are checked before the object, as upstream's handler.
    let dry = call.query.dry_run()?;
    meta::check_type(info, &new)?;
    let mut new = new;
    if new.get("metadata").is_none_or(Value::is_null) {
        new["metadata"] = json!({});
    }
    match new["metadata"]["name"].as_str() {
        Some(n) if !n.is_empty() && n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => new["metadata"]["name"] = json!(name),
    }
    check_namespace(call, &mut new)?;
    // An explicit resourceVersion is a precondition; none means "whatever
    // is there" (upstream allows unconditional updates for built-ins).
    let expected = match new["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() => rv
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        _ => old_kv.mod_revision,
    };
    if expected != old_kv.mod_revision {
        return Err(ApiError::conflict(
            info.group,
            info.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let (mut new, mut warnings) = normalize(rest, call, info, new)?;
    meta::tidy_meta(&mut new);
    convert::to_storage(info, &mut new);
    let mut old_storage = old.clone();
    convert::to_storage(info, &mut old_storage);
    let sub = call.route.subresource.as_deref();
    let strategy = rest.strategy(info);
    if status_only {
        new = registry::prepare_for_status_update(&new, &old_storage);
    } else if let Some(out) = strategy.prepare_for_subresource_update(sub, &new, &old_storage) {
        new = out;
        strategy.default(&mut new);
    } else {
        meta::carry_immutable_meta(&mut new, &old_storage);
        strategy.prepare_for_update(info, &mut new, &old_storage, sub);
        strategy.default(&mut new);
        let req = admission::Request {
            op: Operation::Update,
            info,
            namespace: call.ns(),
            old: Some(&old_storage),
            dry_run: dry,
        };
        admission::admit(&rest.admission_context(), &req, &mut new).await?;
    }
    if !is_apply(call) {
        let shape = crate::shape::SchemaShape::root(info.definition);
        crate::apply::record_update(
            Some(&old_storage),
            &mut new,
            &call.manager(),
            &info.api_version(),
            sub,
            &shape,
        );
    }
    let attrs = dynamic::Attributes {
        op: Operation::Update,
        info,
        sub,
        namespace: call.ns().filter(|_| info.namespaced),
        name,
        user: &call.user,
        old: Some(&old_storage),
        dry_run: dry,
    };
    warnings.extend(mutating_webhooks(rest, &attrs, &mut new).await?);
    validate(rest, info, &new)?;
    warnings.extend(validating_admission(rest, &attrs, &new).await?);
    let update_errs = strategy.validate_update(&new, &old_storage, sub);
    if !update_errs.is_empty() {
        let causes = update_errs
            .into_iter()
            .map(|f| cause(f.reason, &f.field, f.message))
            .collect();
        return Err(ApiError::invalid(info.group, info.kind, name, causes));
    }
    let key = object_key(info, call.ns(), name);
    // Removing the last finalizer of an object being deleted deletes it.
    if is_deleting(&new) && !has_finalizers(&*strategy, &new) {
        if dry {
            return Ok((Outcome::Deleted(new), warnings));
        }
        let deleted = rest
            .store
            .delete(&key, old_kv.mod_revision)
            .await
            .map_err(|e| map_conflict(info, name, e))?;
        let mut out = new;
        stamp(&mut out, deleted.revision);
        convert::to_version(info, &mut out);
        return Ok((Outcome::Deleted(out), warnings));
    }
    let mut cmp_new = new.clone();
    let mut cmp_old = old_storage.clone();
    for o in [&mut cmp_new, &mut cmp_old] {
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
    }
    if cmp_new == cmp_old || dry {
        // A no-op update does not write, as upstream: same resourceVersion.
        let mut out = if dry { new } else { old_storage };
        stamp(&mut out, old_kv.mod_revision);
        convert::to_version(info, &mut out);
        return Ok((Outcome::Stored(out), warnings));
    }
    let new = to_stored(rest, info, new).await?;
    let kv = rest
        .store
        .update(&key, encode(info, &new), old_kv.mod_revision)
        .await
        .map_err(|e| map_conflict(info, name, e))?;
    wait_established(rest, info, kv.mod_revision).await;
    Ok((Outcome::Stored(present(rest, info, &kv).await?), warnings))
}

/// An object about to be stored, at its storage version (a conversion
/// webhook's kinds are converted here; everything else already is).
async fn to_stored(rest: &Rest, info: &ResourceInfo, obj: Value) -> Result<Value, ApiError> {
    if !info.conversion_webhook {
        return Ok(obj);
    }
    let mut objs = [obj];
    rest.convert(info, &mut objs, &convert::storage_api_version(info))
        .await?;
    let [obj] = objs;
    Ok(obj)
}

fn is_deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

fn has_finalizers(strategy: &dyn registry::Strategy, obj: &Value) -> bool {
    let meta = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    meta || strategy.finalizers_pending(obj)
}

/// PUT to an object (or its status).
pub async fn update(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let want = h::negotiate(&call.headers)?;
    let status_only = matches!(call.route.subresource.as_deref(), Some("status"));
    // Without a resourceVersion the update is unconditional: a concurrent
    // write is retried against the new version, as upstream's
    // GuaranteedUpdate does, instead of surfacing a conflict the caller
    // never asked for.
    for _ in 0..16 {
        let new = body_object(call, bytes)?;
        let unconditional = new["metadata"]["resourceVersion"]
            .as_str()
            .is_none_or(str::is_empty);
        let (old, kv) = match rest.load(info, call.ns(), name).await {
            Ok(x) => x,
            Err(e)
                if e.code == 404
                    && rest.strategy(info).allow_create_on_update()
                    && !status_only =>
            {
                let (out, warnings) = create_object(rest, call, new).await?;
                let out = super::read::render_one(call, want, out);
                return Ok(with_warnings(h::json(201, &out), &warnings));
            }
            Err(e) => return Err(e),
        };
        match update_object(rest, call, name, new, &old, &kv, status_only).await {
            Ok((Outcome::Stored(out) | Outcome::Deleted(out), warnings)) => {
                let out = super::read::render_one(call, want, out);
                return Ok(with_warnings(h::json(200, &out), &warnings));
            }
            Err(e) if unconditional && is_write_race(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::retries_exhausted(info.group, info.plural, name))
}

/// A conflict from the store (another write won), not one the request
/// asked for with a precondition or an Invalid cause list.
fn is_write_race(e: &ApiError) -> bool {
    e.reason == "Conflict" && e.details.as_ref().is_none_or(|d| d.get("causes").is_none())
}

/// The content types PATCH accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn patch_type(call: &Call) -> Result<PatchType, ApiError> {
    let ct = call
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    match media {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
        ))),
    }
}

fn apply_patch(
    info: &ResourceInfo,
    kind: PatchType,
    current: &Value,
    bytes: &[u8],
) -> Result<Value, ApiError> {
    let bad =
        |e: &dyn std::fmt::Display| ApiError::bad_request(format!("error applying patch: {e}"));
    match kind {
        PatchType::Json => api::patch::json_patch(current, bytes).map_err(|e| {
            // A failed test operation or a missing path is a 422 upstream.
            ApiError::invalid(
                info.group,
                info.kind,
                current["metadata"]["name"].as_str().unwrap_or(""),
                vec![cause(
                    "FieldValueInvalid",
                    "",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )],
            )
        }),
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            Ok(api::patch::merge_patch(current, &p))
        }
        PatchType::Strategic => {
            let p: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a strategic merge patch must be a JSON object",
                ));
            }
            api::patch::strategic_merge_patch(current, &p, info.definition).map_err(|e| bad(&e))
        }
        PatchType::Apply => Err(ApiError::internal(
            "apply patches are handled by the apply path",
        )),
    }
}

/// PATCH to an object (or its status).
pub async fn patch(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let kind = patch_type(call)?;
    if kind == PatchType::Strategic && info.custom {
        return Err(ApiError::unsupported_media(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".to_string(),
        ));
    }
    let want = h::negotiate(&call.headers)?;
    let status_only = matches!(call.route.subresource.as_deref(), Some("status"));
    if kind == PatchType::Apply {
        return super::sub::apply(rest, call, name, bytes, status_only).await;
    }
    // Retry on conflicts: a patch applies to whatever is current, unless it
    // carries its own resourceVersion precondition.
    for _ in 0..16 {
        let (current, kv) = rest.load(info, call.ns(), name).await?;
        let patched = apply_patch(info, kind, &current, bytes)?;
        let has_precondition = patched["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| {
                rv != current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
            });
        let mut patched = patched;
        if !has_precondition {
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        match update_object(rest, call, name, patched, &current, &kv, status_only).await {
            Ok((Outcome::Stored(v) | Outcome::Deleted(v), warnings)) => {
                let v = super::read::render_one(call, want, v);
                return Ok(with_warnings(h::json(200, &v), &warnings));
            }
            Err(e) if e.reason == "Conflict" && !has_precondition => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::retries_exhausted(info.group, info.plural, name))
}

/// DeleteOptions from the body and query.
#[derive(Debug, Default)]
pub(super) struct DeleteOptions {
    pub grace: Option<i64>,
    pub policy: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

pub(super) fn delete_options(call: &Call, bytes: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions::default();
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        o.grace = v["gracePeriodSeconds"].as_i64();
        o.policy = v["propagationPolicy"].as_str().map(str::to_string);
        if v["orphanDependents"] == json!(true) && o.policy.is_none() {
            o.policy = Some("Orphan".into());
        }
        o.uid = v["preconditions"]["uid"].as_str().map(str::to_string);
        o.resource_version = v["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
    }
    if let Some(g) = call.query.int("gracePeriodSeconds")? {
        o.grace = Some(g);
    }
    if let Some(p) = call.query.get("propagationPolicy") {
        o.policy = Some(p.to_string());
    }
    if call.query.flag("orphanDependents") && o.policy.is_none() {
        o.policy = Some("Orphan".into());
    }
    if let Some(p) = &o.policy
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![cause(
                "FieldValueNotSupported",
                "propagationPolicy",
                format!(
                    "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            )],
        ));
    }
    Ok(o)
}

/// DELETE of one object.
pub async fn delete(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(call, bytes)?;
    let (code, obj) = delete_object(rest, call, name, &opts).await?;
    Ok(h::json(code, &obj))
}

/// Deletes (or starts deleting) one object; returns the HTTP code and the
/// object as left.
pub(super) async fn delete_object(
    rest: &Rest,
    call: &Call,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(u16, Value), ApiError> {
    let info = call.info();
    let dry = call.query.dry_run()?;
    let key = object_key(info, call.ns(), name);
    let mut already_checked = false;
    for _ in 0..16 {
        let (obj, kv) = rest.load(info, call.ns(), name).await?;
        if let Some(uid) = &opts.uid
            && obj["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict(
                info.group,
                info.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    obj["metadata"]["uid"].as_str().unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && obj["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return Err(ApiError::conflict(
                info.group,
                info.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    obj["metadata"]["resourceVersion"].as_str().unwrap_or("")
                ),
            ));
        }
        let mut updated = obj.clone();
        convert::to_storage(info, &mut updated);
        let mut finalizers: Vec<Value> = updated["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match opts.policy.as_deref() {
            Some("Foreground") if !finalizers.contains(&json!("foregroundDeletion")) => {
                finalizers.push(json!("foregroundDeletion"));
            }
            Some("Orphan") if !finalizers.contains(&json!("orphan")) => {
                finalizers.push(json!("orphan"))
            }
            _ => {}
        }
        if !already_checked {
            let attrs = dynamic::Attributes {
                op: Operation::Delete,
                info,
                sub: None,
                namespace: call.ns().filter(|_| info.namespaced),
                name,
                user: &call.user,
                old: Some(&obj),
                dry_run: dry,
            };
            validating_admission(rest, &attrs, &obj).await?;
            already_checked = true;
        }
        let strategy = rest.strategy(info);
        let ns_finalizers = strategy.finalizers_pending(&updated);
        let grace = strategy.graceful_delete_seconds(&updated, opts.grace);
        let already = is_deleting(&updated);
        if finalizers.is_empty() && !ns_finalizers && grace == 0 {
            if dry {
                return Ok((200, obj));
            }
            match rest.store.delete(&key, kv.mod_revision).await {
                Ok(d) => {
                    let mut out = present(rest, info, &d.prev).await?;
                    stamp(&mut out, d.prev.mod_revision);
                    // What was allocated for it is free again.
                    let ns = call.ns().unwrap_or("default");
                    let ctx = rest.admission_context();
                    admission::service_alloc::release(&ctx, info, &out, ns, name).await;
                    return Ok((200, out));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(map_conflict(info, name, e)),
            }
        }
        // Graceful or finalized deletion: mark the object and let its
        // owner (kubelet, namespace controller, garbage collector) finish.
        if already {
            let old_grace = updated["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0);
            if grace >= old_grace
                && updated["metadata"]["finalizers"].as_array().map(Vec::len)
                    == Some(finalizers.len())
            {
                return Ok((200, obj));
            }
        }
        let now = chrono::Utc::now();
        if !already
            || grace
                < updated["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(0)
        {
            let ts = (now + chrono::Duration::seconds(grace))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            updated["metadata"]["deletionTimestamp"] = json!(ts);
            updated["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        if !finalizers.is_empty() {
            updated["metadata"]["finalizers"] = Value::Array(finalizers);
        }
        strategy.prepare_for_delete(&mut updated);
        if strategy.tracks_generation() && !already {
            let g = updated["metadata"]["generation"].as_i64().unwrap_or(0);
            updated["metadata"]["generation"] = json!(g + 1);
        }
        if dry {
            convert::to_version(info, &mut updated);
            return Ok((200, updated));
        }
        let updated = to_stored(rest, info, updated).await?;
        match rest
            .store
            .update(&key, encode(info, &updated), kv.mod_revision)
            .await
        {
            Ok(kv) => return Ok((200, present(rest, info, &kv).await?)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(map_conflict(info, name, e)),
        }
    }
    Err(ApiError::retries_exhausted(info.group, info.plural, name))
}

/// DELETE of a collection.
pub async fn delete_collection(
    rest: &Rest,
    call: &Call,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let opts = delete_options(call, bytes)?;
    let items = super::read::list_objects(rest, call).await?;
    let mut deleted = Vec::new();
    for obj in items.items {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let sub_call = Call {
            route: crate::router::ResourceRoute {
                info,
                namespace: ns,
                name: Some(name.clone()),
                subresource: None,
                rest: String::new(),
                watch_prefix: false,
                custom: call.route.custom.clone(),
            },
            method: call.method.clone(),
            query: call.query.clone(),
            headers: call.headers.clone(),
            user: call.user.clone(),
        };
        match delete_object(rest, &sub_call, &name, &opts).await {
            Ok((_, o)) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h::json(
        200,
        &json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": {},
            "items": deleted,
        }),
    ))
}
