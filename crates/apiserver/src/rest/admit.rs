//! Built-in admission and registry-level behaviour that needs the store:
//! namespace lifecycle checks, Service cluster IP and node port allocation.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use api::catalogue::{self, ResourceInfo};
use serde_json::{Value, json};

use super::Rest;
use crate::error::{ApiError, cause};

/// The default service CIDR (DESIGN.md: the k3s default).
pub const SERVICE_CIDR: ipnet::Ipv4Net = match ipnet::Ipv4Net::new(Ipv4Addr::new(10, 43, 0, 0), 16)
{
    Ok(n) => n,
    Err(_) => panic!("10.43.0.0/16 is a valid network"),
};
/// The node port range, as upstream's default.
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// Refuses creates in a namespace that does not exist or is terminating,
/// as upstream's NamespaceLifecycle admission plugin does.
pub async fn namespace_lifecycle(
    rest: &Rest,
    info: &ResourceInfo,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let Some(ns) = ns.filter(|_| info.namespaced) else {
        return Ok(());
    };
    let nsinfo = catalogue::find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces missing from the catalogue"))?;
    match rest.load(nsinfo, None, ns).await {
        Ok((obj, _)) => {
            if obj["metadata"]["deletionTimestamp"].is_string()
                || obj["status"]["phase"] == "Terminating"
            {
                return Err(ApiError::forbidden(format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    info.plural
                )));
            }
            Ok(())
        }
        Err(e) if e.code == 404 => Err(ApiError::not_found("", "namespaces", ns)),
        Err(e) => Err(e),
    }
}

/// The IPv4 ranges cluster IPs come from: the server's `--service-cidr`
/// first, then those of the other ServiceCIDR objects (upstream's
/// MultiCIDRServiceAllocator: a user extends the range by creating one).
async fn service_ranges(rest: &Rest) -> Result<Vec<ipnet::Ipv4Net>, ApiError> {
    let mut out = vec![rest.service_cidr];
    if let Some(info) = catalogue::find("networking.k8s.io", "v1", "servicecidrs") {
        let res = rest.store.range(&info.storage_prefix(), None, 0, 0).await?;
        for kv in &res.kvs {
            let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if obj["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            for c in obj["spec"]["cidrs"].as_array().into_iter().flatten() {
                if let Some(Ok(net)) = c.as_str().map(str::parse::<ipnet::Ipv4Net>)
                    && !out.contains(&net)
                {
                    out.push(net);
                }
            }
        }
    }
    Ok(out)
}

fn ranges_text(ranges: &[ipnet::Ipv4Net]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Node ports every Service holds.
async fn used_node_ports(rest: &Rest, info: &ResourceInfo) -> Result<HashSet<i64>, ApiError> {
    let res = rest.store.range(&info.storage_prefix(), None, 0, 0).await?;
    let mut ports = HashSet::new();
    for kv in &res.kvs {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_i64() {
                ports.insert(np);
            }
        }
        if let Some(hc) = svc["spec"]["healthCheckNodePort"].as_i64() {
            ports.insert(hc);
        }
    }
    Ok(ports)
}

/// A 422 for the Service `name` pointing at `field`.
fn invalid_field(info: &ResourceInfo, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        info.group,
        info.kind,
        name,
        vec![cause("FieldValueInvalid", field, message)],
    )
}

/// Allocates the cluster IP and node ports of a new Service, or checks the
/// ones it asks for. Runs under the allocation lock so two creates never get
/// the same address.
pub async fn allocate_service(
    rest: &Rest,
    info: &ResourceInfo,
    svc: &mut Value,
    old: Option<&Value>,
    dry: bool,
) -> Result<(), ApiError> {
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ty = svc["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    if let Some(old) = old {
        // Cluster IPs are immutable; an update that leaves them out keeps them.
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let missing = svc["spec"].get(k).is_none_or(|v| v.is_null() || v == "");
            if missing && let Some(v) = old["spec"].get(k) {
                svc["spec"][k] = v.clone();
            }
        }
        let old_ip = &old["spec"]["clusterIP"];
        if !old_ip.is_null() && svc["spec"]["clusterIP"] != *old_ip && ty != "ExternalName" {
            return Err(invalid_field(
                info,
                &name,
                "spec.clusterIPs[0]",
                format!(
                    "Invalid value: {}: may not change once set",
                    svc["spec"]["clusterIP"]
                ),
            ));
        }
    }
    let _guard = rest.alloc_lock.lock().await;
    let ranges = service_ranges(rest).await?;
    // Node ports are still found by a scan, so only Services that need
    // them pay for it.
    let mut used_ports = if ty == "NodePort" || ty == "LoadBalancer" {
        used_node_ports(rest, info).await?
    } else {
        HashSet::new()
    };
    if let Some(old) = old {
        for p in old["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_i64() {
                used_ports.remove(&np);
            }
        }
        if let Some(hc) = old["spec"]["healthCheckNodePort"].as_i64() {
            used_ports.remove(&hc);
        }
    }
    let ns = svc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    if ty == "ExternalName" {
        if let Some(spec) = svc["spec"].as_object_mut() {
            for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(k);
            }
        }
        return Ok(());
    }
    let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    let ip = if requested == "None" {
        "None".to_string()
    } else if requested.is_empty() {
        // Start at a random offset so restarts do not pile onto low
        // addresses; the first address (the kubernetes Service) and the
        // tenth (cluster DNS) are reserved for whoever asks for them by
        // address, as are the network and broadcast addresses.
        let mut found = None;
        'ranges: for net in &ranges {
            let size = 1u64 << (32 - net.prefix_len());
            let start = (uuid::Uuid::new_v4().as_u128() % u128::from(size)) as u64;
            for i in 0..size {
                let off = (start + i) % size;
                if off <= 10 || off == size - 1 {
                    continue;
                }
                let cand = Ipv4Addr::from(u32::from(net.network()) + off as u32);
                if super::ipalloc::claim(rest, cand, &ns, &name, dry).await? {
                    found = Some(cand);
                    break 'ranges;
                }
            }
        }
        found
            .ok_or_else(|| ApiError::internal("failed to allocate a service IP: range is full"))?
            .to_string()
    } else {
        let parsed: Ipv4Addr = requested.parse().map_err(|_| {
            invalid_field(info, &name, "spec.clusterIPs[0]", format!("Invalid value: \"{requested}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
        })?;
        if !ranges.iter().any(|n| n.contains(&parsed)) {
            return Err(invalid_field(
                info,
                &name,
                "spec.clusterIPs",
                format!(
                    "Invalid value: [\"{requested}\"]: failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                    ranges_text(&ranges)
                ),
            ));
        }
        if !super::ipalloc::claim(rest, parsed, &ns, &name, dry).await? {
            return Err(invalid_field(
                info,
                &name,
                "spec.clusterIPs",
                format!(
                    "Invalid value: [\"{requested}\"]: failed to allocate IP {requested}: provided IP is already allocated"
                ),
            ));
        }
        requested
    };
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
    svc["spec"]["ipFamilies"] = json!(["IPv4"]);
    if svc["spec"]["ipFamilyPolicy"].is_null() {
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let mut next = *NODE_PORTS.start();
        if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            for (i, p) in ports.iter_mut().enumerate() {
                match p["nodePort"].as_i64() {
                    Some(np) if np != 0 => {
                        let kept = old.is_some_and(|o| {
                            o["spec"]["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|op| op["nodePort"].as_i64() == Some(np))
                        });
                        if !NODE_PORTS.contains(&np) {
                            return Err(invalid_field(
                                info,
                                &name,
                                &format!("spec.ports[{i}].nodePort"),
                                format!(
                                    "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                                ),
                            ));
                        }
                        if used_ports.contains(&np) && !kept {
                            return Err(invalid_field(
                                info,
                                &name,
                                &format!("spec.ports[{i}].nodePort"),
                                format!("Invalid value: {np}: provided port is already allocated"),
                            ));
                        }
                        used_ports.insert(np);
                    }
                    _ => {
                        while used_ports.contains(&next) {
                            next += 1;
                        }
                        if !NODE_PORTS.contains(&next) {
                            return Err(ApiError::internal(
                                "failed to allocate a node port: range is full",
                            ));
                        }
                        p["nodePort"] = json!(next);
                        used_ports.insert(next);
                    }
                }
            }
        }
    }
    health_check_node_port(info, &name, svc, old, &ty, &mut used_ports)?;
    Ok(())
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` gets a
/// `healthCheckNodePort` (given, or the next free node port) where each
/// node says whether it has endpoints; any other Service has none, as
/// upstream's registry decides.
fn health_check_node_port(
    info: &ResourceInfo,
    name: &str,
    svc: &mut Value,
    old: Option<&Value>,
    ty: &str,
    used_ports: &mut HashSet<i64>,
) -> Result<(), ApiError> {
    let local = svc["spec"]["externalTrafficPolicy"] == "Local";
    if ty != "LoadBalancer" || !local {
        if let Some(spec) = svc["spec"].as_object_mut() {
            spec.remove("healthCheckNodePort");
        }
        return Ok(());
    }
    let kept = old.and_then(|o| o["spec"]["healthCheckNodePort"].as_i64());
    match svc["spec"]["healthCheckNodePort"]
        .as_i64()
        .filter(|p| *p != 0)
    {
        Some(p) => {
            if !NODE_PORTS.contains(&p) {
                return Err(invalid_field(
                    info,
                    name,
                    "spec.healthCheckNodePort",
                    format!(
                        "Invalid value: {p}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                    ),
                ));
            }
            if used_ports.contains(&p) && kept != Some(p) {
                return Err(invalid_field(
                    info,
                    name,
                    "spec.healthCheckNodePort",
                    format!("Invalid value: {p}: provided port is already allocated"),
                ));
            }
            used_ports.insert(p);
        }
        None => {
            let p = match kept {
                Some(k) => k,
                None => {
                    let mut next = *NODE_PORTS.start();
                    while used_ports.contains(&next) {
                        next += 1;
                    }
                    if !NODE_PORTS.contains(&next) {
                        return Err(ApiError::internal(
                            "failed to allocate a health check node port: range is full",
                        ));
                    }
                    next
                }
            };
            used_ports.insert(p);
            svc["spec"]["healthCheckNodePort"] = json!(p);
        }
    }
    Ok(())
}

/// Seconds a pod tolerates its node being not-ready or unreachable before
/// taint-based eviction deletes it, added by [`default_toleration_seconds`].
/// Upstream's DefaultTolerationSeconds plugin uses 300; r8s uses 30 so that,
/// with the 20 s node-monitor grace period, replacements run elsewhere within
/// a minute of a node dying.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 30;

/// Taint the node lifecycle controller puts on a node whose Ready condition
/// is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint the node lifecycle controller puts on a node that stopped
/// heartbeating.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Adds `not-ready` and `unreachable` NoExecute tolerations for `seconds`
/// to a new pod that does not already tolerate them, as upstream's
/// DefaultTolerationSeconds admission plugin does.
pub fn default_toleration_seconds(pod: &mut Value, seconds: i64) {
    let existing: Vec<Value> = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tolerates = |key: &str| {
        existing.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let mut out = existing.clone();
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        if !tolerates(key) {
            out.push(json!({
                "key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
    if out.len() != existing.len() && pod["spec"].is_object() {
        pod["spec"]["tolerations"] = Value::Array(out);
    }
}

/// The PriorityClasses upstream's API server creates at startup, as
/// `(name, value, description)`.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The built-in PriorityClass objects (for the server to create at start).
pub fn system_priority_classes() -> Vec<Value> {
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .map(|(name, value, desc)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": desc,
                "globalDefault": false, "preemptionPolicy": "PreemptLowerPriority",
            })
        })
        .collect()
}

/// Resolves `spec.priorityClassName` into `spec.priority` and
/// `spec.preemptionPolicy` as upstream's Priority admission plugin does: no
/// name takes the globalDefault class (or priority 0); an unknown name or a
/// conflicting explicit priority is Forbidden.
pub async fn pod_priority(rest: &Rest, pod: &mut Value) -> Result<(), ApiError> {
    let info = catalogue::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::internal("priorityclasses missing from the catalogue"))?;
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let forbidden =
        |why: String| ApiError::forbidden(format!("pods \"{name}\" is forbidden: {why}"));
    let wanted = pod["spec"]["priorityClassName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let class: Option<Value> = if wanted.is_empty() {
        let res = rest.store.range(&info.storage_prefix(), None, 0, 0).await?;
        let mut best: Option<Value> = None;
        for kv in &res.kvs {
            let pc = super::decode_kv(info, kv)?;
            // Several defaults can exist transiently; upstream takes the lowest.
            if pc["globalDefault"] == json!(true)
                && best
                    .as_ref()
                    .is_none_or(|b| pc["value"].as_i64() < b["value"].as_i64())
            {
                best = Some(pc);
            }
        }
        best
    } else {
        match rest.load(info, None, &wanted).await {
            Ok((pc, _)) => Some(pc),
            Err(e) if e.code == 404 => {
                let builtin = system_priority_classes()
                    .into_iter()
                    .find(|pc| pc["metadata"]["name"] == wanted.as_str());
                match builtin {
                    Some(pc) => Some(pc),
                    None => {
                        return Err(forbidden(format!(
                            "no PriorityClass with name {wanted} was found"
                        )));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    };
    let (value, policy) = match &class {
        Some(pc) => (
            pc["value"].as_i64().unwrap_or(0),
            pc["preemptionPolicy"]
                .as_str()
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
        ),
        None => (0, "PreemptLowerPriority".to_string()),
    };
    if let Some(p) = pod["spec"]["priority"].as_i64()
        && p != value
    {
        return Err(forbidden(format!(
            "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    if let Some(p) = pod["spec"]["preemptionPolicy"].as_str()
        && class.is_some()
        && p != policy
    {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.insert("priority".into(), json!(value));
        if let Some(pc) = &class {
            spec.insert("priorityClassName".into(), pc["metadata"]["name"].clone());
            spec.insert("preemptionPolicy".into(), json!(policy));
        }
    }
    Ok(())
}

/// Pod create admission beyond validation: Priority, then
/// DefaultTolerationSeconds (upstream's plugin order).
// The create pipeline in write.rs calls this for pods (wired by the lead).
pub async fn admit_pod_create(rest: &Rest, pod: &mut Value) -> Result<(), ApiError> {
    pod_priority(rest, pod).await?;
    default_toleration_seconds(pod, DEFAULT_TOLERATION_SECONDS);
    Ok(())
}

/// Where pods find their service-account credentials.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's token volume: unless the pod or
/// its service account opts out (`automountServiceAccountToken: false`),
/// a projected `kube-api-access-<suffix>` volume (a bound token, the
/// cluster CA from `kube-root-ca.crt` and the namespace) mounted read-only
/// at [`SA_MOUNT_PATH`] in every container, as upstream adds it.
pub async fn service_account_volume(rest: &Rest, pod: &mut Value) -> Result<(), ApiError> {
    let spec = &pod["spec"];
    if spec["automountServiceAccountToken"] == false {
        return Ok(());
    }
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let sa_name = spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    if let Some(info) = catalogue::find("", "v1", "serviceaccounts")
        && let Ok((sa, _)) = rest.load(info, Some(&ns), &sa_name).await
        && sa["automountServiceAccountToken"] == false
    {
        return Ok(());
    }
    let containers = |s: &Value| {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|k| s[*k].as_array().cloned().unwrap_or_default())
            .collect::<Vec<Value>>()
    };
    let mounted = containers(&pod["spec"]).iter().any(|c| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == SA_MOUNT_PATH))
    });
    if mounted {
        return Ok(());
    }
    let suffix: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(5)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    let spec = &mut pod["spec"];
    match spec["volumes"].as_array_mut() {
        Some(v) => v.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    for key in ["initContainers", "containers"] {
        // get_mut: indexing a missing key mutably would store a null.
        let list = spec.get_mut(key).and_then(Value::as_array_mut);
        for c in list.into_iter().flatten() {
            let m = json!({"name": name, "readOnly": true, "mountPath": SA_MOUNT_PATH});
            match c["volumeMounts"].as_array_mut() {
                Some(ms) => ms.push(m),
                None => c["volumeMounts"] = json!([m]),
            }
        }
    }
    Ok(())
}

/// The annotation that marks the default StorageClass.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Gives a claim without `storageClassName` the default StorageClass (the
/// newest one marked default), as upstream's DefaultStorageClass admission
/// plugin does. An explicit `""` means "no class" and is kept.
pub async fn default_storage_class(rest: &Rest, pvc: &mut Value) -> Result<(), ApiError> {
    if pvc["spec"]
        .get("storageClassName")
        .is_some_and(|v| !v.is_null())
    {
        return Ok(());
    }
    let info = catalogue::find("storage.k8s.io", "v1", "storageclasses")
        .ok_or_else(|| ApiError::internal("storageclasses missing from the catalogue"))?;
    let res = rest.store.range(&info.storage_prefix(), None, 0, 0).await?;
    let default = res
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|sc| {
            let a = &sc["metadata"]["annotations"];
            a[DEFAULT_CLASS] == "true"
                || a["storageclass.beta.kubernetes.io/is-default-class"] == "true"
        })
        .max_by(|a, b| {
            let key = |o: &Value| {
                (
                    o["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
    if let (Some(sc), Some(spec)) = (default, pvc["spec"].as_object_mut()) {
        spec.insert("storageClassName".into(), sc["metadata"]["name"].clone());
    }
    Ok(())
}

/// The built-in default StorageClass: node-local directories under
/// `node_path`, provisioned by the controllers (k3s ships the same class).
pub fn local_path_storage_class(node_path: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "local-path",
            "annotations": {DEFAULT_CLASS: "true"},
        },
        "provisioner": "rancher.io/local-path",
        "parameters": {"nodePath": node_path},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range() {
        assert!(SERVICE_CIDR.contains(&"10.43.1.2".parse::<Ipv4Addr>().unwrap()));
        assert!(!SERVICE_CIDR.contains(&"10.44.0.1".parse::<Ipv4Addr>().unwrap()));
        assert_eq!(ranges_text(&[SERVICE_CIDR]), "10.43.0.0/16");
    }

    #[test]
    fn default_tolerations_are_added_once() {
        let mut p = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut p, 30);
        let t = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["key"], TAINT_NOT_READY);
        assert_eq!(t[1]["key"], TAINT_UNREACHABLE);
        assert_eq!(t[1]["tolerationSeconds"], 30);
        assert_eq!(t[1]["effect"], "NoExecute");
        default_toleration_seconds(&mut p, 30);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_wildcard_toleration_suppresses_the_defaults() {
        let mut p = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut p, 30);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut p = json!({"spec": {"tolerations": [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]}});
        default_toleration_seconds(&mut p, 30);
        let t = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1]["key"], TAINT_NOT_READY);
    }
}
