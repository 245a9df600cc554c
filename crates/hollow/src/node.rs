//! Node objects: naming, addressing, registration (create or take over),
//! Leases, and the one Node watch that sees the stop annotation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::HollowError;
use crate::addressing::{parse_net, pod_cidr, pod_net};
use crate::shared::{NodeSlot, Shared, is_conflict, is_not_found, rfc3339, rfc3339_micro};

/// Annotation marking a Node as simulated by r8s hollow.
pub const HOLLOW_ANNOTATION: &str = "r8s.io/hollow";
/// Annotation that, set to `true`, kills a hollow node (no heartbeats, no
/// pod handling) until removed.
pub const STOP_ANNOTATION: &str = "r8s.io/hollow-stop";
/// Label value of `node.kubernetes.io/instance-type` on hollow nodes, also
/// the selector of the Node watch.
const INSTANCE_TYPE: &str = "hollow";
/// Namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Lease duration the kubelet uses.
const LEASE_DURATION_SECONDS: i32 = 40;
/// How many registrations run at once.
const REGISTER_CONCURRENCY: usize = 64;
/// Tries per node registration.
const REGISTER_ATTEMPTS: usize = 5;

/// Labels a hollow node carries.
fn labels(shared: &Shared, slot: &NodeSlot) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), slot.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        (
            "node.kubernetes.io/instance-type".to_string(),
            INSTANCE_TYPE.to_string(),
        ),
    ]);
    let zones = &shared.opts.zones;
    if !zones.is_empty() {
        l.insert(
            "topology.kubernetes.io/zone".to_string(),
            zones[slot.index % zones.len()].clone(),
        );
        l.insert(
            "topology.kubernetes.io/region".to_string(),
            "r8s".to_string(),
        );
    }
    l.extend(shared.opts.labels.clone());
    l
}

/// The Node conditions of a live node (heartbeat now).
pub(crate) fn conditions(slot: &NodeSlot) -> Value {
    let now = rfc3339(Timestamp::now());
    let since = Timestamp::from_second(slot.ready_since.load(Ordering::Relaxed))
        .map(rfc3339)
        .unwrap_or_else(|_| now.clone());
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": t, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since,
        })
    };
    json!([
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

/// The full status a hollow node reports.
fn status(shared: &Shared, slot: &NodeSlot) -> Value {
    let o = &shared.opts;
    let resources = json!({
        "cpu": o.cpu, "memory": o.memory, "pods": o.max_pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(slot),
        "addresses": [
            {"type": "InternalIP", "address": slot.internal_ip},
            {"type": "Hostname", "address": slot.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": format!("{:032x}", slot.index),
            "systemUUID": format!("00000000-0000-0000-0000-{:012x}", slot.index),
            "bootID": format!("00000000-0000-0000-0000-{:012x}", slot.index),
            "kernelVersion": "6.1.0-hollow",
            "osImage": "r8s hollow node",
            "containerRuntimeVersion": "r8s-hollow://0.1",
            "kubeletVersion": "v1.33.0",
            "kubeProxyVersion": "v1.33.0",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

/// A complete Node for node `slot`.
fn node_object(shared: &Shared, slot: &NodeSlot) -> Result<Node, HollowError> {
    let cidr = pod_cidr(slot.index);
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": slot.name,
            "labels": labels(shared, slot),
            "annotations": {HOLLOW_ANNOTATION: "true"},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": status(shared, slot),
    });
    if !shared.opts.taints.is_empty() {
        v["spec"]["taints"] = json!(shared.opts.taints);
    }
    serde_json::from_value(v).map_err(|e| HollowError::Invalid(format!("node object: {e}")))
}

/// Registers every node (bounded concurrency) and creates its Lease.
pub(crate) async fn register_all(shared: &Arc<Shared>) -> Result<(), HollowError> {
    futures::stream::iter(0..shared.nodes.len())
        .map(|i| register_with_retries(shared, i))
        .buffer_unordered(REGISTER_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Registers node `i`, retrying transient failures (a busy server must not
/// sink a 5000-node start).
async fn register_with_retries(shared: &Arc<Shared>, i: usize) -> Result<(), HollowError> {
    let mut delay = std::time::Duration::from_millis(200);
    for _ in 0..REGISTER_ATTEMPTS - 1 {
        match register(shared, i).await {
            Ok(()) => return Ok(()),
            Err(HollowError::Kube(e)) if !is_client_error(&e) => {
                tracing::warn!(node = %shared.nodes[i].name, error = %e, "registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    register(shared, i).await
}

/// A 4xx other than conflicts and throttling: retrying will not help.
fn is_client_error(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429)
}

/// Creates node `i`, or takes an existing Node of that name over.
async fn register(shared: &Arc<Shared>, i: usize) -> Result<(), HollowError> {
    let slot = &shared.nodes[i];
    let api: Api<Node> = Api::all(shared.client.clone());
    let node = match api
        .create(&PostParams::default(), &node_object(shared, slot)?)
        .await
    {
        Ok(n) => n,
        Err(e) if is_conflict(&e) => take_over(shared, slot, &api).await?,
        Err(e) => return Err(e.into()),
    };
    let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref());
    let net = cidr
        .and_then(parse_net)
        .unwrap_or_else(|| pod_net(slot.index));
    let _ = slot.pod_net.set(net);
    if let Some(uid) = node.metadata.uid {
        let _ = slot.uid.set(uid);
    }
    // A node that was stopped before we (re)started stays stopped.
    let stopped = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STOP_ANNOTATION))
        .is_some_and(|v| v == "true");
    slot.stopped.store(stopped, Ordering::Relaxed);
    if !stopped {
        renew_lease(shared, slot).await?;
    }
    Ok(())
}

/// Brings an existing Node in line: our labels and annotation, a podCIDR if
/// it has none (it is immutable once set), and our status.
async fn take_over(
    shared: &Arc<Shared>,
    slot: &NodeSlot,
    api: &Api<Node>,
) -> Result<Node, HollowError> {
    let existing = api.get(&slot.name).await?;
    let mut patch = json!({
        "metadata": {
            "labels": labels(shared, slot),
            "annotations": {HOLLOW_ANNOTATION: "true"},
        },
    });
    if existing
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .is_none()
    {
        let cidr = pod_cidr(slot.index);
        patch["spec"] = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    let pp = PatchParams::default();
    api.patch(&slot.name, &pp, &Patch::Merge(&patch)).await?;
    let node = api
        .patch_status(
            &slot.name,
            &pp,
            &Patch::Merge(&json!({"status": status(shared, slot)})),
        )
        .await?;
    tracing::info!(node = %slot.name, "took over existing node");
    Ok(node)
}

/// Renews (or creates) the node's Lease: one merge patch, no read.
pub(crate) async fn renew_lease(shared: &Shared, slot: &NodeSlot) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(shared.client.clone(), LEASE_NAMESPACE);
    let now = rfc3339_micro(Timestamp::now());
    let patch = json!({"spec": {
        "holderIdentity": slot.name,
        "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": now,
    }});
    match api
        .patch(&slot.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => create_lease(&api, slot, &now).await,
        Err(e) => Err(e),
    }
}

/// Creates the Lease, owned by the Node (as the kubelet does) so deleting
/// the Node collects it.
async fn create_lease(api: &Api<Lease>, slot: &NodeSlot, now: &str) -> Result<(), kube::Error> {
    let mut meta = json!({"name": slot.name, "namespace": LEASE_NAMESPACE});
    if let Some(uid) = slot.uid.get() {
        meta["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "Node", "name": slot.name, "uid": uid,
        }]);
    }
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": slot.name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now,
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        // Someone created it between our patch and create: fine, renewed
        // on the next tick.
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reports the node's conditions (heartbeat) on the status subresource.
pub(crate) async fn update_status(shared: &Shared, slot: &NodeSlot) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let patch = json!({"status": {"conditions": conditions(slot)}});
    api.patch_status(&slot.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Watches our Nodes for the stop annotation; revived nodes heartbeat at
/// once and their pods are handed back to the pod loop.
pub(crate) async fn watch(
    shared: Arc<Shared>,
    revive: UnboundedSender<usize>,
) -> Result<(), HollowError> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default()
        .labels(&format!("node.kubernetes.io/instance-type={INSTANCE_TYPE}"));
    let mut stream = std::pin::pin!(watcher(api, cfg));
    while let Some(ev) = stream.next().await {
        let node = match ev {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => n,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(&i) = node
            .metadata
            .name
            .as_ref()
            .and_then(|n| shared.by_name.get(n))
        else {
            continue;
        };
        let slot = &shared.nodes[i];
        if let Some(uid) = &node.metadata.uid {
            let _ = slot.uid.set(uid.clone());
        }
        let stop = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STOP_ANNOTATION))
            .is_some_and(|v| v == "true");
        let was = slot.stopped.swap(stop, Ordering::Relaxed);
        if stop && !was {
            tracing::info!(node = %slot.name, "hollow node stopped by annotation");
        } else if !stop && was {
            tracing::info!(node = %slot.name, "hollow node revived");
            slot.ready_since
                .store(Timestamp::now().as_second(), Ordering::Relaxed);
            let s = shared.clone();
            tokio::spawn(async move {
                let slot = &s.nodes[i];
                if let Err(e) = renew_lease(&s, slot).await {
                    tracing::warn!(node = %slot.name, error = %e, "lease renewal failed");
                }
                if let Err(e) = update_status(&s, slot).await {
                    tracing::warn!(node = %slot.name, error = %e, "status update failed");
                }
            });
            let _ = revive.send(i);
        }
    }
    Err(HollowError::Stopped("node watch stream ended".into()))
}
