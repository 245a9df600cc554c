//! The pods running on this node as the node's own services see them:
//! the pod workers publish each pod's containers, logs and address here,
//! and the kubelet API (logs, exec, port-forward), the stats summary and
//! the eviction manager read it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What the log endpoint knows of a container.
#[derive(Debug, Clone, Default)]
pub struct CtrLogs {
    /// Directory with `<restart>.log` files.
    pub dir: PathBuf,
    /// Index of the current run's log.
    pub current: i32,
    /// Whether the current run is still going.
    pub running: bool,
    /// The runtime id of the current run.
    pub id: Option<String>,
    /// When the current run started (RFC 3339).
    pub started_at: Option<String>,
}

/// What the kubelet API knows of a pod on this node.
#[derive(Debug, Clone, Default)]
pub struct PodEntry {
    /// The pod's uid.
    pub uid: String,
    /// Containers by name.
    pub containers: HashMap<String, CtrLogs>,
    /// Where the pod's ports are reached from the host: its IP, or
    /// loopback for a hostNetwork pod; `None` before its sandbox exists.
    pub addr: Option<String>,
    /// The pod as last seen (the eviction manager reads its spec).
    pub pod: Option<Arc<k8s_openapi::api::core::v1::Pod>>,
}

/// Pods on this node by (namespace, name).
pub type Registry = Arc<Mutex<HashMap<(String, String), PodEntry>>>;
