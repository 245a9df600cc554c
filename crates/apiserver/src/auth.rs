//! Authentication: who is asking. Client certificates signed by the cluster
//! CA name a user (CN) and groups (O); everything else is anonymous.

use std::collections::BTreeMap;

/// An authenticated (or anonymous) user, as upstream's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// User name, e.g. `system:admin`.
    pub name: String,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
    /// A unique id (service accounts: the account's uid), may be empty.
    pub uid: String,
    /// Further facts from the authenticator (a service account token's
    /// pod), by key.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user with a name and groups.
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> User {
        User {
            name: name.into(),
            groups,
            ..User::default()
        }
    }

    /// The anonymous user.
    pub fn anonymous() -> User {
        User::new("system:anonymous", vec!["system:unauthenticated".into()])
    }

    /// A user from a verified client certificate.
    pub fn from_cert(name: String, mut groups: Vec<String>) -> User {
        groups.push("system:authenticated".into());
        User::new(name, groups)
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}

/// Paths served to anyone without authorization: how a node without
/// credentials gets the CA and joins (the join checks its own token).
/// Everything else, `/healthz` and `/version` included, is authorized
/// (upstream's `system:public-info-viewer` lets anonymous users read
/// those).
pub fn public_path(path: &str) -> bool {
    matches!(path, "/cacerts" | "/r8s/v1/join")
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// matched without regard to case, as upstream's bearer token
/// authenticator does (the Python client sends `bearer`).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The subprotocol prefix that carries a bearer token on a WebSocket
/// (base64url without padding after it), as upstream's
/// `websocket/protocol.go`.
const WS_BEARER_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// Takes a bearer token out of `Sec-WebSocket-Protocol`: returns it and
/// leaves the other protocols in the header, so the token goes no further
/// (not to the kubelet, not into the protocol the server picks).
pub fn take_websocket_bearer(headers: &mut http::HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let value = headers
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?;
    let mut token = None;
    let mut rest = Vec::new();
    for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match p.strip_prefix(WS_BEARER_PREFIX) {
            Some(enc) => {
                token = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(enc.trim_end_matches('='))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
            }
            None => rest.push(p.to_string()),
        }
    }
    token.as_ref()?;
    match http::HeaderValue::from_str(&rest.join(", ")) {
        Ok(v) if !rest.is_empty() => {
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        _ => {
            headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
        }
    }
    token
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_websocket_token_is_taken_out_of_the_protocols() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            // "abc.d" in base64url
            "v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.YWJjLmQ"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            super::take_websocket_bearer(&mut h).as_deref(),
            Some("abc.d")
        );
        assert_eq!(h[http::header::SEC_WEBSOCKET_PROTOCOL], "v4.channel.k8s.io");
        let mut none = http::HeaderMap::new();
        none.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "v4.channel.k8s.io".parse().unwrap(),
        );
        assert_eq!(super::take_websocket_bearer(&mut none), None);
        assert_eq!(
            none[http::header::SEC_WEBSOCKET_PROTOCOL],
            "v4.channel.k8s.io"
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(super::bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("bearer abc "), Some("abc"));
        assert_eq!(super::bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(super::bearer_token("Basic abc"), None);
        assert_eq!(super::bearer_token("Bearer "), None);
    }
}
