//! The one Pod watch: every pod bound to a live hollow node goes Running
//! after the start delay, run-to-completion pods end per their annotations,
//! and pods being deleted are finished and removed like a kubelet does.
//!
//! All decisions happen on this single loop (no locks); it hands the API
//! calls to short tasks limited by the pod permits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;

use crate::HollowError;
use crate::shared::{Shared, is_conflict, is_not_found, rfc3339};
use crate::status::{self, Containers, Placement};

/// How long before a failed request is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A pod's phase as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Done,
}

/// What this process has done for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// Nothing yet (or parked while its node was stopped).
    New,
    /// A start is scheduled.
    Waiting,
    /// Running; whether its end is scheduled.
    Started { end_scheduled: bool },
    /// Terminal status sent or seen.
    Finished,
    /// Deletion being finished.
    Deleting,
}

/// A pod bound to one of our nodes: only what we need, not the Pod.
struct Tracked {
    ns: String,
    name: String,
    node: usize,
    runs_to_completion: bool,
    deleting: bool,
    phase: Phase,
    start_time: Option<Timestamp>,
    has_scheduled: bool,
    /// Host octet of the pod IP in the node's /24.
    ip: Option<u8>,
    run_for: Duration,
    exit_code: i32,
    containers: Arc<Containers>,
    local: Local,
}

/// Timed actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Start,
    End,
    /// Re-evaluate from scratch after a failed request.
    Retry,
}

/// A request that failed and should be tried again.
struct Failed {
    uid: String,
}

/// Pod IPs in use per node (`.2`–`.254`).
#[derive(Clone)]
struct IpPool {
    used: [u64; 4],
    next: u8,
}

impl IpPool {
    fn new() -> IpPool {
        IpPool {
            used: [0; 4],
            next: 2,
        }
    }

    fn is_used(&self, h: u8) -> bool {
        self.used[(h / 64) as usize] & (1 << (h % 64)) != 0
    }

    fn mark(&mut self, h: u8) {
        self.used[(h / 64) as usize] |= 1 << (h % 64);
    }

    fn free(&mut self, h: u8) {
        self.used[(h / 64) as usize] &= !(1 << (h % 64));
    }

    /// The next free host octet; when all 253 are taken (terminal pods
    /// linger), addresses are shared rather than refused.
    fn alloc(&mut self) -> u8 {
        for _ in 0..253 {
            let h = self.next;
            self.next = if self.next >= 254 { 2 } else { self.next + 1 };
            if !self.is_used(h) {
                self.mark(h);
                return h;
            }
        }
        let h = self.next;
        self.next = if self.next >= 254 { 2 } else { self.next + 1 };
        h
    }
}

/// The loop's state.
struct State {
    shared: Arc<Shared>,
    pods: HashMap<String, Tracked>,
    timers: BinaryHeap<Reverse<(Instant, u64, Action, String)>>,
    seq: u64,
    ips: Vec<IpPool>,
    failed: UnboundedSender<Failed>,
    /// UIDs seen during a relist, to drop pods deleted while disconnected.
    relist: Option<HashSet<String>>,
}

/// Runs the pod loop forever.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut revive: UnboundedReceiver<usize>,
) -> Result<(), HollowError> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName!=");
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    let (failed_tx, mut failed_rx) = unbounded_channel();
    let mut st = State {
        ips: vec![IpPool::new(); shared.nodes.len()],
        shared,
        pods: HashMap::new(),
        timers: BinaryHeap::new(),
        seq: 0,
        failed: failed_tx,
        relist: None,
    };
    loop {
        let next = st.timers.peek().map(|Reverse((at, ..))| *at);
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(ev)) => st.on_event(ev),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => return Err(HollowError::Stopped("pod watch stream ended".into())),
            },
            Some(i) = revive.recv() => st.revive(i),
            Some(f) = failed_rx.recv() => st.schedule(f.uid, Action::Retry, RETRY_AFTER),
            _ = sleep_until(next) => st.fire_due(),
        }
    }
}

/// Sleeps until `at`, or forever without a timer.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Time since `t`, zero if in the future.
fn since(t: Timestamp) -> Duration {
    let ms = Timestamp::now().as_millisecond() - t.as_millisecond();
    Duration::from_millis(ms.max(0) as u64)
}

impl State {
    fn on_event(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(p) => {
                if let (Some(seen), Some(uid)) = (&mut self.relist, &p.metadata.uid) {
                    seen.insert(uid.clone());
                }
                self.apply(&p);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|u| !seen.contains(*u))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.forget(&uid);
                    }
                }
            }
            watcher::Event::Apply(p) => self.apply(&p),
            watcher::Event::Delete(p) => {
                if let Some(uid) = &p.metadata.uid {
                    self.forget(uid);
                }
            }
        }
    }

    /// Records the latest state of a pod and decides what to do.
    fn apply(&mut self, pod: &Pod) {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            return;
        };
        let Some(&node) = self.shared.by_name.get(node_name) else {
            return;
        };
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let status = pod.status.as_ref();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => Phase::Running,
            Some("Succeeded" | "Failed") => Phase::Done,
            _ => Phase::Pending,
        };
        let start_time = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let has_scheduled = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "PodScheduled"));
        match self.pods.get_mut(uid) {
            Some(t) => {
                t.phase = phase;
                t.deleting = deleting;
                t.has_scheduled = has_scheduled;
                if start_time.is_some() {
                    t.start_time = start_time;
                }
            }
            None => {
                // A pod that already has an IP in its node's net (from an
                // earlier run of this process) keeps it.
                let net = self.shared.nodes[node].pod_net.get().copied();
                let ip = status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
                    .and_then(|ip| {
                        let [a, b, c, d] = ip.octets();
                        (net == Some([a, b, c])).then_some(d)
                    });
                if let Some(h) = ip {
                    self.ips[node].mark(h);
                }
                let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
                self.pods.insert(
                    uid.to_string(),
                    Tracked {
                        ns: pod.metadata.namespace.clone().unwrap_or_default(),
                        name: pod.metadata.name.clone().unwrap_or_default(),
                        node,
                        runs_to_completion: matches!(restart, Some("Never" | "OnFailure")),
                        deleting,
                        phase,
                        start_time,
                        has_scheduled,
                        ip,
                        run_for: status::run_duration(pod),
                        exit_code: status::exit_code(pod),
                        containers: Arc::new(Containers::of(pod)),
                        local: Local::New,
                    },
                );
            }
        }
        self.evaluate(uid);
    }

    fn forget(&mut self, uid: &str) {
        if let Some(t) = self.pods.remove(uid)
            && let Some(h) = t.ip
        {
            self.ips[t.node].free(h);
        }
    }

    /// A revived node's pods get going again.
    fn revive(&mut self, node: usize) {
        let uids: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, t)| t.node == node)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in uids {
            self.evaluate(&uid);
        }
    }

    fn schedule(&mut self, uid: String, action: Action, after: Duration) {
        self.seq += 1;
        self.timers
            .push(Reverse((Instant::now() + after, self.seq, action, uid)));
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, ..))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, action, uid))) = self.timers.pop() else {
                break;
            };
            match action {
                Action::Start => self.start(&uid),
                Action::End => self.end(&uid),
                Action::Retry => {
                    if let Some(t) = self.pods.get_mut(&uid) {
                        t.local = Local::New;
                    }
                    self.evaluate(&uid);
                }
            }
        }
    }

    /// Decides what a pod needs next from what was last seen of it.
    fn evaluate(&mut self, uid: &str) {
        let Some(t) = self.pods.get_mut(uid) else {
            return;
        };
        if !self.shared.nodes[t.node].live() {
            // A dead node does nothing; revival re-evaluates.
            return;
        }
        if t.deleting {
            if t.local != Local::Deleting {
                t.local = Local::Deleting;
                self.finish_deletion(uid);
            }
            return;
        }
        match t.phase {
            Phase::Done => t.local = Local::Finished,
            Phase::Running => {
                if matches!(t.local, Local::New | Local::Waiting) {
                    // Started by an earlier run of this process.
                    t.local = Local::Started {
                        end_scheduled: false,
                    };
                    if t.ip.is_none() {
                        t.ip = Some(self.ips[t.node].alloc());
                    }
                }
                if t.local
                    == (Local::Started {
                        end_scheduled: false,
                    })
                    && t.runs_to_completion
                {
                    t.local = Local::Started {
                        end_scheduled: true,
                    };
                    let ran = t.start_time.map(since).unwrap_or_default();
                    let left = t.run_for.saturating_sub(ran);
                    self.schedule(uid.to_string(), Action::End, left);
                }
            }
            Phase::Pending => {
                if t.local == Local::New {
                    t.local = Local::Waiting;
                    let delay = self.shared.opts.pod_start_delay;
                    self.schedule(uid.to_string(), Action::Start, delay);
                }
            }
        }
    }

    fn placement_parts(&self, t: &Tracked, ip: u8) -> (String, String) {
        let slot = &self.shared.nodes[t.node];
        let [a, b, c] = slot
            .pod_net
            .get()
            .copied()
            .unwrap_or([10, 64, (t.node % 256) as u8]);
        (format!("{a}.{b}.{c}.{ip}"), slot.internal_ip.clone())
    }

    /// Start delay passed: report Running.
    fn start(&mut self, uid: &str) {
        let Some(t) = self.pods.get_mut(uid) else {
            return;
        };
        if t.local != Local::Waiting || t.deleting {
            return;
        }
        if !self.shared.nodes[t.node].live() {
            t.local = Local::New;
            return;
        }
        let ip = match t.ip {
            Some(h) => h,
            None => {
                let h = self.ips[t.node].alloc();
                t.ip = Some(h);
                h
            }
        };
        let now = Timestamp::now();
        t.start_time = Some(now);
        t.local = Local::Started {
            end_scheduled: t.runs_to_completion,
        };
        let (run_for, rtc) = (t.run_for, t.runs_to_completion);
        let t = &self.pods[uid];
        let (pod_ip, host_ip) = self.placement_parts(t, ip);
        let started = rfc3339(now);
        let patch = status::running(
            &Placement {
                uid,
                pod_ip: &pod_ip,
                host_ip: &host_ip,
                started: &started,
                has_scheduled: t.has_scheduled,
            },
            &t.containers,
        );
        self.patch_status(uid, patch);
        if rtc {
            self.schedule(uid.to_string(), Action::End, run_for);
        }
    }

    /// A run-to-completion pod's time is up: report it terminated.
    fn end(&mut self, uid: &str) {
        let Some(t) = self.pods.get_mut(uid) else {
            return;
        };
        if !matches!(t.local, Local::Started { .. }) || t.deleting {
            return;
        }
        if !self.shared.nodes[t.node].live() {
            t.local = Local::Started {
                end_scheduled: false,
            };
            return;
        }
        t.local = Local::Finished;
        let ip = match t.ip {
            Some(h) => h,
            None => {
                let h = self.ips[t.node].alloc();
                t.ip = Some(h);
                h
            }
        };
        let t = &self.pods[uid];
        let (pod_ip, host_ip) = self.placement_parts(t, ip);
        let now = Timestamp::now();
        let started = rfc3339(t.start_time.unwrap_or(now));
        let patch = status::terminated(
            &Placement {
                uid,
                pod_ip: &pod_ip,
                host_ip: &host_ip,
                started: &started,
                has_scheduled: t.has_scheduled,
            },
            &t.containers,
            t.exit_code,
            &rfc3339(now),
        );
        self.patch_status(uid, patch);
    }

    /// Sends a status patch on a permit; failures come back as retries.
    fn patch_status(&self, uid: &str, patch: serde_json::Value) {
        let Some(t) = self.pods.get(uid) else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &t.ns);
        let name = t.name.clone();
        let uid = uid.to_string();
        let permits = self.shared.pod_permits.clone();
        let failed = self.failed.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let res = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await;
            match res {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "pod status patch failed; retrying");
                    let _ = failed.send(Failed { uid });
                }
            }
        });
    }

    /// A pod with a deletionTimestamp: stop its containers (terminated
    /// statuses) and confirm the deletion with grace period 0.
    fn finish_deletion(&self, uid: &str) {
        let Some(t) = self.pods.get(uid) else {
            return;
        };
        let patch = match (t.phase, t.ip) {
            (Phase::Running, Some(ip)) => {
                let (pod_ip, host_ip) = self.placement_parts(t, ip);
                let now = Timestamp::now();
                let started = rfc3339(t.start_time.unwrap_or(now));
                Some(status::terminated(
                    &Placement {
                        uid,
                        pod_ip: &pod_ip,
                        host_ip: &host_ip,
                        started: &started,
                        has_scheduled: t.has_scheduled,
                    },
                    &t.containers,
                    0,
                    &rfc3339(now),
                ))
            }
            _ => None,
        };
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &t.ns);
        let name = t.name.clone();
        let uid = uid.to_string();
        let permits = self.shared.pod_permits.clone();
        let failed = self.failed.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            if let Some(patch) = patch {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => return,
                    Err(e) => {
                        tracing::warn!(pod = %name, error = %e, "pod status patch failed; retrying");
                        let _ = failed.send(Failed { uid });
                        return;
                    }
                }
            }
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                // Gone already, or a new pod of that name (UID precondition).
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "pod delete failed; retrying");
                    let _ = failed.send(Failed { uid });
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_pool_hands_out_unique_addresses_and_reuses_freed_ones() {
        let mut p = IpPool::new();
        let ips: HashSet<u8> = (0..253).map(|_| p.alloc()).collect();
        assert_eq!(ips.len(), 253);
        assert!(ips.iter().all(|h| (2..=254).contains(h)));
        p.free(77);
        assert_eq!(p.alloc(), 77);
    }
}
