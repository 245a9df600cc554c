//! Pod workers: one task per pod bound to this node that drives it to its
//! spec (sandbox, init containers in order, app containers with restart
//! policy and back-off), reports status, and tears it down on deletion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod prepare;
mod probe;
mod publish;
mod resize;
mod start;
mod status;
mod stop;
mod sync;

use status::{termination_file, termination_message};

use crate::eviction::pod_grace;

use crate::spec::{self, ImageDefaults};
use crate::{Agent, KubeletError, hostport, logs, network, probes, resources, sandbox, volumes};

/// Back-off after a container exits: the first exit restarts at once,
/// then 10 s doubling to 5 min (upstream's `doBackOff`).
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The delay before the next restart, given the previous one (`None`
/// before any exit): zero for the first, then 10 s doubling to the cap.
fn next_backoff(previous: Option<Duration>) -> Duration {
    match previous {
        None => Duration::ZERO,
        Some(b) if b.is_zero() => BACKOFF_START,
        Some(b) => (b * 2).min(BACKOFF_MAX),
    }
}
/// How often configMap, secret, downwardAPI and projected volumes are
/// brought up to date in running pods.
const VOLUME_RESYNC: Duration = Duration::from_secs(5);
/// How often a worker looks at its containers without news.
const TICK: Duration = Duration::from_millis(500);

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Watches the pods bound to this node and feeds their workers.
pub async fn run(agent: Arc<Agent>) {
    let api: Api<Pod> = Api::all(agent.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.opts.node_name));
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    let mut workers: HashMap<String, mpsc::UnboundedSender<Option<Arc<Pod>>>> = HashMap::new();
    while let Some(ev) = stream.next().await {
        let (pod, gone) = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
            Ok(watcher::Event::Delete(p)) => (p, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        workers.retain(|_, tx| !tx.is_closed());
        let tx = workers.entry(uid.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Worker::new(agent.clone(), uid).run(rx));
            tx
        });
        let _ = tx.send((!gone).then(|| Arc::new(pod)));
    }
}

/// State of one container, as the worker tracks it.
#[derive(Debug, Clone, Default)]
struct Ctr {
    /// Current runtime container id (changes per restart).
    id: Option<String>,
    pid: Option<i32>,
    started_at: Option<String>,
    started_instant: Option<Instant>,
    restarts: i32,
    /// The last termination (for `lastState`, or `state` if not restarted).
    terminated: Option<Value>,
    /// Why it is waiting, and the message.
    waiting: Option<(String, String)>,
    /// Not before this instant may it start again.
    backoff_until: Option<Instant>,
    backoff: Option<Duration>,
    /// The image the spec named when the current run started.
    spec_image: String,
    /// Killed because its definition changed: restart at once.
    changed: bool,
    /// The run (runtime id) being stopped by the kubelet (a failed probe,
    /// a new definition): it is not probed or stopped again.
    stopping: Option<String>,
    /// The cgroup settings in force, and the resources they came from
    /// (what an in-place resize compares with and the status reports).
    applied: Option<resources::Settings>,
    applied_resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// The back-off window a BackOff event was recorded for.
    backoff_reported: Option<Instant>,
    image_id: String,
    /// Whether the current run is over.
    exited: bool,
    /// Index of the current run's log file (`<n>.log`).
    attempt: i32,
    /// Probe tallies of the current run.
    startup: probes::Tally,
    liveness: probes::Tally,
    readiness: probes::Tally,
}

struct Worker {
    agent: Arc<Agent>,
    uid: String,
    pod: Option<Arc<Pod>>,
    ip: Option<String>,
    ns: Option<String>,
    pod_dir: PathBuf,
    volumes: Option<HashMap<String, PathBuf>>,
    init: HashMap<String, Ctr>,
    app: HashMap<String, Ctr>,
    start_time: Option<String>,
    last_status: Option<Value>,
    /// Set once the pod has been torn down after deletion.
    finished: bool,
    /// Pod-level error shown in container waiting reasons.
    sandbox_error: Option<String>,
    /// The pod's shared IPC/UTS/PID namespaces, once made.
    sandbox_ns: Option<sandbox::Namespaces>,
    /// When the volumes were last brought up to date.
    volumes_synced: Option<Instant>,
    /// An in-place resize that could not be done: condition type, reason,
    /// message.
    resize_state: Option<ResizeState>,
    /// Ephemeral containers (`kubectl debug`), by name.
    ephemeral: HashMap<String, Ctr>,
    /// Set once every init container has completed (sidecars started): a
    /// sidecar's later restarts no longer hold the app containers back.
    inits_completed: bool,
    /// Set once the kubelet ended the pod itself (evicted, past its
    /// active deadline): it stays Failed with this reason.
    failed: Option<crate::eviction::Verdict>,
    /// A soft admission refusal (reason, message): the pod stays Pending,
    /// its containers waiting as `Blocked`, and is looked at again.
    blocked: Option<(String, String)>,
    /// When this agent first saw the pod, and whether its start has been
    /// measured (`kubelet_pod_start_duration_seconds`).
    seen: Instant,
    start_observed: bool,
}

impl Worker {
    fn new(agent: Arc<Agent>, uid: String) -> Worker {
        let pod_dir = agent.opts.data_dir.join("agent/pods").join(&uid);
        Worker {
            agent,
            uid,
            pod: None,
            ip: None,
            ns: None,
            pod_dir,
            volumes: None,
            init: HashMap::new(),
            app: HashMap::new(),
            start_time: None,
            last_status: None,
            finished: false,
            sandbox_error: None,
            sandbox_ns: None,
            volumes_synced: None,
            failed: None,
            inits_completed: false,
            ephemeral: HashMap::new(),
            resize_state: None,
            blocked: None,
            seen: Instant::now(),
            start_observed: false,
        }
    }

    /// Picks up what an earlier agent left running for this pod: its
    /// containers (from their `meta.json`), address and network namespace,
    /// so an agent restart does not restart the pod.
    fn recover(&mut self) {
        let dir = self.agent.opts.data_dir.join("agent/containers");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(bytes) = std::fs::read(e.path().join("meta.json")) else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if m["pod"].as_str() != Some(self.uid.as_str()) {
                continue;
            }
            let name = m["container"].as_str().unwrap_or("").to_string();
            let attempt = m["attempt"].as_i64().unwrap_or(0) as i32;
            let map = if m["init"] == true {
                &mut self.init
            } else if m["ephemeral"] == true {
                &mut self.ephemeral
            } else {
                &mut self.app
            };
            if map.get(&name).is_some_and(|c| c.attempt > attempt) {
                continue;
            }
            let pid = m["pid"].as_i64().map(|p| p as i32);
            let id = e.file_name().to_string_lossy().into_owned();
            let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
            let has_exit = e.path().join("exit.json").exists();
            if !alive && !has_exit {
                // The shim died with its container and left no record.
                self.agent.runtime.remove(&id);
                continue;
            }
            tracing::info!(pod = %self.uid, container = %name, %id, "recovered a running container");
            map.insert(
                name,
                Ctr {
                    id: Some(id),
                    pid,
                    started_at: m["startedAt"].as_str().map(str::to_string),
                    started_instant: Some(Instant::now()),
                    restarts: attempt,
                    image_id: m["imageID"].as_str().unwrap_or("").to_string(),
                    spec_image: m["image"].as_str().unwrap_or("").to_string(),
                    applied_resources: serde_json::from_value(m["resources"].clone())
                        .ok()
                        .flatten(),
                    applied: m.get("resources").map(|r| {
                        resources::of(&Container {
                            resources: serde_json::from_value(r.clone()).ok().flatten(),
                            ..Default::default()
                        })
                    }),
                    attempt,
                    ..Default::default()
                },
            );
        }
        if self.init.is_empty() && self.app.is_empty() {
            return;
        }
        let cfg = &self.agent.opts.net;
        let ns = format!("{}-{}", cfg.bridge, &self.uid[..self.uid.len().min(18)]);
        if network::netns_path(&ns).exists() {
            self.ns = Some(ns);
        }
        if let Ok(rd) = std::fs::read_dir(&cfg.ipam_dir) {
            for e in rd.flatten() {
                if std::fs::read_to_string(e.path()).is_ok_and(|o| o == self.uid) {
                    self.ip = Some(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if self.ip.is_none() && self.ns.is_none() {
            // Host network: the address is the node's.
            self.ip = Some(self.agent.opts.node_ip.to_string());
        }
        self.start_time = Some(now());
        // App containers ran: the init phase is over, and the pod's start
        // was measured by the agent that started it.
        self.inits_completed = !self.app.is_empty();
        self.start_observed = !self.app.is_empty();
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Option<Arc<Pod>>>) {
        self.recover();
        loop {
            let msg = tokio::time::timeout(TICK, rx.recv()).await;
            match msg {
                Ok(Some(Some(p))) => self.pod = Some(p),
                Ok(Some(None)) | Ok(None) => {
                    // Deleted from the API (or the watch is gone): stop now.
                    self.unpublish();
                    self.kill_all(Duration::ZERO).await;
                    self.teardown().await;
                    return;
                }
                Err(_) => {}
            }
            while let Ok(m) = rx.try_recv() {
                match m {
                    Some(p) => self.pod = Some(p),
                    None => {
                        self.unpublish();
                        self.kill_all(Duration::ZERO).await;
                        self.teardown().await;
                        return;
                    }
                }
            }
            if self.finished {
                continue;
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(pod = %self.name(), error = %e, "pod sync failed");
            }
        }
    }

    fn name(&self) -> String {
        self.pod
            .as_ref()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or(""),
                    p.metadata.name.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_else(|| self.uid.clone())
    }
}

/// An in-place resize not done: condition type, reason, message.
type ResizeState = (&'static str, &'static str, String);

/// Which of a pod's container lists a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Init,
    App,
    Ephemeral,
}

/// Whether `name` is one of the pod's ephemeral containers.
fn is_ephemeral(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|l| l.iter().any(|e| e.name == name))
}

/// An ephemeral container as a container (the same fields, less the
/// target), which is how the rest of the worker runs it.
fn ephemeral_as_container(
    ec: &k8s_openapi::api::core::v1::EphemeralContainer,
) -> Option<Container> {
    let mut v = serde_json::to_value(ec).ok()?;
    if let Some(o) = v.as_object_mut() {
        o.remove("targetContainerName");
    }
    serde_json::from_value(v).ok()
}

/// Whether an init container is a sidecar: `restartPolicy: Always`, it
/// keeps running beside the app containers.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_exit_restarts_at_once_then_backs_off_doubling() {
        let mut b = None;
        let mut seen = Vec::new();
        for _ in 0..7 {
            let next = next_backoff(b);
            seen.push(next.as_secs());
            b = Some(next);
        }
        assert_eq!(seen, [0, 10, 20, 40, 80, 160, 300]);
    }
}
