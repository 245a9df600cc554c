//! The node's half of the built-in `local-path` provisioner: a provisioned
//! volume pinned to this node that is being deleted (reclaim policy
//! Delete, its claim gone) has its directory removed here, and then its
//! cleanup finalizer, so the volume object goes away only once the data
//! has.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams, Patch, PatchParams};

/// The finalizer the controllers put on provisioned volumes.
pub const CLEANUP_FINALIZER: &str = "r8s.io/local-path-cleanup";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

fn pinned_to(pv: &PersistentVolume, node: &str) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_some_and(|r| {
            r.node_selector_terms.iter().any(|t| {
                t.match_expressions.iter().flatten().any(|e| {
                    e.key == "kubernetes.io/hostname"
                        && e.operator == "In"
                        && e.values.iter().flatten().any(|v| v == node)
                })
            })
        })
}

/// Removes the directory of one volume being deleted; returns whether the
/// finalizer may go.
fn remove_dir(pv: &PersistentVolume) -> bool {
    let Some(path) = pv
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .map(|h| std::path::PathBuf::from(&h.path))
    else {
        return true;
    };
    // Only ever a directory the provisioner named after the volume.
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let ours = path
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| !name.is_empty() && f.starts_with(&format!("{name}_")));
    if !ours {
        tracing::warn!(volume = name, path = %path.display(), "not removing a path the provisioner did not name");
        return true;
    }
    match std::fs::remove_dir_all(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(volume = name, error = %e, "removing a local volume's directory");
            false
        }
    }
}

/// Polls for this node's provisioned volumes being deleted and cleans them
/// up; runs until the task is dropped.
pub async fn run(client: kube::Client, node: String) {
    let api: Api<PersistentVolume> = Api::all(client);
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for pv in list.items {
                let ours = pv.metadata.deletion_timestamp.is_some()
                    && pv
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == CLEANUP_FINALIZER)
                    && pv
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(PROVISIONED_BY))
                        .is_some()
                    && pinned_to(&pv, &node);
                if !ours || !remove_dir(&pv) {
                    continue;
                }
                let rest: Vec<String> = pv
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != CLEANUP_FINALIZER)
                    .cloned()
                    .collect();
                let name = pv.metadata.name.clone().unwrap_or_default();
                let patch = serde_json::json!({"metadata": {
                    "finalizers": rest,
                    "resourceVersion": pv.metadata.resource_version,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => tracing::info!(volume = %name, "local volume removed"),
                    Err(e) => {
                        tracing::warn!(volume = %name, error = %e, "releasing the cleanup finalizer")
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
