//! Container logs published for `kubectl logs`.

use super::*;

impl Worker {
    /// Tells the kubelet API where each container's logs are.
    pub(super) fn publish_logs(&mut self, pod: &Pod) {
        // The first pass that finds every app container started ends the
        // pod's start, as upstream's kubelet_pod_start_duration_seconds.
        if !self.start_observed
            && !self.app.is_empty()
            && self.app.values().all(|c| c.started_at.is_some())
        {
            self.start_observed = true;
            crate::node::metrics::POD_START.observe(self.seen.elapsed().as_secs_f64());
        }
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
                        started_at: st.started_at.clone(),
                    },
                );
            }
        }
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let entry = crate::registry::PodEntry {
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

    pub(super) fn unpublish(&self) {
        if let Some(pod) = &self.pod
            && let Ok(mut r) = self.agent.registry.lock()
        {
            r.remove(&(
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            ));
        }
    }
}
