//! Subresources: status, scale, binding, eviction, namespace finalize, and
//! the node-facing routes (log, exec, attach, port-forward, proxy), plus
//! server-side apply.

use http::{Method, Response};
use serde_json::{Value, json};

use super::write::{self, Outcome};
use super::{Call, Rest};
use crate::error::{ApiError, cause};
use crate::http::{self as h, Body};

/// Serves `/<name>/<sub>`.
pub async fn serve(
    rest: &Rest,
    call: &Call,
    sub: &str,
    body: crate::http::RequestBody,
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let name = call
        .route
        .name
        .as_deref()
        .ok_or_else(|| ApiError::no_route("a subresource needs an object name"))?;
    match (sub, &call.method) {
        ("status" | "finalize" | "ephemeralcontainers" | "resize" | "approval", &Method::GET) => {
            super::read::get(rest, call, name).await
        }
        ("status" | "ephemeralcontainers" | "resize" | "approval", &Method::PUT)
        | ("finalize", &Method::PUT) => {
            let bytes = h::read_body(body, &call.headers).await?;
            write::update(rest, call, name, &bytes).await
        }
        ("status" | "ephemeralcontainers" | "resize" | "approval", &Method::PATCH) => {
            let bytes = h::read_body(body, &call.headers).await?;
            write::patch(rest, call, name, &bytes).await
        }
        ("scale", &Method::GET) => {
            let (obj, _) = rest.load(info, call.ns(), name).await?;
            Ok(h::json(200, &scale_of(call, info, &obj)))
        }
        ("scale", &Method::PUT | &Method::PATCH) => {
            let bytes = h::read_body(body, &call.headers).await?;
            scale_write(rest, call, name, &bytes).await
        }
        ("token", &Method::POST) if info.plural == "serviceaccounts" => {
            let bytes = h::read_body(body, &call.headers).await?;
            super::token::request(rest, call, name, &bytes).await
        }
        ("binding", &Method::POST) => {
            let bytes = h::read_body(body, &call.headers).await?;
            bind(rest, call, name, &bytes).await
        }
        ("eviction", &Method::POST) => {
            let bytes = h::read_body(body, &call.headers).await?;
            evict(rest, call, name, &bytes).await
        }
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => {
            node_route(rest, call, name).await
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {}/{sub})",
            call.method, info.plural
        ))),
    }
}

/// Decodes a subresource body per its content type (client-go sends
/// bindings, evictions and scales as protobuf).
fn body_of(call: &Call, bytes: &[u8]) -> Result<Value, ApiError> {
    let ct = call
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    h::decode_body(bytes, ct)
}

/// A path like `.spec.replicas` as a JSON pointer.
fn pointer(path: &str) -> String {
    path.replace('.', "/")
}

/// The Scale of a custom object, read through the definition's paths.
fn custom_scale_of(scale: &api::crd::Scale, obj: &Value) -> Value {
    let spec = obj
        .pointer(&pointer(&scale.spec_replicas_path))
        .and_then(Value::as_i64);
    let status = obj
        .pointer(&pointer(&scale.status_replicas_path))
        .and_then(Value::as_i64);
    let selector = scale
        .label_selector_path
        .as_deref()
        .and_then(|p| obj.pointer(&pointer(p)))
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut status_json = json!({"replicas": status.unwrap_or(0)});
    if !selector.is_empty() {
        status_json["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": spec.unwrap_or(0)},
        "status": status_json,
    })
}

/// Sets `value` at a `.a.b` path, creating objects on the way.
fn set_path(obj: &mut Value, path: &str, value: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == parts.len() {
            cur[*p] = value;
            return;
        }
        cur = &mut cur[*p];
    }
}

fn scale_of(call: &Call, info: &api::catalogue::ResourceInfo, obj: &Value) -> Value {
    if let Some(scale) = call
        .route
        .custom
        .as_ref()
        .and_then(|c| c.version().scale.as_ref())
    {
        return custom_scale_of(scale, obj);
    }
    let selector = match &obj["spec"]["selector"] {
        // ReplicationControllers have a plain map selector.
        Value::Object(m)
            if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") =>
        {
            selector_string(&json!({"matchLabels": obj["spec"]["selector"]}))
        }
        s => selector_string(s),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or_else(|| api::registry::strategy(info).default_scale_replicas())},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// Renders a LabelSelector as the string form Scale.status.selector uses.
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel["matchLabels"].as_object() {
        let mut kv: Vec<_> = ml.iter().collect();
        kv.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in kv {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str().unwrap_or("") {
            "In" => parts.push(format!("{key} in ({})", vals.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

async fn scale_write(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    for _ in 0..16 {
        let (obj, kv) = rest.load(info, call.ns(), name).await?;
        let current = scale_of(call, info, &obj);
        let scale = if call.method == Method::PATCH {
            let ct = call
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let p = h::decode_body(bytes, "application/json")?; // patches are JSON
            if ct.starts_with("application/json-patch+json") {
                api::patch::json_patch(&current, bytes)
                    .map_err(|e| ApiError::bad_request(format!("error applying patch: {e}")))?
            } else {
                api::patch::merge_patch(&current, &p)
            }
        } else {
            body_of(call, bytes)?
        };
        let Some(replicas) = scale["spec"]["replicas"].as_i64() else {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![cause(
                    "FieldValueRequired",
                    "spec.replicas",
                    "Required value",
                )],
            ));
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![cause(
                    "FieldValueInvalid",
                    "spec.replicas",
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        if let Some(rv) = scale["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && Some(rv) != obj["metadata"]["resourceVersion"].as_str()
            && call.method == Method::PUT
        {
            return Err(ApiError::conflict(
                info.group,
                info.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut new = obj.clone();
        match call
            .route
            .custom
            .as_ref()
            .and_then(|c| c.version().scale.as_ref())
        {
            Some(sc) => set_path(&mut new, &sc.spec_replicas_path, json!(replicas)),
            None => new["spec"]["replicas"] = json!(replicas),
        }
        let main_call = Call {
            route: crate::router::ResourceRoute {
                subresource: None,
                ..call.route.clone()
            },
            method: Method::PUT,
            query: call.query.clone(),
            headers: call.headers.clone(),
            user: call.user.clone(),
        };
        match write::update_object(rest, &main_call, name, new, &obj, &kv, false).await {
            Ok((Outcome::Stored(v) | Outcome::Deleted(v), _)) => {
                return Ok(h::json(200, &scale_of(call, info, &v)));
            }
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::retries_exhausted(info.group, info.plural, name))
}

async fn bind(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let binding = body_of(call, bytes)?;
    let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            vec![cause("FieldValueRequired", "target.name", "Required value")],
        ));
    }
    for _ in 0..16 {
        let (pod, kv) = rest.load(info, call.ns(), name).await?;
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        let mut new = pod.clone();
        new["spec"]["nodeName"] = json!(node);
        let mut conditions: Vec<Value> = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": super::now_rfc3339()}));
        new["status"]["conditions"] = Value::Array(conditions);
        let key = super::object_key(info, call.ns(), name);
        let mut stored = new;
        if let Some(m) = stored["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        match rest
            .store
            .update(
                &key,
                serde_json::to_vec(&stored).unwrap_or_default(),
                kv.mod_revision,
            )
            .await
        {
            Ok(_) => {
                return Ok(h::json(
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ));
            }
            Err(store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::retries_exhausted("", "pods", name))
}

async fn evict(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let eviction = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        body_of(call, bytes)?
    };
    super::evict::evict(rest, call, name, &eviction).await
}

async fn node_route(rest: &Rest, call: &Call, name: &str) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let (obj, _) = rest.load(info, call.ns(), name).await?;
    if info.plural == "pods" && call.route.subresource.as_deref() == Some("log") {
        return super::node_proxy::pod_log(rest, call, name, &obj).await;
    }
    if info.plural == "nodes"
        && call.route.subresource.as_deref() == Some("proxy")
        && call.method == http::Method::GET
    {
        return super::node_proxy::node_get(rest, call, name).await;
    }
    if info.plural == "pods" {
        let node = obj["spec"]["nodeName"].as_str().unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        return Err(ApiError::unavailable(format!(
            "no node agent connection to node {node} is available for pods/{}",
            call.route.subresource.as_deref().unwrap_or("")
        )));
    }
    Err(ApiError::unavailable(format!(
        "{}/{} is not connected to a node agent",
        info.plural,
        call.route.subresource.as_deref().unwrap_or("")
    )))
}

/// Server-side apply (`application/apply-patch+yaml`).
pub async fn apply(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
    status_only: bool,
) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let applied = h::decode_body(bytes, "application/yaml")?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "error decoding apply patch: the body must be an object",
        ));
    }
    if call.query.get("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires fieldManager to be set",
        ));
    }
    let force = call.query.flag("force");
    for _ in 0..16 {
        let current = match rest.load(info, call.ns(), name).await {
            Ok(x) => Some(x),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        match current {
            None => {
                if status_only {
                    return Err(ApiError::not_found(info.group, info.plural, name));
                }
                let mut obj = applied.clone();
                if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                    obj["metadata"]["name"] = json!(name);
                }
                let shape = crate::shape::SchemaShape::root(info.definition);
                let obj = crate::apply::apply(None, &obj, &call.manager(), force, None, &shape)?;
                let (out, _) = write::create_object(rest, call, obj).await?;
                let out = super::read::render_one(call, h::negotiate(&call.headers)?, out);
                return Ok(h::json(201, &out));
            }
            Some((live, kv)) => {
                let shape = crate::shape::SchemaShape::root(info.definition);
                let sub = call.route.subresource.as_deref();
                let mut merged = crate::apply::apply(
                    Some(&live),
                    &applied,
                    &call.manager(),
                    force,
                    sub,
                    &shape,
                )?;
                merged["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
                match write::update_object(rest, call, name, merged, &live, &kv, status_only).await
                {
                    Ok((Outcome::Stored(v) | Outcome::Deleted(v), _)) => {
                        let v = super::read::render_one(call, h::negotiate(&call.headers)?, v);
                        return Ok(h::json(200, &v));
                    }
                    Err(e)
                        if e.reason == "Conflict"
                            && e.details
                                .as_ref()
                                .is_some_and(|d| d.get("causes").is_none()) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(ApiError::retries_exhausted(info.group, info.plural, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_strings() {
        let s = json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [{"key": "c", "operator": "In", "values": ["x", "y"]}]});
        assert_eq!(selector_string(&s), "a=1,b=2,c in (x,y)");
    }
}
