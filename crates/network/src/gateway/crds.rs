//! The Gateway API's standard channel, installed at start as
//! `kubectl apply -f standard-install.yaml` would: the upstream
//! CustomResourceDefinitions of release v1.6.1 (`crds/`, taken unchanged
//! from kubernetes-sigs/gateway-api, Apache-2.0) and its safe-upgrades
//! ValidatingAdmissionPolicy. Upstream's own manifests rather than schemas
//! of our own: they are the API (field docs for `kubectl explain`,
//! defaults, CEL validations), and users and tools compare
//! `gateway.networking.k8s.io/bundle-version` against them.
//!
//! An installed CRD of an older standard-channel bundle is replaced; a
//! newer one, or any experimental-channel one, is the user's and is left
//! alone.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

/// The bundle installed.
pub const BUNDLE: &str = "v1.6.1";

const MANIFESTS: &[&str] = &[
    include_str!("crds/gateway.networking.k8s.io_gatewayclasses.yaml"),
    include_str!("crds/gateway.networking.k8s.io_gateways.yaml"),
    include_str!("crds/gateway.networking.k8s.io_httproutes.yaml"),
    include_str!("crds/gateway.networking.k8s.io_grpcroutes.yaml"),
    include_str!("crds/gateway.networking.k8s.io_referencegrants.yaml"),
    include_str!("crds/gateway.networking.k8s.io_backendtlspolicies.yaml"),
    include_str!("crds/gateway.networking.k8s.io_listenersets.yaml"),
    include_str!("crds/gateway.networking.k8s.io_tlsroutes.yaml"),
    include_str!("crds/gateway.networking.k8s.io_tcproutes.yaml"),
    include_str!("crds/gateway.networking.k8s.io_udproutes.yaml"),
    include_str!("crds/gateway.networking.k8s.io_vap_safeupgrades.yaml"),
];

/// `v1.2.3` as numbers (None for anything else, e.g. `v0.0.0-dev` tails).
fn version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.strip_prefix('v')?.split(['.', '-']);
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// Whether the installed object should be replaced by ours.
fn outdated(installed: &serde_json::Value) -> bool {
    let ann = &installed["metadata"]["annotations"];
    let channel = ann["gateway.networking.k8s.io/channel"].as_str();
    let bundle = ann["gateway.networking.k8s.io/bundle-version"].as_str();
    if channel.is_some_and(|c| c != "standard") {
        return false;
    }
    match (bundle.and_then(version), version(BUNDLE)) {
        (Some(have), Some(ours)) => have < ours,
        _ => bundle.is_none(),
    }
}

/// The documents of every manifest, as JSON.
pub fn documents() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for m in MANIFESTS {
        for doc in serde_yaml_ng::Deserializer::from_str(m) {
            match serde_json::Value::deserialize(doc) {
                Ok(v) if v.is_object() => out.push(v),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "gateway: embedded manifest does not parse"),
            }
        }
    }
    out
}

use serde::Deserialize;

fn api_for(client: &kube::Client, doc: &serde_json::Value) -> Option<Api<DynamicObject>> {
    let (group, version) = match doc["apiVersion"].as_str()?.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), doc["apiVersion"].as_str()?.to_string()),
    };
    let kind = doc["kind"].as_str()?;
    let plural = match kind {
        "CustomResourceDefinition" => "customresourcedefinitions",
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings",
        _ => return None,
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), plural);
    Some(Api::all_with(client.clone(), &ar))
}

/// Installs (or upgrades) every manifest; retries while the API server
/// is not ready. Errors are logged: the controller still serves whatever
/// is installed.
pub async fn install(client: &kube::Client) {
    for doc in documents() {
        let Some(api) = api_for(client, &doc) else {
            continue;
        };
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Ok(obj) = serde_json::from_value::<DynamicObject>(doc.clone()) else {
            continue;
        };
        for attempt in 0..30 {
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let Ok(have) = api.get(&name).await else {
                        break;
                    };
                    let have_json = serde_json::to_value(&have).unwrap_or_default();
                    if outdated(&have_json) {
                        let mut new = obj.clone();
                        new.metadata.resource_version = have.metadata.resource_version.clone();
                        match api.replace(&name, &PostParams::default(), &new).await {
                            Ok(_) => tracing::info!(%name, bundle = BUNDLE, "gateway: upgraded"),
                            Err(e) => tracing::warn!(%name, error = %e, "gateway: upgrading"),
                        }
                    }
                    break;
                }
                Err(e) => {
                    if attempt == 29 {
                        tracing::error!(%name, error = %e, "gateway: installing");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_parses_and_is_of_the_bundle() {
        let docs = documents();
        let crds: Vec<_> = docs
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .collect();
        assert_eq!(crds.len(), 10, "the standard channel's ten CRDs");
        for c in crds {
            assert_eq!(
                c["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"],
                BUNDLE
            );
            assert_eq!(
                c["metadata"]["annotations"]["gateway.networking.k8s.io/channel"],
                "standard"
            );
        }
    }

    #[test]
    fn only_older_standard_bundles_are_replaced() {
        let obj = |channel: &str, bundle: &str| {
            serde_json::json!({"metadata": {"annotations": {
                "gateway.networking.k8s.io/channel": channel,
                "gateway.networking.k8s.io/bundle-version": bundle}}})
        };
        assert!(outdated(&obj("standard", "v1.2.1")));
        assert!(!outdated(&obj("standard", "v1.6.1")));
        assert!(!outdated(&obj("standard", "v1.7.0")));
        assert!(!outdated(&obj("experimental", "v1.2.0")));
        assert!(outdated(&serde_json::json!({"metadata": {}})));
    }
}
