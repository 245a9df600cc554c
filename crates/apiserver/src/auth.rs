//! Authentication: who is asking. Client certificates signed by the cluster
//! CA name a user (CN) and groups (O); everything else is anonymous.

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name, e.g. `system:admin`.
    pub name: String,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
}

impl User {
    /// The anonymous user.
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// A user from a verified client certificate.
    pub fn from_cert(name: String, mut groups: Vec<String>) -> User {
        groups.push("system:authenticated".into());
        User { name, groups }
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}

/// Paths anonymous users may read, as upstream's `system:public-info-viewer`
/// role allows.
pub fn public_path(path: &str) -> bool {
    // `/cacerts` and the join endpoint are how a node without credentials
    // gets them; the join itself checks the token.
    matches!(
        path,
        "/version" | "/healthz" | "/livez" | "/readyz" | "/cacerts" | "/r8s/v1/join"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// matched without regard to case, as upstream's bearer token
/// authenticator does (the Python client sends `bearer`).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(super::bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("bearer abc "), Some("abc"));
        assert_eq!(super::bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(super::bearer_token("Basic abc"), None);
        assert_eq!(super::bearer_token("Bearer "), None);
    }
}
