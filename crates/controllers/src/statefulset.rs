//! The StatefulSet controller, as upstream's: pods `<set>-<ordinal>` with
//! stable hostnames under `serviceName`, PVCs from `volumeClaimTemplates`
//! (`<claim>-<set>-<ordinal>`, created before the pod, retained by default),
//! OrderedReady or Parallel management, RollingUpdate (highest ordinal
//! first, down to `partition`) or OnDelete, and ControllerRevisions
//! (`<set>-<hash>`) whose name is each pod's `controller-revision-hash`.

mod plan;
pub(crate) mod revision;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::job::common;
use crate::{Context, ControllerError};
use controller_runtime::{Informer, Queue, key_of, owner_keys, split_key};
pub use plan::{Action, PodState, ordinal, plan};

/// Label naming the pod (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Label with the revision a pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

struct Ctl {
    client: kube::Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    pvcs: Informer<PersistentVolumeClaim>,
    revs: Informer<ControllerRevision>,
    rec: controller_runtime::events::Recorder,
}

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let sets = ctx.informers.get::<StatefulSet>();
    let pods = ctx.informers.get::<Pod>();
    let pvcs = ctx.informers.get::<PersistentVolumeClaim>();
    let revs = ctx.informers.get::<ControllerRevision>();
    common::wait_ready(&sets).await;
    common::wait_ready(&pods).await;
    common::wait_ready(&pvcs).await;
    common::wait_ready(&revs).await;
    let q = Queue::named("statefulset");
    q.watch(&sets, |s: &StatefulSet| vec![key_of(s)]);
    q.watch(&pods, |p: &Pod| owner_keys(p, "StatefulSet", true));
    q.watch(&revs, |r: &ControllerRevision| {
        owner_keys(r, "StatefulSet", true)
    });
    let c = Arc::new(Ctl {
        client: ctx.client.clone(),
        sets,
        pods,
        pvcs,
        revs,
        rec: ctx.recorder("statefulset-controller"),
    });
    q.run(ctx.opts.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

/// persistentVolumeClaimRetentionPolicy as (whenDeleted, whenScaled) ==
/// Delete; both default to Retain.
fn retention(set: &StatefulSet) -> (bool, bool) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.clone())
        .unwrap_or_default();
    (
        p.when_deleted.as_deref() == Some("Delete"),
        p.when_scaled.as_deref() == Some("Delete"),
    )
}

/// The PVC name for one claim template and ordinal.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// The pod for one ordinal, from a template at revision `rev`.
pub fn build_pod(set: &StatefulSet, tpl: &PodTemplateSpec, ordinal: i32, rev: &str) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let mut meta = tpl.metadata.clone().unwrap_or_default();
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), rev.to_string());
    meta.name = Some(name.clone());
    meta.generate_name = None;
    meta.namespace = set.namespace();
    meta.owner_references = Some(vec![common::controller_ref(set)]);
    let mut spec = tpl.spec.clone().unwrap_or_default();
    spec.hostname = Some(name);
    if let Some(svc) = set.spec.as_ref().and_then(|s| s.service_name.clone())
        && !svc.is_empty()
    {
        spec.subdomain = Some(svc);
    }
    let claims = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    if !claims.is_empty() {
        let vols = spec.volumes.get_or_insert_with(Vec::new);
        for c in &claims {
            let cname = c.metadata.name.clone().unwrap_or_default();
            vols.retain(|v| v.name != cname);
            vols.push(Volume {
                name: cname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&cname, &set.name_any(), ordinal),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
    }
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

impl Ctl {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, ControllerError> {
        let (Some(ns), name) = split_key(key) else {
            return Ok(None);
        };
        let Some(cached) = self.sets.get(Some(ns), name) else {
            return Ok(None);
        };
        let set: StatefulSet = (*cached).clone();
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = set.spec.clone().unwrap_or_default();
        let uid = set.uid().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = common::owned_pods(&self.pods, ns, &uid)
            .into_iter()
            .filter(|p| common::selector_matches(&spec.selector, p.labels()))
            .collect();

        // Revisions: the update revision is the current template's.
        let data = json!({"spec": {"template": revision::replace_patch(&spec.template)}});
        let update_rev = revision::ensure(&self.client, &self.revs, &set, data).await?;
        let mut st = set.status.clone().unwrap_or_default();
        let old = st.clone();
        let current_rev = st
            .current_revision
            .clone()
            .filter(|r| self.revs.get(Some(ns), r).is_some())
            .unwrap_or_else(|| update_rev.clone());
        let current_tpl: PodTemplateSpec = self
            .revs
            .get(Some(ns), &current_rev)
            .and_then(|r| r.data.as_ref().map(|d| d.0.clone()))
            .and_then(|d| serde_json::from_value(d["spec"]["template"].clone()).ok())
            .unwrap_or_else(|| spec.template.clone());

        let name = set.name_any();
        let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        let replicas = spec.replicas.unwrap_or(1);
        let mut states: BTreeMap<i32, PodState> = BTreeMap::new();
        let mut by_ord: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in &pods {
            let Some(i) = ordinal(&name, &p.name_any()) else {
                continue;
            };
            states.insert(
                i,
                PodState {
                    ready: common::pod_phase(p) == "Running" && common::pod_ready(p),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    finished: common::pod_terminal(p),
                    updated: p.labels().get(REVISION_LABEL) == Some(&update_rev),
                },
            );
            by_ord.insert(i, p.clone());
        }
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let partition = match strategy.type_.as_deref() {
            Some("OnDelete") => None,
            _ => Some(
                start
                    + strategy
                        .rolling_update
                        .and_then(|r| r.partition)
                        .unwrap_or(0),
            ),
        };
        let actions = plan(&states, start..start + replicas, parallel, partition);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for a in actions {
            match a {
                Action::Create(i) => {
                    let (tpl, rev) = match partition {
                        Some(p) if i < p => (&current_tpl, &current_rev),
                        _ => (&spec.template, &update_rev),
                    };
                    self.create_claims(&set, i).await?;
                    let pod = build_pod(&set, tpl, i, rev);
                    match pods_api.create(&PostParams::default(), &pod).await {
                        Ok(p) => self.rec.normal(
                            &set,
                            "SuccessfulCreate",
                            format!(
                                "create Pod {} in StatefulSet {name} successful",
                                p.name_any()
                            ),
                        ),
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => {
                            self.rec.warning(
                                &set,
                                "FailedCreate",
                                format!(
                                    "create Pod {}-{i} in StatefulSet {name} failed error: {e}",
                                    name
                                ),
                            );
                            return Err(e.into());
                        }
                    }
                }
                Action::Delete(i) => {
                    let Some(p) = by_ord.get(&i) else { continue };
                    if i >= start + replicas && retention(&set).1 {
                        self.claims_owned_by_pod(&set, p, i).await?;
                    }
                    match pods_api
                        .delete(&p.name_any(), &DeleteParams::default())
                        .await
                    {
                        Ok(_) => self.rec.normal(
                            &set,
                            "SuccessfulDelete",
                            format!(
                                "delete Pod {} in StatefulSet {name} successful",
                                p.name_any()
                            ),
                        ),
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }

        // Status, from the cache as it is (the next event refreshes it).
        let now = common::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let live: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| ordinal(&name, &p.name_any()).is_some())
            .collect();
        let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
        let rev_of = |p: &Pod| p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();
        st.observed_generation = set.metadata.generation;
        st.replicas = count(&|p| p.metadata.deletion_timestamp.is_none());
        st.ready_replicas = Some(count(&|p| common::pod_ready(p)));
        st.available_replicas = Some(count(&|p| common::pod_available(p, min_ready, now)));
        let updated = count(&|p| rev_of(p) == update_rev);
        st.updated_replicas = Some(updated);
        st.update_revision = Some(update_rev.clone());
        let all_updated =
            updated == replicas && st.ready_replicas == Some(replicas) && st.replicas == replicas;
        if all_updated || partition.is_none() && current_rev == update_rev {
            st.current_revision = Some(update_rev.clone());
        } else {
            st.current_revision = Some(current_rev.clone());
        }
        let cur = st.current_revision.clone().unwrap_or_default();
        st.current_replicas = Some(count(&|p| rev_of(p) == cur));
        st.collision_count = st.collision_count.or(Some(0));
        self.prune_revisions(&set, &st, &pods).await;
        if st != old {
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
            let mut s = set.clone();
            s.status = Some(st);
            api.replace_status(&name, &PostParams::default(), &s)
                .await?;
        }
        // Re-check when a pod becomes available after minReadySeconds.
        Ok((min_ready > 0).then(|| Duration::from_secs(min_ready as u64)))
    }

    /// Creates the pod's PVCs that do not exist yet.
    async fn create_claims(&self, set: &StatefulSet, ordinal: i32) -> Result<(), ControllerError> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let spec = set.spec.clone().unwrap_or_default();
        for t in spec.volume_claim_templates.iter().flatten() {
            let cname = claim_name(
                &t.metadata.name.clone().unwrap_or_default(),
                &set.name_any(),
                ordinal,
            );
            if self.pvcs.get(Some(&ns), &cname).is_some() {
                continue;
            }
            let mut pvc = t.clone();
            pvc.metadata.name = Some(cname.clone());
            pvc.metadata.namespace = Some(ns.clone());
            pvc.metadata.uid = None;
            pvc.metadata.resource_version = None;
            let labels = pvc.metadata.labels.get_or_insert_with(BTreeMap::new);
            if let Some(ml) = &spec.selector.match_labels {
                labels.extend(ml.clone());
            }
            pvc.status = None;
            if retention(set).0 {
                // whenDeleted: Delete — the PVC goes with the StatefulSet.
                let mut r = common::controller_ref(set);
                r.controller = None;
                pvc.metadata.owner_references = Some(vec![r]);
            }
            match api.create(&PostParams::default(), &pvc).await {
                Ok(_) => self.rec.normal(
                    set,
                    "SuccessfulCreate",
                    format!(
                        "create Claim {cname} Pod {}-{ordinal} in StatefulSet {} success",
                        set.name_any(),
                        set.name_any()
                    ),
                ),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    self.rec.warning(
                        set,
                        "FailedCreate",
                        format!("create Claim {cname} failed error: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// whenScaled: Delete — a condemned pod's PVCs become owned by the pod,
    /// so the garbage collector removes them with it.
    async fn claims_owned_by_pod(
        &self,
        set: &StatefulSet,
        pod: &Pod,
        ordinal: i32,
    ) -> Result<(), ControllerError> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let pod_ref = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        };
        for t in set
            .spec
            .iter()
            .flat_map(|s| s.volume_claim_templates.iter().flatten())
        {
            let cname = claim_name(
                &t.metadata.name.clone().unwrap_or_default(),
                &set.name_any(),
                ordinal,
            );
            let Some(pvc) = self.pvcs.get(Some(&ns), &cname) else {
                continue;
            };
            let mut refs = pvc.owner_references().to_vec();
            if refs.iter().any(|r| r.uid == pod_ref.uid) {
                continue;
            }
            refs.push(pod_ref.clone());
            let patch = json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": pvc.resource_version(),
            }});
            match api
                .patch(&cname, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Keeps `revisionHistoryLimit` (10) unused old revisions.
    async fn prune_revisions(&self, set: &StatefulSet, st: &StatefulSetStatus, pods: &[Arc<Pod>]) {
        let limit = set
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut live: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.labels().get(REVISION_LABEL).cloned())
            .collect();
        live.extend(st.current_revision.clone());
        live.extend(st.update_revision.clone());
        revision::prune(&self.client, &self.revs, set, &live, limit).await;
    }
}
