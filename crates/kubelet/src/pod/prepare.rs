//! What a pod needs before its containers: sandbox, volumes and each
//! container's environment.

use super::*;

pub(super) fn resource_field(c: &Container, resource: &str) -> String {
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

impl Worker {
    pub(super) async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(), KubeletError> {
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
        std::fs::create_dir_all(&self.pod_dir).map_err(|source| KubeletError::Io {
            context: format!("creating {}", self.pod_dir.display()),
            source,
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
                .map_err(KubeletError::from)??;
                if let Some(hook) = &self.agent.opts.address_hook {
                    hook.addressed(pod, ip).await;
                }
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
                std::fs::write(self.pod_dir.join(f), s).map_err(|source| KubeletError::Io {
                    context: format!("writing {f}"),
                    source,
                })
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
                .map_err(KubeletError::from)??;
            self.sandbox_ns = Some(n);
        }
        if self.volumes.is_none() {
            let mut v = volumes::prepare(&self.agent.client, pod, &self.pod_dir).await?;
            self.image_volumes(pod, &mut v).await?;
            self.volumes = Some(v);
        }
        Ok(())
    }

    pub(super) async fn resolve_env(
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

    /// `image` volumes: the image pulled as its policy says (events on the
    /// pod), its layers mounted read-only.
    async fn image_volumes(
        &self,
        pod: &Pod,
        out: &mut HashMap<String, PathBuf>,
    ) -> Result<(), KubeletError> {
        let vols = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for v in vols {
            let Some(src) = &v.image else { continue };
            let reference = src.reference.clone().unwrap_or_default();
            let policy = src.pull_policy.clone().unwrap_or_else(|| {
                if pulls_latest(&reference) {
                    "Always".into()
                } else {
                    "IfNotPresent".into()
                }
            });
            self.ensure_image(pod, None, &reference, &policy)
                .await
                .map_err(|(_, msg)| {
                    KubeletError::Volume(format!(
                        "MountVolume.SetUp failed for volume \"{}\" : {msg}",
                        v.name
                    ))
                })?;
            let store = self.agent.images.clone();
            let img = reference.clone();
            let layers = tokio::task::spawn_blocking(move || store.unpack(&img)).await??;
            let dir = self.pod_dir.join("volumes").join(&v.name);
            let d = dir.clone();
            tokio::task::spawn_blocking(move || volumes::mount_image(&d, &layers)).await??;
            out.insert(v.name.clone(), dir);
        }
        Ok(())
    }
}

/// Whether a reference pulls `:latest` (explicitly or by omission).
fn pulls_latest(reference: &str) -> bool {
    if reference.contains('@') {
        return false;
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.rsplit_once(':').is_none_or(|(_, tag)| tag == "latest")
}
