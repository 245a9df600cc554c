//! The pod status the worker reports, and termination messages.

use super::*;

/// Where a container's termination message is kept on the host.
pub(super) fn termination_file(pod_dir: &std::path::Path, id: &str) -> PathBuf {
    pod_dir.join("termination").join(id)
}

/// Upstream's limits: a termination message file is read up to 4096
/// bytes; a fallback from the logs is their last 80 lines, at most 2048
/// bytes.
pub(super) const MAX_MESSAGE_BYTES: usize = 4096;
pub(super) const FALLBACK_LINES: usize = 80;
pub(super) const FALLBACK_BYTES: usize = 2048;

/// The message of a container that ended: its termination message file,
/// or with `FallbackToLogsOnError` and a failure, the end of its log.
pub(super) fn termination_message(
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

impl Worker {
    pub(super) fn ctr_status(
        &self,
        c: &Container,
        st: Option<&Ctr>,
        ready_if_running: bool,
    ) -> Value {
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
            // A failed pull reads ErrImagePull at first, then
            // ImagePullBackOff while the next attempt waits.
            let failed_at = st.backoff_until.zip(st.backoff).map(|(u, b)| u - b);
            let backing_off = reason == "ErrImagePull"
                && st.backoff_until.is_some_and(|t| Instant::now() < t)
                && failed_at.is_some_and(|f| f.elapsed() >= Duration::from_secs(1));
            if backing_off {
                json!({"waiting": {"reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{}\": ErrImagePull: {msg}",
                        c.image.as_deref().unwrap_or_default())}})
            } else {
                json!({"waiting": {"reason": reason, "message": msg}})
            }
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

    pub(super) fn restartable(&self, c: &Container) -> bool {
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

    /// Fails a pod the node does not admit, as upstream's kubelet does:
    /// phase Failed with the admission's reason; nothing was started.
    pub(super) async fn reject(&mut self, pod: &Pod, reason: &str, message: &str) {
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

    pub(super) async fn report(&mut self, pod: &Pod) {
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
