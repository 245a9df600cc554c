//! LimitRanger admission: a namespace's LimitRanges fill in the requests
//! and limits a new pod's containers leave out, and refuse pods (and
//! claims) outside their min, max and limit/request ratio, with
//! upstream's messages.

use std::collections::BTreeMap;

use api::catalogue::ResourceInfo;
use api::quota::Qty;
use serde_json::{Map, Value, json};

use super::{Context, Operation, Plugin, Request};
use crate::error::ApiError;

/// The plugin.
pub struct LimitRanger;

type List = BTreeMap<String, (Qty, String)>;

fn list(v: &Value) -> List {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| {
            let s = q.as_str()?;
            Some((k.clone(), (Qty::parse(s)?, s.to_string())))
        })
        .collect()
}

/// A LimitRange item with upstream's defaulting applied (a default limit
/// from max, a default request from the default limit or min).
struct Item {
    kind: String,
    min: List,
    max: List,
    default: List,
    default_request: List,
    ratio: List,
}

fn items(ranges: &[Value], ns: &str) -> Vec<Item> {
    let mut out = Vec::new();
    for r in ranges.iter().filter(|r| r["metadata"]["namespace"] == ns) {
        for it in r["spec"]["limits"].as_array().into_iter().flatten() {
            let mut item = Item {
                kind: it["type"].as_str().unwrap_or("").to_string(),
                min: list(&it["min"]),
                max: list(&it["max"]),
                default: list(&it["default"]),
                default_request: list(&it["defaultRequest"]),
                ratio: list(&it["maxLimitRequestRatio"]),
            };
            if item.kind == "Container" {
                for (k, v) in &item.max {
                    item.default.entry(k.clone()).or_insert_with(|| v.clone());
                }
                for (k, v) in item.default.clone().iter().chain(item.min.iter()) {
                    item.default_request
                        .entry(k.clone())
                        .or_insert_with(|| v.clone());
                }
            }
            out.push(item);
        }
    }
    out
}

fn containers(pod: &mut Value) -> Vec<(&'static str, &mut Value)> {
    let mut out = Vec::new();
    let Some(spec) = pod["spec"].as_object_mut() else {
        return out;
    };
    for (key, cs) in spec.iter_mut() {
        let label = match key.as_str() {
            "containers" => "container",
            "initContainers" => "init container",
            _ => continue,
        };
        if let Value::Array(cs) = cs {
            out.extend(cs.iter_mut().map(|c| (label, c)));
        }
    }
    // Containers before init containers, as upstream annotates them.
    out.sort_by_key(|(label, _)| *label != "container");
    out
}

/// Fills in defaults; the `kubernetes.io/limit-ranger` annotation says
/// what was set.
fn apply_defaults(items: &[Item], pod: &mut Value) {
    let mut default = List::new();
    let mut default_request = List::new();
    for it in items.iter().filter(|i| i.kind == "Container") {
        default.extend(it.default.clone());
        default_request.extend(it.default_request.clone());
    }
    if default.is_empty() && default_request.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (label, c) in containers(pod) {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let mut set = |field: &str, from: &List| {
            let res = &mut c["resources"];
            if !res.is_object() {
                *res = json!({});
            }
            if !res[field].is_object() {
                res[field] = json!({});
            }
            let mut names = Vec::new();
            for (k, (_, text)) in from {
                if res[field].get(k).is_none() {
                    res[field][k] = json!(text);
                    names.push(k.clone());
                }
            }
            if res[field].as_object().is_some_and(Map::is_empty)
                && let Some(r) = res.as_object_mut()
            {
                r.remove(field);
            }
            names
        };
        let limits = set("limits", &default);
        let requests = set("requests", &default_request);
        if !requests.is_empty() {
            notes.push(format!(
                "{} request for {label} {name}",
                requests.join(", ")
            ));
        }
        if !limits.is_empty() {
            notes.push(format!("{} limit for {label} {name}", limits.join(", ")));
        }
    }
    if !notes.is_empty() {
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

fn min_max_ratio(kind: &str, item: &Item, requests: &List, limits: &List, errs: &mut Vec<String>) {
    for (res, (min, min_text)) in &item.min {
        match (requests.get(res), limits.get(res)) {
            (None, _) => errs.push(format!(
                "minimum {res} usage per {kind} is {min_text}.  No request is specified"
            )),
            (Some((r, rt)), _) if r.nanos < min.nanos => errs.push(format!(
                "minimum {res} usage per {kind} is {min_text}, but request is {rt}"
            )),
            (_, Some((l, lt))) if l.nanos < min.nanos => errs.push(format!(
                "minimum {res} usage per {kind} is {min_text}, but limit is {lt}"
            )),
            _ => {}
        }
    }
    for (res, (max, max_text)) in &item.max {
        match (requests.get(res), limits.get(res)) {
            (_, None) => errs.push(format!(
                "maximum {res} usage per {kind} is {max_text}.  No limit is specified"
            )),
            (_, Some((l, lt))) if l.nanos > max.nanos => errs.push(format!(
                "maximum {res} usage per {kind} is {max_text}, but limit is {lt}"
            )),
            (Some((r, rt)), _) if r.nanos > max.nanos => errs.push(format!(
                "maximum {res} usage per {kind} is {max_text}, but request is {rt}"
            )),
            _ => {}
        }
    }
    for (res, (ratio, ratio_text)) in &item.ratio {
        let r = requests.get(res).map(|(q, _)| q.nanos).unwrap_or(0);
        let l = limits.get(res).map(|(q, _)| q.nanos).unwrap_or(0);
        if r == 0 {
            errs.push(format!("{res} max limit to request ratio per {kind} is {ratio_text}, but no request is specified or request is 0"));
        } else if l == 0 {
            errs.push(format!("{res} max limit to request ratio per {kind} is {ratio_text}, but no limit is specified or limit is 0"));
        } else {
            let observed = l as f64 / r as f64;
            if observed > ratio.nanos as f64 / 1e9 {
                errs.push(format!(
                    "{res} max limit to request ratio per {kind} is {ratio_text}, but provided ratio is {observed:.6}"
                ));
            }
        }
    }
}

fn sum(lists: &[List]) -> List {
    let mut out: BTreeMap<String, Qty> = BTreeMap::new();
    for l in lists {
        for (k, (q, _)) in l {
            out.entry(k.clone()).or_insert(Qty::ZERO).add(*q);
        }
    }
    out.into_iter()
        .map(|(k, q)| (k, (q, q.canonical())))
        .collect()
}

/// What is wrong with `obj` under `items`.
fn violations(info: &ResourceInfo, items: &[Item], obj: &mut Value) -> Vec<String> {
    let mut errs = Vec::new();
    if info.plural == "persistentvolumeclaims" {
        let requests = list(&obj["spec"]["resources"]["requests"]);
        let limits = list(&obj["spec"]["resources"]["limits"]);
        for it in items.iter().filter(|i| i.kind == "PersistentVolumeClaim") {
            min_max_ratio("PersistentVolumeClaim", it, &requests, &limits, &mut errs);
        }
        return errs;
    }
    let (mut all_req, mut all_lim) = (Vec::new(), Vec::new());
    for (_, c) in containers(obj) {
        let requests = list(&c["resources"]["requests"]);
        let limits = list(&c["resources"]["limits"]);
        for it in items.iter().filter(|i| i.kind == "Container") {
            min_max_ratio("Container", it, &requests, &limits, &mut errs);
        }
        all_req.push(requests);
        all_lim.push(limits);
    }
    let (requests, limits) = (sum(&all_req), sum(&all_lim));
    for it in items.iter().filter(|i| i.kind == "Pod") {
        min_max_ratio("Pod", it, &requests, &limits, &mut errs);
    }
    errs
}

fn is_pod(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "pods"
}

#[async_trait::async_trait]
impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    fn handles(&self, info: &ResourceInfo, op: Operation) -> bool {
        op == Operation::Create
            && info.group.is_empty()
            && matches!(info.plural, "pods" | "persistentvolumeclaims")
    }

    async fn admit(
        &self,
        ctx: &Context<'_>,
        req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        let Some(ns) = req.namespace else {
            return Ok(());
        };
        if is_pod(req.info) {
            let ranges = ctx.limit_ranges.items();
            apply_defaults(&items(&ranges, ns), obj);
        }
        Ok(())
    }

    async fn validate(
        &self,
        ctx: &Context<'_>,
        req: &Request<'_>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        let Some(ns) = req.namespace else {
            return Ok(());
        };
        let ranges = ctx.limit_ranges.items();
        let items = items(&ranges, ns);
        if items.is_empty() {
            return Ok(());
        }
        let errs = violations(req.info, &items, obj);
        if errs.is_empty() {
            return Ok(());
        }
        let msg = if errs.len() == 1 {
            errs[0].clone()
        } else {
            format!("[{}]", errs.join(", "))
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        Err(ApiError::forbidden(format!(
            "{} {name:?} is forbidden: {msg}",
            req.info.plural
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Vec<Value> {
        vec![json!({"metadata": {"namespace": "ns"}, "spec": {"limits": limits}})]
    }

    fn pods() -> &'static ResourceInfo {
        api::catalogue::find("", "v1", "pods").unwrap()
    }

    #[test]
    fn defaults_fill_in_what_containers_leave_out() {
        let r = range(
            json!([{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"}}]),
        );
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"}, {"name": "b", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]}});
        apply_defaults(&items(&r, "ns"), &mut pod);
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        // The default limit is the default request where none is given.
        assert_eq!(a["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; memory request for container b; memory limit for container b"
        );
        assert!(items(&r, "other").is_empty());
    }

    #[test]
    fn min_max_and_ratio_in_upstreams_words() {
        let r = range(
            json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"},
            "maxLimitRequestRatio": {"cpu": "2"}}]),
        );
        let its = items(&r, "ns");
        let mut pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "2", "memory": "32Mi"}, "requests": {"cpu": "500m", "memory": "32Mi"}}}]}});
        let errs = violations(pods(), &its, &mut pod);
        assert_eq!(
            errs,
            [
                "minimum memory usage per Container is 64Mi, but request is 32Mi",
                "maximum cpu usage per Container is 1, but limit is 2",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
            ]
        );
        let pod_max = range(json!([{"type": "Pod", "max": {"memory": "100Mi"}}]));
        let mut two = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "64Mi"}}}]}});
        assert_eq!(
            violations(pods(), &items(&pod_max, "ns"), &mut two),
            ["maximum memory usage per Pod is 100Mi, but limit is 128Mi"]
        );
    }
}
