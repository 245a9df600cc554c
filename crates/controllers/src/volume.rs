//! PersistentVolume binder and the built-in `local-path` provisioner
//! (upstream's persistentvolume-binder controller, plus what k3s ships as
//! local-path-provisioner).
//!
//! - A claim with `spec.volumeName` is bound to that volume (pre-bound).
//! - Otherwise the smallest Available volume that fits is chosen: same
//!   storage class, every requested access mode, at least the requested
//!   size, the same volume mode, and the claim's selector.
//! - Failing that, a claim of a class whose provisioner is
//!   [`LOCAL_PATH_PROVISIONER`] gets a new hostPath volume under the
//!   class's `nodePath` (default `/var/lib/r8s/storage`) pinned to one
//!   node, pre-bound to the claim; the next pass binds it.
//! - A volume whose claim is gone is Released; a provisioned one with
//!   reclaim policy Delete is deleted, and the node agent removes its
//!   directory (finalizer [`LOCAL_PATH_CLEANUP`]) before it disappears.
//!
//! Departure from k3s: the class binds Immediately (k3s's is
//! WaitForFirstConsumer), so the node is chosen at provisioning time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::endpoints::wait_ready;
use crate::{Context, ControllerError};
use controller_runtime::{Informer, Queue};

/// The provisioner name of the built-in class (k3s's name, so manifests
/// written for k3s work unchanged).
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";
/// Finalizer the node agent removes once a provisioned directory is gone.
pub const LOCAL_PATH_CLEANUP: &str = "r8s.io/local-path-cleanup";
/// Where provisioned volumes live on the node unless the class says
/// otherwise (parameter `nodePath`).
pub const DEFAULT_NODE_PATH: &str = "/var/lib/r8s/storage";

const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";

/// Parses a quantity to bytes (0 when unparsable).
fn bytes(q: Option<&Quantity>) -> i128 {
    q.and_then(|q| api::quota::Qty::parse(&q.0))
        .map(|v| v.nanos.max(0))
        .unwrap_or(0)
}

fn requested(pvc: &PersistentVolumeClaim) -> i128 {
    bytes(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    )
}

fn capacity(pv: &PersistentVolume) -> i128 {
    bytes(
        pv.spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    )
}

fn class_of_pvc(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn class_of_pv(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn volume_mode(m: Option<&String>) -> &str {
    m.map(String::as_str).unwrap_or("Filesystem")
}

fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether `pv` may serve `pvc` (ignoring who it is bound to).
fn fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(ps), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    if pv.metadata.deletion_timestamp.is_some() || class_of_pv(pv) != class_of_pvc(pvc) {
        return false;
    }
    let have = ps.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return false;
    }
    if volume_mode(ps.volume_mode.as_ref()) != volume_mode(cs.volume_mode.as_ref()) {
        return false;
    }
    if capacity(pv) < requested(pvc) {
        return false;
    }
    if let Some(sel) = &cs.selector {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if !crate::disruption::selector_matches(sel, &labels) {
            return false;
        }
    }
    true
}

/// Whether `pv`'s claimRef names `pvc` (by uid when it has one).
fn claimed_by(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.namespace == pvc.metadata.namespace
        && r.name == pvc.metadata.name
        && (r.uid.is_none() || r.uid == pvc.metadata.uid)
}

/// Runs the binder until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let pvcs = ctx.informers.get::<PersistentVolumeClaim>();
    let pvs = ctx.informers.get::<PersistentVolume>();
    let classes = ctx.informers.get::<StorageClass>();
    let nodes = ctx.informers.get::<Node>();
    wait_ready(&pvcs).await;
    wait_ready(&pvs).await;
    wait_ready(&classes).await;
    wait_ready(&nodes).await;
    tracing::debug!("persistentvolume-binder caches synced");
    let q = Queue::named("claims");
    // Claims are keyed `claim/<ns>/<name>`, volumes `volume/<name>`.
    q.watch(&pvcs, |c: &PersistentVolumeClaim| {
        let mut keys = vec![format!(
            "claim/{}/{}",
            c.metadata.namespace.as_deref().unwrap_or_default(),
            c.metadata.name.as_deref().unwrap_or_default()
        )];
        // A deleted claim releases its volume.
        if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
            keys.push(format!("volume/{v}"));
        }
        keys
    });
    q.watch(&pvs, |v: &PersistentVolume| {
        let mut keys = vec![format!(
            "volume/{}",
            v.metadata.name.as_deref().unwrap_or_default()
        )];
        if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            keys.push(format!(
                "claim/{}/{}",
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            ));
        } else {
            // A volume became available: pending claims may fit it now.
            keys.push("pending".into());
        }
        keys
    });
    let b = Arc::new(Binder {
        client: ctx.client.clone(),
        pvcs,
        pvs,
        classes,
        nodes,
        recorder: ctx.recorder("persistentvolume-controller"),
    });
    let qq = q.clone();
    q.run(ctx.opts.workers, move |key: String| {
        let (b, q) = (b.clone(), qq.clone());
        async move {
            if key == "pending" {
                for c in b.pvcs.list() {
                    if c.spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_deref())
                        .is_none()
                    {
                        q.add(format!(
                            "claim/{}/{}",
                            c.metadata.namespace.as_deref().unwrap_or_default(),
                            c.metadata.name.as_deref().unwrap_or_default()
                        ));
                    }
                }
                return Ok(None);
            }
            if let Some(name) = key.strip_prefix("volume/") {
                return b.sync_volume(name).await;
            }
            if let Some(rest) = key.strip_prefix("claim/")
                && let Some((ns, name)) = rest.split_once('/')
            {
                return b.sync_claim(ns, name).await;
            }
            Ok(None)
        }
    })
    .await;
}

struct Binder {
    client: kube::Client,
    pvcs: Informer<PersistentVolumeClaim>,
    pvs: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    nodes: Informer<Node>,
    recorder: controller_runtime::events::Recorder,
}

type Sync = Result<Option<Duration>, ControllerError>;

impl Binder {
    async fn sync_claim(&self, ns: &str, name: &str) -> Sync {
        let Some(pvc) = self.pvcs.get(Some(ns), name) else {
            return Ok(None);
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let wanted = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
        if let Some(vol) = wanted.filter(|v| !v.is_empty()) {
            let Some(pv) = self.pvs.get(None, &vol) else {
                let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                let phase = if bound { "Lost" } else { "Pending" };
                self.claim_status(&pvc, phase, None).await?;
                return Ok(None);
            };
            if !claimed_by(&pv, &pvc) {
                if pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some()
                {
                    // Another claim has it: this one waits.
                    return self
                        .claim_status(&pvc, "Pending", None)
                        .await
                        .map(|()| None);
                }
                self.bind_volume(&pv, &pvc).await?;
                return Ok(None);
            }
            if pv_phase(&pv) != "Bound" {
                self.volume_phase(&pv, "Bound").await?;
            }
            return self
                .claim_status(&pvc, "Bound", Some(&pv))
                .await
                .map(|()| None);
        }

        // Unbound: a volume pre-bound to this claim, else the best fit.
        let mut candidates: Vec<Arc<PersistentVolume>> = self
            .pvs
            .list()
            .into_iter()
            .filter(|pv| fits(pv, &pvc))
            .filter(|pv| {
                let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                claim.is_none() || claimed_by(pv, &pvc)
            })
            .filter(|pv| matches!(pv_phase(pv), "Available" | "Pending") || claimed_by(pv, &pvc))
            .collect();
        candidates.sort_by_key(|pv| (!claimed_by(pv, &pvc), capacity(pv)));
        if let Some(pv) = candidates.first() {
            self.bind_volume(pv, &pvc).await?;
            self.bind_claim(&pvc, pv).await?;
            return Ok(None);
        }
        let class_name = class_of_pvc(&pvc);
        let class = (!class_name.is_empty())
            .then(|| self.classes.get(None, &class_name))
            .flatten();
        match class {
            Some(sc) if sc.provisioner == LOCAL_PATH_PROVISIONER => {
                self.provision(&pvc, &sc).await?;
                Ok(None)
            }
            Some(sc) => {
                // An external provisioner's job: say so, as upstream does.
                self.annotate_provisioner(&pvc, &sc.provisioner).await?;
                self.recorder.normal(
                    pvc.as_ref(),
                    "ExternalProvisioning",
                    format!(
                        "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator.",
                        sc.provisioner
                    ),
                );
                Ok(None)
            }
            None => {
                let msg = if class_name.is_empty() {
                    "no persistent volumes available for this claim and no storage class is set"
                        .to_string()
                } else {
                    format!("storageclass.storage.k8s.io \"{class_name}\" not found")
                };
                self.recorder.warning(pvc.as_ref(), "FailedBinding", msg);
                self.claim_status(&pvc, "Pending", None).await?;
                Ok(None)
            }
        }
    }

    async fn sync_volume(&self, name: &str) -> Sync {
        let Some(pv) = self.pvs.get(None, name) else {
            return Ok(None);
        };
        let Some(claim) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            if pv_phase(&pv) != "Available" && pv.metadata.deletion_timestamp.is_none() {
                self.volume_phase(&pv, "Available").await?;
            }
            return Ok(None);
        };
        let ns = claim.namespace.clone().unwrap_or_default();
        let cname = claim.name.clone().unwrap_or_default();
        let live = self
            .pvcs
            .get(Some(&ns), &cname)
            .filter(|c| claim.uid.is_none() || c.metadata.uid == claim.uid);
        if live.is_some() {
            return Ok(None); // the claim's pass binds it
        }
        if claim.uid.is_none() {
            // Pre-bound by name to a claim not created yet: stays Available.
            if pv_phase(&pv) != "Available" {
                self.volume_phase(&pv, "Available").await?;
            }
            return Ok(None);
        }
        // The claim is gone: reclaim.
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        if pv_phase(&pv) != "Released" && pv_phase(&pv) != "Failed" {
            self.volume_phase(&pv, "Released").await?;
        }
        if policy == "Delete" && pv.metadata.deletion_timestamp.is_none() {
            let provisioned = pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROVISIONED_BY))
                .is_some_and(|p| p == LOCAL_PATH_PROVISIONER);
            if provisioned {
                let api: Api<PersistentVolume> = Api::all(self.client.clone());
                match api.delete(name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                self.volume_phase(&pv, "Failed").await?;
                self.recorder.warning(
                    pv.as_ref(),
                    "VolumeFailedDelete",
                    "no volume plugin matched name: kubernetes.io/host-path".to_string(),
                );
            }
        }
        Ok(None)
    }

    async fn bind_volume(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), ControllerError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let name = pv.metadata.name.clone().unwrap_or_default();
        let mut ann = BTreeMap::new();
        if pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none()
        {
            ann.insert(BOUND_BY_CONTROLLER.to_string(), "yes".to_string());
        }
        let patch = json!({
            "metadata": {"annotations": ann},
            "spec": {"claimRef": {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": pvc.metadata.namespace,
                "name": pvc.metadata.name,
                "uid": pvc.metadata.uid,
                "resourceVersion": pvc.metadata.resource_version,
            }},
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
        )
        .await?;
        Ok(())
    }

    async fn bind_claim(
        &self,
        pvc: &PersistentVolumeClaim,
        pv: &PersistentVolume,
    ) -> Result<(), ControllerError> {
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({
            "metadata": {"annotations": {
                BIND_COMPLETED: "yes",
                BOUND_BY_CONTROLLER: "yes",
            }},
            "spec": {"volumeName": pv.metadata.name},
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.claim_status(pvc, "Bound", Some(pv)).await?;
        self.recorder.normal(
            pvc,
            "Bound",
            format!(
                "Successfully bound to volume {}",
                pv.metadata.name.as_deref().unwrap_or_default()
            ),
        );
        Ok(())
    }

    async fn claim_status(
        &self,
        pvc: &PersistentVolumeClaim,
        phase: &str,
        pv: Option<&PersistentVolume>,
    ) -> Result<(), ControllerError> {
        let cur = pvc.status.as_ref();
        let cur_phase = cur.and_then(|s| s.phase.as_deref());
        let mut status = json!({"phase": phase});
        if let Some(pv) = pv {
            let spec = pv.spec.clone().unwrap_or_default();
            status["capacity"] = json!(spec.capacity);
            status["accessModes"] = json!(spec.access_modes);
        }
        let same = cur_phase == Some(phase)
            && (pv.is_none() || cur.and_then(|s| s.capacity.as_ref()).is_some());
        if same {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
        );
        api.patch_status(
            pvc.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
        Ok(())
    }

    async fn volume_phase(
        &self,
        pv: &PersistentVolume,
        phase: &str,
    ) -> Result<(), ControllerError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api
            .patch_status(
                pv.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": phase}})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn annotate_provisioner(
        &self,
        pvc: &PersistentVolumeClaim,
        provisioner: &str,
    ) -> Result<(), ControllerError> {
        let has = pvc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STORAGE_PROVISIONER))
            .is_some_and(|p| p == provisioner);
        if has {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"annotations": {
            STORAGE_PROVISIONER: provisioner,
            BETA_STORAGE_PROVISIONER: provisioner,
        }}});
        api.patch(
            pvc.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Picks the node a new local volume lives on: a Ready, schedulable
    /// node, the one with the fewest provisioned volumes.
    fn pick_node(&self) -> Option<String> {
        let usable = |n: &Node| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
                && controller_runtime::node_ready(n)
        };
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for pv in self.pvs.list() {
            if let Some(n) = pinned_node(&pv) {
                *count.entry(n).or_default() += 1;
            }
        }
        self.nodes
            .list()
            .into_iter()
            .filter(|n| usable(n))
            .filter_map(|n| n.metadata.name.clone())
            .min_by_key(|n| (count.get(n).copied().unwrap_or(0), n.clone()))
    }

    async fn provision(
        &self,
        pvc: &PersistentVolumeClaim,
        sc: &StorageClass,
    ) -> Result<(), ControllerError> {
        self.annotate_provisioner(pvc, &sc.provisioner).await?;
        let Some(node) = self.pick_node() else {
            self.recorder.warning(
                pvc,
                "ProvisioningFailed",
                "no Ready node to place the volume on".to_string(),
            );
            return Err(ControllerError::Invalid(
                "no Ready node for a local volume".into(),
            ));
        };
        let uid = pvc.metadata.uid.clone().unwrap_or_default();
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let base = sc
            .parameters
            .as_ref()
            .and_then(|p| p.get("nodePath"))
            .cloned()
            .unwrap_or_else(|| DEFAULT_NODE_PATH.to_string());
        let pv_name = format!("pvc-{uid}");
        let spec = pvc.spec.clone().unwrap_or_default();
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned()
            .unwrap_or_else(|| Quantity("1Gi".into()));
        let pv: PersistentVolume = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
                "finalizers": [LOCAL_PATH_CLEANUP],
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": sc.metadata.name,
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {
                    "path": format!("{}/{pv_name}_{ns}_{name}", base.trim_end_matches('/')),
                    "type": "DirectoryOrCreate",
                },
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                    "key": "kubernetes.io/hostname", "operator": "In", "values": [node],
                }]}]}},
                "claimRef": {
                    "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": ns, "name": name, "uid": uid,
                },
            },
        }))
        .map_err(|e| ControllerError::Invalid(format!("building the volume: {e}")))?;
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                self.recorder.normal(
                    pvc,
                    "ProvisioningSucceeded",
                    format!("Successfully provisioned volume {pv_name} on node {node}"),
                );
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The node a local volume is pinned to by its node affinity, if any.
pub fn pinned_node(pv: &PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}
