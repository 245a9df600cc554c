//! Per-pod and per-node precomputed facts, kept incrementally so that each
//! scheduling decision only looks at small aggregates.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

pub mod terms;

use crate::resources::{Resource, pod_requests};
use crate::selector::Labels;
use terms::Terms;

/// A hash map with a fast non-cryptographic hasher, for hot lookups keyed
/// by names the cluster controls (no DoS concern inside the scheduler).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A host port a pod binds: (hostIP, protocol, port).
pub type HostPort = (String, String, i32);

/// A pod with what the scheduler needs precomputed.
#[derive(Debug)]
pub struct PodInfo {
    /// The pod as last seen (never mutated: shared with caches).
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// UID, to tell a recreated pod from the old one.
    pub uid: String,
    /// Effective priority.
    pub priority: i32,
    /// Requests counted against allocatable.
    pub requests: Resource,
    /// CPU/memory requests with upstream's non-zero defaults (for scoring).
    pub non_zero: (i64, i64),
    /// Host ports used.
    pub ports: Vec<HostPort>,
    /// UID of the controlling ReplicaSet/StatefulSet/ReplicationController,
    /// whose pods the system default spreading spreads apart.
    pub owner: Option<String>,
    /// spec.preemptionPolicy, or the PriorityClass's when the pod has none.
    pub preemption_policy: Option<String>,
    /// Pod (anti-)affinity terms, resolved once.
    pub terms: Terms,
}

impl PodInfo {
    /// Precomputes a pod's facts.
    pub fn new(pod: Arc<Pod>, priority: i32) -> Self {
        let (requests, non_zero) = pod_requests(&pod);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = format!(
            "{namespace}/{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| {
                r.controller == Some(true)
                    && matches!(
                        r.kind.as_str(),
                        "ReplicaSet" | "StatefulSet" | "ReplicationController"
                    )
            })
            .map(|r| r.uid.clone());
        let mut info = PodInfo {
            terms: Terms::default(),
            preemption_policy: pod.spec.as_ref().and_then(|s| s.preemption_policy.clone()),
            owner,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ports: host_ports(&pod),
            pod,
            key,
            namespace,
            priority,
            requests,
            non_zero,
        };
        if info.has_affinity() {
            info.terms = Terms::of(&info);
        }
        info
    }

    /// The pod's labels.
    pub fn labels(&self) -> &Labels {
        static EMPTY: Labels = Labels::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// Whether the pod has any pod (anti-)affinity.
    pub fn has_affinity(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
    }

    /// Whether the pod has required anti-affinity terms.
    pub fn has_required_anti_affinity(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|t| !t.is_empty())
    }

    /// The pod's start time (or creation time), for victim ordering.
    pub fn start_time(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .or(self.pod.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
    }
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|&h| h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            Some((ip, proto, hp))
        })
        .collect()
}

/// A node with the aggregates of the pods on it (bound and assumed).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The node (None while only pods naming it are known).
    pub node: Option<Arc<Node>>,
    /// Node name.
    pub name: String,
    /// Allocatable resources.
    pub allocatable: Resource,
    /// Sum of the pods' requests.
    pub requested: Resource,
    /// Sum of the pods' non-zero CPU/memory requests.
    pub non_zero_requested: (i64, i64),
    /// Pods on the node.
    pub pods: Vec<Arc<PodInfo>>,
    /// Pods with pod affinity or anti-affinity.
    pub pods_with_affinity: Vec<Arc<PodInfo>>,
    /// Pods with required anti-affinity.
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    /// Host ports in use, with reference counts.
    pub used_ports: HashMap<HostPort, u32>,
    /// Taints, plus the not-ready/unreachable taint the node lifecycle
    /// controller would add when the Ready condition says so.
    pub taints: Vec<Taint>,
    /// Normalized image names on the node with their sizes.
    pub images: HashMap<String, i64>,
    /// The `topology.kubernetes.io/zone` label, looked up once.
    pub zone: Option<String>,
}

impl NodeInfo {
    /// An empty entry for a node name.
    pub fn new(name: &str) -> Self {
        NodeInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Node labels.
    pub fn labels(&self) -> &Labels {
        static EMPTY: Labels = Labels::new();
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&EMPTY)
    }

    /// Replaces the node object, refreshing the derived fields.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let status = node.status.as_ref();
        self.allocatable = status
            .and_then(|s| s.allocatable.as_ref())
            .map(Resource::from_list)
            .unwrap_or_default();
        self.taints = effective_taints(&node);
        self.zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("topology.kubernetes.io/zone"))
            .cloned();
        self.images = status
            .and_then(|s| s.images.as_ref())
            .map(|imgs| {
                imgs.iter()
                    .flat_map(|i| {
                        let size = i.size_bytes.unwrap_or(0);
                        i.names
                            .iter()
                            .flatten()
                            .map(move |n| (normalize_image(n), size))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.node = Some(node);
    }

    /// Adds a pod's usage.
    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.requested.pods += 1;
        self.non_zero_requested.0 += p.non_zero.0;
        self.non_zero_requested.1 += p.non_zero.1;
        for hp in &p.ports {
            *self.used_ports.entry(hp.clone()).or_default() += 1;
        }
        if p.has_affinity() {
            self.pods_with_affinity.push(p.clone());
        }
        if p.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity.push(p.clone());
        }
        self.pods.push(p);
    }

    /// Removes a pod by key; returns it if it was there.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let p = self.pods.swap_remove(i);
        self.pods_with_affinity.retain(|q| q.key != key);
        self.pods_with_required_anti_affinity
            .retain(|q| q.key != key);
        self.requested.sub(&p.requests);
        self.requested.pods -= 1;
        self.non_zero_requested.0 -= p.non_zero.0;
        self.non_zero_requested.1 -= p.non_zero.1;
        for hp in &p.ports {
            if let Some(c) = self.used_ports.get_mut(hp) {
                *c -= 1;
                if *c == 0 {
                    self.used_ports.remove(hp);
                }
            }
        }
        Some(p)
    }

    /// Whether a host port is taken (0.0.0.0 conflicts with every IP).
    pub fn port_conflicts(&self, hp: &HostPort) -> bool {
        let (ip, proto, port) = hp;
        if ip == "0.0.0.0" {
            return self
                .used_ports
                .keys()
                .any(|(_, p, n)| p == proto && n == port);
        }
        self.used_ports
            .contains_key(&(ip.clone(), proto.clone(), *port))
            || self
                .used_ports
                .contains_key(&("0.0.0.0".to_string(), proto.clone(), *port))
    }
}

/// Image name as upstream compares it: a missing tag means `:latest`.
pub fn normalize_image(name: &str) -> String {
    if name.contains('@') {
        return name.to_string();
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Node taints plus the condition taints a missing node lifecycle controller
/// would have added (not-ready for Ready=False or missing, unreachable for Unknown).
fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let key = match ready {
        Some("True") => None,
        Some("Unknown") => Some("node.kubernetes.io/unreachable"),
        _ => Some("node.kubernetes.io/not-ready"),
    };
    if let Some(key) = key {
        let tainted = taints.iter().any(|t| {
            (t.key == "node.kubernetes.io/not-ready" || t.key == "node.kubernetes.io/unreachable")
                && (t.effect == "NoSchedule" || t.effect == "NoExecute")
        });
        if !tainted {
            taints.push(Taint {
                key: key.to_string(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
    }
    taints
}

/// Distinct topology values seen, for spreading and affinity bookkeeping.
pub type TopologyPairs = HashMap<(String, String), i64>;

/// Set of node names.
pub type NodeSet = HashSet<String>;
