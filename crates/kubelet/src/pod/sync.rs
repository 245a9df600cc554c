//! One pass of a pod worker: the sandbox, init containers in order, app
//! containers by restart policy, and the exits it collects.

use super::*;

/// Whether the container waits after a failed image pull.
fn pull_failed(st: &Ctr) -> bool {
    st.waiting
        .as_ref()
        .is_some_and(|(r, _)| r == "ErrImagePull")
}

impl Worker {
    pub(super) async fn sync(&mut self) -> Result<(), KubeletError> {
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
                    } else if st.exited || pull_failed(&st) {
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
                } else if restart && (st.exited || pull_failed(&st)) {
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

    /// Whether a container in state `st` may be (re)started now; sets the
    /// CrashLoopBackOff waiting reason while it may not.
    pub(super) fn may_start(&self, st: &Ctr, restartable: bool) -> bool {
        if st.id.is_none() {
            return st.backoff_until.is_none_or(|t| Instant::now() >= t);
        }
        if !restartable {
            return false;
        }
        st.backoff_until.is_none_or(|t| Instant::now() >= t)
    }

    pub(super) fn terminal(&self, pod: &Pod) -> bool {
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

    pub(super) fn collect_exits(&mut self) {
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
}
