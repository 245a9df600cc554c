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
        // App containers ran: the init phase is over.
        self.inits_completed = !self.app.is_empty();
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

    async fn sync(&mut self) -> Result<(), KubeletError> {
        let Some(pod) = self.pod.clone() else {
            return Ok(());
        };
        self.collect_exits();
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64;
            if !self.finished {
                self.announce_stop(&pod);
            }
            self.kill_all(Duration::from_secs(grace)).await;
            self.teardown().await;
            self.report(&pod).await;
            let api: Api<Pod> = Api::namespaced(
                self.agent.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api
                .delete(pod.metadata.name.as_deref().unwrap_or(""), &dp)
                .await;
            self.finished = true;
            return Ok(());
        }
        if self.terminal(&pod) {
            // Sidecars outlive the app containers only until the pod is done.
            self.kill_all(Duration::from_secs(pod_grace(&pod))).await;
            self.teardown().await;
            self.report(&pod).await;
            self.finished = true;
            return Ok(());
        }
        if self.failed.is_some() {
            // Already stopped; only the status may still need writing.
            self.report(&pod).await;
            return Ok(());
        }
        let fresh = self.init.is_empty() && self.app.is_empty();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if fresh && matches!(phase, Some("Failed" | "Succeeded")) {
            // Ended (or rejected) before this worker began: never rerun.
            self.finished = true;
            return Ok(());
        }
        if let Some(v) = self.verdict(&pod) {
            self.fail(&pod, v).await;
            return Ok(());
        }
        if self.start_time.is_none() {
            // AppArmor, as upstream's soft admission: a pod asking for a
            // profile on a host that cannot enforce one is held Pending.
            let blocked = crate::apparmor::refusal(&pod).map(|m| ("AppArmor".to_string(), m));
            if blocked != self.blocked {
                if let Some((reason, message)) = &blocked {
                    self.agent.events.warning(&pod, reason, message.clone());
                }
                self.blocked = blocked;
            }
            if self.blocked.is_some() {
                self.report(&pod).await;
                return Ok(());
            }
            if let Some(why) =
                crate::sysctls::forbidden(&pod, &self.agent.opts.allowed_unsafe_sysctls)
            {
                self.reject(&pod, "SysctlForbidden", &why).await;
                self.finished = true;
                return Ok(());
            }
            if let Some(condition) = self.agent.refuses(&pod) {
                self.reject(
                    &pod,
                    "Evicted",
                    &format!("The node had condition: [{condition}]. "),
                )
                .await;
                self.finished = true;
                return Ok(());
            }
            self.start_time = Some(now());
        }
        let t0 = Instant::now();
        let had_sandbox = self.ip.is_some();
        if let Err(e) = self.ensure_sandbox(&pod).await {
            let msg = e.to_string();
            if self.sandbox_error.as_ref() != Some(&msg) {
                // Volumes fail as upstream's volume manager reports them.
                let (reason, text) = match &e {
                    KubeletError::Volume(m) => ("FailedMount", m.clone()),
                    _ => (
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {msg}"),
                    ),
                };
                self.agent.events.warning(&pod, reason, text);
            }
            self.sandbox_error = Some(msg);
            self.report(&pod).await;
            return Err(e);
        }
        self.sandbox_error = None;
        if !had_sandbox {
            tracing::debug!(pod = %self.name(), elapsed = ?t0.elapsed(), "sandbox ready");
        }
        match self.volumes_synced {
            None => self.volumes_synced = Some(Instant::now()),
            Some(t) if t.elapsed() >= VOLUME_RESYNC => {
                volumes::refresh(&self.agent.client, &pod, &self.pod_dir).await;
                self.volumes_synced = Some(Instant::now());
            }
            Some(_) => {}
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        // Init containers in order, each regular one to success. A sidecar
        // (restartPolicy: Always) only has to start (and pass its startup
        // probe) before the next one; it then runs beside the app
        // containers and is restarted whenever it exits, never blocking
        // them again.
        let mut inits_done = true;
        let sidecars: Vec<Container> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c))
            .cloned()
            .collect();
        for c in spec.init_containers.iter().flatten() {
            let st = self.init.entry(c.name.clone()).or_default().clone();
            if is_sidecar(c) {
                self.kill_if_redefined(&pod, c, Which::Init);
                if st.changed && st.exited {
                    self.clear_changed(&c.name, Which::Init);
                    self.start_container(&pod, c, Which::Init, None).await;
                } else if st.id.is_none() || st.exited {
                    if self.may_start(&st, true) {
                        self.start_container(&pod, c, Which::Init, None).await;
                    } else if st.exited {
                        self.backoff_event(&pod, c, true);
                    }
                }
                if self.inits_completed {
                    continue;
                }
                // Its startup probe runs before the next init may start.
                self.run_probes(std::slice::from_ref(c), true).await;
                let st = self.init.get(&c.name).cloned().unwrap_or_default();
                let started = st.id.is_some()
                    && !st.exited
                    && (c.startup_probe.is_none() || st.startup.verdict == Some(true));
                if started {
                    continue;
                }
                inits_done = false;
                break;
            }
            let succeeded =
                st.exited && st.terminated.as_ref().and_then(|t| t["exitCode"].as_i64()) == Some(0);
            if succeeded {
                continue;
            }
            inits_done = false;
            let running = st.id.is_some() && !st.exited;
            if !running && self.may_start(&st, policy != "Never") {
                self.start_container(&pod, c, Which::Init, None).await;
            }
            break;
        }
        if inits_done {
            self.inits_completed = true;
            let mut resize_state = None;
            // Running sidecars are resized in place too (upstream 1.33).
            for c in &sidecars {
                let running = self
                    .init
                    .get(&c.name)
                    .is_some_and(|st| st.id.is_some() && !st.exited && st.stopping != st.id);
                if running && let Some(r) = self.resize(&pod, c, Which::Init) {
                    resize_state = Some(r);
                }
            }
            for c in &spec.containers {
                let st = self.app.entry(c.name.clone()).or_default().clone();
                if st.id.is_some() && !st.exited {
                    if self.kill_if_redefined(&pod, c, Which::App) {
                        continue;
                    }
                    if let Some(r) = self.resize(&pod, c, Which::App) {
                        resize_state = Some(r);
                    }
                    continue;
                }
                if st.changed {
                    self.clear_changed(&c.name, Which::App);
                    self.start_container(&pod, c, Which::App, None).await;
                    continue;
                }
                let restart = match policy.as_str() {
                    "Never" => st.id.is_none(),
                    "OnFailure" => {
                        st.id.is_none()
                            || st.terminated.as_ref().and_then(|t| t["exitCode"].as_i64())
                                != Some(0)
                    }
                    _ => true,
                };
                if restart && self.may_start(&st, true) {
                    let t = Instant::now();
                    self.start_container(&pod, c, Which::App, None).await;
                    tracing::debug!(pod = %self.name(), container = %c.name,
                        elapsed = ?t.elapsed(), "container started");
                } else if restart && st.exited {
                    self.backoff_event(&pod, c, false);
                }
            }
            self.resize_state = resize_state;
        }
        // Ephemeral containers (`kubectl debug`) start once, whatever the
        // pod is doing, and are never restarted.
        for ec in spec.ephemeral_containers.iter().flatten() {
            // Started once; a start that failed is retried with back-off.
            if let Some(st) = self.ephemeral.get(&ec.name)
                && (st.id.is_some() || !self.may_start(st, true))
            {
                continue;
            }
            let Some(c) = ephemeral_as_container(ec) else {
                continue;
            };
            let target_pid = ec
                .target_container_name
                .as_ref()
                .and_then(|t| self.app.get(t).or_else(|| self.init.get(t)))
                .filter(|s| !s.exited)
                .and_then(|s| s.pid);
            self.start_container(&pod, &c, Which::Ephemeral, target_pid)
                .await;
        }
        if inits_done {
            self.run_probes(&sidecars, true).await;
            self.run_probes(&spec.containers, false).await;
        }
        self.report(&pod).await;
        Ok(())
    }

    /// Runs the due probes of running app containers; kills a container
    /// whose startup or liveness probe failed, as upstream restarts it.
    async fn run_probes(&mut self, containers: &[Container], init: bool) {
        let Some(ip) = self.ip.clone() else { return };
        let shim_exe = self.agent.opts.shim_exe.clone();
        let state_root = self.agent.opts.data_dir.join("agent/state");
        for c in containers {
            let map = if init { &self.init } else { &self.app };
            let Some(st) = map.get(&c.name).cloned() else {
                continue;
            };
            let (Some(id), Some(started), false) = (st.id.clone(), st.started_instant, st.exited)
            else {
                continue;
            };
            // A container being stopped is not probed for liveness again
            // (it is already going), but its readiness still counts.
            let stopping = st.stopping.as_ref() == Some(&id);
            let target = probes::Target {
                pod_ip: &ip,
                container: c,
                id: &id,
                shim_exe: &shim_exe,
                state_root: &state_root,
            };
            let mut st = st;
            let mut kill = None;
            // Every failed run is an Unhealthy event, as upstream's prober.
            let pod = self.pod.clone();
            let unhealthy = |which: &str, r: Result<(), String>| {
                if let (Err(why), Some(pod)) = (&r, &pod) {
                    self.agent.events.container(
                        pod,
                        &c.name,
                        true,
                        "Unhealthy",
                        format!("{which} probe failed: {why}"),
                    );
                }
                r.is_ok()
            };
            let startup_done = match &c.startup_probe {
                None => true,
                Some(p) => {
                    if !stopping && st.startup.verdict != Some(true) && st.startup.due(p, started) {
                        let ok = unhealthy("Startup", probes::run(p, &target).await);
                        if st.startup.record(p, ok) == Some(false) {
                            kill = Some("startup");
                        }
                    }
                    st.startup.verdict == Some(true)
                }
            };
            if startup_done && kill.is_none() {
                if let Some(p) = &c.liveness_probe
                    && !stopping
                    && st.liveness.due(p, started)
                {
                    let ok = unhealthy("Liveness", probes::run(p, &target).await);
                    if st.liveness.record(p, ok) == Some(false) {
                        kill = Some("liveness");
                    }
                }
                if let Some(p) = &c.readiness_probe
                    && st.readiness.due(p, started)
                {
                    let ok = unhealthy("Readiness", probes::run(p, &target).await);
                    st.readiness.record(p, ok);
                }
            }
            let probe_grace = match kill {
                Some("startup") => c.startup_probe.as_ref(),
                _ => c.liveness_probe.as_ref(),
            }
            .and_then(|p| p.termination_grace_period_seconds);
            let which_map = if init { Which::Init } else { Which::App };
            self.map_mut(which_map).insert(c.name.clone(), st);
            if let (Some(which), Some(pod)) = (kill, &pod) {
                tracing::info!(pod = %self.name(), container = %c.name, probe = which,
                    "container failed its {which} probe, will be restarted");
                self.stop_container(
                    pod,
                    c,
                    which_map,
                    format!(
                        "Container {} failed {which} probe, will be restarted",
                        c.name
                    ),
                    probe_grace,
                );
            }
        }
    }

    /// A BackOff event, once per back-off window of a container that
    /// exited and waits to restart (upstream repeats it every sync; its
    /// recorder folds those into a count).
    fn backoff_event(&mut self, pod: &Pod, c: &Container, init: bool) {
        let map = if init { &mut self.init } else { &mut self.app };
        let Some(st) = map.get_mut(&c.name) else {
            return;
        };
        if st.backoff_until == st.backoff_reported || st.backoff_until.is_none() {
            return;
        }
        st.backoff_reported = st.backoff_until;
        self.agent.events.container(
            pod,
            &c.name,
            true,
            "BackOff",
            format!(
                "Back-off restarting failed container {} in pod {}",
                c.name,
                crate::events::pod_desc(pod)
            ),
        );
    }

    /// Whether the kubelet must end the pod now: the eviction manager chose
    /// it, or it ran past `activeDeadlineSeconds` (counted from
    /// `status.startTime`, as upstream).
    fn verdict(&self, pod: &Pod) -> Option<crate::eviction::Verdict> {
        if let Some(v) = self
            .agent
            .evictions
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&self.uid))
        {
            return Some(v);
        }
        let deadline = pod.spec.as_ref()?.active_deadline_seconds?;
        let started = pod.status.as_ref()?.start_time.as_ref()?.0;
        let ran = k8s_openapi::jiff::Timestamp::now().as_second() - started.as_second();
        (ran >= deadline).then(|| {
            let message = "Pod was active on the node longer than the specified deadline";
            self.agent
                .events
                .normal(pod, "DeadlineExceeded", message.to_string());
            crate::eviction::Verdict {
                reason: "DeadlineExceeded".into(),
                message: message.into(),
                grace: Duration::from_secs(pod_grace(pod)),
                disruption: false,
            }
        })
    }

    /// Ends the pod for the kubelet's own reason: stops its containers
    /// within the verdict's grace period, releases its network and what
    /// its disk emptyDirs hold (that is what an eviction reclaims), and
    /// reports it Failed. It stays so until deleted.
    async fn fail(&mut self, pod: &Pod, v: crate::eviction::Verdict) {
        tracing::info!(pod = %self.name(), reason = %v.reason, message = %v.message, "ending pod");
        self.announce_stop(pod);
        let grace = v.grace;
        self.failed = Some(v);
        self.kill_all(grace).await;
        self.teardown().await;
        let vols = self.pod_dir.join("volumes");
        for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if vol.empty_dir.is_some() {
                let _ = std::fs::remove_dir_all(vols.join(&vol.name));
            }
        }
        self.report(pod).await;
    }

    /// In-place resize: brings a running container's cgroup to what its
    /// spec asks now (`kubectl patch --subresource resize`), restarting it
    /// instead where its `resizePolicy` says so; an impossible request is
    /// left pending as `Infeasible`, a failed one reported in progress
    /// with the error, as upstream's conditions.
    fn resize(&mut self, pod: &Pod, c: &Container, which: Which) -> Option<ResizeState> {
        let want = resources::of(c);
        let st = self.map_mut(which).get_mut(&c.name)?;
        let (Some(id), Some(_)) = (st.id.clone(), st.pid) else {
            return None;
        };
        let Some(have) = st.applied.clone() else {
            // Adopted from an agent that did not record them.
            st.applied = Some(want);
            st.applied_resources = c.resources.clone();
            return None;
        };
        if have == want {
            // Nothing for the cgroup; requests alone may have changed.
            if st.applied_resources != c.resources {
                st.applied_resources = c.resources.clone();
                save_resources(&self.agent.opts.data_dir, &id, &c.resources);
            }
            return None;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        // What the pod asks for: its app containers and its sidecars.
        let requested = |name: &str| -> i64 {
            spec.containers
                .iter()
                .chain(
                    spec.init_containers
                        .iter()
                        .flatten()
                        .filter(|x| is_sidecar(x)),
                )
                .filter_map(|x| {
                    let r = x.resources.as_ref()?;
                    let q = r
                        .requests
                        .as_ref()
                        .and_then(|m| m.get(name))
                        .or_else(|| r.limits.as_ref().and_then(|m| m.get(name)))?;
                    if name == "cpu" {
                        resources::millicores(q)
                    } else {
                        resources::bytes(q)
                    }
                })
                .sum()
        };
        let (cpus, mem) = crate::node::host_capacity();
        for (name, capacity) in [("cpu", cpus as i64 * 1000), ("memory", mem)] {
            let asked = requested(name);
            if asked > capacity {
                return Some((
                    "PodResizePending",
                    "Infeasible",
                    format!(
                        "Node didn't have enough capacity: {name}, requested: {asked}, capacity: {capacity}"
                    ),
                ));
            }
        }
        let changed = |res: &str| match res {
            "cpu" => have.cpu_shares != want.cpu_shares || have.cpu_quota != want.cpu_quota,
            _ => have.memory_limit != want.memory_limit,
        };
        let restart =
            c.resize_policy.iter().flatten().any(|p| {
                p.restart_policy == "RestartContainer" && changed(p.resource_name.as_str())
            });
        if restart {
            self.restart_redefined(
                pod,
                c,
                which,
                format!("Container {} resize requires a restart", c.name),
            );
            return None;
        }
        let rel = format!("{}/pod{}/{}", self.agent.opts.cgroup_root, self.uid, id);
        match resources::apply_live(&rel, &want) {
            Ok(()) => {
                tracing::info!(pod = %self.name(), container = %c.name, ?want, "resized in place");
                if let Some(st) = self.map_mut(which).get_mut(&c.name) {
                    st.applied = Some(want);
                    st.applied_resources = c.resources.clone();
                }
                save_resources(&self.agent.opts.data_dir, &id, &c.resources);
                None
            }
            Err(e) => Some(("PodResizeInProgress", "Error", e)),
        }
    }

    /// The map of one container list.
    fn map_mut(&mut self, which: Which) -> &mut HashMap<String, Ctr> {
        match which {
            Which::Init => &mut self.init,
            Which::App => &mut self.app,
            Which::Ephemeral => &mut self.ephemeral,
        }
    }

    /// A new image (`kubectl set image`) restarts a running container, as
    /// upstream restarts a container whose spec changed: kills it and marks
    /// it for a restart without back-off. Returns whether it did.
    fn kill_if_redefined(&mut self, pod: &Pod, c: &Container, which: Which) -> bool {
        let Some(st) = self.map_mut(which).get_mut(&c.name) else {
            return false;
        };
        let redefined = st.id.is_some()
            && !st.exited
            && !st.spec_image.is_empty()
            && c.image.as_deref().is_some_and(|i| i != st.spec_image);
        if !redefined || st.pid.is_none() {
            return false;
        }
        self.restart_redefined(
            pod,
            c,
            which,
            format!("Container {} definition changed, will be restarted", c.name),
        );
        true
    }

    /// Stops a container whose definition changed (a new image, a resize
    /// that needs a restart) and marks it for a restart without back-off.
    fn restart_redefined(&mut self, pod: &Pod, c: &Container, which: Which, message: String) {
        if let Some(st) = self.map_mut(which).get_mut(&c.name) {
            st.changed = true;
        }
        self.stop_container(pod, c, which, message, None);
    }

    /// Stops one running container for the kubelet's own reason (a failed
    /// probe, a new definition, a resize that needs a restart), as
    /// upstream's `killContainer`: a Killing event, its preStop hook, then
    /// SIGTERM and SIGKILL once the grace period (the probe's
    /// `terminationGracePeriodSeconds`, else the pod's; at least 2 s) is
    /// over. It runs in the background: the worker sees the exit as any
    /// other and restarts the container as its policy says.
    fn stop_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        which: Which,
        message: String,
        probe_grace: Option<i64>,
    ) {
        let Some(st) = self.map_mut(which).get_mut(&c.name) else {
            return;
        };
        let (Some(id), Some(pid), false) = (st.id.clone(), st.pid, st.exited) else {
            return;
        };
        if st.stopping.as_ref() == Some(&id) {
            return;
        }
        st.stopping = Some(id.clone());
        self.agent
            .events
            .container(pod, &c.name, false, "Killing", message);
        let grace = probe_grace
            .map(|g| g.max(0) as u64)
            .unwrap_or_else(|| pod_grace(pod))
            .max(MIN_KILL_GRACE_SECS);
        let grace = Duration::from_secs(grace);
        let hook = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
        let agent = self.agent.clone();
        let ip = self.ip.clone().unwrap_or_default();
        let container = c.clone();
        let pod = pod.clone();
        let name = self.name();
        // A pidfd names this process and no other, whatever pid reuse
        // happens while the hook runs (a plain pid where pidfds are not
        // available).
        let proc = Proc::open(pid);
        tokio::spawn(async move {
            let start = Instant::now();
            if let Some(hook) = hook {
                let state_root = agent.opts.data_dir.join("agent/state");
                let target = probes::Target {
                    pod_ip: &ip,
                    container: &container,
                    id: &id,
                    shim_exe: &agent.opts.shim_exe,
                    state_root: &state_root,
                };
                let ran = tokio::time::timeout(grace, probes::run_hook(&hook, &target, grace));
                if let Ok(Err(why)) = ran.await {
                    tracing::warn!(pod = %name, container = %container.name, %why, "FailedPreStopHook");
                    agent.events.container(
                        &pod,
                        &container.name,
                        true,
                        "FailedPreStopHook",
                        "PreStopHook failed".into(),
                    );
                }
            }
            // What the hook used comes off the grace period, but the
            // process always gets the minimum after its SIGTERM.
            let left = grace
                .saturating_sub(start.elapsed())
                .max(Duration::from_secs(MIN_KILL_GRACE_SECS));
            if !proc.signal(libc::SIGTERM) {
                return;
            }
            let deadline = Instant::now() + left;
            while Instant::now() < deadline {
                if !proc.signal(0) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            proc.signal(libc::SIGKILL);
        });
    }

    /// Ends the restart-for-a-new-definition state: no crash back-off.
    fn clear_changed(&mut self, name: &str, which: Which) {
        if let Some(s) = self.map_mut(which).get_mut(name) {
            s.changed = false;
            s.backoff_until = None;
            s.backoff = None;
        }
    }

    /// A Killing event for each running container about to be stopped.
    fn announce_stop(&self, pod: &Pod) {
        let spec = pod.spec.as_ref();
        let all = spec.into_iter().flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        });
        for c in all {
            let running = self
                .app
                .get(&c.name)
                .or_else(|| self.init.get(&c.name))
                .is_some_and(|s| s.id.is_some() && !s.exited);
            if running {
                self.agent.events.container(
                    pod,
                    &c.name,
                    false,
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
            }
        }
    }

    /// Whether a container in state `st` may be (re)started now; sets the
    /// CrashLoopBackOff waiting reason while it may not.
    fn may_start(&self, st: &Ctr, restartable: bool) -> bool {
        if st.id.is_none() {
            return st.backoff_until.is_none_or(|t| Instant::now() >= t);
        }
        if !restartable {
            return false;
        }
        st.backoff_until.is_none_or(|t| Instant::now() >= t)
    }

    fn terminal(&self, pod: &Pod) -> bool {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        if policy == "Always" || spec.containers.is_empty() {
            return false;
        }
        // A regular init container failed under Never: the pod is over
        // (its sidecars are stopped with it).
        let init_failed = policy == "Never"
            && spec.init_containers.iter().flatten().any(|c| {
                !is_sidecar(c)
                    && self.init.get(&c.name).is_some_and(|s| {
                        s.exited
                            && s.terminated.as_ref().and_then(|t| t["exitCode"].as_i64()) != Some(0)
                    })
            });
        if init_failed {
            return true;
        }
        spec.containers.iter().all(|c| {
            self.app.get(&c.name).is_some_and(|s| {
                // Killed for a new definition: it restarts, whatever the
                // restart policy (upstream's computePodActions).
                s.exited
                    && !s.changed
                    && (policy == "Never"
                        || s.terminated.as_ref().and_then(|t| t["exitCode"].as_i64()) == Some(0))
            })
        })
    }

    fn collect_exits(&mut self) {
        let rt = self.agent.runtime.clone();
        let spec = self
            .pod
            .as_ref()
            .and_then(|p| p.spec.clone())
            .unwrap_or_default();
        let pod_dir = self.pod_dir.clone();
        for (name, st) in self
            .init
            .iter_mut()
            .chain(self.app.iter_mut())
            .chain(self.ephemeral.iter_mut())
        {
            let (Some(id), false) = (st.id.clone(), st.exited) else {
                continue;
            };
            if let Some(rec) = rt.exit(&id) {
                st.exited = true;
                st.terminated = Some(json!({
                    "exitCode": rec.exit_code,
                    "reason": rec.reason,
                    "startedAt": st.started_at,
                    "finishedAt": rec.finished_at,
                    "containerID": format!("r8s://{id}"),
                }));
                let c = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .find(|c| c.name == *name);
                let log = pod_dir
                    .join("logs")
                    .join(name)
                    .join(format!("{}.log", st.attempt));
                if let Some(m) = c.and_then(|c| {
                    termination_message(c, &termination_file(&pod_dir, &id), &log, rec.exit_code)
                }) {
                    st.terminated.as_mut().unwrap()["message"] = json!(m);
                }
                if let Some(sig) = rec.signal {
                    st.terminated.as_mut().unwrap()["signal"] = json!(sig);
                }
                let ran = st.started_instant.map(|t| t.elapsed()).unwrap_or_default();
                let next = if ran >= BACKOFF_RESET {
                    next_backoff(None)
                } else {
                    next_backoff(st.backoff)
                };
                st.backoff = Some(next);
                st.backoff_until = Some(Instant::now() + next);
                rt.remove(&id);
            }
        }
    }

    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(), KubeletError> {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        if pod.spec.as_ref().and_then(|s| s.host_users) == Some(false) {
            // Rather than run the pod in the host's user namespace, which
            // is what it asked not to do (upstream fails the sandbox where
            // the runtime cannot make one).
            return Err(KubeletError::Runtime(
                "user namespaces (hostUsers: false) are not supported by this node's runtime"
                    .into(),
            ));
        }
        std::fs::create_dir_all(&self.pod_dir).map_err(|e| {
            KubeletError::Runtime(format!("creating {}: {e}", self.pod_dir.display()))
        })?;
        if self.ip.is_none() {
            if host_network {
                self.ip = Some(self.agent.opts.node_ip.to_string());
            } else {
                let cfg = self.agent.opts.net.clone();
                let uid = self.uid.clone();
                // Named after the bridge, so a node's namespaces can be found.
                let ns = format!("{}-{}", cfg.bridge, &uid[..uid.len().min(18)]);
                let veth = format!("veth{}", &uid.replace('-', "")[..11.min(uid.len())]);
                let ns2 = ns.clone();
                let ports = hostport::mappings(pod);
                let ip = tokio::task::spawn_blocking(move || {
                    let ip = network::allocate(&cfg, &uid)?;
                    network::setup_pod(&cfg, &ns2, &veth, ip)?;
                    hostport::add(&cfg, &ip.to_string(), &ports)?;
                    Ok::<_, KubeletError>(ip)
                })
                .await
                .map_err(|e| KubeletError::Runtime(e.to_string()))??;
                self.ns = Some(ns);
                self.ip = Some(ip.to_string());
            }
            // A hostNetwork pod has the node's UTS namespace, so the
            // node's hostname, as upstream writes it.
            let hostname = if host_network {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default()
            } else {
                crate::podfiles::pod_hostname(pod)
            };
            let ip = self.ip.clone().unwrap_or_default();
            let node_hosts = if host_network {
                std::fs::read_to_string("/etc/hosts").unwrap_or_default()
            } else {
                String::new()
            };
            let hosts = crate::podfiles::hosts(pod, &ip, host_network, &node_hosts);
            let w = |f: &str, s: &str| {
                std::fs::write(self.pod_dir.join(f), s)
                    .map_err(|e| KubeletError::Runtime(format!("writing {f}: {e}")))
            };
            w("hosts", &hosts)?;
            w("hostname", &format!("{hostname}\n"))?;
            let node_resolv =
                std::fs::read_to_string(&self.agent.opts.resolv_conf).unwrap_or_default();
            let (resolv, fell_back) = crate::podfiles::resolv_conf(
                pod,
                &node_resolv,
                self.agent.opts.cluster_dns.as_ref(),
            );
            w("resolv.conf", &resolv)?;
            if fell_back {
                self.agent.events.warning(
                    pod,
                    "MissingClusterDNS",
                    format!(
                        "pod: \"{}\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.",
                        crate::events::pod_desc(pod)
                    ),
                );
            }
        }
        if self.sandbox_ns.is_none() {
            let (dir, pod2, exe) = (
                self.pod_dir.clone(),
                pod.clone(),
                self.agent.opts.shim_exe.clone(),
            );
            let n = tokio::task::spawn_blocking(move || sandbox::ensure(&dir, &pod2, &exe))
                .await
                .map_err(|e| KubeletError::Runtime(e.to_string()))??;
            self.sandbox_ns = Some(n);
        }
        if self.volumes.is_none() {
            let v = volumes::prepare(&self.agent.client, pod, &self.pod_dir).await?;
            self.volumes = Some(v);
        }
        Ok(())
    }

    async fn resolve_env(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<Vec<(String, String)>, KubeletError> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let client = &self.agent.client;
        let mut env: Vec<(String, String)> = Vec::new();
        let mut vars: HashMap<String, String> = HashMap::new();
        let mut pod_with_ip = pod.clone();
        let st = pod_with_ip.status.get_or_insert_with(Default::default);
        st.pod_ip = self.ip.clone();
        st.host_ip = Some(self.agent.opts.node_ip.to_string());
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        // Service variables can be referenced by the container's own, and
        // are added after them unless the container sets the same name.
        let service_vars = crate::svcenv::for_pod(client, pod).await?;
        vars.extend(service_vars.iter().cloned());
        for ef in c.env_from.iter().flatten() {
            let prefix = ef.prefix.clone().unwrap_or_default();
            if let Some(r) = &ef.config_map_ref {
                match cms.get_opt(&r.name).await? {
                    Some(cm) => {
                        for (k, v) in cm.data.unwrap_or_default() {
                            env.push((format!("{prefix}{k}"), v));
                        }
                    }
                    None if r.optional == Some(true) => {}
                    None => {
                        return Err(KubeletError::Config(format!(
                            "configmap {:?} not found",
                            r.name
                        )));
                    }
                }
            }
            if let Some(r) = &ef.secret_ref {
                match secrets.get_opt(&r.name).await? {
                    Some(s) => {
                        for (k, v) in s.data.unwrap_or_default() {
                            env.push((
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v.0).into_owned(),
                            ));
                        }
                    }
                    None if r.optional == Some(true) => {}
                    None => {
                        return Err(KubeletError::Config(format!(
                            "secret {:?} not found",
                            r.name
                        )));
                    }
                }
            }
        }
        for (k, v) in &env {
            vars.insert(k.clone(), v.clone());
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                Some(spec::expand(v, &vars))
            } else if let Some(from) = &e.value_from {
                if let Some(f) = &from.field_ref {
                    Some(volumes::field_value(&pod_with_ip, &f.field_path).unwrap_or_default())
                } else if let Some(r) = &from.resource_field_ref {
                    Some(resource_field(c, &r.resource))
                } else if let Some(r) = &from.config_map_key_ref {
                    match cms
                        .get_opt(&r.name)
                        .await?
                        .and_then(|cm| cm.data.unwrap_or_default().get(&r.key).cloned())
                    {
                        Some(v) => Some(v),
                        None if r.optional == Some(true) => None,
                        None => {
                            return Err(KubeletError::Config(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key, ns, r.name
                            )));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match secrets
                        .get_opt(&r.name)
                        .await?
                        .and_then(|s| s.data.unwrap_or_default().get(&r.key).cloned())
                    {
                        Some(v) => Some(String::from_utf8_lossy(&v.0).into_owned()),
                        None if r.optional == Some(true) => None,
                        None => {
                            return Err(KubeletError::Config(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key, ns, r.name
                            )));
                        }
                    }
                } else {
                    None
                }
            } else {
                Some(String::new())
            };
            if let Some(v) = value {
                vars.insert(e.name.clone(), v.clone());
                env.push((e.name.clone(), v));
            }
        }
        for (k, v) in service_vars {
            if !env.iter().any(|(n, _)| *n == k) {
                env.push((k, v));
            }
        }
        Ok(env)
    }

    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        which: Which,
        target_pid: Option<i32>,
    ) {
        let result = self.try_start(pod, c, target_pid).await;
        // postStart runs before the container counts as started; when it
        // fails the container is killed and restarts per its policy.
        if let (Ok((id, pid, _, _)), Some(hook)) = (
            &result,
            c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()),
        ) {
            let ip = self.ip.clone().unwrap_or_default();
            let state_root = self.agent.opts.data_dir.join("agent/state");
            let target = probes::Target {
                pod_ip: &ip,
                container: c,
                id,
                shim_exe: &self.agent.opts.shim_exe,
                state_root: &state_root,
            };
            if let Err(why) = probes::run_hook(hook, &target, Duration::from_secs(120)).await {
                tracing::warn!(pod = %self.name(), container = %c.name, %why, "FailedPostStartHook");
                // Upstream keeps the handler's output out of the event.
                self.agent.events.container(
                    pod,
                    &c.name,
                    true,
                    "FailedPostStartHook",
                    "PostStartHook failed".into(),
                );
                // Still recorded as started below, so that the exit is
                // collected and the restart policy applies.
                self.agent.runtime.signal(*pid, libc::SIGKILL);
            }
        }
        let who = self.name();
        // Field borrows, not map_mut(): the events recorder is used below.
        let st = match which {
            Which::Init => &mut self.init,
            Which::App => &mut self.app,
            Which::Ephemeral => &mut self.ephemeral,
        }
        .entry(c.name.clone())
        .or_default();
        let ev = &self.agent.events;
        match &result {
            Ok(_) => {
                ev.container(
                    pod,
                    &c.name,
                    false,
                    "Created",
                    format!("Created container: {}", c.name),
                );
                ev.container(
                    pod,
                    &c.name,
                    false,
                    "Started",
                    format!("Started container {}", c.name),
                );
            }
            Err((reason, msg)) => {
                let shown = if reason.starts_with("ErrImage") {
                    ev.container(pod, &c.name, true, reason, msg.clone());
                    reason
                } else {
                    msg
                };
                ev.container(pod, &c.name, true, "Failed", format!("Error: {shown}"));
            }
        }
        match result {
            Ok((id, pid, image_id, attempt)) => {
                st.attempt = attempt;
                st.startup = probes::Tally::default();
                st.liveness = probes::Tally::default();
                st.readiness = probes::Tally::default();
                if st.id.is_some() {
                    st.restarts += 1;
                }
                st.id = Some(id);
                st.pid = Some(pid);
                st.started_at = Some(now());
                st.started_instant = Some(Instant::now());
                st.exited = false;
                st.waiting = None;
                st.image_id = image_id;
                st.spec_image = c.image.clone().unwrap_or_default();
                st.applied = Some(resources::of(c));
                st.applied_resources = c.resources.clone();
            }
            Err((reason, msg)) => {
                tracing::warn!(pod = %who, container = %c.name, %reason, %msg, "container did not start");
                st.waiting = Some((reason, msg));
                // Failed starts back off like crashes do.
                let next = next_backoff(st.backoff);
                st.backoff = Some(next);
                st.backoff_until = Some(Instant::now() + next);
            }
        }
    }

    /// Starts one container; `target_pid` puts it in that process's PID
    /// namespace (an ephemeral container's `targetContainerName`).
    async fn try_start(
        &self,
        pod: &Pod,
        c: &Container,
        target_pid: Option<i32>,
    ) -> Result<(String, i32, String, i32), (String, String)> {
        let image_name = c.image.clone().unwrap_or_default();
        let store = self.agent.images.clone();
        let img = image_name.clone();
        let policy = c.image_pull_policy.clone().unwrap_or_default();
        let found = tokio::task::spawn_blocking(move || {
            let info = store.inspect(&img)?;
            let layers = store.unpack(&img)?;
            let cfg = store.config(&img)?;
            Ok::<_, image::ImageError>((info, layers, cfg))
        })
        .await
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
        let (info, layers, cfg) = match found {
            Ok(v) => {
                self.agent.events.container(
                    pod,
                    &c.name,
                    false,
                    "Pulled",
                    format!("Container image \"{image_name}\" already present on machine"),
                );
                v
            }
            Err(e) => {
                let reason = if policy == "Never" {
                    "ErrImageNeverPull"
                } else {
                    "ErrImagePull"
                };
                let msg = if policy == "Never" {
                    format!(
                        "Container image \"{image_name}\" is not present with pull policy of Never"
                    )
                } else {
                    format!(
                        "image \"{image_name}\" is not in the node's image store ({e}); import it with `r8s image import` (pulling from registries is not supported yet)"
                    )
                };
                return Err((reason.into(), msg));
            }
        };
        let defaults = cfg
            .config()
            .as_ref()
            .map(|cc| ImageDefaults {
                entrypoint: cc.entrypoint().clone().unwrap_or_default(),
                cmd: cc.cmd().clone().unwrap_or_default(),
                env: cc.env().clone().unwrap_or_default(),
                working_dir: cc.working_dir().clone(),
                user: cc.user().clone(),
            })
            .unwrap_or_default();
        let env = self
            .resolve_env(pod, c)
            .await
            .map_err(|e| ("CreateContainerConfigError".to_string(), e.to_string()))?;
        let restarts = self
            .app
            .get(&c.name)
            .or_else(|| self.init.get(&c.name))
            .map(|s| s.restarts + i32::from(s.id.is_some()))
            .unwrap_or(0);
        let id = format!("{}-{}-{}", self.uid, c.name, restarts);
        let cgroup = format!("/{}/pod{}/{}", self.agent.opts.cgroup_root, self.uid, id);
        let log_dir = self.pod_dir.join("logs").join(&c.name);
        let _ = std::fs::create_dir_all(&log_dir);
        let log = log_dir.join(format!("{restarts}.log"));
        let _ = std::fs::remove_file(log_dir.join("current.log"));
        let _ = std::os::unix::fs::symlink(format!("{restarts}.log"), log_dir.join("current.log"));
        let rt = self.agent.runtime.clone();
        let pod2 = pod.clone();
        let c2 = c.clone();
        let volumes = self.volumes.clone().unwrap_or_default();
        let pod_dir = self.pod_dir.clone();
        let netns = self.ns.as_ref().map(|n| network::netns_path(n));
        let mut sandbox = self.sandbox_ns.clone().unwrap_or_default();
        if let Some(pid) = target_pid {
            sandbox.pid = Some(PathBuf::from(format!("/proc/{pid}/ns/pid")));
        }
        let memcg = self.agent.memory_cgroup(&cgroup);
        let node_mem = crate::node::host_capacity().1;
        let uid = self.uid.clone();
        let containers_dir = self.agent.opts.data_dir.join("agent/containers");
        let seccomp_default = self.agent.opts.seccomp_default;
        let seccomp_dir = self.agent.opts.seccomp_dir();
        let image_id = info.id.clone();
        let is_init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|ics| ics.iter().any(|ic| ic.name == c.name));
        let is_ephemeral = is_ephemeral(pod, &c.name);
        let res = tokio::task::spawn_blocking(move || {
            let rootfs = rt.prepare_rootfs(&id, &layers)?;
            // The container writes why it ended here (upstream's
            // terminationMessagePath); read back when it exits.
            let term = termination_file(&pod_dir, &id);
            let term = term
                .parent()
                .and_then(|d| std::fs::create_dir_all(d).ok())
                .and_then(|_| std::fs::File::create(&term).ok())
                .map(|_| term);
            let mut spec = spec::build(&spec::SpecInput {
                pod: &pod2,
                container: &c2,
                image: &defaults,
                env,
                rootfs: &rootfs,
                pod_dir: &pod_dir,
                volumes: &volumes,
                netns,
                sandbox,
                cgroup,
                seccomp_default,
                seccomp_dir: &seccomp_dir,
                termination_log: term.as_deref(),
            })?;
            if let Some(p) = spec.process_mut().as_mut() {
                p.set_oom_score_adj(Some(resources::settable_oom_score_adj(
                    resources::oom_score_adj(&pod2, &c2, node_mem),
                )));
            }
            let stdio = crate::attach::StdioOpts {
                stdin: c2.stdin == Some(true),
                stdin_once: c2.stdin_once == Some(true),
                tty: c2.tty == Some(true),
            };
            let started = rt
                .start(&id, &spec, &log, memcg, stdio)
                .inspect_err(|_| rt.remove(&id))?;
            // What a restarted agent needs to adopt this container.
            let meta = json!({
                "pod": uid, "container": c2.name, "attempt": restarts, "init": is_init,
                "ephemeral": is_ephemeral, "image": c2.image,
                "resources": c2.resources,
                "pid": started.pid, "startedAt": now(), "imageID": image_id,
            });
            let _ = std::fs::write(containers_dir.join(&id).join("meta.json"), meta.to_string());
            Ok::<_, KubeletError>((id, started.pid))
        })
        .await
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?;
        match res {
            Ok((id, pid)) => Ok((id, pid, info.id, restarts)),
            Err(e @ KubeletError::Spec(_)) => Err(("CreateContainerError".into(), e.to_string())),
            Err(e) => Err(("RunContainerError".into(), e.to_string())),
        }
    }

    /// Runs the preStop hooks of the running app containers, all at once,
    /// within `grace` (which the SIGTERM that follows shares, as upstream).
    async fn pre_stop(&self, grace: Duration) {
        let Some(pod) = self.pod.clone() else { return };
        let ip = self.ip.clone().unwrap_or_default();
        let state_root = self.agent.opts.data_dir.join("agent/state");
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut hooks = Vec::new();
        for c in &containers {
            let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
                continue;
            };
            let Some(st) = self.app.get(&c.name) else {
                continue;
            };
            let (Some(id), false) = (st.id.clone(), st.exited) else {
                continue;
            };
            // Already being stopped (a failed probe, a new definition):
            // its hook ran or runs there, once.
            if st.stopping.as_ref() == Some(&id) {
                continue;
            }
            hooks.push((c, hook, id));
        }
        let pod = &pod;
        let runs = hooks.iter().map(|(c, hook, id)| {
            let target = probes::Target {
                pod_ip: &ip,
                container: c,
                id,
                shim_exe: &self.agent.opts.shim_exe,
                state_root: &state_root,
            };
            async move {
                if let Err(why) = probes::run_hook(hook, &target, grace).await {
                    tracing::warn!(pod = %self.name(), container = %c.name, %why, "FailedPreStopHook");
                    self.agent.events.container(
                        pod,
                        &c.name,
                        true,
                        "FailedPreStopHook",
                        "PreStopHook failed".into(),
                    );
                }
            }
        });
        let _ = tokio::time::timeout(grace, futures::future::join_all(runs)).await;
    }

    /// SIGTERM every running container, SIGKILL what is left after `grace`.
    /// App containers go first; sidecars (restartable init containers) only
    /// once those are gone, within what is left of the grace period, as
    /// upstream stops them.
    async fn kill_all(&mut self, grace: Duration) {
        let rt = self.agent.runtime.clone();
        let sidecars: Vec<String> = self
            .pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| is_sidecar(c))
                    .map(|c| c.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let running = |w: &Worker, sidecar: bool| -> Vec<i32> {
            w.init
                .iter()
                .chain(w.app.iter())
                .chain(w.ephemeral.iter())
                .filter(|(n, s)| s.id.is_some() && !s.exited && sidecars.contains(n) == sidecar)
                .filter_map(|(_, s)| s.pid)
                .collect()
        };
        if running(self, false).is_empty() && running(self, true).is_empty() {
            return;
        }
        let deadline = Instant::now() + grace;
        if !grace.is_zero() {
            self.pre_stop(grace).await;
        }
        let sig = if grace.is_zero() {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        for sidecar in [false, true] {
            for pid in running(self, sidecar) {
                rt.signal(pid, sig);
            }
            loop {
                self.collect_exits();
                let left = running(self, sidecar);
                if left.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    for pid in &left {
                        rt.signal(*pid, libc::SIGKILL);
                    }
                    if Instant::now() >= deadline + Duration::from_secs(5) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn teardown(&mut self) {
        if self
            .pod
            .as_ref()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
        {
            self.unpublish();
        }
        let ns = self.ns.take();
        let ports = self
            .pod
            .as_deref()
            .map(hostport::mappings)
            .unwrap_or_default();
        let cfg = self.agent.opts.net.clone();
        let uid = self.uid.clone();
        let pod_dir = self.pod_dir.clone();
        let cg = self.agent.pod_cgroups(&self.uid);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(ns) = ns {
                network::teardown_pod(&ns);
            }
            hostport::remove(&cfg, &ports);
            network::release(&cfg, &uid);
            sandbox::teardown(&pod_dir);
            volumes::cleanup(&pod_dir);
            for d in cg {
                let _ = std::fs::remove_dir(d);
            }
        })
        .await;
        self.volumes = None;
        self.sandbox_ns = None;
    }

    fn ctr_status(&self, c: &Container, st: Option<&Ctr>, ready_if_running: bool) -> Value {
        let image = c.image.clone().unwrap_or_default();
        let Some(st) = st else {
            return json!({
                "name": c.name, "image": image, "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            });
        };
        let running = st.id.is_some() && !st.exited;
        let mut state = if running {
            json!({"running": {"startedAt": st.started_at}})
        } else if let Some((reason, msg)) = &st.waiting {
            json!({"waiting": {"reason": reason, "message": msg}})
        } else if st.exited
            && st.backoff_until.is_some_and(|t| Instant::now() < t)
            && self.restartable(c)
        {
            let t = st.terminated.clone().unwrap_or_default();
            json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off {}s restarting failed container={} pod={}",
                    st.backoff.unwrap_or_default().as_secs(), c.name,
                    self.pod.as_ref().and_then(|p| p.metadata.name.clone()).unwrap_or_default()),
                "lastExit": t}})
        } else if let Some(t) = &st.terminated {
            json!({"terminated": t})
        } else {
            json!({"waiting": {"reason": "ContainerCreating"}})
        };
        let mut last = json!({});
        if let Some(w) = state.get_mut("waiting")
            && let Some(t) = w.as_object_mut().and_then(|o| o.remove("lastExit"))
        {
            last = json!({"terminated": t});
        } else if running && let Some(t) = &st.terminated {
            last = json!({"terminated": t});
        }
        let started = running && (c.startup_probe.is_none() || st.startup.verdict == Some(true));
        let ready = started
            && ready_if_running
            && (c.readiness_probe.is_none() || st.readiness.verdict == Some(true));
        let mut v = json!({
            "name": c.name,
            "image": image,
            "imageID": st.image_id,
            "ready": ready,
            "started": started,
            "restartCount": st.restarts,
            "state": state,
            "lastState": last,
        });
        if let Some(id) = &st.id {
            v["containerID"] = json!(format!("r8s://{id}"));
        }
        if running && let Some(r) = &st.applied_resources {
            // What the cgroup enforces now (in-place resize reports it).
            let pick = |m: &Option<
                std::collections::BTreeMap<
                    String,
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                >,
            >| {
                let out: serde_json::Map<String, Value> = m
                    .iter()
                    .flatten()
                    .filter(|(k, _)| *k == "cpu" || *k == "memory")
                    .map(|(k, q)| (k.clone(), json!(q.0)))
                    .collect();
                out
            };
            let (req, lim) = (pick(&r.requests), pick(&r.limits));
            let mut res = json!({});
            if !req.is_empty() {
                res["requests"] = Value::Object(req.clone());
                v["allocatedResources"] = Value::Object(req);
            }
            if !lim.is_empty() {
                res["limits"] = Value::Object(lim);
            }
            v["resources"] = res;
        }
        v
    }

    fn restartable(&self, c: &Container) -> bool {
        if self.failed.is_some() {
            return false;
        }
        if self
            .pod
            .as_deref()
            .is_some_and(|p| is_ephemeral(p, &c.name))
        {
            return false;
        }
        if is_sidecar(c) {
            // Until the pod itself is done.
            return !self.pod.as_deref().is_some_and(|p| self.terminal(p));
        }
        let policy = self
            .pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        match policy.as_str() {
            "Never" => false,
            "OnFailure" => {
                self.app
                    .get(&c.name)
                    .or_else(|| self.init.get(&c.name))
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t["exitCode"].as_i64())
                    != Some(0)
            }
            _ => true,
        }
    }

    /// Tells the kubelet API where each container's logs are.
    fn publish_logs(&self, pod: &Pod) {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let mut ctrs = HashMap::new();
        for (name, st) in self
            .init
            .iter()
            .chain(self.app.iter())
            .chain(self.ephemeral.iter())
        {
            if st.id.is_some() {
                ctrs.insert(
                    name.clone(),
                    crate::server::CtrLogs {
                        dir: self.pod_dir.join("logs").join(name),
                        current: st.attempt,
                        running: !st.exited,
                        id: st.id.clone(),
                    },
                );
            }
        }
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let entry = crate::server::PodEntry {
            pod: self.pod.clone(),
            uid: self.uid.clone(),
            containers: ctrs,
            addr: if host_network {
                Some("127.0.0.1".to_string())
            } else {
                self.ip.clone()
            },
        };
        if let Ok(mut r) = self.agent.registry.lock() {
            r.insert(key, entry);
        }
    }

    fn unpublish(&self) {
        if let Some(pod) = &self.pod
            && let Ok(mut r) = self.agent.registry.lock()
        {
            r.remove(&(
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            ));
        }
    }

    /// Fails a pod the node does not admit, as upstream's kubelet does:
    /// phase Failed with the admission's reason; nothing was started.
    async fn reject(&mut self, pod: &Pod, reason: &str, message: &str) {
        tracing::info!(pod = %self.name(), reason, message, "pod rejected");
        self.agent.events.warning(pod, reason, message.to_string());
        let api: Api<Pod> = Api::namespaced(
            self.agent.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let message = format!("Pod was rejected: {message}");
        let patch = json!({"status": {"phase": "Failed", "reason": reason, "message": message,
            "startTime": now(), "hostIP": self.agent.opts.node_ip.to_string(),
            "qosClass": resources::qos(pod).as_str()}});
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(pod = %self.name(), error = %e, "recording the rejection failed");
        }
    }

    async fn report(&mut self, pod: &Pod) {
        self.publish_logs(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let mut inits: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.ctr_status(c, self.init.get(&c.name), is_sidecar(c)))
            .collect();
        let mut apps: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| self.ctr_status(c, self.app.get(&c.name), true))
            .collect();
        if self.blocked.is_some() {
            for a in apps.iter_mut().chain(inits.iter_mut()) {
                a["state"] = json!({"waiting": {"reason": "Blocked"}});
            }
        }
        if let Some(err) = &self.sandbox_error {
            for a in apps.iter_mut() {
                if a["state"].get("running").is_none() {
                    a["state"] =
                        json!({"waiting": {"reason": "ContainerCreating", "message": err}});
                }
            }
        }
        let inits_done = self.inits_completed
            || spec.init_containers.iter().flatten().all(|c| {
                let st = self.init.get(&c.name);
                if is_sidecar(c) {
                    return st.is_some_and(|s| s.id.is_some());
                }
                st.and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t["exitCode"].as_i64())
                    == Some(0)
            });
        // Sidecars count for readiness as app containers do.
        let ready_in = |name: &str, list: &[Value]| {
            list.iter().any(|a| a["name"] == name && a["ready"] == true)
        };
        let mut unready: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c) && !ready_in(&c.name, &inits))
            .map(|c| c.name.clone())
            .collect();
        unready.extend(
            spec.containers
                .iter()
                .filter(|c| !ready_in(&c.name, &apps))
                .map(|c| c.name.clone()),
        );
        let incomplete: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| {
                let st = self.init.get(&c.name);
                if is_sidecar(c) {
                    st.is_none_or(|s| s.id.is_none())
                } else {
                    st.and_then(|s| s.terminated.as_ref())
                        .and_then(|t| t["exitCode"].as_i64())
                        != Some(0)
                }
            })
            .map(|c| c.name.clone())
            .collect();
        let all_ready = !apps.is_empty() && unready.is_empty();
        // Readiness gates: conditions others set on the pod.
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let gate_problem = spec.readiness_gates.iter().flatten().find_map(|g| {
            match current.iter().find(|c| c.type_ == g.condition_type) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{}\" does not exist.",
                    g.condition_type
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                    g.condition_type, c.status
                )),
                Some(_) => None,
            }
        });
        let any_running = apps.iter().any(|a| a["state"].get("running").is_some());
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let all_exited = spec
            .containers
            .iter()
            .all(|c| self.app.get(&c.name).is_some_and(|s| s.exited));
        let init_failed = policy == "Never"
            && spec.init_containers.iter().flatten().any(|c| {
                !is_sidecar(c)
                    && self.init.get(&c.name).is_some_and(|s| {
                        s.exited
                            && s.terminated.as_ref().and_then(|t| t["exitCode"].as_i64()) != Some(0)
                    })
            });
        let phase = if init_failed || self.failed.is_some() {
            "Failed"
        } else if self.terminal(pod) {
            let ok = spec.containers.iter().all(|c| {
                self.app
                    .get(&c.name)
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t["exitCode"].as_i64())
                    == Some(0)
            });
            if ok { "Succeeded" } else { "Failed" }
        } else if any_running || (all_exited && policy == "Always") {
            "Running"
        } else {
            "Pending"
        };
        let prev = |t: &str| -> Option<(String, String)> {
            self.last_status.as_ref().and_then(|s| {
                s["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == t)
                    .map(|c| {
                        (
                            c["status"].as_str().unwrap_or("").to_string(),
                            c["lastTransitionTime"].as_str().unwrap_or("").to_string(),
                        )
                    })
            })
        };
        let cond = |t: &str, ok: bool, why: Option<(&str, Option<String>)>| {
            let s = if ok { "True" } else { "False" };
            let when = match prev(t) {
                Some((ps, pt)) if ps == s => pt,
                _ => now(),
            };
            let mut c =
                json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": when});
            if let Some((r, m)) = why.filter(|_| !ok) {
                c["reason"] = json!(r);
                if let Some(m) = m {
                    c["message"] = json!(m);
                }
            }
            c
        };
        let terminal_phase = phase == "Succeeded" || phase == "Failed";
        let containers_why = if terminal_phase {
            ("PodCompleted", None)
        } else {
            (
                "ContainersNotReady",
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        };
        let ready_why = match (&gate_problem, all_ready, terminal_phase) {
            (Some(m), true, false) => ("ReadinessGatesNotReady", Some(m.clone())),
            _ => containers_why.clone(),
        };
        let mut conditions = json!([
            cond(
                "PodReadyToStartContainers",
                self.ip.is_some() && !terminal_phase,
                None
            ),
            cond(
                "Initialized",
                inits_done,
                Some((
                    "ContainersNotInitialized",
                    Some(format!(
                        "containers with incomplete status: [{}]",
                        incomplete.join(" ")
                    ))
                ))
            ),
            cond(
                "Ready",
                all_ready && gate_problem.is_none() && !terminal_phase,
                Some(ready_why)
            ),
            cond(
                "ContainersReady",
                all_ready && !terminal_phase,
                Some(containers_why)
            ),
            cond("PodScheduled", true, None),
        ]);
        if let Some(list) = conditions.as_array_mut() {
            if let Some(v) = self.failed.as_ref().filter(|v| v.disruption) {
                let mut c = cond("DisruptionTarget", true, None);
                c["reason"] = json!("TerminationByKubelet");
                c["message"] = json!(v.message);
                list.insert(0, c);
            }
            if let Some((t, reason, message)) = &self.resize_state {
                let mut c = cond(t, true, None);
                c["reason"] = json!(reason);
                c["message"] = json!(message);
                list.push(c);
            }
        }
        let ip = self.ip.clone();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.agent.opts.node_ip.to_string(),
            "hostIPs": [{"ip": self.agent.opts.node_ip.to_string()}],
            "startTime": pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string())
                .or_else(|| self.start_time.clone())
                .unwrap_or_else(now),
            "qosClass": resources::qos(pod).as_str(),
            "containerStatuses": apps,
        });
        if !inits.is_empty() {
            status["initContainerStatuses"] = json!(inits);
        }
        let ephemeral: Vec<Value> = spec
            .ephemeral_containers
            .iter()
            .flatten()
            .filter_map(|ec| {
                let c = ephemeral_as_container(ec)?;
                Some(self.ctr_status(&c, self.ephemeral.get(&c.name), false))
            })
            .collect();
        if !ephemeral.is_empty() {
            status["ephemeralContainerStatuses"] = json!(ephemeral);
        }
        if let Some(v) = &self.failed {
            status["reason"] = json!(v.reason);
            status["message"] = json!(v.message);
        } else if let Some((reason, message)) = &self.blocked {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.agent.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        // A strategic merge patch, as upstream's status manager sends:
        // conditions merge by type, so conditions others own (readiness
        // gates, DisruptionTarget from the API server) are never lost, even
        // when they change between our read and this write.
        let mut patch = json!({"status": status.clone()});
        if let Some(list) = patch["status"]["conditions"].as_array_mut() {
            for gone in ["PodResizePending", "PodResizeInProgress"] {
                let had = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == gone));
                if had && !list.iter().any(|c| c["type"] == gone) {
                    list.push(json!({"type": gone, "$patch": "delete"}));
                }
            }
        }
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(e) => tracing::debug!(pod = %self.name(), error = %e, "status update failed"),
        }
    }
}

/// An in-place resize not done: condition type, reason, message.
type ResizeState = (&'static str, &'static str, String);

/// Records the resources a container's cgroup now has in its
/// `meta.json`, so that a restarted agent knows what is applied.
fn save_resources(
    data_dir: &std::path::Path,
    id: &str,
    r: &Option<k8s_openapi::api::core::v1::ResourceRequirements>,
) {
    let path = data_dir.join("agent/containers").join(id).join("meta.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let Ok(mut m) = serde_json::from_slice::<Value>(&bytes) else {
        return;
    };
    m["resources"] = serde_json::to_value(r).unwrap_or(Value::Null);
    let _ = std::fs::write(&path, m.to_string());
}

/// Which of a pod's container lists a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Init,
    App,
    Ephemeral,
}

/// The least grace a container the kubelet stops on its own gets
/// (upstream's `minimumGracePeriodInSeconds`).
const MIN_KILL_GRACE_SECS: u64 = 2;

/// A handle on one process: a pidfd (Linux 5.3+), bound to that process
/// whatever pid reuse happens, or its bare pid where pidfds are refused.
enum Proc {
    Fd(std::os::fd::OwnedFd),
    Pid(i32),
}

impl Proc {
    fn open(pid: i32) -> Proc {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: a non-negative result is a descriptor we now own.
            Proc::Fd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
        } else {
            Proc::Pid(pid)
        }
    }

    /// Sends `sig` (0 only checks); false once the process is gone.
    fn signal(&self, sig: i32) -> bool {
        use std::os::fd::AsRawFd;
        let rc = match self {
            // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
            Proc::Fd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill(2) on the container's own pid.
            Proc::Pid(pid) => i64::from(unsafe { libc::kill(*pid, sig) }),
        };
        rc == 0
    }
}

/// The pod's `terminationGracePeriodSeconds` (30 when unset, as the API
/// server defaults it).
pub(crate) fn pod_grace(pod: &Pod) -> u64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64
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

/// Where a container's termination message is kept on the host.
fn termination_file(pod_dir: &std::path::Path, id: &str) -> PathBuf {
    pod_dir.join("termination").join(id)
}

/// Upstream's limits: a termination message file is read up to 4096
/// bytes; a fallback from the logs is their last 80 lines, at most 2048
/// bytes.
const MAX_MESSAGE_BYTES: usize = 4096;
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// The message of a container that ended: its termination message file,
/// or with `FallbackToLogsOnError` and a failure, the end of its log.
fn termination_message(
    c: &Container,
    file: &std::path::Path,
    log: &std::path::Path,
    exit_code: i32,
) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(file) {
        let _ = f.take(MAX_MESSAGE_BYTES as u64).read_to_end(&mut buf);
    }
    let _ = std::fs::remove_file(file);
    if !buf.is_empty() {
        return Some(String::from_utf8_lossy(&buf).into_owned());
    }
    if c.termination_message_policy.as_deref() != Some("FallbackToLogsOnError") || exit_code == 0 {
        return None;
    }
    let q = logs::LogQuery {
        tail_lines: Some(FALLBACK_LINES),
        ..Default::default()
    };
    let text = logs::read(log, &q).ok()?;
    let start = text.len().saturating_sub(FALLBACK_BYTES);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    let tail = &text[start..];
    (!tail.is_empty()).then(|| tail.to_string())
}

fn resource_field(c: &Container, resource: &str) -> String {
    let r = c.resources.clone().unwrap_or_default();
    let get = |limits: bool, name: &str| {
        let m = if limits {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        };
        m.and_then(|m| m.get(name)).cloned()
    };
    let (limits, name) = match resource.split_once('.') {
        Some(("limits", n)) => (true, n),
        Some(("requests", n)) => (false, n),
        _ => return String::new(),
    };
    match (name, get(limits, name)) {
        ("cpu", Some(q)) => {
            let m = resources::millicores(&q).unwrap_or(0);
            ((m + 999) / 1000).to_string()
        }
        ("cpu", None) => crate::node::host_capacity().0.to_string(),
        ("memory", Some(q)) => resources::bytes(&q).unwrap_or(0).to_string(),
        ("memory", None) => crate::node::host_capacity().1.to_string(),
        (_, Some(q)) => q.0,
        _ => String::new(),
    }
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
