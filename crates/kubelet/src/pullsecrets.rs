//! Registry credentials for a pod's images, from its `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson` and the older `kubernetes.io/dockercfg`),
//! matched to the image's registry as the kubelet's credential keyring
//! matches them.

use base64::Engine;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use serde_json::Value;

/// The first credentials among the pod's pull secrets for `registry`
/// (`host[:port]`); None pulls anonymously. Secrets that are missing or
/// malformed are skipped, as upstream skips them.
pub async fn for_registry(
    client: &kube::Client,
    pod: &Pod,
    registry: &str,
) -> Option<image::Credentials> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let names = pod
        .spec
        .as_ref()?
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty());
    for name in names {
        let Ok(Some(secret)) = api.get_opt(&name).await else {
            tracing::warn!(secret = %name, "image pull secret not found");
            continue;
        };
        if let Some(c) = from_secret(&secret, registry) {
            return Some(c);
        }
    }
    None
}

/// Credentials for `registry` in one pull secret.
pub fn from_secret(secret: &Secret, registry: &str) -> Option<image::Credentials> {
    let data = secret.data.as_ref()?;
    let auths: Value = if let Some(b) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<Value>(&b.0).ok()?["auths"].clone()
    } else {
        serde_json::from_slice(&data.get(".dockercfg")?.0).ok()?
    };
    let (_, entry) = auths
        .as_object()?
        .iter()
        .find(|(key, _)| same_registry(key, registry))?;
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Some(image::Credentials {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str()?)
        .ok()?;
    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(image::Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// Whether a docker config key (`host`, `https://host/v1/`, …) names
/// `registry`; Docker Hub goes by several names.
fn same_registry(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host == registry || (hub(host) && hub(registry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(key: &str, json: &str) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn docker_config_entries_match_their_registry() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ann:s3cret");
        let s = secret(
            ".dockerconfigjson",
            &format!(r#"{{"auths": {{"https://127.0.0.1:5000/v1/": {{"auth": "{auth}"}}}}}}"#),
        );
        let c = from_secret(&s, "127.0.0.1:5000").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ann", "s3cret")
        );
        assert_eq!(from_secret(&s, "127.0.0.1:5001"), None);
        let old = secret(
            ".dockercfg",
            r#"{"index.docker.io": {"username": "bob", "password": "pw"}}"#,
        );
        assert_eq!(from_secret(&old, "docker.io").unwrap().username, "bob");
    }
}
