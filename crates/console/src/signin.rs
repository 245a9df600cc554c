//! `POST /ui/signin`: exchanges credentials for a console session.
//!
//! The body is JSON with one of `code` (the one-time link's), `token` (a
//! bearer token the API server already accepts, handed back unchanged),
//! or `kubeconfig` (its current context's user: a token, or an embedded
//! client certificate and key, which the API server's verifier checks).

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::{CertVerifier, Sessions, error};

pub(crate) fn sign_in(
    sessions: &Sessions,
    body: &Bytes,
    verify: CertVerifier<'_>,
) -> Response<Bytes> {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the sign-in request is not JSON: {e}"),
            );
        }
    };
    if let Some(code) = req["code"].as_str() {
        return match sessions.redeem(code) {
            Some((token, who)) => ok(&token, Some(&who.name)),
            None => error(
                StatusCode::UNAUTHORIZED,
                "this sign-in link was used already or has expired; sign in with a token or a kubeconfig",
            ),
        };
    }
    if let Some(token) = req["token"].as_str() {
        let token = token.trim();
        if token.is_empty() {
            return error(StatusCode::BAD_REQUEST, "token: Required value");
        }
        return ok(token, None);
    }
    if let Some(kc) = req["kubeconfig"].as_str() {
        return match from_kubeconfig(kc) {
            Ok(Credentials::Token(t)) => ok(&t, None),
            Ok(Credentials::Cert { cert, key }) => match verify(&cert, &key) {
                Ok(who) => {
                    let name = who.name.clone();
                    ok(&sessions.start(who), Some(&name))
                }
                Err(why) => error(
                    StatusCode::UNAUTHORIZED,
                    &format!("the kubeconfig's client certificate was not accepted: {why}"),
                ),
            },
            Err(why) => error(StatusCode::BAD_REQUEST, &format!("kubeconfig: {why}")),
        };
    }
    error(
        StatusCode::BAD_REQUEST,
        "give one of code, token or kubeconfig",
    )
}

fn ok(token: &str, user: Option<&str>) -> Response<Bytes> {
    crate::json(StatusCode::OK, &json!({"token": token, "user": user}))
}

/// What a kubeconfig's current user signs in with.
#[derive(Debug, PartialEq)]
enum Credentials {
    Token(String),
    Cert { cert: String, key: String },
}

fn from_kubeconfig(text: &str) -> Result<Credentials, String> {
    let kc: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let current = kc["current-context"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("current-context: Required value")?;
    let named = |list: &str, name: &str| -> Option<Value> {
        kc[list]
            .as_array()?
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .cloned()
    };
    let ctx = named("contexts", current)
        .ok_or_else(|| format!("contexts: no context named {current:?}"))?;
    let user_name = ctx["context"]["user"]
        .as_str()
        .ok_or_else(|| format!("contexts[{current}].context.user: Required value"))?;
    let user =
        named("users", user_name).ok_or_else(|| format!("users: no user named {user_name:?}"))?;
    let u = &user["user"];
    if let Some(t) = u["token"].as_str().filter(|t| !t.is_empty()) {
        return Ok(Credentials::Token(t.to_string()));
    }
    let data = |field: &str| -> Result<Option<String>, String> {
        let Some(b64) = u[field].as_str() else {
            return Ok(None);
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("users[{user_name}].user.{field}: not base64: {e}"))?;
        String::from_utf8(raw)
            .map(Some)
            .map_err(|_| format!("users[{user_name}].user.{field}: not PEM text"))
    };
    match (data("client-certificate-data")?, data("client-key-data")?) {
        (Some(cert), Some(key)) => Ok(Credentials::Cert { cert, key }),
        _ if u.get("client-certificate").is_some() || u.get("token-file").is_some() => {
            Err(format!(
                "users[{user_name}] names files the browser cannot read; embed them with `kubectl config view --raw --flatten --minify`"
            ))
        }
        _ => Err(format!(
            "users[{user_name}] has neither a token nor client-certificate-data and client-key-data"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    const KC: &str = r#"
apiVersion: v1
kind: Config
current-context: admin
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
contexts:
- {name: other, context: {cluster: c, user: someone}}
- {name: admin, context: {cluster: c, user: admin}}
users:
- {name: someone, user: {token: not-this-one}}
- name: admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"#;

    #[test]
    fn the_current_contexts_user_is_used() {
        assert_eq!(
            from_kubeconfig(KC),
            Ok(Credentials::Cert {
                cert: "CERT".into(),
                key: "KEY".into()
            })
        );
        let tok = KC.replace("current-context: admin", "current-context: other");
        assert_eq!(
            from_kubeconfig(&tok),
            Ok(Credentials::Token("not-this-one".into()))
        );
    }

    #[test]
    fn bad_kubeconfigs_say_what_is_wrong() {
        let e = from_kubeconfig("current-context: nope\ncontexts: []").unwrap_err();
        assert!(e.contains("no context named \"nope\""), "{e}");
        let files = KC.replace(
            "client-certificate-data: Q0VSVA==",
            "client-certificate: /x.crt",
        );
        let files = files.replace("client-key-data: S0VZ", "client-key: /x.key");
        let e = from_kubeconfig(&files).unwrap_err();
        assert!(e.contains("--flatten"), "{e}");
        let e = from_kubeconfig("{{{").unwrap_err();
        assert!(e.starts_with("not YAML"), "{e}");
    }

    #[test]
    fn a_verified_certificate_starts_a_session_and_a_rejected_one_is_401() {
        let s = Sessions::new(Identity {
            name: "a".into(),
            groups: vec![],
        });
        let accept = |c: &str, k: &str| -> Result<Identity, String> {
            assert_eq!((c, k), ("CERT", "KEY"));
            Ok(Identity {
                name: "jane".into(),
                groups: vec!["devs".into()],
            })
        };
        let body = Bytes::from(serde_json::to_vec(&json!({"kubeconfig": KC})).unwrap());
        let r = sign_in(&s, &body, &accept);
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["user"], "jane");
        let who = s.lookup(v["token"].as_str().unwrap()).unwrap();
        assert_eq!(who.groups, vec!["devs".to_string()]);
        let reject = |_: &str, _: &str| -> Result<Identity, String> { Err("unknown CA".into()) };
        let r = sign_in(&s, &body, &reject);
        assert_eq!(r.status(), 401);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert!(v["message"].as_str().unwrap().contains("unknown CA"));
    }
}
