//! DefaultStorageClass: a new claim without a class gets the default one.

use api::catalogue::{self, ResourceInfo};
use serde_json::{Value, json};

use super::{Context, Operation, Plugin, Request};
use crate::error::ApiError;

/// Upstream's DefaultStorageClass plugin.
pub struct DefaultStorageClass;

#[async_trait::async_trait]
impl Plugin for DefaultStorageClass {
    fn name(&self) -> &'static str {
        "DefaultStorageClass"
    }

    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool {
        op == Operation::Create && info.group.is_empty() && info.plural == "persistentvolumeclaims"
    }

    async fn admit(
        &self,
        ctx: &Context<'_>,
        _req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        default_storage_class(ctx, obj).await
    }
}

/// The annotation that marks the default StorageClass.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Gives a claim without `storageClassName` the default StorageClass (the
/// newest one marked default), as upstream's DefaultStorageClass admission
/// plugin does. An explicit `""` means "no class" and is kept.
pub async fn default_storage_class(ctx: &Context<'_>, pvc: &mut Value) -> Result<(), ApiError> {
    if pvc["spec"]
        .get("storageClassName")
        .is_some_and(|v| !v.is_null())
    {
        return Ok(());
    }
    let info = catalogue::find("storage.k8s.io", "v1", "storageclasses")
        .ok_or_else(|| ApiError::internal("storageclasses missing from the catalogue"))?;
    let res = ctx.store.range(&info.storage_prefix(), None, 0, 0).await?;
    let default = res
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|sc| {
            let a = &sc["metadata"]["annotations"];
            a[DEFAULT_CLASS] == "true"
                || a["storageclass.beta.kubernetes.io/is-default-class"] == "true"
        })
        .max_by(|a, b| {
            let key = |o: &Value| {
                (
                    o["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
    if let (Some(sc), Some(spec)) = (default, pvc["spec"].as_object_mut()) {
        spec.insert("storageClassName".into(), sc["metadata"]["name"].clone());
    }
    Ok(())
}

/// The built-in default StorageClass: node-local directories under
/// `node_path`, provisioned by the controllers (k3s ships the same class).
pub fn local_path_storage_class(node_path: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "local-path",
            "annotations": {DEFAULT_CLASS: "true"},
        },
        "provisioner": "rancher.io/local-path",
        "parameters": {"nodePath": node_path},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    })
}
