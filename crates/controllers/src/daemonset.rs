//! The DaemonSet controller, as upstream's: one pod per eligible node
//! (nodeSelector, required node affinity, taints against tolerations plus
//! the daemon tolerations the controller adds), following nodes as they
//! come and go. Like upstream since 1.12 it does not bind: each pod gets a
//! required node affinity `matchFields metadata.name In [node]` and the
//! scheduler places it. RollingUpdate (maxUnavailable, maxSurge) or
//! OnDelete, with ControllerRevisions (`<ds>-<hash>`, the hash being each
//! pod's `controller-revision-hash`).

pub mod eligible;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::job::common::{self, Expectations};
use crate::statefulset::revision;
use crate::{Context, ControllerError};
use controller_runtime::{Informer, Queue, key_of, owner_keys, split_key};
pub use eligible::{Fit, add_daemon_tolerations, fit, pod_node};

/// Label with the hash of the template a pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

struct Ctl {
    client: kube::Client,
    sets: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revs: Informer<ControllerRevision>,
    exp: Expectations,
    rec: controller_runtime::events::Recorder,
}

/// Runs the controller until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let sets = ctx.informers.get::<DaemonSet>();
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    let revs = ctx.informers.get::<ControllerRevision>();
    common::wait_ready(&sets).await;
    common::wait_ready(&pods).await;
    common::wait_ready(&nodes).await;
    common::wait_ready(&revs).await;
    let q = Queue::named("daemonset");
    q.watch(&sets, |d: &DaemonSet| vec![key_of(d)]);
    q.watch(&pods, |p: &Pod| owner_keys(p, "DaemonSet", true));
    let all = sets.clone();
    // Any node change may change where every DaemonSet belongs.
    q.watch(&nodes, move |_n: &Node| {
        all.list().iter().map(|d| key_of(d.as_ref())).collect()
    });
    let c = Arc::new(Ctl {
        client: ctx.client.clone(),
        sets,
        pods,
        nodes,
        revs,
        exp: Expectations::default(),
        rec: ctx.recorder("daemonset-controller"),
    });
    q.run(ctx.opts.workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

/// An int-or-percent of `total` (percentages round up for maxUnavailable
/// and maxSurge, as upstream's GetScaledValueFromIntOrPercent(.., true)).
pub fn scaled(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(p) => ((p * i64::from(total) + 99) / 100) as i32,
                None => default,
            }
        }
    }
}

/// The pod for one node, from the (tolerations-completed) template.
pub fn build_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let tpl = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = tpl.metadata.unwrap_or_default();
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.into(), hash.to_string());
    meta.name = None;
    meta.generate_name = Some(format!("{}-", ds.name_any()));
    meta.namespace = ds.namespace();
    meta.owner_references = Some(vec![common::controller_ref(ds)]);
    let mut spec = tpl.spec.unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    // Pin to the node through affinity; the scheduler binds it.
    let aff = spec.affinity.get_or_insert_with(Affinity::default);
    let na = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
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
            self.exp.forget(key);
            return Ok(None);
        };
        let ds: DaemonSet = (*cached).clone();
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = ds.spec.clone().unwrap_or_default();
        let data = json!({"spec": {"template": revision::replace_patch(&spec.template)}});
        let rev_name = revision::ensure(&self.client, &self.revs, &ds, data).await?;
        let hash = rev_name
            .strip_prefix(&format!("{}-", ds.name_any()))
            .unwrap_or(&rev_name)
            .to_string();
        let uid = ds.uid().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = common::owned_pods(&self.pods, ns, &uid)
            .into_iter()
            .filter(|p| common::selector_matches(&spec.selector, p.labels()))
            .collect();
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in &pods {
            if let Some(n) = pod_node(p) {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        let mut tpl_spec = spec.template.spec.clone().unwrap_or_default();
        add_daemon_tolerations(&mut tpl_spec);
        let nodes = self.nodes.list();
        let now = common::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let settled = self.exp.satisfied(key, |n| {
            self.pods
                .get(Some(ns), n)
                .map(|p| p.metadata.deletion_timestamp.is_some())
        });

        let mut create: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let mut st = DaemonSetStatus {
            observed_generation: ds.metadata.generation,
            collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
            ..Default::default()
        };
        // Nodes running an old-revision pod, for the rolling update.
        let mut old_on: Vec<(String, Arc<Pod>, bool)> = Vec::new();
        let mut unavailable = 0;
        let mut surging = 0;
        let names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        for node in &nodes {
            let nname = node.name_any();
            let f = fit(&tpl_spec, node);
            let here: Vec<Arc<Pod>> = by_node.get(&nname).cloned().unwrap_or_default();
            let (mut live, dead): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = here
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .partition(|p| !common::pod_terminal(p));
            if f.should_run {
                st.desired_number_scheduled += 1;
            }
            if !live.is_empty() {
                if f.should_run {
                    st.current_number_scheduled += 1;
                } else {
                    st.number_misscheduled += 1;
                }
            }
            if !f.should_continue {
                delete.append(&mut live);
                delete.extend(dead);
                continue;
            }
            if !f.should_run && live.is_empty() {
                delete.extend(dead);
                continue;
            }
            // Failed daemon pods are replaced.
            delete.extend(dead);
            if live.is_empty() {
                if f.should_run {
                    create.push(nname);
                    unavailable += 1;
                }
                continue;
            }
            // Oldest first; extras beyond one (or one old + one new during
            // a surge) go.
            live.sort_by_key(|p| p.creation_timestamp().map(|t| t.0));
            let (new, old): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = live
                .into_iter()
                .partition(|p| p.labels().get(REVISION_LABEL) == Some(&hash));
            let avail = |p: &Pod| common::pod_available(p, min_ready, now);
            let ready = |p: &Pod| common::pod_ready(p);
            if let Some(n) = new.first() {
                st.updated_number_scheduled = Some(st.updated_number_scheduled.unwrap_or(0) + 1);
                delete.extend(new.iter().skip(1).cloned());
                if avail(n) {
                    // The new pod is up: old ones on this node go.
                    delete.extend(old.iter().cloned());
                } else {
                    surging += i32::from(!old.is_empty());
                }
                let counted = if avail(n) {
                    Some(n)
                } else {
                    old.iter().find(|p| avail(p))
                };
                if ready(n) || old.iter().any(|p| ready(p)) {
                    st.number_ready += 1;
                }
                match counted {
                    Some(_) => st.number_available = Some(st.number_available.unwrap_or(0) + 1),
                    None => unavailable += 1,
                }
            } else if let Some(o) = old.first() {
                delete.extend(old.iter().skip(1).cloned());
                if ready(o) {
                    st.number_ready += 1;
                }
                if avail(o) {
                    st.number_available = Some(st.number_available.unwrap_or(0) + 1);
                } else {
                    unavailable += 1;
                }
                if f.should_run {
                    old_on.push((nname.clone(), o.clone(), avail(o)));
                }
            }
        }
        // Pods for nodes that no longer exist.
        for (n, ps) in &by_node {
            if !names.contains(n) {
                delete.extend(
                    ps.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }

        // Rolling update.
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref() != Some("OnDelete") {
            let ru = strategy.rolling_update.unwrap_or_default();
            let desired = st.desired_number_scheduled;
            let surge = scaled(ru.max_surge.as_ref(), desired, 0);
            let max_unavail = scaled(
                ru.max_unavailable.as_ref(),
                desired,
                if surge > 0 { 0 } else { 1 },
            );
            let mut budget = max_unavail - unavailable;
            let mut surge_budget = surge - surging;
            for (node, pod, available) in &old_on {
                if !available {
                    // Already unavailable: replacing it costs nothing.
                    delete.push(pod.clone());
                } else if surge_budget > 0 {
                    create.push(node.clone());
                    surge_budget -= 1;
                } else if budget > 0 {
                    delete.push(pod.clone());
                    budget -= 1;
                }
            }
        }

        if settled {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            for node in &create {
                let pod = build_pod(&ds, node, &hash);
                match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        self.exp.created(key, &p.name_any());
                        self.rec.normal(
                            &ds,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        );
                    }
                    Err(e) => {
                        self.rec
                            .warning(&ds, "FailedCreate", format!("Error creating: {e}"));
                        return Err(e.into());
                    }
                }
            }
            let mut seen = BTreeSet::new();
            for p in &delete {
                let pn = p.name_any();
                if !seen.insert(pn.clone()) {
                    continue;
                }
                match api.delete(&pn, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.exp.deleted(key, &pn);
                        self.rec
                            .normal(&ds, "SuccessfulDelete", format!("Deleted pod: {pn}"));
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        st.number_unavailable =
            Some(st.desired_number_scheduled - st.number_available.unwrap_or(0)).filter(|n| *n > 0);
        st.updated_number_scheduled = st.updated_number_scheduled.or(Some(0));
        st.number_available = st.number_available.filter(|n| *n > 0);
        let mut live_revs: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| {
                p.labels()
                    .get(REVISION_LABEL)
                    .map(|h| format!("{}-{h}", ds.name_any()))
            })
            .collect();
        live_revs.insert(rev_name.clone());
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        revision::prune(&self.client, &self.revs, &ds, &live_revs, limit).await;
        if ds.status.as_ref() != Some(&st) {
            let dapi: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
            let mut d = ds.clone();
            d.status = Some(st);
            dapi.replace_status(&ds.name_any(), &PostParams::default(), &d)
                .await?;
        }
        Ok((min_ready > 0).then(|| Duration::from_secs(min_ready as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        let p = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&p), 10, 1), 3);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10, 1), 2);
        assert_eq!(scaled(None, 10, 1), 1);
    }

    #[test]
    fn pods_are_pinned_by_affinity_not_bound() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": []}}}
        }))
        .unwrap();
        let p = build_pod(&ds, "n1", "abc");
        assert_eq!(pod_node(&p).as_deref(), Some("n1"));
        let spec = p.spec.unwrap();
        assert!(spec.node_name.is_none());
        assert!(
            spec.tolerations
                .unwrap()
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"))
        );
        assert_eq!(
            p.metadata.labels.unwrap()["controller-revision-hash"],
            "abc"
        );
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
    }
}
