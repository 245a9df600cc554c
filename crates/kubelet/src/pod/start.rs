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
                // The image's own event (Failed to pull, ErrImageNeverPull)
                // was sent where it happened.
                let shown = if reason.starts_with("ErrImage") {
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
                // Failed starts back off like crashes do; a failed pull
                // waits at least the first step, as upstream's image
                // back-off does.
                let mut next = next_backoff(st.backoff);
                if reason == "ErrImagePull" {
                    next = next.max(BACKOFF_START);
                }
                st.waiting = Some((reason, msg));
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
        let policy = c.image_pull_policy.clone().unwrap_or_default();
        self.ensure_image(pod, Some(&c.name), &image_name, &policy)
            .await?;
        let store = self.agent.images.clone();
        let img = image_name.clone();
        let (info, layers, cfg) = tokio::task::spawn_blocking(move || {
            let info = store.inspect(&img)?;
            let layers = store.unpack(&img)?;
            let cfg = store.config(&img)?;
            Ok::<_, image::ImageError>((info, layers, cfg))
        })
        .await
        .map_err(|e| ("RunContainerError".to_string(), e.to_string()))?
        .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?;
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
        let image_id = image_ref(&image_name, &info);
        let reported_image_id = image_id.clone();
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
            Ok((id, pid)) => Ok((id, pid, reported_image_id, restarts)),
            Err(e @ KubeletError::Spec(_)) => Err(("CreateContainerError".into(), e.to_string())),
            Err(e) => Err(("RunContainerError".into(), e.to_string())),
        }
    }

    /// Makes the image present as its pull policy says: `Never` only
    /// looks, `IfNotPresent` pulls when missing, `Always` pulls (a no-op
    /// transfer when the registry has nothing new). Events and errors in
    /// upstream's words.
    /// `container` names the container the events are about; `None` for
    /// an image volume (events on the pod).
    pub(super) async fn ensure_image(
        &self,
        pod: &Pod,
        container: Option<&str>,
        image_name: &str,
        policy: &str,
    ) -> Result<(), (String, String)> {
        let store = self.agent.images.clone();
        let img = image_name.to_string();
        let present = tokio::task::spawn_blocking(move || store.inspect(&img).is_ok())
            .await
            .unwrap_or(false);
        let ev = |warning: bool, reason: &str, note: String| match container {
            Some(c) => self.agent.events.container(pod, c, warning, reason, note),
            None if warning => self.agent.events.warning(pod, reason, note),
            None => self.agent.events.normal(pod, reason, note),
        };
        match (policy, present) {
            ("Never", false) => {
                let msg = format!(
                    "Container image \"{image_name}\" is not present with pull policy of Never"
                );
                ev(true, "ErrImageNeverPull", msg.clone());
                return Err(("ErrImageNeverPull".into(), msg));
            }
            ("Always", _) | (_, false) => {}
            _ => {
                ev(
                    false,
                    "Pulled",
                    format!("Container image \"{image_name}\" already present on machine"),
                );
                return Ok(());
            }
        }
        ev(false, "Pulling", format!("Pulling image \"{image_name}\""));
        let t0 = Instant::now();
        let registry = image::normalize(image_name)
            .map(|n| image::pull::registry_of(&n).to_string())
            .unwrap_or_default();
        let creds = crate::pullsecrets::for_registry(&self.agent.client, pod, &registry).await;
        let pulled = self
            .agent
            .images
            .pull_with(
                image_name,
                creds.as_ref(),
                &self.agent.opts.registries,
                None,
            )
            .await;
        match pulled {
            Ok(p) => {
                let took = go_duration(t0.elapsed());
                ev(
                    false,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image_name}\" in {took} ({took} including waiting). Image size: {} bytes.",
                        p.size
                    ),
                );
                Ok(())
            }
            Err(e) => {
                let msg = format!("Failed to pull image \"{image_name}\": {e}");
                ev(true, "Failed", msg.clone());
                Err(("ErrImagePull".into(), msg))
            }
        }
    }
}

/// The image as containerd reports it in `imageID`: the repo digest of
/// the repository the pod named (`registry/repo@sha256:…`), else any repo
/// digest, else the image ID.
fn image_ref(image_name: &str, info: &image::ImageInfo) -> String {
    let repo = image::Reference::parse(image_name)
        .map(|r| r.repository())
        .unwrap_or_default();
    info.repo_digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        .or_else(|| info.repo_digests.first())
        .cloned()
        .unwrap_or_else(|| info.id.clone())
}

/// A duration as Go prints one truncated to milliseconds (`512ms`,
/// `1.25s`, `2m3.5s`), the form upstream's pull events use.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (mins, rest) = (ms / 60_000, ms % 60_000);
    let secs = format!("{}.{:03}", rest / 1000, rest % 1000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    if mins > 0 {
        format!("{mins}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(512)), "512ms");
        assert_eq!(go_duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(go_duration(Duration::from_millis(3000)), "3s");
        assert_eq!(go_duration(Duration::from_millis(123_500)), "2m3.5s");
    }
}
