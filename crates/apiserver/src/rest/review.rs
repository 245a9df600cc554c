//! The review APIs: questions answered by the server and never stored.
//! SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectRulesReview
//! (`kubectl auth can-i --list`), SubjectAccessReview and
//! LocalSubjectAccessReview (asked about someone else), TokenReview (is
//! this token valid, and whose is it) and SelfSubjectReview (`kubectl auth
//! whoami`).

use std::collections::BTreeMap;

use api::catalogue::ResourceInfo;
use http::Response;
use serde_json::{Map, Value, json};

use super::{Call, Rest};
use crate::auth::User;
use crate::authz::{Attributes, Decision};
use crate::error::{ApiError, cause};
use crate::http::{self as h, Body};

/// Whether `info` is one of the review kinds.
pub fn is_review(info: &ResourceInfo) -> bool {
    info.group == "authorization.k8s.io"
        || (info.group == "authentication.k8s.io"
            && matches!(info.plural, "tokenreviews" | "selfsubjectreviews"))
}

/// Answers a review (`POST` of one of the review kinds).
pub async fn serve(rest: &Rest, call: &Call, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let info = call.info();
    let ct = call
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mut review: Value = if bytes.is_empty() {
        json!({})
    } else {
        h::decode_body(bytes, ct)?
    };
    if !review.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {} must be an object",
            info.kind
        )));
    }
    review["apiVersion"] = json!(info.api_version());
    review["kind"] = json!(info.kind);
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    let status = match info.plural {
        "selfsubjectaccessreviews" => access(rest, info, &call.user, &review["spec"], None).await?,
        "localsubjectaccessreviews" => {
            let ns = call.ns().unwrap_or("");
            let asked = review["spec"]["resourceAttributes"]["namespace"]
                .as_str()
                .unwrap_or("");
            if asked.is_empty() {
                review["spec"]["resourceAttributes"]["namespace"] = json!(ns);
            } else if asked != ns {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}"
                )));
            }
            review["metadata"]["namespace"] = json!(ns);
            let subject = subject_of(info, &review["spec"])?;
            access(rest, info, &subject, &review["spec"], Some(ns)).await?
        }
        "subjectaccessreviews" => {
            let subject = subject_of(info, &review["spec"])?;
            access(rest, info, &subject, &review["spec"], None).await?
        }
        "selfsubjectrulesreviews" => {
            let ns = review["spec"]["namespace"].as_str().unwrap_or("");
            rules(rest, &call.user, ns)
        }
        "selfsubjectreviews" => json!({"userInfo": user_info(&call.user)}),
        "tokenreviews" => token(rest, &review["spec"]).await,
        other => {
            return Err(ApiError::not_found(info.group, other, ""));
        }
    };
    review["status"] = status;
    Ok(h::json(201, &review))
}

fn invalid(info: &ResourceInfo, field: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        info.group,
        info.kind,
        "",
        vec![cause("FieldValueRequired", field, msg.to_string())],
    )
}

/// The user a (Local)SubjectAccessReview asks about.
fn subject_of(info: &ResourceInfo, spec: &Value) -> Result<User, ApiError> {
    let name = spec["user"].as_str().unwrap_or("");
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            info,
            "spec.user",
            "at least one of user or group must be specified",
        ));
    }
    let mut user = User::new(name, groups);
    user.uid = spec["uid"].as_str().unwrap_or("").to_string();
    user.extra = extra_of(&spec["extra"]);
    Ok(user)
}

fn extra_of(v: &Value) -> BTreeMap<String, Vec<String>> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, vs)| {
                    let vals = vs
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    (k.clone(), vals)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Decides an access review's question for `user`.
async fn access(
    rest: &Rest,
    info: &ResourceInfo,
    user: &User,
    spec: &Value,
    ns: Option<&str>,
) -> Result<Value, ApiError> {
    let res = &spec["resourceAttributes"];
    let non = &spec["nonResourceAttributes"];
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let attrs = match (res.is_object(), non.is_object()) {
        (true, false) => Attributes::resource(
            user,
            &s(res, "verb"),
            ns.unwrap_or(res["namespace"].as_str().unwrap_or("")),
            &s(res, "group"),
            &s(res, "resource"),
            &s(res, "subresource"),
            &s(res, "name"),
        ),
        (false, true) => Attributes::path(user, &s(non, "verb"), &s(non, "path")),
        _ => {
            return Err(ApiError::invalid(
                info.group,
                info.kind,
                "",
                vec![cause(
                    "FieldValueInvalid",
                    "spec.resourceAttributes",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified"
                        .to_string(),
                )],
            ));
        }
    };
    Ok(match rest.authz.authorize(&rest.store, &attrs).await {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) => json!({"allowed": false, "denied": true, "reason": reason}),
        Decision::NoOpinion => json!({"allowed": false}),
    })
}

/// What `user` may do in `ns`, as SubjectRulesReviewStatus.
fn rules(rest: &Rest, user: &User, ns: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rest.authz.rules_for(user, ns) {
        if r.non_resource_urls.is_empty() {
            let mut m = Map::new();
            m.insert("verbs".into(), json!(r.verbs));
            m.insert("apiGroups".into(), json!(r.api_groups));
            m.insert("resources".into(), json!(r.resources));
            if !r.resource_names.is_empty() {
                m.insert("resourceNames".into(), json!(r.resource_names));
            }
            resource_rules.push(Value::Object(m));
        } else {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        // A node's access to its pods' objects is decided per object.
        "incomplete": user.name.starts_with("system:node:"),
    })
}

fn user_info(user: &User) -> Value {
    let mut v = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        v["extra"] = json!(user.extra);
    }
    v
}

/// Authenticates a token as a bearer token would be.
async fn token(rest: &Rest, spec: &Value) -> Value {
    let token = spec["token"].as_str().unwrap_or("");
    match super::token::authenticate(rest, token).await {
        Ok(user) => {
            let audiences = spec["audiences"].clone();
            let mut status = json!({"authenticated": true, "user": user_info(&user)});
            if audiences.as_array().is_some_and(|a| !a.is_empty()) {
                status["audiences"] = audiences;
            }
            status
        }
        Err(why) => {
            json!({"authenticated": false, "error": format!("[invalid bearer token, {why}]")})
        }
    }
}
