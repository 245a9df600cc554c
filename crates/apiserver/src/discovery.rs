//! Discovery: aggregated (apidiscovery.k8s.io v2 and v2beta1) and the legacy
//! APIVersions / APIGroupList / APIGroup / APIResourceList documents.

use api::catalogue::{self, ResourceInfo};
use http::HeaderMap;
use serde_json::{Value, json};

use crate::aggregator::Aggregator;
use crate::crd::Registry;

/// Where discovery finds the groups beyond the built-in ones.
pub struct Sources<'a> {
    /// Custom resources.
    pub crds: &'a Registry,
    /// Aggregated API servers.
    pub aggregated: &'a Aggregator,
}

/// Every served group with its versions (preferred first): the built-in
/// ones, the custom ones, then the aggregated ones.
fn all_groups(src: &Sources<'_>) -> Vec<(String, Vec<String>)> {
    let mut out = local_groups(src.crds);
    for (g, vs) in src.aggregated.groups() {
        if !out.iter().any(|(x, _)| *x == g) {
            out.push((g, vs));
        }
    }
    out
}

fn local_groups(custom: &Registry) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = catalogue::groups()
        .into_iter()
        .map(|(g, vs)| (g.to_string(), vs.into_iter().map(String::from).collect()))
        .collect();
    for (g, vs) in custom.groups() {
        match out.iter_mut().find(|(x, _)| *x == g) {
            Some((_, have)) => have.extend(
                vs.into_iter()
                    .filter(|v| !have.contains(v))
                    .collect::<Vec<_>>(),
            ),
            None => out.push((g, vs)),
        }
    }
    out
}

/// The resources served in one group version.
fn infos_in(custom: &Registry, group: &str, version: &str) -> Vec<&'static ResourceInfo> {
    let mut out: Vec<&'static ResourceInfo> = catalogue::resources_in(group, version).collect();
    out.extend(custom.resources_in(group, version).iter().map(|s| s.info));
    out
}

/// Which aggregated-discovery version the client accepts, if any.
pub fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(http::header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        let has = |kv: &str| p.contains(&kv);
        if p.first() == Some(&"application/json")
            && has("g=apidiscovery.k8s.io")
            && has("as=APIGroupDiscoveryList")
        {
            if has("v=v2") {
                return Some("v2");
            }
            if has("v=v2beta1") {
                return Some("v2beta1");
            }
        }
    }
    None
}

fn sub_kind(info: &ResourceInfo, sub: &str) -> (&'static str, &'static str, &'static str) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "eviction" => ("policy", "v1", "Eviction"),
        "exec" => ("", "v1", "PodExecOptions"),
        "attach" => ("", "v1", "PodAttachOptions"),
        "portforward" => ("", "v1", "PodPortForwardOptions"),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
        "proxy" => match info.plural {
            "nodes" => ("", "v1", "NodeProxyOptions"),
            "services" => ("", "v1", "ServiceProxyOptions"),
            _ => ("", "v1", "PodProxyOptions"),
        },
        _ => (info.group, info.version, info.kind),
    }
}

fn sub_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "binding" | "eviction" | "token" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "proxy" => &["create", "delete", "get", "patch", "update"],
        "finalize" => &["update"],
        _ => &["get", "patch", "update"],
    }
}

fn scope(info: &ResourceInfo) -> &'static str {
    if info.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

fn aggregated_resource(info: &ResourceInfo) -> Value {
    let mut r = json!({
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": scope(info),
        "singularResource": info.singular,
        "verbs": info.verbs,
    });
    if !info.short_names.is_empty() {
        r["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        r["categories"] = json!(info.categories);
    }
    if !info.subresources.is_empty() {
        r["subresources"] = Value::Array(
            info.subresources
                .iter()
                .map(|s| {
                    let (g, v, k) = sub_kind(info, s);
                    json!({
                        "subresource": s,
                        "responseKind": {"group": g, "version": v, "kind": k},
                        "verbs": sub_verbs(s),
                    })
                })
                .collect(),
        );
    }
    r
}

/// An aggregated server's legacy APIResource list in the aggregated
/// discovery shape.
fn remote_resources(group: &str, version: &str, list: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for r in list {
        let name = r["name"].as_str().unwrap_or("");
        match name.split_once('/') {
            None => {
                let mut a = json!({
                    "resource": name,
                    "responseKind": {"group": group, "version": version, "kind": r["kind"]},
                    "scope": if r["namespaced"].as_bool() == Some(true) { "Namespaced" } else { "Cluster" },
                    "singularResource": r["singularName"],
                    "verbs": r["verbs"],
                });
                for k in ["shortNames", "categories"] {
                    if r.get(k).is_some_and(|v| !v.is_null()) {
                        a[k] = r[k].clone();
                    }
                }
                out.push(a);
            }
            Some((parent, sub)) => {
                if let Some(p) = out.iter_mut().find(|x| x["resource"] == parent) {
                    let entry = json!({
                        "subresource": sub,
                        "responseKind": {"group": r["group"].as_str().unwrap_or(group), "version": r["version"].as_str().unwrap_or(version), "kind": r["kind"]},
                        "verbs": r["verbs"],
                    });
                    match p["subresources"].as_array_mut() {
                        Some(a) => a.push(entry),
                        None => p["subresources"] = json!([entry]),
                    }
                }
            }
        }
    }
    out
}

fn aggregated_group(src: &Sources<'_>, group: &str, versions: &[String]) -> Value {
    let custom = src.crds;
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({
        "metadata": metadata,
        "versions": versions.iter().map(|v| json!({
            "version": v,
            "resources": match src.aggregated.remote(group, v) {
                Some(remote) => remote_resources(group, v, remote.resources.as_deref().unwrap_or(&[])),
                None => infos_in(custom, group, v).into_iter().map(aggregated_resource).collect::<Vec<_>>(),
            },
            "freshness": match src.aggregated.remote(group, v) {
                Some(r) if r.resources.is_none() => "Stale",
                _ => "Current",
            },
        })).collect::<Vec<_>>(),
    })
}

/// The aggregated discovery document for `/api` (core) or `/apis` (groups).
pub fn aggregated(src: &Sources<'_>, core: bool, version: &str) -> Value {
    let items: Vec<Value> = all_groups(src)
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| aggregated_group(src, &g, &vs))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// The content type of an aggregated discovery response.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// `/api`: APIVersions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`: APIGroupList.
pub fn group_list(src: &Sources<'_>) -> Value {
    let groups: Vec<Value> = all_groups(src)
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(&g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: APIGroup, if served.
pub fn group(src: &Sources<'_>, name: &str) -> Option<Value> {
    let (g, vs) = all_groups(src)
        .into_iter()
        .find(|(g, _)| *g == name && !g.is_empty())?;
    let mut doc = group_doc(&g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1`, `/apis/<g>/<v>`: APIResourceList, if served.
pub fn resource_list(custom: &Registry, group: &str, version: &str) -> Option<Value> {
    let infos = infos_in(custom, group, version);
    if infos.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for info in infos {
        let mut r = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": info.verbs,
        });
        if !info.short_names.is_empty() {
            r["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            r["categories"] = json!(info.categories);
        }
        resources.push(r);
        for s in info.subresources {
            let (g, v, k) = sub_kind(info, s);
            let mut sr = json!({
                "name": format!("{}/{s}", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": k,
                "verbs": sub_verbs(s),
            });
            if g != info.group || v != info.version {
                sr["group"] = json!(g);
                sr["version"] = json!(v);
            }
            resources.push(sr);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_lists_core_and_groups_apart() {
        let (crds, agg) = (Registry::default(), Aggregator::default());
        let src = Sources {
            crds: &crds,
            aggregated: &agg,
        };
        let core = aggregated(&src, true, "v2");
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "pods"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(pods["shortNames"], json!(["po"]));
        let apis = aggregated(&src, false, "v2");
        assert!(
            apis["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|g| g["metadata"]["name"] == "apps"))
        );
    }

    #[test]
    fn accept_header_selects_aggregated() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
                .parse()
                .unwrap(),
        );
        assert_eq!(aggregated_version(&h), Some("v2"));
        h.insert(http::header::ACCEPT, "application/json".parse().unwrap());
        assert_eq!(aggregated_version(&h), None);
    }

    #[test]
    fn legacy_lists() {
        let none = Registry::default();
        let agg = Aggregator::default();
        let src = Sources {
            crds: &none,
            aggregated: &agg,
        };
        let l = resource_list(&none, "apps", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"deployments/scale"));
        assert_eq!(
            group(&src, "apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert!(group(&src, "nope").is_none());
    }
}
