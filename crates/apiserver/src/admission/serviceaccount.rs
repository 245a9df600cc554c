//! ServiceAccount: a new pod runs as a service account (`default` unless
//! named) and gets its token, CA and namespace mounted.

use api::catalogue::{self, ResourceInfo};
use serde_json::{Value, json};

use super::{Context, Operation, Plugin, Request};
use crate::error::ApiError;

/// Upstream's ServiceAccount plugin.
pub struct ServiceAccount;

#[async_trait::async_trait]
impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool {
        op == Operation::Create && super::is_pods(info)
    }

    /// The service account name is the requester's to own (it is recorded
    /// in managedFields with the rest of the request).
    fn default(&self, obj: &mut Value) {
        default_service_account(obj);
    }

    async fn admit(
        &self,
        ctx: &Context<'_>,
        _req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        service_account_pull_secrets(ctx, obj).await;
        service_account_volume(ctx, obj).await
    }
}

/// A pod that names no `imagePullSecrets` gets its service account's, as
/// upstream's plugin copies them.
async fn service_account_pull_secrets(ctx: &Context<'_>, pod: &mut Value) {
    if pod["spec"]["imagePullSecrets"]
        .as_array()
        .is_some_and(|s| !s.is_empty())
    {
        return;
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let sa_name = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let Some(info) = catalogue::find("", "v1", "serviceaccounts") else {
        return;
    };
    let Ok((sa, _)) = ctx.load(info, Some(ns), sa_name).await else {
        return;
    };
    if let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|s| !s.is_empty()) {
        pod["spec"]["imagePullSecrets"] = Value::Array(secrets.clone());
    }
}

/// A pod without a service account runs as `default` (both the field and
/// its deprecated alias are set, as upstream shows them).
fn default_service_account(pod: &mut Value) {
    let spec = &mut pod["spec"];
    let name = spec["serviceAccountName"]
        .as_str()
        .or_else(|| spec["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(name);
    spec["serviceAccount"] = json!(name);
}

/// Where pods find their service-account credentials.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's token volume: unless the pod or
/// its service account opts out (`automountServiceAccountToken: false`),
/// a projected `kube-api-access-<suffix>` volume (a bound token, the
/// cluster CA from `kube-root-ca.crt` and the namespace) mounted read-only
/// at [`SA_MOUNT_PATH`] in every container, as upstream adds it.
pub async fn service_account_volume(ctx: &Context<'_>, pod: &mut Value) -> Result<(), ApiError> {
    let spec = &pod["spec"];
    if spec["automountServiceAccountToken"] == false {
        return Ok(());
    }
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let sa_name = spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    if let Some(info) = catalogue::find("", "v1", "serviceaccounts")
        && let Ok((sa, _)) = ctx.load(info, Some(&ns), &sa_name).await
        && sa["automountServiceAccountToken"] == false
    {
        return Ok(());
    }
    let containers = |s: &Value| {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|k| s[*k].as_array().cloned().unwrap_or_default())
            .collect::<Vec<Value>>()
    };
    let mounted = containers(&pod["spec"]).iter().any(|c| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == SA_MOUNT_PATH))
    });
    if mounted {
        return Ok(());
    }
    let suffix: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(5)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    let spec = &mut pod["spec"];
    match spec["volumes"].as_array_mut() {
        Some(v) => v.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    for key in ["initContainers", "containers"] {
        // get_mut: indexing a missing key mutably would store a null.
        let list = spec.get_mut(key).and_then(Value::as_array_mut);
        for c in list.into_iter().flatten() {
            let m = json!({"name": name, "readOnly": true, "mountPath": SA_MOUNT_PATH});
            match c["volumeMounts"].as_array_mut() {
                Some(ms) => ms.push(m),
                None => c["volumeMounts"] = json!([m]),
            }
        }
    }
    Ok(())
}
