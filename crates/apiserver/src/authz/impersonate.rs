//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the
//! `Impersonate-*` headers make a request run as another user, when the
//! caller may `impersonate` that user, each group, the uid and each extra
//! value, as upstream's impersonation filter.

use std::collections::BTreeMap;

use http::HeaderMap;
use store::SharedStore;

use super::{Attributes, Authorizer};
use crate::auth::User;
use crate::error::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// Whether the request asks to impersonate anyone.
pub fn requested(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k == USER || k == GROUP || k == UID || k.starts_with(EXTRA)
    })
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The user the request runs as: `caller`, or the one the headers name
/// if `caller` may impersonate them.
pub async fn apply(
    authz: &Authorizer,
    store: &SharedStore,
    headers: &HeaderMap,
    caller: User,
) -> Result<User, ApiError> {
    if !requested(headers) {
        return Ok(caller);
    }
    let name = values(headers, USER)
        .first()
        .copied()
        .unwrap_or("")
        .to_string();
    let groups: Vec<String> = values(headers, GROUP)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let uid = values(headers, UID)
        .first()
        .copied()
        .unwrap_or("")
        .to_string();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix(EXTRA)
            && let Ok(v) = v.to_str()
        {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .into_owned();
            extra.entry(key).or_default().push(v.to_string());
        }
    }
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "requested {} without impersonating a user",
            if !groups.is_empty() {
                format!("groups {groups:?}")
            } else if !uid.is_empty() {
                format!("uid {uid:?}")
            } else {
                "user extra".to_string()
            }
        )));
    }

    // Every part of the new identity must be allowed.
    let sa: Option<(String, String)> = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
        .map(|(ns, n)| (ns.to_string(), n.to_string()));
    let mut checks: Vec<Attributes> = Vec::new();
    checks.push(match &sa {
        Some((ns, sa)) => {
            Attributes::resource(&caller, "impersonate", ns, "", "serviceaccounts", "", sa)
        }
        None => Attributes::resource(&caller, "impersonate", "", "", "users", "", &name),
    });
    for g in &groups {
        checks.push(Attributes::resource(
            &caller,
            "impersonate",
            "",
            "",
            "groups",
            "",
            g,
        ));
    }
    if !uid.is_empty() {
        checks.push(Attributes::resource(
            &caller,
            "impersonate",
            "",
            "authentication.k8s.io",
            "uids",
            "",
            &uid,
        ));
    }
    for (k, vs) in &extra {
        for v in vs {
            checks.push(Attributes::resource(
                &caller,
                "impersonate",
                "",
                "authentication.k8s.io",
                "userextras",
                k,
                v,
            ));
        }
    }
    for a in &checks {
        authz.check(store, a).await?;
    }

    let mut user = User {
        name,
        groups,
        uid,
        extra,
    };
    if let Some((ns, _)) = sa
        && user.groups.is_empty()
    {
        user.groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    let add = if user.name == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    // Asking for `system:unauthenticated` keeps `system:authenticated` out.
    let unauthenticated = user.groups.iter().any(|g| g == "system:unauthenticated");
    let has = user.groups.iter().any(|g| g == add);
    let keep_out = add == "system:authenticated" && unauthenticated;
    if !has && !keep_out {
        user.groups.push(add.to_string());
    }
    Ok(user)
}
