//! In-place resizes and containers whose definition changed.

use super::*;

/// Records the resources a container's cgroup now has in its
/// `meta.json`, so that a restarted agent knows what is applied.
pub(super) fn save_resources(
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

impl Worker {
    /// In-place resize: brings a running container's cgroup to what its
    /// spec asks now (`kubectl patch --subresource resize`), restarting it
    /// instead where its `resizePolicy` says so; an impossible request is
    /// left pending as `Infeasible`, a failed one reported in progress
    /// with the error, as upstream's conditions.
    pub(super) fn resize(&mut self, pod: &Pod, c: &Container, which: Which) -> Option<ResizeState> {
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
    pub(super) fn map_mut(&mut self, which: Which) -> &mut HashMap<String, Ctr> {
        match which {
            Which::Init => &mut self.init,
            Which::App => &mut self.app,
            Which::Ephemeral => &mut self.ephemeral,
        }
    }

    /// A new image (`kubectl set image`) restarts a running container, as
    /// upstream restarts a container whose spec changed: kills it and marks
    /// it for a restart without back-off. Returns whether it did.
    pub(super) fn kill_if_redefined(&mut self, pod: &Pod, c: &Container, which: Which) -> bool {
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
    pub(super) fn restart_redefined(
        &mut self,
        pod: &Pod,
        c: &Container,
        which: Which,
        message: String,
    ) {
        if let Some(st) = self.map_mut(which).get_mut(&c.name) {
            st.changed = true;
        }
        self.stop_container(pod, c, which, message, None);
    }
}
