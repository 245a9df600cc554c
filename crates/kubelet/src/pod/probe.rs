//! Startup, liveness and readiness probes, and the BackOff event.

use super::*;

impl Worker {
    /// Runs the due probes of running app containers; kills a container
    /// whose startup or liveness probe failed, as upstream restarts it.
    pub(super) async fn run_probes(&mut self, containers: &[Container], init: bool) {
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
    pub(super) fn backoff_event(&mut self, pod: &Pod, c: &Container, init: bool) {
        let map = if init { &mut self.init } else { &mut self.app };
        let Some(st) = map.get_mut(&c.name) else {
            return;
        };
        if st.backoff_until == st.backoff_reported || st.backoff_until.is_none() {
            return;
        }
        st.backoff_reported = st.backoff_until;
        let pulling = st
            .waiting
            .as_ref()
            .is_some_and(|(r, _)| r == "ErrImagePull");
        let message = if pulling {
            format!(
                "Back-off pulling image \"{}\"",
                c.image.as_deref().unwrap_or_default()
            )
        } else {
            format!(
                "Back-off restarting failed container {} in pod {}",
                c.name,
                crate::events::pod_desc(pod)
            )
        };
        self.agent
            .events
            .container(pod, &c.name, !pulling, "BackOff", message);
        if pulling {
            self.agent.events.container(
                pod,
                &c.name,
                true,
                "Failed",
                "Error: ImagePullBackOff".into(),
            );
        }
    }
}
