//! Starting one container: image, spec, shim, hooks.

use super::*;

impl Worker {
    pub(super) async fn start_container(
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
    pub(super) async fn try_start(
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
}
