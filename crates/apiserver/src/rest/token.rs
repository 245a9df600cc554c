//! `POST serviceaccounts/<name>/token` (TokenRequest) and bearer-token
//! authentication of service accounts (see [`crate::satoken`]).

use api::catalogue;
use http::Response;
use serde_json::{Value, json};

use super::{Call, Rest};
use crate::auth::User;
use crate::error::{ApiError, cause};
use crate::http::{self as h, Body};
use crate::satoken::{self, DEFAULT_EXPIRATION, MIN_EXPIRATION};

fn signer(rest: &Rest) -> Result<&satoken::Signer, ApiError> {
    rest.sa_signer
        .get()
        .map(|s| s.as_ref())
        .ok_or_else(|| ApiError::unavailable("the API server has no service-account signing key"))
}

fn invalid(name: &str, field: &str, msg: String) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![cause("FieldValueInvalid", field, msg)],
    )
}

/// Issues a token for service account `name`.
pub async fn request(
    rest: &Rest,
    call: &Call,
    name: &str,
    bytes: &[u8],
) -> Result<Response<Body>, ApiError> {
    let ns = call.ns().unwrap_or("default").to_string();
    let sa_info = catalogue::find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts missing from the catalogue"))?;
    let (sa, _) = rest.load(sa_info, Some(&ns), name).await?;
    let ct = call
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        h::decode_body(bytes, ct)?
    };
    let spec = &body["spec"];
    let expiration = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION);
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes".into(),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            "may not specify a duration larger than 2^32 seconds".into(),
        ));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let bound = &spec["boundObjectRef"];
    let mut pod = None;
    if bound.is_object() {
        let kind = bound["kind"].as_str().unwrap_or("");
        let bname = bound["name"].as_str().unwrap_or("");
        match kind {
            "Pod" => {
                let pod_info = catalogue::find("", "v1", "pods")
                    .ok_or_else(|| ApiError::internal("pods missing from the catalogue"))?;
                let (p, _) = rest.load(pod_info, Some(&ns), bname).await?;
                let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
                if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty())
                    && want != uid
                {
                    return Err(ApiError::conflict(
                        "",
                        "pods",
                        bname,
                        &format!(
                            "the UID in the bound object reference ({want}) does not match the UID in record ({uid}); the object might have been deleted and then recreated"
                        ),
                    ));
                }
                let sa_of_pod = p["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default");
                if sa_of_pod != name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                    )));
                }
                pod = Some((bname.to_string(), uid));
            }
            other => {
                return Err(invalid(
                    name,
                    "spec.boundObjectRef.kind",
                    format!("supported values: \"Pod\" (got {other:?})"),
                ));
            }
        }
    }
    let claims = satoken::claims(
        &sa,
        &ns,
        &audiences,
        expiration,
        pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
    );
    let token = signer(rest)?.sign(&claims).map_err(ApiError::internal)?;
    let exp = claims["exp"].as_i64().unwrap_or(0);
    let exp_ts = k8s_openapi::jiff::Timestamp::from_second(exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut out_spec = json!({
        "audiences": claims["aud"],
        "expirationSeconds": expiration,
        "boundObjectRef": if bound.is_object() { bound.clone() } else { Value::Null },
    });
    if !bound.is_object()
        && let Some(m) = out_spec.as_object_mut()
    {
        m.remove("boundObjectRef");
    }
    Ok(h::json(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": exp_ts},
        }),
    ))
}

/// The service account a bearer token names, if it is valid now: signed
/// by us, not expired, and its service account (and bound pod) still the
/// ones it was issued for.
pub async fn authenticate(rest: &Rest, token: &str) -> Result<User, String> {
    let claims = rest
        .sa_signer
        .get()
        .ok_or("no signing key")?
        .verify(token)?;
    let k = &claims["kubernetes.io"];
    let ns = k["namespace"].as_str().ok_or("no namespace claim")?;
    let sa_name = k["serviceaccount"]["name"]
        .as_str()
        .ok_or("no serviceaccount claim")?;
    let sa_info = catalogue::find("", "v1", "serviceaccounts").ok_or("no serviceaccounts")?;
    let (sa, _) = rest
        .load(sa_info, Some(ns), sa_name)
        .await
        .map_err(|_| format!("service account {ns}/{sa_name} has been deleted"))?;
    if sa["metadata"]["uid"] != k["serviceaccount"]["uid"] {
        return Err(format!("service account {ns}/{sa_name} was recreated"));
    }
    if let Some(pname) = k["pod"]["name"].as_str() {
        let pod_info = catalogue::find("", "v1", "pods").ok_or("no pods")?;
        let (p, _) = rest
            .load(pod_info, Some(ns), pname)
            .await
            .map_err(|_| format!("pod {ns}/{pname} has been deleted"))?;
        if p["metadata"]["uid"] != k["pod"]["uid"] {
            return Err(format!("pod {ns}/{pname} was recreated"));
        }
    }
    let mut user = User::new(
        format!("system:serviceaccount:{ns}:{sa_name}"),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    );
    user.uid = sa["metadata"]["uid"].as_str().unwrap_or("").to_string();
    // As upstream, a pod-bound token says which pod (and node) holds it.
    for (key, v) in [
        ("authentication.kubernetes.io/pod-name", &k["pod"]["name"]),
        ("authentication.kubernetes.io/pod-uid", &k["pod"]["uid"]),
        ("authentication.kubernetes.io/node-name", &k["node"]["name"]),
        ("authentication.kubernetes.io/node-uid", &k["node"]["uid"]),
    ] {
        if let Some(s) = v.as_str() {
            user.extra.insert(key.to_string(), vec![s.to_string()]);
        }
    }
    Ok(user)
}
