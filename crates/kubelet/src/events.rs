//! Events the kubelet reports about pods and their containers (Pulled,
//! Created, Started, Killing, BackOff, Unhealthy, Evicted, ...), with the
//! reasons and messages upstream's kubelet uses, so `kubectl describe pod`
//! and `kubectl events` read as they do on any cluster.
//!
//! They are core/v1 Events, as upstream's kubelet writes them (through
//! client-go's legacy recorder), not events.k8s.io series: a repeat of the
//! same reason *and message* about the same object bumps `count` and
//! `lastTimestamp` of one Event, while the same reason with another message
//! (a liveness and a readiness `Unhealthy`) is its own Event. kube-rs's
//! recorder keys series without the message, which would fold those into
//! one.
//!
//! Publishing runs in the background; a pod worker never waits for it, and
//! a full backlog drops events as client-go does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

const BACKLOG: usize = 4096;
/// Events remembered for counting repeats (client-go keeps 4096 too).
const REMEMBERED: usize = 4096;

/// What makes two events one: object uid, field path, warning, reason,
/// message.
type Key = (String, String, bool, String, String);
/// Where the Event is and its count: namespace, name, count.
type Published = (String, String, i32);

struct Pending {
    regarding: ObjectReference,
    warning: bool,
    reason: String,
    message: String,
}

/// Publishes events as `kubelet` from one node.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// A recorder for `node` (the events' source host).
    pub fn new(client: kube::Client, node: &str) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Pending>(BACKLOG);
        let node = node.to_string();
        tokio::spawn(async move {
            let mut seen: HashMap<Key, Published> = HashMap::new();
            while let Some(p) = rx.recv().await {
                let ns = p
                    .regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let key = (
                    p.regarding.uid.clone().unwrap_or_default(),
                    p.regarding.field_path.clone().unwrap_or_default(),
                    p.warning,
                    p.reason.clone(),
                    p.message.clone(),
                );
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                let now = k8s_openapi::jiff::Timestamp::now();
                if let Some((ens, name, count)) = seen.get(&key).cloned() {
                    let patch = serde_json::json!({
                        "count": count + 1,
                        "lastTimestamp": Time(now),
                    });
                    let ok = Api::<Event>::namespaced(client.clone(), &ens)
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .is_ok();
                    if ok {
                        seen.insert(key, (ens, name, count + 1));
                        continue;
                    }
                }
                let name = format!(
                    "{}.{:x}",
                    p.regarding.name.as_deref().unwrap_or("event"),
                    now.as_nanosecond()
                );
                let ev = Event {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    involved_object: p.regarding,
                    reason: Some(p.reason.clone()),
                    message: Some(p.message.clone()),
                    type_: Some(if p.warning { "Warning" } else { "Normal" }.into()),
                    source: Some(EventSource {
                        component: Some("kubelet".into()),
                        host: Some(node.clone()),
                    }),
                    first_timestamp: Some(Time(now)),
                    last_timestamp: Some(Time(now)),
                    event_time: None::<MicroTime>,
                    count: Some(1),
                    reporting_component: Some("kubelet".into()),
                    reporting_instance: Some(node.clone()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &ev).await {
                    Ok(_) => {
                        if seen.len() >= REMEMBERED {
                            seen.clear();
                        }
                        seen.insert(key, (ns, name, 1));
                    }
                    Err(e) => tracing::debug!(error = %e, reason = %p.reason, "publishing event"),
                }
            }
        });
        Recorder { tx }
    }

    /// A Normal event about the pod.
    pub fn normal(&self, pod: &Pod, reason: &str, note: String) {
        self.send(pod_ref(pod, None), false, reason, note);
    }

    /// A Warning event about the pod.
    pub fn warning(&self, pod: &Pod, reason: &str, note: String) {
        self.send(pod_ref(pod, None), true, reason, note);
    }

    /// An event about one container (`spec.containers{name}` as upstream's
    /// field path), Normal or Warning.
    pub fn container(&self, pod: &Pod, container: &str, warning: bool, reason: &str, note: String) {
        self.send(pod_ref(pod, Some(container)), warning, reason, note);
    }

    fn send(&self, regarding: ObjectReference, warning: bool, reason: &str, message: String) {
        let _ = self.tx.try_send(Pending {
            regarding,
            warning,
            reason: reason.to_string(),
            message,
        });
    }
}

/// The reference to a pod, or to one of its containers.
fn pod_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let mut r = pod.object_ref(&());
    if let Some(name) = container {
        let spec = pod.spec.as_ref();
        let list = if spec
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|ics| ics.iter().any(|c| c.name == name))
        {
            "initContainers"
        } else {
            "containers"
        };
        r.field_path = Some(format!("spec.{list}{{{name}}}"));
    }
    r
}

/// `name_namespace(uid)`, how upstream's kubelet names a pod in messages.
pub fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_references_name_their_spec_list() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "initContainers": [{"name": "setup"}],
                "containers": [{"name": "app"}]
            }
        }))
        .unwrap();
        assert_eq!(
            pod_ref(&pod, Some("app")).field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(
            pod_ref(&pod, Some("setup")).field_path.as_deref(),
            Some("spec.initContainers{setup}")
        );
        assert_eq!(pod_ref(&pod, None).field_path, None);
        assert_eq!(pod_desc(&pod), "p_ns(u1)");
    }
}
