//! Node registry configuration in k3s's `registries.yaml` format, so k3s
//! users can bring theirs:
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000", "https://mirror.example"]
//! configs:
//!   "mirror.example":
//!     auth: {username: ann, password: s3cret}
//!     tls: {ca_file: /etc/ssl/mirror-ca.pem, insecure_skip_verify: false}
//! ```
//!
//! A registry's mirrors are tried in order, then the registry itself, as
//! containerd does. An `http://` endpoint is spoken to in plain HTTP; any
//! other registry only over TLS, except one on a loopback address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::ImageError;
use crate::pull::{Credentials, is_loopback_registry};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RegistriesConfig {
    /// Mirrors by registry host (`docker.io`, `registry.example:5000`,
    /// or `*` for every registry).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Credentials and TLS by registry or endpoint host.
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

/// One registry's mirrors.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Mirror {
    /// Endpoint URLs, tried in order.
    #[serde(default)]
    pub endpoint: Vec<String>,
}

/// Credentials and TLS settings for one host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct HostConfig {
    /// Registry credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Credentials as k3s accepts them: user and password, or `auth`
/// (base64 `user:password`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// base64 of `user:password`.
    #[serde(default)]
    pub auth: String,
}

/// TLS settings for one host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TlsConfig {
    /// A PEM bundle of CAs to trust besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (for tests and labs only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Where one pull attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to talk to.
    pub host: String,
    /// Whether plain HTTP is allowed there.
    pub plain_http: bool,
}

impl RegistriesConfig {
    /// Reads a `registries.yaml`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<RegistriesConfig, ImageError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml_ng::from_str(&text)
                .map_err(|e| ImageError::InvalidArchive(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ImageError::io(format!("reading {}", path.display()))(e)),
        }
    }

    /// The endpoints to try for `registry`, mirrors first.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mirrors = self
            .mirrors
            .get(registry)
            .or_else(|| self.mirrors.get("*"))
            .map(|m| m.endpoint.as_slice())
            .unwrap_or_default();
        let mut out: Vec<Endpoint> = mirrors
            .iter()
            .filter_map(|url| {
                let (plain_http, rest) = match url.split_once("://") {
                    Some(("http", rest)) => (true, rest),
                    Some((_, rest)) => (false, rest),
                    None => (false, url.as_str()),
                };
                let host = rest.split('/').next().unwrap_or("").to_string();
                (!host.is_empty()).then(|| Endpoint {
                    plain_http: plain_http || is_loopback_registry(&host),
                    host,
                })
            })
            .collect();
        let own = Endpoint {
            host: registry.to_string(),
            plain_http: is_loopback_registry(registry),
        };
        if !out.contains(&own) {
            out.push(own);
        }
        out
    }

    /// Credentials the node has for `host`.
    pub fn credentials(&self, host: &str) -> Option<Credentials> {
        let a = self.configs.get(host)?.auth.as_ref()?;
        if !a.username.is_empty() {
            return Some(Credentials {
                username: a.username.clone(),
                password: a.password.clone(),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&a.auth)
            .ok()?;
        let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    /// TLS settings for `host`.
    pub fn tls(&self, host: &str) -> Option<&TlsConfig> {
        self.configs.get(host)?.tls.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let cfg: RegistriesConfig = serde_yaml_ng::from_str(
            r#"
mirrors:
  docker.io:
    endpoint: ["http://10.0.0.5:5000", "https://mirror.example/v2"]
  "*":
    endpoint: ["https://all.example"]
configs:
  mirror.example:
    auth: {username: ann, password: s3cret}
  10.0.0.5:5000:
    auth: {auth: Ym9iOnB3}
    tls: {insecure_skip_verify: true}
"#,
        )
        .unwrap();
        let hosts: Vec<(String, bool)> = cfg
            .endpoints("docker.io")
            .into_iter()
            .map(|e| (e.host, e.plain_http))
            .collect();
        assert_eq!(
            hosts,
            [
                ("10.0.0.5:5000".to_string(), true),
                ("mirror.example".to_string(), false),
                ("docker.io".to_string(), false),
            ]
        );
        assert_eq!(cfg.endpoints("quay.io")[0].host, "all.example");
        assert_eq!(cfg.credentials("mirror.example").unwrap().username, "ann");
        assert_eq!(cfg.credentials("10.0.0.5:5000").unwrap().password, "pw");
        assert!(cfg.tls("10.0.0.5:5000").unwrap().insecure_skip_verify);
        assert_eq!(cfg.credentials("docker.io"), None);
        let none = RegistriesConfig::default();
        assert_eq!(
            none.endpoints("127.0.0.1:5000"),
            [Endpoint {
                host: "127.0.0.1:5000".into(),
                plain_http: true
            }]
        );
    }
}
