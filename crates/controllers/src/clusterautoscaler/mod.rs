//! A cluster autoscaler, as upstream's cluster-autoscaler: every scan
//! interval it looks at the pods the scheduler could not place and the
//! node groups users declared ([`group`]); if new nodes of a group would
//! take them (the scheduler's own filters, simulated on template nodes:
//! [`plan`]), it asks the group's provider for that many nodes
//! ([`provider`]). Nodes whose requests are under the utilization
//! threshold and whose pods fit elsewhere are unneeded; after
//! `--scale-down-unneeded-time` they are tainted, drained through the
//! Eviction API (so PodDisruptionBudgets hold them) and removed. Pods get
//! `TriggeredScaleUp`/`NotTriggerScaleUp` events and the ConfigMap
//! `kube-system/cluster-autoscaler-status` says what it is doing, as
//! upstream writes them.

pub mod group;
pub mod plan;
pub mod provider;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, EvictParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::Context;
use group::NodeGroup;
use plan::GROUP_LABEL;
use provider::{CommandProvider, Handle, JoinInfo, Provider};

/// The taint a node gets before it is drained, as upstream's.
pub const TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";
/// How long a node asked for may take to register.
const MAX_PROVISION: Duration = Duration::from_secs(900);
/// How long a drain may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The autoscaler's flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often it looks (`--cluster-autoscaler-scan-interval`, 10 s).
    pub scan_interval: Duration,
    /// How long a node must be unneeded before it goes
    /// (`--scale-down-unneeded-time`, 10 min).
    pub unneeded_time: Duration,
    /// Requested share under which a node may go
    /// (`--scale-down-utilization-threshold`, 0.5).
    pub utilization_threshold: f64,
    /// The hollow provider, when the process can run hollow nodes.
    pub hollow: Option<Handle>,
    /// What the command provider's machines join.
    pub join: JoinInfo,
    /// A client that does not retry 429s, for evictions: a budget's "no"
    /// must come back at once, not after kube-rs's retries.
    pub eviction_client: Option<NoRetry>,
}

/// A client without kube-rs's retries on 429/503.
#[derive(Clone)]
pub struct NoRetry(pub kube::Client);

impl std::fmt::Debug for NoRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoRetry")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            scan_interval: Duration::from_secs(10),
            unneeded_time: Duration::from_secs(600),
            utilization_threshold: 0.5,
            hollow: None,
            join: JoinInfo::default(),
            eviction_client: None,
        }
    }
}

fn resource() -> ApiResource {
    ApiResource {
        group: "autoscaling.r8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "autoscaling.r8s.io/v1alpha1".into(),
        kind: "NodeGroup".into(),
        plural: "nodegroups".into(),
    }
}

/// What the loop remembers between scans.
#[derive(Default)]
struct Memory {
    /// Nodes asked for and not registered yet: group -> (name, when).
    upcoming: BTreeMap<String, Vec<(String, Instant)>>,
    /// Since when each candidate node has been unneeded.
    unneeded: HashMap<String, Instant>,
    last_scale_up: Option<String>,
    last_scale_down: Option<String>,
}

/// Runs the autoscaler until the task is dropped. It installs the
/// NodeGroup definition and does nothing until a group exists.
pub async fn run(ctx: Arc<Context>) {
    let settings = ctx.opts.autoscaler.clone();
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let def: CustomResourceDefinition = match serde_json::from_value(group::definition()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "the NodeGroup definition does not parse");
            return;
        }
    };
    loop {
        let pp = PatchParams::apply("cluster-autoscaler").force();
        match crds
            .patch("nodegroups.autoscaling.r8s.io", &pp, &Patch::Apply(&def))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                tracing::debug!(error = %e, "installing the NodeGroup definition");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    let nodes = ctx.informers.get::<Node>();
    let pods = ctx.informers.get::<Pod>();
    nodes.ready().await;
    pods.ready().await;
    let recorder = ctx.recorder("cluster-autoscaler");
    let command = Handle(Arc::new(CommandProvider::new(settings.join.clone())));
    let mut memory = Memory::default();
    loop {
        let groups = list_groups(&ctx.client).await;
        if !groups.is_empty() {
            let snapshot = (nodes.list(), pods.list());
            scan(
                &ctx.client,
                &settings,
                &command,
                &recorder,
                &groups,
                &snapshot,
                &mut memory,
            )
            .await;
        }
        tokio::time::sleep(settings.scan_interval).await;
    }
}

async fn list_groups(client: &kube::Client) -> Vec<NodeGroup> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
    let Ok(list) = api.list(&Default::default()).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for o in list.items {
        let v = serde_json::to_value(&o).unwrap_or(Value::Null);
        match NodeGroup::from_object(&v) {
            Ok(g) => out.push(g),
            Err(e) => tracing::warn!(group = ?o.metadata.name, error = %e, "ignoring a node group"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn provider_for<'a>(
    settings: &'a Settings,
    command: &'a Handle,
    g: &NodeGroup,
) -> Result<&'a dyn Provider, String> {
    match g.provider.as_str() {
        "command" => Ok(command.0.as_ref()),
        _ => settings
            .hollow
            .as_ref()
            .map(|h| h.0.as_ref())
            .ok_or_else(|| "the hollow provider is not available in this process".to_string()),
    }
}

fn group_of(n: &Node) -> Option<&str> {
    n.metadata
        .labels
        .as_ref()?
        .get(GROUP_LABEL)
        .map(String::as_str)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn scan(
    client: &kube::Client,
    settings: &Settings,
    command: &Handle,
    recorder: &controller_runtime::events::Recorder,
    groups: &[NodeGroup],
    (nodes, pods): &(Vec<Arc<Node>>, Vec<Arc<Pod>>),
    memory: &mut Memory,
) {
    // Nodes that registered are no longer upcoming; ones that never did
    // are given up on.
    let registered: std::collections::HashSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for list in memory.upcoming.values_mut() {
        list.retain(|(name, at)| {
            let keep = !registered.contains(name.as_str()) && at.elapsed() < MAX_PROVISION;
            if !keep && !registered.contains(name.as_str()) {
                tracing::warn!(node = %name, "a node asked for never registered");
            }
            keep
        });
    }
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for n in nodes {
        if let Some(g) = group_of(n) {
            *sizes.entry(g.to_string()).or_default() += 1;
        }
    }
    // Nodes being removed take no pods in the simulation.
    let live: Vec<Arc<Node>> = nodes
        .iter()
        .filter(|n| !tainted_for_deletion(n))
        .cloned()
        .collect();
    let upcoming: BTreeMap<String, usize> = memory
        .upcoming
        .iter()
        .map(|(g, l)| (g.clone(), l.len()))
        .collect();
    let pending: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| plan::unschedulable(p))
        .cloned()
        .collect();
    let mut scaled_up = false;
    // A group below its minimum grows to it (what a cloud's instance
    // group would do; upstream's --enforce-node-group-min-size).
    for g in groups {
        let have =
            sizes.get(&g.name).copied().unwrap_or(0) + upcoming.get(&g.name).copied().unwrap_or(0);
        if have >= g.min_size {
            continue;
        }
        match grow(settings, command, memory, g, g.min_size - have).await {
            Ok(_) => {
                tracing::info!(group = %g.name, from = have, to = g.min_size, "scale-up to the group's minimum");
                scaled_up = true;
            }
            Err(e) => tracing::warn!(group = %g.name, error = %e, "scale-up to the minimum failed"),
        }
    }
    let upcoming: BTreeMap<String, usize> = memory
        .upcoming
        .iter()
        .map(|(g, l)| (g.clone(), l.len()))
        .collect();
    if !pending.is_empty() {
        let up = plan::plan_scale_up(&live, pods, &pending, groups, &sizes, &upcoming);
        let by_key = |k: &str| pending.iter().find(|p| plan::key(p) == k);
        if let Some(s) = &up.scale_up
            && let Some(g) = groups.iter().find(|g| g.name == s.group)
        {
            let current = sizes.get(&g.name).copied().unwrap_or(0)
                + upcoming.get(&g.name).copied().unwrap_or(0);
            let target = current + s.add;
            match grow(settings, command, memory, g, s.add).await {
                Ok(names) => {
                    tracing::info!(group = %g.name, from = current, to = target, nodes = ?names, "scale-up");
                    scaled_up = true;
                    let msg = format!(
                        "pod triggered scale-up: [{{{} {current}->{target} (max: {})}}]",
                        g.name, g.max_size
                    );
                    for k in &s.pods {
                        if let Some(p) = by_key(k) {
                            recorder.normal(p.as_ref(), "TriggeredScaleUp", msg.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %g.name, error = %e, "scale-up failed");
                    for k in &s.pods {
                        if let Some(p) = by_key(k) {
                            recorder.warning(
                                p.as_ref(),
                                "FailedScaleUp",
                                format!(
                                    "Failed adding {} nodes to group {} due to {e}",
                                    s.add, g.name
                                ),
                            );
                        }
                    }
                }
            }
        }
        for (k, why) in &up.not_helped {
            if let Some(p) = by_key(k) {
                recorder.normal(
                    p.as_ref(),
                    "NotTriggerScaleUp",
                    format!("pod didn't trigger scale-up: {why}"),
                );
            }
        }
    }
    // Scale down only when nothing is being added.
    let adding = scaled_up || memory.upcoming.values().any(|l| !l.is_empty());
    let (candidates, blocked) = if adding {
        (Vec::new(), BTreeMap::new())
    } else {
        plan::plan_scale_down(&live, pods, groups, &sizes, settings.utilization_threshold)
    };
    tracing::debug!(?candidates, ?blocked, adding, "scale-down plan");
    memory
        .unneeded
        .retain(|n, _| candidates.iter().any(|c| &c.node == n));
    for c in &candidates {
        memory
            .unneeded
            .entry(c.node.clone())
            .or_insert_with(Instant::now);
    }
    let mut removed_busy = false;
    let mut removed = 0;
    for c in &candidates {
        let Some(g) = groups.iter().find(|g| g.name == c.group) else {
            continue;
        };
        let wait = g
            .unneeded_secs
            .map(Duration::from_secs)
            .unwrap_or(settings.unneeded_time);
        if memory
            .unneeded
            .get(&c.node)
            .is_none_or(|since| since.elapsed() < wait)
        {
            continue;
        }
        // Empty nodes go together; a busy one at a time, as upstream.
        let busy = !c.pods.is_empty();
        if (busy && removed_busy) || removed >= 10 {
            continue;
        }
        match remove_node(
            client, settings, command, recorder, g, &c.node, &c.pods, pods,
        )
        .await
        {
            Ok(()) => {
                memory.unneeded.remove(&c.node);
                memory.last_scale_down = Some(now());
                removed += 1;
                removed_busy |= busy;
                *sizes.entry(g.name.clone()).or_default() -= 1;
            }
            Err(e) => {
                tracing::info!(node = %c.node, error = %e, "scale-down of the node stopped");
                memory.unneeded.remove(&c.node);
            }
        }
    }
    status::write(client, groups, nodes, &sizes, memory, candidates.len()).await;
}

/// Asks `g`'s provider for `count` nodes and remembers them as coming.
async fn grow(
    settings: &Settings,
    command: &Handle,
    memory: &mut Memory,
    g: &NodeGroup,
    count: usize,
) -> Result<Vec<String>, String> {
    let names = provider_for(settings, command, g)?.add(g, count).await?;
    let at = Instant::now();
    memory
        .upcoming
        .entry(g.name.clone())
        .or_default()
        .extend(names.iter().map(|n| (n.clone(), at)));
    memory.last_scale_up = Some(now());
    Ok(names)
}

fn tainted_for_deletion(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED))
}

async fn set_taint(api: &Api<Node>, node: &str, on: bool) -> Result<(), kube::Error> {
    let n = api.get(node).await?;
    let mut taints: Vec<Value> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .filter(|t| t.key != TO_BE_DELETED)
                .map(|t| json!(t))
                .collect()
        })
        .unwrap_or_default();
    if on {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        taints
            .push(json!({"key": TO_BE_DELETED, "value": unix.to_string(), "effect": "NoSchedule"}));
    }
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"taints": taints}})),
    )
    .await?;
    Ok(())
}

/// Taints, drains (evictions, so PDBs hold) and removes one node.
#[allow(clippy::too_many_arguments)]
async fn remove_node(
    client: &kube::Client,
    settings: &Settings,
    command: &Handle,
    recorder: &controller_runtime::events::Recorder,
    g: &NodeGroup,
    node: &str,
    to_evict: &[String],
    pods: &[Arc<Pod>],
) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let provider = provider_for(settings, command, g)?;
    set_taint(&nodes, node, true)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(n) = nodes.get(node).await {
        recorder.normal(
            &n,
            "ScaleDown",
            "marked the node as toBeDeleted/unschedulable".into(),
        );
    }
    for key in to_evict {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let evicting = settings
            .eviction_client
            .as_ref()
            .map_or_else(|| client.clone(), |c| c.0.clone());
        let api: Api<Pod> = Api::namespaced(evicting, ns);
        if let Some(p) = pods.iter().find(|p| {
            p.metadata.name.as_deref() == Some(name) && p.metadata.namespace.as_deref() == Some(ns)
        }) {
            recorder.normal(
                p.as_ref(),
                "ScaleDown",
                "deleting pod for node scale down".to_string(),
            );
        }
        match api.evict(name, &EvictParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                // A PodDisruptionBudget (429) or anything else: the node
                // stays, schedulable again.
                let _ = set_taint(&nodes, node, false).await;
                if let Ok(n) = nodes.get(node).await {
                    recorder.warning(
                        &n,
                        "ScaleDownFailed",
                        format!(
                            "failed to drain the node, aborting ScaleDown: cannot evict {key}: {e}"
                        ),
                    );
                }
                return Err(format!("evicting {key}: {e}"));
            }
        }
    }
    // Wait for the evicted pods to be gone.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let mut left = 0;
        for key in to_evict {
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            if let Ok(Some(p)) = api.get_opt(name).await
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
            {
                left += 1;
            }
        }
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            let _ = set_taint(&nodes, node, false).await;
            return Err(format!(
                "{left} pods still on the node after {DRAIN_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    provider.remove(g, node).await?;
    match nodes.delete(node, &DeleteParams::default()).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    tracing::info!(group = %g.name, %node, "scale-down: node removed");
    Ok(())
}
