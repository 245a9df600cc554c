//! The deployment controller: rolls a pod template out through
//! ReplicaSets (RollingUpdate or Recreate), scales proportionally,
//! keeps revision annotations for `kubectl rollout history/undo`, cleans
//! up old ReplicaSets and reports progress conditions, as upstream.

pub mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::replicaset::wait_ready;
use crate::replicaset::{
    adopt, controller_ref, owner_ref, release, selector_is_empty, selector_matches,
};
use crate::{Context, ControllerError};
use controller_runtime::events::Recorder;
use controller_runtime::{Change, Queue, key_of, split_key};
use util::*;

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let deps = ctx.informers.get::<Deployment>();
    let rss = ctx.informers.get::<ReplicaSet>();
    let pods = ctx.informers.get::<Pod>();
    wait_ready(&deps).await;
    wait_ready(&rss).await;
    wait_ready(&pods).await;
    let q = Queue::named("deployment");
    q.watch(&deps, |d: &Deployment| vec![key_of(d)]);
    {
        let deps = deps.clone();
        q.watch(&rss, move |rs: &ReplicaSet| {
            let ns = rs.namespace().unwrap_or_default();
            match controller_ref(&rs.metadata) {
                Some(r) if r.kind == "Deployment" => vec![format!("{ns}/{}", r.name)],
                Some(_) => vec![],
                None => deps
                    .list_ns(&ns)
                    .iter()
                    .filter(|d| {
                        d.spec.as_ref().is_some_and(|s| {
                            !selector_is_empty(&s.selector)
                                && selector_matches(&s.selector, rs.labels())
                        })
                    })
                    .map(|d| key_of(d.as_ref()))
                    .collect(),
            }
        });
    }
    {
        // Recreate waits for old pods to be gone.
        let rss = rss.clone();
        q.watch_changes(&pods, move |ch: &Change<Pod>| {
            let Change::Delete(p) = ch else { return vec![] };
            let ns = p.namespace().unwrap_or_default();
            let Some(r) = controller_ref(&p.metadata).filter(|r| r.kind == "ReplicaSet") else {
                return vec![];
            };
            rss.get(Some(&ns), &r.name)
                .and_then(|rs| {
                    controller_ref(&rs.metadata)
                        .filter(|r| r.kind == "Deployment")
                        .cloned()
                })
                .map(|d| vec![format!("{ns}/{}", d.name)])
                .unwrap_or_default()
        });
    }
    let ctl = Arc::new(Ctl {
        rec: ctx.recorder("deployment-controller"),
        ctx: ctx.clone(),
    });
    q.run(ctx.opts.workers, move |key| {
        let ctl = ctl.clone();
        async move { ctl.sync(&key).await }
    })
    .await;
}

struct Ctl {
    ctx: Arc<Context>,
    rec: Recorder,
}

type Res<T> = Result<T, ControllerError>;

fn template(d: &Deployment) -> k8s_openapi::api::core::v1::PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

fn by_creation(v: &mut [ReplicaSet]) {
    v.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.name_any(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            ))
    });
}

impl Ctl {
    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn d_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    async fn sync(&self, key: &str) -> Res<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(cached) = self.ctx.informers.get::<Deployment>().get(Some(ns), name) else {
            return Ok(None);
        };
        let mut d = (*cached).clone();
        let sel = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if selector_is_empty(&sel) {
            self.rec.warning(
                &d,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(None);
        }
        let rs_list = self.claim_replicasets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let (new, old) = self.split(&d, &rs_list);
            self.sync_status_only(&mut d, new, old).await?;
            return Ok(None);
        }
        self.check_paused(&mut d).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || self.is_scaling_event(&d, &rs_list) {
            return self.sync_scale(&mut d, rs_list, paused).await;
        }
        if is_rolling(&d) {
            self.rollout_rolling(&mut d, rs_list).await
        } else {
            self.rollout_recreate(&mut d, rs_list).await
        }
    }

    /// The ReplicaSets this deployment controls, adopting and releasing
    /// by selector as upstream's ControllerRefManager.
    async fn claim_replicasets(&self, d: &Deployment) -> Res<Vec<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let sel = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let api = self.rs_api(&ns);
        let mut out = Vec::new();
        let mut fresh_ok: Option<bool> = None;
        for rs in self.ctx.informers.get::<ReplicaSet>().list_ns(&ns) {
            let matches = selector_matches(&sel, rs.labels());
            match controller_ref(&rs.metadata) {
                Some(r) if r.uid != uid => {}
                Some(_) if matches || d.metadata.deletion_timestamp.is_some() => {
                    out.push((*rs).clone())
                }
                Some(_) => release(&api, &rs.metadata, &uid).await?,
                None if matches
                    && d.metadata.deletion_timestamp.is_none()
                    && rs.metadata.deletion_timestamp.is_none() =>
                {
                    if fresh_ok.is_none() {
                        let f = self.d_api(&ns).get_opt(&d.name_any()).await?;
                        fresh_ok = Some(f.is_some_and(|f| {
                            f.metadata.uid == d.metadata.uid
                                && f.metadata.deletion_timestamp.is_none()
                        }));
                    }
                    if fresh_ok == Some(true) {
                        match adopt(&api, &rs.metadata, owner_ref(d)).await {
                            Ok(()) => out.push((*rs).clone()),
                            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                None => {}
            }
        }
        by_creation(&mut out);
        Ok(out)
    }

    /// The new ReplicaSet (oldest one with the deployment's template) and the others.
    fn split(
        &self,
        d: &Deployment,
        rs_list: &[ReplicaSet],
    ) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let t = template(d);
        let new = rs_list
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|rt| equal_ignore_hash(rt, &t))
            })
            .cloned();
        let old = rs_list
            .iter()
            .filter(|rs| {
                new.as_ref()
                    .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
            })
            .cloned()
            .collect();
        (new, old)
    }

    fn is_scaling_event(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> bool {
        rs_list
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| desired_annotation(rs).is_some_and(|a| a != replicas(d)))
    }

    async fn check_paused(&self, d: &mut Deployment) -> Res<()> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let st = d.status.get_or_insert_with(Default::default);
        let cond = get_condition(st, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
        if paused && !paused_cond {
            set_condition(
                st,
                condition(
                    "Progressing",
                    "Unknown",
                    reason::PAUSED,
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            set_condition(
                st,
                condition(
                    "Progressing",
                    "Unknown",
                    reason::RESUMED,
                    "Deployment is resumed".into(),
                ),
            );
        } else {
            return Ok(());
        }
        let st = st.clone();
        self.write_status(d, &st).await
    }

    async fn write_status(&self, d: &Deployment, st: &DeploymentStatus) -> Res<()> {
        let api = self.d_api(&d.namespace().unwrap_or_default());
        match api
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": st })),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Finds or creates the new ReplicaSet and syncs revisions (upstream's
    /// getAllReplicaSetsAndSyncRevision).
    async fn all_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Res<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        let (existing, old) = self.split(d, rs_list);
        let new_revision = old.iter().map(revision).max().unwrap_or(0) + 1;
        let ns = d.namespace().unwrap_or_default();
        if let Some(existing) = existing {
            let mut rs = existing.clone();
            let changed = set_new_rs_annotations(d, &mut rs, new_revision, true);
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = rs.spec.get_or_insert_with(Default::default);
            if changed || spec.min_ready_seconds != min_ready {
                spec.min_ready_seconds = min_ready;
                let rs = self
                    .rs_api(&ns)
                    .replace(&rs.name_any(), &PostParams::default(), &rs)
                    .await?;
                return Ok((Some(rs), old));
            }
            let rev = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            self.set_deployment_revision(d, &rev).await?;
            let has_deadline = progress_deadline(d).is_some();
            let st = d.status.get_or_insert_with(Default::default);
            if has_deadline && get_condition(st, "Progressing").is_none() {
                let msg = format!("Found new replica set \"{}\"", rs.name_any());
                set_condition(
                    st,
                    condition("Progressing", "True", reason::FOUND_NEW_RS, msg),
                );
                let st = st.clone();
                self.write_status(d, &st).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&template(d), collision);
        let mut t = template(d);
        let labels = t
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new);
        labels.insert(HASH_LABEL.into(), hash.clone());
        let labels = labels.clone();
        let mut selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![owner_ref(d)]),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(t),
            }),
            status: None,
        };
        let mut all = old.clone();
        all.push(rs.clone());
        let n = new_rs_new_replicas(d, &all, &rs);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(n);
        }
        set_new_rs_annotations(d, &mut rs, new_revision, false);
        let created = match self.rs_api(&ns).create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let found = self.rs_api(&ns).get_opt(&rs.name_any()).await?;
                if let Some(f) = found {
                    let ours = controller_ref(&f.metadata)
                        .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                    let same = f
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|ft| equal_ignore_hash(ft, &template(d)));
                    if ours && same {
                        return Ok((Some(f), old));
                    }
                }
                // A hash collision: try the next name.
                let st = d.status.get_or_insert_with(Default::default);
                st.collision_count = Some(collision.unwrap_or(0) + 1);
                let st = st.clone();
                self.write_status(d, &st).await?;
                return Err(ControllerError::Invalid(format!(
                    "replica set {} exists: hash collision",
                    rs.name_any()
                )));
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{}\": {}",
                    rs.name_any(),
                    crate::replicaset::api_message(&e)
                );
                self.rec.warning(d, "FailedCreate", msg.clone());
                if progress_deadline(d).is_some() {
                    let st = d.status.get_or_insert_with(Default::default);
                    set_condition(
                        st,
                        condition("Progressing", "False", reason::RS_CREATE_ERROR, msg),
                    );
                    let st = st.clone();
                    self.write_status(d, &st).await?;
                }
                return Err(e.into());
            }
        };
        if n > 0 {
            self.rec.normal(
                d,
                "ScalingReplicaSet",
                format!("Scaled up replica set {} from 0 to {n}", created.name_any()),
            );
        }
        self.set_deployment_revision(d, &new_revision.to_string())
            .await?;
        if progress_deadline(d).is_some() {
            let st = d.status.get_or_insert_with(Default::default);
            let msg = format!("Created new replica set \"{}\"", created.name_any());
            set_condition(
                st,
                condition("Progressing", "True", reason::NEW_RS_CREATED, msg),
            );
            let st = st.clone();
            self.write_status(d, &st).await?;
        }
        Ok((Some(created), old))
    }

    /// Keeps the deployment's revision annotation on its current revision.
    async fn set_deployment_revision(&self, d: &mut Deployment, rev: &str) -> Res<()> {
        if rev.is_empty() || d.annotations().get(REVISION).map(String::as_str) == Some(rev) {
            return Ok(());
        }
        d.annotations_mut().insert(REVISION.into(), rev.into());
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        self.d_api(&d.namespace().unwrap_or_default())
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    /// Scales `rs` to `to` and refreshes its replica annotations; records
    /// an event when the size changed.
    async fn scale_rs(&self, rs: &mut ReplicaSet, to: i32, d: &Deployment) -> Res<bool> {
        let from = rs_replicas(rs);
        let mut copy = rs.clone();
        let ann = set_replicas_annotations(&mut copy, replicas(d), replicas(d) + max_surge(d));
        if from == to && !ann {
            return Ok(false);
        }
        copy.spec.get_or_insert_with(Default::default).replicas = Some(to);
        let ns = rs.namespace().unwrap_or_default();
        *rs = self
            .rs_api(&ns)
            .replace(&rs.name_any(), &PostParams::default(), &copy)
            .await?;
        if from != to {
            let op = if to > from { "up" } else { "down" };
            self.rec.normal(
                d,
                "ScalingReplicaSet",
                format!(
                    "Scaled {op} replica set {} from {from} to {to}",
                    rs.name_any()
                ),
            );
            tracing::debug!(deployment = %key_of(d), rs = %rs.name_any(), from, to, "scaled replica set");
        }
        Ok(from != to)
    }

    /// Scaling without rollout (paused, or replicas changed mid-rollout).
    async fn sync_scale(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
        paused: bool,
    ) -> Res<Option<Duration>> {
        let (mut new, mut old) = self.all_and_sync_revision(d, &rs_list, false).await?;
        self.scale(d, &mut new, &mut old).await?;
        if paused {
            self.cleanup(d, &old).await?;
        }
        self.sync_status_only(d, new, old).await?;
        Ok(None)
    }

    async fn sync_status_only(
        &self,
        d: &mut Deployment,
        new: Option<ReplicaSet>,
        old: Vec<ReplicaSet>,
    ) -> Res<()> {
        let mut all = old;
        all.extend(new.clone());
        let st = calculate_status(d, &all, new.as_ref());
        if !same_status(d.status.as_ref(), &st) {
            self.write_status(d, &st).await?;
        }
        Ok(())
    }

    /// Proportional scaling (upstream's scale).
    async fn scale(
        &self,
        d: &Deployment,
        new: &mut Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Res<()> {
        let want = replicas(d);
        let active: Vec<usize> = (0..old.len())
            .filter(|i| rs_replicas(&old[*i]) > 0)
            .collect();
        let new_active = new.as_ref().is_some_and(|n| rs_replicas(n) > 0);
        // One active (or, with none active, the latest) ReplicaSet takes it all.
        if active.len() + usize::from(new_active) <= 1 {
            if new_active || (active.is_empty() && new.is_some()) {
                if let Some(n) = new.as_mut() {
                    self.scale_rs(n, want, d).await?;
                }
                return Ok(());
            }
            if let Some(&i) = active.first() {
                self.scale_rs(&mut old[i], want, d).await?;
                return Ok(());
            }
            if let Some(latest) = old
                .iter_mut()
                .max_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0))
            {
                self.scale_rs(latest, want, d).await?;
            }
            return Ok(());
        }
        // A saturated new RS: old ones go to zero.
        if let Some(n) = new.as_ref()
            && rs_replicas(n) == want
            && desired_annotation(n) == Some(want)
            && rs_available(n) == want
        {
            for rs in old.iter_mut().filter(|r| rs_replicas(r) > 0) {
                self.scale_rs(rs, 0, d).await?;
            }
            return Ok(());
        }
        if !is_rolling(d) {
            return Ok(());
        }
        let mut all: Vec<&mut ReplicaSet> = old
            .iter_mut()
            .chain(new.iter_mut())
            .filter(|r| rs_replicas(r) > 0)
            .collect();
        let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - total;
        let ts = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if to_add > 0 {
            // Bigger first, newer first on ties.
            all.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then(ts(b).cmp(&ts(a))));
        } else if to_add < 0 {
            // Bigger first, older first on ties.
            all.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then(ts(a).cmp(&ts(b))));
        }
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::new();
        for rs in &all {
            if to_add != 0 {
                let p = proportion(rs, d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        if to_add != 0
            && let Some(first) = sizes.first_mut()
        {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale_rs(rs, size, d).await?;
        }
        Ok(())
    }

    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Res<Option<Duration>> {
        let (new, mut old) = self.all_and_sync_revision(d, &rs_list, true).await?;
        let Some(mut new) = new else {
            return Ok(None);
        };
        // Scale up the new ReplicaSet.
        let want = replicas(d);
        let cur = rs_replicas(&new);
        let all: Vec<ReplicaSet> = old.iter().cloned().chain([new.clone()]).collect();
        let target = if cur > want {
            want
        } else {
            new_rs_new_replicas(d, &all, &new)
        };
        if target != cur {
            self.scale_rs(&mut new, target, d).await?;
            return self.sync_rollout_status(d, &old, Some(&new)).await;
        }
        // Scale down old ones as far as availability allows.
        if self.reconcile_old(d, &mut old, &new).await? {
            return self.sync_rollout_status(d, &old, Some(&new)).await;
        }
        let st = d.status.clone().unwrap_or_default();
        if complete(d, &st) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &old, Some(&new)).await
    }

    /// upstream's reconcileOldReplicaSets: first unhealthy old pods, then
    /// healthy ones down to the minimum available.
    async fn reconcile_old(
        &self,
        d: &Deployment,
        old: &mut [ReplicaSet],
        new: &ReplicaSet,
    ) -> Res<bool> {
        let old_pods: i32 = old.iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all: Vec<ReplicaSet> = old.iter().cloned().chain([new.clone()]).collect();
        let max_down = max_scaled_down(d, &all, Some(new));
        if max_down <= 0 {
            return Ok(false);
        }
        old.sort_by_key(|r| {
            (
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                r.name_any(),
            )
        });
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_down {
                break;
            }
            let (r, a) = (rs_replicas(rs), rs_available(rs));
            if r == 0 || a >= r {
                continue;
            }
            let down = (max_down - cleaned).min(r - a);
            self.scale_rs(rs, r - down, d).await?;
            cleaned += down;
        }
        let min_available = replicas(d) - max_unavailable(d);
        let available: i32 = old.iter().map(rs_available).sum::<i32>() + rs_available(new);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let r = rs_replicas(rs);
                if r == 0 {
                    continue;
                }
                let down = r.min(total - scaled);
                self.scale_rs(rs, r - down, d).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Res<Option<Duration>> {
        let (new, mut old) = self.all_and_sync_revision(d, &rs_list, false).await?;
        let mut down = false;
        for rs in old.iter_mut().filter(|r| rs_replicas(r) > 0) {
            down |= self.scale_rs(rs, 0, d).await?;
        }
        if down {
            return self.sync_rollout_status(d, &old, new.as_ref()).await;
        }
        if self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status(d, &old, new.as_ref()).await;
        }
        let (new, old) = match new {
            Some(n) => (Some(n), old),
            None => self.all_and_sync_revision(d, &rs_list, true).await?,
        };
        let Some(mut new) = new else {
            return Ok(None);
        };
        self.scale_rs(&mut new, replicas(d), d).await?;
        let st = d.status.clone().unwrap_or_default();
        if complete(d, &st) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &old, Some(&new)).await
    }

    /// Whether pods of old ReplicaSets still exist (even terminating).
    fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        if old.iter().map(rs_actual).sum::<i32>() > 0 {
            return true;
        }
        let old_uids: Vec<&str> = old
            .iter()
            .filter(|r| new.is_none_or(|n| n.metadata.uid != r.metadata.uid))
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        let ns = old.first().and_then(|r| r.namespace()).unwrap_or_default();
        self.ctx
            .informers
            .get::<Pod>()
            .list_ns(&ns)
            .iter()
            .any(|p| {
                controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed" | "Succeeded")
                    )
            })
    }

    /// Deletes the oldest empty ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Res<()> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut alive: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = alive.len() as i32 - limit;
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by_key(|r| {
            (
                revision(r),
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        let ns = d.namespace().unwrap_or_default();
        for rs in alive.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_actual(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            match self
                .rs_api(&ns)
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// upstream's syncRolloutStatus: counts, Progressing/Available and
    /// ReplicaFailure conditions; requeues for the progress deadline.
    async fn sync_rollout_status(
        &self,
        d: &Deployment,
        old: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Res<Option<Duration>> {
        let mut all: Vec<ReplicaSet> = old.to_vec();
        all.extend(new.cloned());
        let mut st = calculate_status(d, &all, new);
        if progress_deadline(d).is_none() {
            remove_condition(&mut st, "Progressing");
        }
        let cur_status = d.status.clone().unwrap_or_default();
        let cur = get_condition(&cur_status, "Progressing").cloned();
        let is_complete = st.replicas == st.updated_replicas
            && cur
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        let what = match new {
            Some(n) => format!("ReplicaSet \"{}\"", n.name_any()),
            None => format!("Deployment \"{}\"", d.name_any()),
        };
        if progress_deadline(d).is_some() && !is_complete {
            if complete(d, &st) {
                let c = condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS_AVAILABLE,
                    format!("{what} has successfully progressed."),
                );
                set_condition(&mut st, c);
            } else if progressing(d, &st) {
                let mut c = condition(
                    "Progressing",
                    "True",
                    reason::RS_UPDATED,
                    format!("{what} is progressing."),
                );
                if let Some(cur) = &cur {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut st, "Progressing");
                }
                set_condition(&mut st, c);
            } else if deadline_left(d, &st).is_some_and(|l| l < 0) {
                let c = condition(
                    "Progressing",
                    "False",
                    reason::TIMED_OUT,
                    format!("{what} has timed out progressing."),
                );
                set_condition(&mut st, c);
            }
        }
        // Replica failures of the ReplicaSets (the new one first).
        let failure = new.into_iter().chain(old.iter()).find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut st,
                k8s_openapi::api::apps::v1::DeploymentCondition {
                    type_: "ReplicaFailure".into(),
                    status: f.status,
                    reason: f.reason,
                    message: f.message,
                    last_update_time: f.last_transition_time.clone(),
                    last_transition_time: f.last_transition_time,
                },
            ),
            None => remove_condition(&mut st, "ReplicaFailure"),
        }
        if same_status(d.status.as_ref(), &st) {
            // Come back when the progress deadline would pass.
            let timed_out = get_condition(&st, "Progressing")
                .is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT));
            if complete(d, &st) || timed_out {
                return Ok(None);
            }
            return Ok(deadline_left(d, &st).map(|l| Duration::from_secs(l.max(0) as u64 + 1)));
        }
        self.write_status(d, &st).await?;
        Ok(None)
    }
}

/// upstream's calculateStatus.
fn calculate_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(rs_available).sum();
    let total: i32 = all.iter().map(rs_replicas).sum();
    let prev = d.status.clone().unwrap_or_default();
    let mut st = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(rs_actual).sum()),
        updated_replicas: Some(new.map(rs_actual).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(rs_ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: prev.collision_count,
        conditions: prev.conditions.clone(),
        ..Default::default()
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut st,
            condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut st,
            condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    st
}

/// Status equality treating absent counts as zero (the API omits zeros).
fn same_status(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    let z = |v: Option<i32>| v.unwrap_or(0);
    let key = |s: &DeploymentStatus| {
        (
            z(s.replicas),
            z(s.updated_replicas),
            z(s.ready_replicas),
            z(s.available_replicas),
            z(s.unavailable_replicas),
            s.observed_generation.unwrap_or(0),
            z(s.collision_count),
            s.conditions.clone().unwrap_or_default(),
        )
    };
    let old = old.cloned().unwrap_or_default();
    key(&old) == key(new)
}
