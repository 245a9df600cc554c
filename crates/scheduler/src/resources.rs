//! Resource quantities and pod requests as the scheduler counts them
//! (milli-CPU, bytes, pod counts, extended resources as integers).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU assumed for a container without a CPU request when spreading (upstream's 100m).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory assumed for a container without a memory request (upstream's 200Mi).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

pub use controller_runtime::quantity::parse_scaled;

/// A quantity as an integer of its base unit (CPU in milli-cores when `name` is cpu).
pub fn quantity_value(name: &str, q: &Quantity) -> i64 {
    let scale = if name == "cpu" { 1000 } else { 1 };
    parse_scaled(&q.0, scale).unwrap_or(0)
}

/// Amounts of every resource a pod asks for or a node offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU in milli-cores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pod slots (only meaningful for allocatable).
    pub pods: i64,
    /// Extended resources (hugepages, devices, ...).
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Builds from a resource list (requests, limits, allocatable, overhead).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Resource::default();
        for (k, q) in list {
            r.set(k, quantity_value(k, q));
        }
        r
    }

    fn set(&mut self, name: &str, v: i64) {
        match name {
            "cpu" => self.milli_cpu = v,
            "memory" => self.memory = v,
            "ephemeral-storage" => self.ephemeral_storage = v,
            "pods" => self.pods = v,
            _ if is_scalar(name) => {
                self.scalar.insert(name.to_string(), v);
            }
            _ => {}
        }
    }

    /// Adds `o` to self.
    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `o` from self.
    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Per-resource maximum of self and `o`.
    pub fn set_max(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// An extended resource's amount (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

/// Whether a resource name is counted as an extended/scalar resource.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
        || name.starts_with("requests.")
}

/// A container's requests; limits stand in for missing requests, as API
/// defaulting does.
fn container_requests(c: &Container) -> Resource {
    let res = match &c.resources {
        Some(r) => r,
        None => return Resource::default(),
    };
    let mut out = res
        .limits
        .as_ref()
        .map(Resource::from_list)
        .unwrap_or_default();
    if let Some(req) = &res.requests {
        for (k, q) in req {
            out.set(k, quantity_value(k, q));
        }
    }
    out.pods = 0;
    out
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// What a pod needs on a node: max(sum of app containers + sidecars, each
/// init container + sidecars started before it) + overhead, and the same with
/// upstream's non-zero defaults for CPU and memory (used by scoring only).
pub fn pod_requests(pod: &Pod) -> (Resource, (i64, i64)) {
    let Some(spec) = &pod.spec else {
        return (Resource::default(), (0, 0));
    };
    let nz = |r: &Resource, c: &Container| {
        let has = |n: &str| {
            c.resources
                .as_ref()
                .map(|r| {
                    r.requests.as_ref().is_some_and(|m| m.contains_key(n))
                        || r.limits.as_ref().is_some_and(|m| m.contains_key(n))
                })
                .unwrap_or(false)
        };
        (
            if has("cpu") {
                r.milli_cpu
            } else {
                DEFAULT_MILLI_CPU
            },
            if has("memory") {
                r.memory
            } else {
                DEFAULT_MEMORY
            },
        )
    };
    let mut app = Resource::default();
    let mut app_nz = (0i64, 0i64);
    for c in &spec.containers {
        let r = container_requests(c);
        let z = nz(&r, c);
        app.add(&r);
        app_nz = (app_nz.0 + z.0, app_nz.1 + z.1);
    }
    let mut sidecars = Resource::default();
    let mut sidecars_nz = (0i64, 0i64);
    let mut init_max = Resource::default();
    let mut init_nz = (0i64, 0i64);
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        let z = nz(&r, c);
        if is_sidecar(c) {
            sidecars.add(&r);
            sidecars_nz = (sidecars_nz.0 + z.0, sidecars_nz.1 + z.1);
            init_max.set_max(&sidecars);
            init_nz = (init_nz.0.max(sidecars_nz.0), init_nz.1.max(sidecars_nz.1));
        } else {
            let mut with = r.clone();
            with.add(&sidecars);
            init_max.set_max(&with);
            init_nz = (
                init_nz.0.max(z.0 + sidecars_nz.0),
                init_nz.1.max(z.1 + sidecars_nz.1),
            );
        }
    }
    app.add(&sidecars);
    app_nz = (app_nz.0 + sidecars_nz.0, app_nz.1 + sidecars_nz.1);
    app.set_max(&init_max);
    app_nz = (app_nz.0.max(init_nz.0), app_nz.1.max(init_nz.1));
    if let Some(oh) = &spec.overhead {
        let o = Resource::from_list(oh);
        app.add(&o);
        app_nz = (app_nz.0 + o.milli_cpu, app_nz.1 + o.memory);
    }
    (app, app_nz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_requests_take_init_max_and_overhead() {
        let pod: Pod = serde_json::from_value(json!({
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
                ],
                "initContainers": [
                    {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
                ],
                "overhead": {"cpu": "10m"}
            }
        }))
        .unwrap();
        let (r, nz) = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 100 * 1024 * 1024);
        // b has no memory request: the non-zero default applies to it.
        assert_eq!(nz.1, 100 * 1024 * 1024 + DEFAULT_MEMORY);
    }

    #[test]
    fn sidecars_add_to_app_containers() {
        let pod: Pod = serde_json::from_value(json!({
            "spec": {
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
                "initContainers": [
                    {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                    {"name": "i", "resources": {"requests": {"cpu": "120m"}}}
                ]
            }
        }))
        .unwrap();
        assert_eq!(pod_requests(&pod).0.milli_cpu, 170);
    }

    #[test]
    fn limits_stand_in_for_requests_and_extended_resources_count() {
        let pod: Pod = serde_json::from_value(json!({
            "spec": {"containers": [{"name": "a", "resources": {
                "limits": {"cpu": "300m", "example.com/gpu": "2"}}}]}
        }))
        .unwrap();
        let (r, _) = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 300);
        assert_eq!(r.scalar("example.com/gpu"), 2);
    }
}
