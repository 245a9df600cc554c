//! Pod volumes prepared on the host before containers start: emptyDir
//! (disk, or tmpfs for `medium: Memory`), hostPath, configMap, secret
//! (always on tmpfs, never on disk) and downwardAPI. Projected files are
//! written with upstream's atomic layout: a timestamped directory, a
//! `..data` symlink to it, and per-key symlinks through `..data`, so an
//! update is one rename.

pub mod localpath;
pub mod mounts;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;

use crate::KubeletError;

fn err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> KubeletError {
    move |e| KubeletError::Volume(format!("{what}: {e}"))
}

use crate::mounts::is_mount_point as mounted;

fn tmpfs(dir: &Path, size: Option<i64>) -> Result<(), KubeletError> {
    if mounted(dir) {
        return Ok(());
    }
    let opts = match size {
        Some(b) => format!("mode=0755,size={b}"),
        None => "mode=0755".to_string(),
    };
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| KubeletError::Volume(format!("mounting tmpfs on {}: {e}", dir.display())))
}

/// Writes `files` (relative path → bytes, mode) atomically into `dir`.
pub fn write_atomic(
    dir: &Path,
    files: &BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), KubeletError> {
    use std::os::unix::fs::PermissionsExt;
    let stamp = format!(
        "..{}",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir_all(&ts_dir).map_err(err(format!("creating {}", ts_dir.display())))?;
    for (rel, (bytes, mode)) in files {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(KubeletError::Volume(format!(
                "invalid path {rel:?} in volume"
            )));
        }
        let p = ts_dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(err("creating volume subdirectory"))?;
        }
        std::fs::write(&p, bytes).map_err(err(format!("writing {}", p.display())))?;
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode));
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(err("linking ..data_tmp"))?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp_link, dir.join("..data")).map_err(err("swapping ..data"))?;
    // Top-level entries point through ..data.
    let tops: std::collections::BTreeSet<&str> =
        files.keys().filter_map(|k| k.split('/').next()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)
                .map_err(err(format!("linking {}", link.display())))?;
        }
    }
    // Remove keys that went away, and the previous generation.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(name.as_str()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn project(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
    optional: bool,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, KubeletError> {
    let mode = default_mode.unwrap_or(0o644) as u32;
    let mut out = BTreeMap::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            (v.clone(), it.mode.map(|m| m as u32).unwrap_or(mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(KubeletError::Volume(format!(
                            "configuration key {:?} not found in {what}",
                            it.key
                        )));
                    }
                }
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k, (v, mode));
            }
        }
    }
    Ok(out)
}

async fn configmap_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: Option<i32>,
    optional: bool,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, KubeletError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = match api.get_opt(name).await? {
        Some(cm) => cm,
        None if optional => return Ok(BTreeMap::new()),
        None => {
            return Err(KubeletError::Volume(format!(
                "configmap {name:?} not found"
            )));
        }
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        data.insert(k, v.0);
    }
    project(data, items, mode, &format!("configmap {name:?}"), optional)
}

async fn secret_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: Option<i32>,
    optional: bool,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, KubeletError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = match api.get_opt(name).await? {
        Some(s) => s,
        None if optional => return Ok(BTreeMap::new()),
        None => return Err(KubeletError::Volume(format!("secret {name:?} not found"))),
    };
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    project(data, items, mode, &format!("secret {name:?}"), optional)
}

/// Value of a downward API field path.
pub fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let st = pod.status.as_ref();
    let sp = pod.spec.as_ref();
    let bracket =
        |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<Option<String>> {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(map.and_then(|m| m.get(key).cloned()))
        };
    if let Some(v) = bracket("metadata.labels['", m.labels.as_ref()) {
        return v;
    }
    if let Some(v) = bracket("metadata.annotations['", m.annotations.as_ref()) {
        return v;
    }
    let kv = |map: Option<&BTreeMap<String, String>>| {
        map.map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "metadata.labels" => kv(m.labels.as_ref()),
        "metadata.annotations" => kv(m.annotations.as_ref()),
        "spec.nodeName" => sp.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => sp.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => st.and_then(|s| s.pod_ip.clone()),
        "status.podIPs" => st.and_then(|s| {
            s.pod_ips
                .as_ref()
                .map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
        }),
        "status.hostIP" => st.and_then(|s| s.host_ip.clone()),
        "status.hostIPs" => st.and_then(|s| {
            s.host_ips
                .as_ref()
                .map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
        }),
        _ => None,
    }
}

/// Checks (or creates) a hostPath as its `type` asks.
fn host_path(path: &str, kind: Option<&str>) -> Result<PathBuf, KubeletError> {
    let p = PathBuf::from(path);
    match kind.unwrap_or("") {
        "DirectoryOrCreate" => {
            std::fs::create_dir_all(&p).map_err(err(format!("creating {}", p.display())))?
        }
        "FileOrCreate" if !p.exists() => {
            if let Some(parent) = p.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::write(&p, b"").map_err(err(format!("creating {}", p.display())))?;
        }
        "Directory" if !p.is_dir() => {
            return Err(KubeletError::Volume(format!(
                "hostPath type check failed: {} is not a directory",
                p.display()
            )));
        }
        "File" if !p.is_file() => {
            return Err(KubeletError::Volume(format!(
                "hostPath type check failed: {} is not a file",
                p.display()
            )));
        }
        _ => {}
    }
    Ok(p)
}

/// The host directory behind a bound claim: its volume's hostPath or local
/// path. An unbound claim is an error the pod worker retries, as upstream's
/// kubelet waits for binding.
async fn claim_path(client: &kube::Client, ns: &str, claim: &str) -> Result<PathBuf, KubeletError> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let pvcs: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(client.clone(), ns);
    let pvc = pvcs
        .get_opt(claim)
        .await
        .map_err(|e| KubeletError::Volume(format!("reading claim {ns}/{claim}: {e}")))?
        .ok_or_else(|| {
            KubeletError::Volume(format!("persistentvolumeclaim \"{claim}\" not found"))
        })?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(pv_name) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| bound && !n.is_empty())
    else {
        return Err(KubeletError::Volume(format!(
            "persistentvolumeclaim \"{claim}\" is not bound"
        )));
    };
    let pvs: kube::Api<PersistentVolume> = kube::Api::all(client.clone());
    let pv = pvs
        .get(&pv_name)
        .await
        .map_err(|e| KubeletError::Volume(format!("reading volume {pv_name}: {e}")))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = spec.host_path {
        return host_path(&hp.path, hp.type_.as_deref());
    }
    if let Some(local) = spec.local {
        let p = PathBuf::from(&local.path);
        if !p.exists() {
            return Err(KubeletError::Volume(format!(
                "local volume {pv_name}: {} does not exist",
                p.display()
            )));
        }
        return Ok(p);
    }
    Err(KubeletError::Volume(format!(
        "volume {pv_name}: only hostPath and local persistent volumes are supported by this node"
    )))
}

/// The files of a configMap, secret, downwardAPI or projected volume as
/// they should be now (None for other kinds).
async fn atomic_files(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    v: &Volume,
    dir: &Path,
) -> Result<Option<BTreeMap<String, (Vec<u8>, u32)>>, KubeletError> {
    if let Some(cm) = &v.config_map {
        let files = configmap_files(
            client,
            ns,
            &cm.name,
            cm.items.as_ref(),
            cm.default_mode,
            cm.optional == Some(true),
        )
        .await?;
        return Ok(Some(files));
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let files = secret_files(
            client,
            ns,
            &name,
            s.items.as_ref(),
            s.default_mode,
            s.optional == Some(true),
        )
        .await?;
        return Ok(Some(files));
    }
    if let Some(d) = &v.downward_api {
        let mut files = BTreeMap::new();
        for it in d.items.iter().flatten() {
            if let Some(f) = &it.field_ref {
                let val = field_value(pod, &f.field_path).unwrap_or_default();
                let mode = it.mode.or(d.default_mode).unwrap_or(0o644) as u32;
                files.insert(it.path.clone(), (val.into_bytes(), mode));
            }
        }
        return Ok(Some(files));
    }
    if let Some(p) = &v.projected {
        let mut files = BTreeMap::new();
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                files.extend(
                    configmap_files(
                        client,
                        ns,
                        &cm.name,
                        cm.items.as_ref(),
                        p.default_mode,
                        cm.optional == Some(true),
                    )
                    .await?,
                );
            }
            if let Some(s) = &src.secret {
                files.extend(
                    secret_files(
                        client,
                        ns,
                        &s.name,
                        s.items.as_ref(),
                        p.default_mode,
                        s.optional == Some(true),
                    )
                    .await?,
                );
            }
            if let Some(t) = &src.service_account_token {
                let existing = std::fs::read(dir.join("..data").join(&t.path)).ok();
                let token = match existing.filter(|b| token_fresh(b)) {
                    Some(b) => b,
                    None => request_token(client, pod, ns, t).await?,
                };
                files.insert(
                    t.path.clone(),
                    (token, p.default_mode.unwrap_or(0o644) as u32),
                );
            }
            if let Some(d) = &src.downward_api {
                for it in d.items.iter().flatten() {
                    if let Some(f) = &it.field_ref {
                        let val = field_value(pod, &f.field_path).unwrap_or_default();
                        files.insert(
                            it.path.clone(),
                            (
                                val.into_bytes(),
                                it.mode.or(p.default_mode).unwrap_or(0o644) as u32,
                            ),
                        );
                    }
                }
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// Whether a token is young enough to keep: upstream's kubelet renews at
/// 80% of its lifetime (or after 24 hours).
fn token_fresh(jwt: &[u8]) -> bool {
    use base64::Engine;
    let claims = std::str::from_utf8(jwt)
        .ok()
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let Some(c) = claims else { return false };
    let (Some(iat), Some(exp)) = (c["iat"].as_i64(), c["exp"].as_i64()) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let renew_at = iat + ((exp - iat) * 4 / 5).min(24 * 3600);
    now < renew_at
}

/// A token for the pod's service account, bound to the pod (TokenRequest).
async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> Result<Vec<u8>, KubeletError> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": t.audience.iter().collect::<Vec<_>>(),
            "expirationSeconds": t.expiration_seconds.unwrap_or(3600),
            "boundObjectRef": {
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid,
            },
        },
    });
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
    let tr: TokenRequest = api
        .create_subresource("token", &sa, &kube::api::PostParams::default(), &body)
        .await
        .map_err(|e| KubeletError::Volume(format!("requesting a token for {ns}/{sa}: {e}")))?;
    Ok(tr.status.map(|s| s.token).unwrap_or_default().into_bytes())
}

/// What `dir/..data` holds now: relative path → bytes.
fn current_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if let (Ok(rel), Ok(bytes)) = (p.strip_prefix(base), std::fs::read(&p)) {
                out.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    let data = dir.join("..data");
    walk(&data, &data, &mut out);
    out
}

/// Brings the pod's configMap, secret, downwardAPI and projected volumes
/// up to date, swapping `..data` atomically where anything changed (as
/// upstream's kubelet does on its sync). A source that cannot be read now
/// (deleted, API unreachable) leaves the files as they are.
pub async fn refresh(client: &kube::Client, pod: &Pod, pod_dir: &Path) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let vols: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in vols {
        let dir = pod_dir.join("volumes").join(&v.name);
        let files = match atomic_files(client, pod, &ns, &v, &dir).await {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(volume = %v.name, error = %e, "volume refresh skipped");
                continue;
            }
        };
        let want: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(k, (b, _))| (k.clone(), b.clone()))
            .collect();
        if current_files(&dir) == want {
            continue;
        }
        match write_atomic(&dir, &files) {
            Ok(()) => tracing::info!(volume = %v.name, "volume updated"),
            Err(e) => tracing::warn!(volume = %v.name, error = %e, "volume update failed"),
        }
    }
}

/// Prepares every volume of the pod under `pod_dir/volumes`; returns the
/// host directory of each by name.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<HashMap<String, PathBuf>, KubeletError> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut out = HashMap::new();
    let vols: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in &vols {
        if let Some(kind) = unsupported_source(v) {
            return Err(KubeletError::Volume(format!(
                "MountVolume.SetUp failed for volume \"{}\" : volume type {kind:?} is not supported by this node",
                v.name
            )));
        }
    }
    for v in vols {
        // Image volumes need the image store: the pod worker mounts them.
        if v.image.is_some() {
            continue;
        }
        let dir = pod_dir.join("volumes").join(&v.name);
        if let Some(hp) = &v.host_path {
            let p = host_path(&hp.path, hp.type_.as_deref())?;
            out.insert(v.name.clone(), p);
            continue;
        }
        if let Some(claim) = &v.persistent_volume_claim {
            let p = claim_path(client, &ns, &claim.claim_name).await?;
            out.insert(v.name.clone(), p);
            continue;
        }
        // A volume an older agent left on disk stays there: running
        // containers hold bind mounts of that directory, and a tmpfs over
        // it would hide later updates (a rotated token) from them.
        let fresh = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
        std::fs::create_dir_all(&dir).map_err(err(format!("creating {}", dir.display())))?;
        if let Some(ed) = &v.empty_dir {
            if ed.medium.as_deref() == Some("Memory") {
                let size = ed.size_limit.as_ref().and_then(crate::resources::bytes);
                tmpfs(&dir, size)?;
            }
        } else if let Some(files) = atomic_files(client, pod, &ns, &v, &dir).await? {
            if v.secret.is_some() || (v.projected.is_some() && (fresh || mounted(&dir))) {
                // Secrets and projected volumes (service-account tokens)
                // never touch the disk: upstream backs both with memory.
                tmpfs(&dir, None)?;
            }
            write_atomic(&dir, &files)?;
        }
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// The source of `v` if this node cannot provide it: rather than hand the
/// containers an empty directory where they expect their data, the pod
/// waits with the reason in an event and its status.
fn unsupported_source(v: &Volume) -> Option<&'static str> {
    let supported = v.host_path.is_some()
        || v.persistent_volume_claim.is_some()
        || v.empty_dir.is_some()
        || v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
        || v.image.is_some();
    if supported {
        return None;
    }
    let value = serde_json::to_value(v).ok()?;
    let kind = value
        .as_object()?
        .keys()
        .find(|k| *k != "name")
        .map(String::as_str)
        .unwrap_or("");
    // A static name for the message: the sources upstream knows.
    const KNOWN: &[&str] = &[
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "csi",
        "ephemeral",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "iscsi",
        "nfs",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "rbd",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    ];
    Some(
        KNOWN
            .iter()
            .find(|k| **k == kind)
            .copied()
            .unwrap_or("unknown"),
    )
}

/// Mounts an image's layers (bottom first) read-only on `dir`: an overlay
/// of them, or a read-only bind of a single layer (overlayfs wants two
/// lower layers when it has no upper one).
pub fn mount_image(dir: &Path, layers: &[PathBuf]) -> Result<(), KubeletError> {
    use nix::mount::{MsFlags, mount};
    std::fs::create_dir_all(dir).map_err(err(format!("creating {}", dir.display())))?;
    if mounted(dir) {
        return Ok(());
    }
    let sys = |what: String| {
        move |source| KubeletError::Sys {
            context: what,
            source,
        }
    };
    match layers {
        [] => Err(KubeletError::Volume("the image has no layers".into())),
        [one] => {
            mount(Some(one), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(sys(
                format!("binding {} on {}", one.display(), dir.display()),
            ))?;
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(sys(format!("making {} read-only", dir.display())))
        }
        many => {
            let lower: Vec<String> = many.iter().rev().map(|l| l.display().to_string()).collect();
            let opts = format!("lowerdir={}", lower.join(":"));
            mount(
                Some("overlay"),
                dir,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(opts.as_str()),
            )
            .map_err(sys(format!(
                "mounting the image overlay on {}",
                dir.display()
            )))
        }
    }
}

/// Unmounts tmpfs volumes under the pod directory.
pub fn cleanup(pod_dir: &Path) {
    let vols = pod_dir.join("volumes");
    if let Ok(rd) = std::fs::read_dir(&vols) {
        for e in rd.flatten() {
            let p = e.path();
            if mounted(&p) {
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_the_node_cannot_provide_are_named() {
        let vol = |v: serde_json::Value| -> Volume { serde_json::from_value(v).unwrap() };
        assert_eq!(
            unsupported_source(&vol(
                serde_json::json!({"name": "d", "nfs": {"server": "s", "path": "/"}})
            )),
            Some("nfs")
        );
        assert_eq!(
            unsupported_source(&vol(
                serde_json::json!({"name": "d", "csi": {"driver": "x"}})
            )),
            Some("csi")
        );
        assert_eq!(
            unsupported_source(&vol(serde_json::json!({"name": "d", "emptyDir": {}}))),
            None
        );
        assert_eq!(
            unsupported_source(&vol(
                serde_json::json!({"name": "d", "configMap": {"name": "c"}})
            )),
            None
        );
    }

    #[test]
    fn atomic_writes_swap_data_and_drop_removed_keys() {
        let d = tempfile::tempdir().unwrap();
        let mut f = BTreeMap::new();
        f.insert("a".to_string(), (b"1".to_vec(), 0o644));
        f.insert("b".to_string(), (b"2".to_vec(), 0o644));
        write_atomic(d.path(), &f).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "1");
        std::thread::sleep(std::time::Duration::from_millis(2));
        f.remove("b");
        f.insert("a".to_string(), (b"updated".to_vec(), 0o644));
        write_atomic(d.path(), &f).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("a")).unwrap(),
            "updated"
        );
        assert!(!d.path().join("b").exists());
        let gens = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(gens, 1, "the previous generation is removed");
    }
}
