//! Stopping: preStop hooks, graceful kills with pidfds, teardown, and
//! the kubelet's own eviction verdicts.

use super::*;

/// The least grace a container the kubelet stops on its own gets
/// (upstream's `minimumGracePeriodInSeconds`).
pub(super) const MIN_KILL_GRACE_SECS: u64 = 2;

/// A handle on one process: a pidfd (Linux 5.3+), bound to that process
/// whatever pid reuse happens, or its bare pid where pidfds are refused.
pub(super) enum Proc {
    Fd(std::os::fd::OwnedFd),
    Pid(i32),
}

impl Proc {
    pub(super) fn open(pid: i32) -> Proc {
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
    pub(super) fn signal(&self, sig: i32) -> bool {
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

impl Worker {
    /// Stops one running container for the kubelet's own reason (a failed
    /// probe, a new definition, a resize that needs a restart), as
    /// upstream's `killContainer`: a Killing event, its preStop hook, then
    /// SIGTERM and SIGKILL once the grace period (the probe's
    /// `terminationGracePeriodSeconds`, else the pod's; at least 2 s) is
    /// over. It runs in the background: the worker sees the exit as any
    /// other and restarts the container as its policy says.
    pub(super) fn stop_container(
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
    pub(super) fn clear_changed(&mut self, name: &str, which: Which) {
        if let Some(s) = self.map_mut(which).get_mut(name) {
            s.changed = false;
            s.backoff_until = None;
            s.backoff = None;
        }
    }

    /// A Killing event for each running container about to be stopped.
    pub(super) fn announce_stop(&self, pod: &Pod) {
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

    /// Runs the preStop hooks of the running app containers, all at once,
    /// within `grace` (which the SIGTERM that follows shares, as upstream).
    pub(super) async fn pre_stop(&self, grace: Duration) {
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
    pub(super) async fn kill_all(&mut self, grace: Duration) {
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

    pub(super) async fn teardown(&mut self) {
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

    /// Whether the kubelet must end the pod now: the eviction manager chose
    /// it, or it ran past `activeDeadlineSeconds` (counted from
    /// `status.startTime`, as upstream).
    pub(super) fn verdict(&self, pod: &Pod) -> Option<crate::eviction::Verdict> {
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
    pub(super) async fn fail(&mut self, pod: &Pod, v: crate::eviction::Verdict) {
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
}
