//! Service cluster IP and node port allocation: the last step of the
//! chain, as upstream's Service REST storage allocates after admission.
//! A new Service gets its addresses once it is known valid and admitted
//! (nothing to give back on refusal); an update carries the old addresses
//! over before validation, so validation and field ownership see them.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use api::catalogue::{self, ResourceInfo};
use serde_json::{Value, json};

use super::{Context, Operation, Plugin, Request};
use crate::error::{ApiError, cause};

/// The default service CIDR (DESIGN.md: the k3s default).
pub const SERVICE_CIDR: ipnet::Ipv4Net = match ipnet::Ipv4Net::new(Ipv4Addr::new(10, 43, 0, 0), 16)
{
    Ok(n) => n,
    Err(_) => panic!("10.43.0.0/16 is a valid network"),
};
/// The node port range, as upstream's default.
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// The allocation step.
pub struct ServiceAllocation;

#[async_trait::async_trait]
impl Plugin for ServiceAllocation {
    fn name(&self) -> &'static str {
        "ServiceAllocation"
    }

    fn handles(&self, info: &ResourceInfo, _op: Operation) -> bool {
        info.group.is_empty() && info.plural == "services"
    }

    async fn admit(
        &self,
        ctx: &Context<'_>,
        req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if req.op == Operation::Update {
            allocate_service(ctx, req.info, obj, req.old, req.dry_run).await?;
        }
        Ok(())
    }

    async fn validate(
        &self,
        ctx: &Context<'_>,
        req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if req.op == Operation::Create {
            allocate_service(ctx, req.info, obj, None, req.dry_run).await?;
        }
        Ok(())
    }
}

/// Frees the cluster IPs of a deleted Service (repair catches any other
/// way a Service goes).
pub async fn release(ctx: &Context<'_>, info: &ResourceInfo, svc: &Value, ns: &str, name: &str) {
    if !ServiceAllocation.handles(info, Operation::Delete) {
        return;
    }
    for ip in super::ipalloc::service_ips(svc) {
        super::ipalloc::release(ctx.store, ip, ns, name).await;
    }
}

/// The IPv4 ranges cluster IPs come from: the server's `--service-cidr`
/// first, then those of the other ServiceCIDR objects (upstream's
/// MultiCIDRServiceAllocator: a user extends the range by creating one).
async fn service_ranges(ctx: &Context<'_>) -> Result<Vec<ipnet::Ipv4Net>, ApiError> {
    let mut out = vec![ctx.service_cidr];
    if let Some(info) = catalogue::find("networking.k8s.io", "v1", "servicecidrs") {
        let res = ctx.store.range(&info.storage_prefix(), None, 0, 0).await?;
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
async fn used_node_ports(ctx: &Context<'_>, info: &ResourceInfo) -> Result<HashSet<i64>, ApiError> {
    let res = ctx.store.range(&info.storage_prefix(), None, 0, 0).await?;
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
    ctx: &Context<'_>,
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
    let _guard = ctx.alloc_lock.lock().await;
    let ranges = service_ranges(ctx).await?;
    // Node ports are still found by a scan, so only Services that need
    // them pay for it.
    let mut used_ports = if ty == "NodePort" || ty == "LoadBalancer" {
        used_node_ports(ctx, info).await?
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
                if super::ipalloc::claim(ctx.store, cand, &ns, &name, dry).await? {
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
        if !super::ipalloc::claim(ctx.store, parsed, &ns, &name, dry).await? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range() {
        assert!(SERVICE_CIDR.contains(&"10.43.1.2".parse::<Ipv4Addr>().unwrap()));
        assert!(!SERVICE_CIDR.contains(&"10.44.0.1".parse::<Ipv4Addr>().unwrap()));
        assert_eq!(ranges_text(&[SERVICE_CIDR]), "10.43.0.0/16");
    }
}
