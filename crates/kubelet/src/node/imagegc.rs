//! Image garbage collection under disk pressure, as upstream's kubelet
//! does it: when the image file system is fuller than the high threshold,
//! images no pod on this node uses, and that have been unused for at least
//! the minimum age, are removed (least recently used first) until usage is
//! below the low threshold. An image a pod of this node names (pending or
//! running) or a container still holds is never removed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// Thresholds and timing (upstream's flags of the same meaning).
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Collect when disk usage is above this percentage.
    pub high_percent: u8,
    /// Collect down to this percentage.
    pub low_percent: u8,
    /// How often to check.
    pub period: Duration,
    /// An image must have been unused this long to be collected.
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
            period: Duration::from_secs(300),
            min_age: Duration::from_secs(120),
        }
    }
}

/// Percentage of the file system holding `dir` in use.
fn usage_percent(dir: &Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    let total = s.blocks() as f64;
    if total == 0.0 {
        return None;
    }
    Some(100.0 * (total - s.blocks_available() as f64) / total)
}

/// Digests and image IDs in use: images named by this node's pods, and
/// the images of containers still on disk.
async fn in_use(
    client: &kube::Client,
    node: &str,
    store: &image::ImageStore,
    containers_dir: &Path,
) -> Result<HashSet<String>, String> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| e.to_string())?;
    let mut used = HashSet::new();
    for p in list.items {
        let spec = p.spec.unwrap_or_default();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            if let Some(img) = &c.image
                && let Ok(info) = store.inspect(img)
            {
                used.insert(info.digest);
                used.insert(info.id);
            }
        }
    }
    for e in std::fs::read_dir(containers_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(b) = std::fs::read(e.path().join("meta.json"))
            && let Ok(m) = serde_json::from_slice::<serde_json::Value>(&b)
            && let Some(id) = m["imageID"].as_str()
        {
            used.insert(id.to_string());
        }
    }
    Ok(used)
}

/// One pass; returns the images removed.
async fn collect(
    client: &kube::Client,
    node: &str,
    store: &image::ImageStore,
    containers_dir: &Path,
    policy: GcPolicy,
    unused_since: &mut HashMap<String, Instant>,
) -> Vec<String> {
    let used = match in_use(client, node, store, containers_dir).await {
        Ok(u) => u,
        // Without knowing what pods need, remove nothing.
        Err(e) => {
            tracing::debug!(error = %e, "image gc skipped");
            return Vec::new();
        }
    };
    let images = store.list().unwrap_or_default();
    let now = Instant::now();
    unused_since.retain(|d, _| images.iter().any(|i| &i.digest == d));
    let mut candidates = Vec::new();
    for i in &images {
        if used.contains(&i.digest) || used.contains(&i.id) {
            unused_since.remove(&i.digest);
            continue;
        }
        let since = *unused_since.entry(i.digest.clone()).or_insert(now);
        if now.duration_since(since) >= policy.min_age {
            candidates.push((since, i.digest.clone(), i.references.clone()));
        }
    }
    let Some(usage) = usage_percent(store.root()) else {
        return Vec::new();
    };
    if usage <= f64::from(policy.high_percent) || candidates.is_empty() {
        return Vec::new();
    }
    candidates.sort();
    let mut removed = Vec::new();
    for (_, digest, refs) in candidates {
        if store.remove(&digest).is_ok() {
            let _ = store.gc(&used);
            unused_since.remove(&digest);
            tracing::info!(%digest, references = ?refs, usage, "image garbage-collected");
            removed.push(digest);
        }
        if usage_percent(store.root()).is_some_and(|u| u < f64::from(policy.low_percent)) {
            break;
        }
    }
    removed
}

/// Runs image GC every period until the task is dropped.
pub async fn run(
    client: kube::Client,
    node: String,
    store: image::ImageStore,
    containers_dir: std::path::PathBuf,
    policy: GcPolicy,
) {
    let mut unused_since = HashMap::new();
    loop {
        tokio::time::sleep(policy.period).await;
        collect(
            &client,
            &node,
            &store,
            &containers_dir,
            policy,
            &mut unused_since,
        )
        .await;
    }
}
