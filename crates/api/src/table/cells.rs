//! Row cells for every kind except pods, following upstream's `print*`
//! functions (always the wide form: the server prints every column and
//! kubectl hides the priority-1 ones).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::format::{
    access_modes, bool_ptr, containers, count, format_label_selector, format_labels, host_port,
    human_duration, int, int_or_string, list_with_more, or, parse_time, selector_string, since,
    str_of,
};

/// The cells of one row for a kind with an upstream printer, or `None`.
pub fn cells(group: &str, plural: &str, o: &Value, now: DateTime<Utc>) -> Option<Vec<Value>> {
    let name = json!(str_of(&o["metadata"]["name"]));
    let age = json!(since(&o["metadata"]["creationTimestamp"], now));
    let spec = &o["spec"];
    let st = &o["status"];
    let row = match (group, plural) {
        ("", "podtemplates") => {
            let (names, images) = containers(&o["template"]["spec"]["containers"]);
            vec![
                name,
                json!(names),
                json!(images),
                json!(format_labels(&o["template"]["metadata"]["labels"])),
            ]
        }
        ("policy", "poddisruptionbudgets") => vec![
            name,
            json!(int_or_string(&spec["minAvailable"]).unwrap_or_else(|| "N/A".into())),
            json!(int_or_string(&spec["maxUnavailable"]).unwrap_or_else(|| "N/A".into())),
            int(&st["disruptionsAllowed"]),
            age,
        ],
        ("", "replicationcontrollers") => {
            let (names, images) = containers(&spec["template"]["spec"]["containers"]);
            vec![
                name,
                int(&spec["replicas"]),
                int(&st["replicas"]),
                int(&st["readyReplicas"]),
                age,
                json!(names),
                json!(images),
                json!(format_labels(&spec["selector"])),
            ]
        }
        ("apps", "replicasets") => {
            let (names, images) = containers(&spec["template"]["spec"]["containers"]);
            vec![
                name,
                int(&spec["replicas"]),
                int(&st["replicas"]),
                int(&st["readyReplicas"]),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(&spec["selector"])),
            ]
        }
        ("apps", "deployments") => {
            let (names, images) = containers(&spec["template"]["spec"]["containers"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    st["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                int(&st["updatedReplicas"]),
                int(&st["availableReplicas"]),
                age,
                json!(names),
                json!(images),
                json!(selector_string(&spec["selector"])),
            ]
        }
        ("apps", "statefulsets") => {
            let (names, images) = containers(&spec["template"]["spec"]["containers"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    st["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                age,
                json!(names),
                json!(images),
            ]
        }
        ("apps", "daemonsets") => {
            let (names, images) = containers(&spec["template"]["spec"]["containers"]);
            vec![
                name,
                int(&st["desiredNumberScheduled"]),
                int(&st["currentNumberScheduled"]),
                int(&st["numberReady"]),
                int(&st["updatedNumberScheduled"]),
                int(&st["numberAvailable"]),
                json!(format_labels(&spec["template"]["spec"]["nodeSelector"])),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(&spec["selector"])),
            ]
        }
        ("apps", "controllerrevisions") => {
            vec![name, json!(controller_of(o)), int(&o["revision"]), age]
        }
        ("batch", "jobs") => job(o, name, age, now),
        ("batch", "cronjobs") => {
            let (names, images) =
                containers(&spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]);
            let last = match parse_time(&st["lastScheduleTime"]) {
                Some(t) => human_duration((now - t).num_seconds()),
                None => "<none>".into(),
            };
            vec![
                name,
                json!(str_of(&spec["schedule"])),
                json!(or(&spec["timeZone"], "<none>")),
                json!(bool_ptr(&spec["suspend"])),
                json!(count(&st["active"])),
                json!(last),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(
                    &spec["jobTemplate"]["spec"]["selector"]
                )),
            ]
        }
        ("", "services") => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = str_of(&p["protocol"]);
                    match p["nodePort"].as_i64().filter(|n| *n > 0) {
                        Some(np) => format!("{}:{np}/{proto}", int(&p["port"])),
                        None => format!("{}/{proto}", int(&p["port"])),
                    }
                })
                .collect();
            vec![
                name,
                json!(str_of(&spec["type"])),
                json!(or(&spec["clusterIPs"][0], "<none>")),
                json!(service_external_ip(o)),
                json!(if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",")
                }),
                age,
                json!(format_labels(&spec["selector"])),
            ]
        }
        ("networking.k8s.io", "ingresses") => {
            let rules = spec["rules"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let hosts: Vec<&str> = rules
                .iter()
                .map(|r| str_of(&r["host"]))
                .filter(|h| !h.is_empty())
                .collect();
            let hosts = if hosts.is_empty() {
                "*".to_string()
            } else if rules.len() > 3 && hosts.len() >= 3 {
                format!("{} + {} more...", hosts[..3].join(","), rules.len() - 3)
            } else {
                hosts.iter().take(3).copied().collect::<Vec<_>>().join(",")
            };
            let tls = spec["tls"].as_array().is_some_and(|t| !t.is_empty());
            vec![
                name,
                json!(or(&spec["ingressClassName"], "<none>")),
                json!(hosts),
                json!(load_balancer(&st["loadBalancer"])),
                json!(if tls { "80, 443" } else { "80" }),
                age,
            ]
        }
        ("networking.k8s.io", "ingressclasses") => {
            let p = &spec["parameters"];
            let params = if p.is_object() {
                let mut s = str_of(&p["kind"]).to_string();
                if let Some(g) = p["apiGroup"].as_str() {
                    s = format!("{s}.{g}");
                }
                format!("{s}/{}", str_of(&p["name"]))
            } else {
                "<none>".into()
            };
            vec![name, json!(str_of(&spec["controller"])), json!(params), age]
        }
        ("", "endpoints") => vec![name, json!(endpoints(o)), age],
        ("discovery.k8s.io", "endpointslices") => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match (p["port"].as_i64(), p["name"].as_str()) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(n)) => n.to_string(),
                    (None, None) => "*".into(),
                })
                .collect();
            let addrs: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            vec![
                name,
                json!(str_of(&o["addressType"])),
                json!(list_with_more(&ports, 3)),
                json!(list_with_more(&addrs, 3)),
                age,
            ]
        }
        ("", "nodes") => node(o, name, age),
        ("", "events") => event(o, name, now),
        ("events.k8s.io", "events") => event(&core_event(o), name, now),
        ("", "namespaces") => vec![name, json!(str_of(&st["phase"])), age],
        ("", "secrets") => vec![
            name,
            json!(str_of(&o["type"])),
            json!(count(&o["data"])),
            age,
        ],
        ("", "serviceaccounts") => vec![name, json!(count(&o["secrets"])), age],
        ("", "configmaps") => vec![
            name,
            json!(count(&o["data"]) + count(&o["binaryData"])),
            age,
        ],
        ("", "persistentvolumes") => {
            let claim = if spec["claimRef"].is_object() {
                format!(
                    "{}/{}",
                    str_of(&spec["claimRef"]["namespace"]),
                    str_of(&spec["claimRef"]["name"])
                )
            } else {
                String::new()
            };
            vec![
                name,
                json!(str_of(&spec["capacity"]["storage"])),
                json!(access_modes(&spec["accessModes"])),
                json!(str_of(&spec["persistentVolumeReclaimPolicy"])),
                json!(terminating_phase(o)),
                json!(claim),
                json!(storage_class(o)),
                json!(or(&spec["volumeAttributesClassName"], "<unset>")),
                json!(str_of(&st["reason"])),
                age,
                json!(or(&spec["volumeMode"], "<unset>")),
            ]
        }
        ("", "persistentvolumeclaims") => {
            let bound = !str_of(&spec["volumeName"]).is_empty();
            let (capacity, modes) = if bound {
                (
                    str_of(&st["capacity"]["storage"]).to_string(),
                    access_modes(&st["accessModes"]),
                )
            } else {
                (String::new(), String::new())
            };
            vec![
                name,
                json!(terminating_phase(o)),
                json!(str_of(&spec["volumeName"])),
                json!(capacity),
                json!(modes),
                json!(storage_class(o)),
                json!(or(&spec["volumeAttributesClassName"], "<unset>")),
                age,
                json!(or(&spec["volumeMode"], "<unset>")),
            ]
        }
        ("autoscaling", "horizontalpodautoscalers") => vec![
            name,
            json!(format!(
                "{}/{}",
                str_of(&spec["scaleTargetRef"]["kind"]),
                str_of(&spec["scaleTargetRef"]["name"])
            )),
            json!(hpa_metrics(o)),
            json!(
                spec["minReplicas"]
                    .as_i64()
                    .map_or_else(|| "<unset>".into(), |n| n.to_string())
            ),
            int(&spec["maxReplicas"]),
            int(&st["currentReplicas"]),
            age,
        ],
        ("networking.k8s.io", "networkpolicies") => vec![
            name,
            json!(format_label_selector(&spec["podSelector"])),
            age,
        ],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let mut users = Vec::new();
            let mut groups = Vec::new();
            let mut sas = Vec::new();
            for s in o["subjects"].as_array().into_iter().flatten() {
                match str_of(&s["kind"]) {
                    "ServiceAccount" => sas.push(format!(
                        "{}/{}",
                        str_of(&s["namespace"]),
                        str_of(&s["name"])
                    )),
                    "User" => users.push(str_of(&s["name"]).to_string()),
                    "Group" => groups.push(str_of(&s["name"]).to_string()),
                    _ => {}
                }
            }
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    str_of(&o["roleRef"]["kind"]),
                    str_of(&o["roleRef"]["name"])
                )),
                age,
                json!(users.join(", ")),
                json!(groups.join(", ")),
                json!(sas.join(", ")),
            ]
        }
        // As upstream's aggregator prints them: `Local` for in-process
        // group versions, `False (Reason)` when unavailable.
        ("apiregistration.k8s.io", "apiservices") => {
            let svc = &spec["service"];
            let service = if svc.is_null() {
                "Local".to_string()
            } else {
                format!("{}/{}", str_of(&svc["namespace"]), str_of(&svc["name"]))
            };
            let cond = o["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Available"));
            let available = match cond {
                Some(c) if c["status"] == "True" => "True".to_string(),
                Some(c) => format!("{} ({})", str_of(&c["status"]), str_of(&c["reason"])),
                None => "Unknown".to_string(),
            };
            vec![name, json!(service), json!(available), age]
        }
        ("coordination.k8s.io", "leases") => {
            vec![name, json!(str_of(&spec["holderIdentity"])), age]
        }
        ("certificates.k8s.io", "certificatesigningrequests") => {
            super::certificates::csr(o, name, age)
        }
        ("storage.k8s.io", "storageclasses") => {
            let ann = &o["metadata"]["annotations"];
            let default = ann["storageclass.kubernetes.io/is-default-class"] == "true"
                || ann["storageclass.beta.kubernetes.io/is-default-class"] == "true";
            let shown = if default {
                format!("{} (default)", str_of(&name))
            } else {
                str_of(&name).to_string()
            };
            vec![
                json!(shown),
                json!(str_of(&o["provisioner"])),
                json!(or(&o["reclaimPolicy"], "Delete")),
                json!(or(&o["volumeBindingMode"], "Immediate")),
                json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false)),
                age,
            ]
        }
        ("", "resourcequotas") => {
            let mut keys: Vec<&String> = st["hard"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            let mut requests = Vec::new();
            let mut limits = Vec::new();
            for k in keys {
                let entry = format!(
                    "{k}: {}/{}",
                    or(&st["used"][k.as_str()], "0"),
                    str_of(&st["hard"][k.as_str()])
                );
                let mut pieces = k.split('.');
                if pieces.next() == Some("limits") && pieces.next().is_some() {
                    limits.push(entry);
                } else {
                    requests.push(entry);
                }
            }
            vec![
                name,
                json!(requests.join(", ")),
                json!(limits.join(", ")),
                age,
            ]
        }
        ("scheduling.k8s.io", "priorityclasses") => vec![
            name,
            int(&o["value"]),
            json!(o["globalDefault"].as_bool().unwrap_or(false)),
            age,
            json!(str_of(&o["preemptionPolicy"])),
        ],
        ("storage.k8s.io", "volumeattachments") => vec![
            name,
            json!(str_of(&spec["attacher"])),
            json!(str_of(&spec["source"]["persistentVolumeName"])),
            json!(str_of(&spec["nodeName"])),
            json!(st["attached"].as_bool().unwrap_or(false)),
            age,
        ],
        ("storage.k8s.io", "csinodes") => vec![name, json!(count(&spec["drivers"])), age],
        ("storage.k8s.io", "csidrivers") => {
            let modes: Vec<&str> = spec["volumeLifecycleModes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let tokens = match spec["tokenRequests"].as_array() {
                Some(t) => t
                    .iter()
                    .map(|r| str_of(&r["audience"]))
                    .collect::<Vec<_>>()
                    .join(","),
                None => "<unset>".into(),
            };
            vec![
                name,
                json!(spec["attachRequired"].as_bool().unwrap_or(true)),
                json!(spec["podInfoOnMount"].as_bool().unwrap_or(false)),
                json!(spec["storageCapacity"].as_bool().unwrap_or(false)),
                json!(tokens),
                json!(spec["requiresRepublish"].as_bool().unwrap_or(false)),
                json!(if modes.is_empty() {
                    "<none>".into()
                } else {
                    modes.join(",")
                }),
                age,
            ]
        }
        ("storage.k8s.io", "csistoragecapacities") => {
            vec![
                name,
                json!(str_of(&o["storageClassName"])),
                json!(or(&o["capacity"], "<unset>")),
            ]
        }
        ("networking.k8s.io", "servicecidrs") => {
            let cidrs: Vec<&str> = spec["cidrs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![name, json!(cidrs.join(",")), age]
        }
        ("networking.k8s.io", "ipaddresses") => {
            let p = &spec["parentRef"];
            let parent = if p.is_object() {
                let group = str_of(&p["group"]);
                let resource = str_of(&p["resource"]);
                let mut s = if group.is_empty() {
                    resource.to_lowercase()
                } else {
                    format!("{resource}.{group}").to_lowercase()
                };
                if let Some(ns) = p["namespace"].as_str().filter(|n| !n.is_empty()) {
                    s = format!("{s}/{ns}");
                }
                format!("{s}/{}", str_of(&p["name"]))
            } else {
                "<none>".into()
            };
            vec![name, json!(parent)]
        }
        _ => return None,
    };
    Some(row)
}

fn job(o: &Value, name: Value, age: Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &o["spec"];
    let st = &o["status"];
    let succeeded = st["succeeded"].as_i64().unwrap_or(0);
    let completions = match spec["completions"].as_i64() {
        Some(c) => format!("{succeeded}/{c}"),
        None => match spec["parallelism"].as_i64().unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        parse_time(&st["startTime"]),
        parse_time(&st["completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration((now - start).num_seconds()),
        (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
    };
    // Upstream's hasJobCondition looks at the first condition of a type.
    let has = |ty: &str| {
        st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == ty)
            .is_some_and(|c| c["status"] == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !o["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(&spec["template"]["spec"]["containers"]);
    vec![
        name,
        json!(status),
        json!(completions),
        json!(duration),
        age,
        json!(names),
        json!(images),
        json!(format_label_selector(&spec["selector"])),
    ]
}

fn node(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let st = &o["status"];
    let mut status: Vec<String> = Vec::new();
    // Upstream keeps the last condition of each type; only Ready is shown.
    if let Some(c) = st["conditions"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|c| c["type"] == "Ready"))
    {
        status.push(if c["status"] == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if o["spec"]["unschedulable"] == json!(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in o["metadata"]["labels"].as_object().into_iter().flatten() {
        let role = match k.strip_prefix("node-role.kubernetes.io/") {
            Some(r) => r,
            None if k == "kubernetes.io/role" => str_of(v),
            None => "",
        };
        if !role.is_empty() && !roles.iter().any(|r| r == role) {
            roles.push(role.to_string());
        }
    }
    roles.sort();
    let address = |ty: &str| {
        st["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == ty)
            .map_or_else(
                || "<none>".to_string(),
                |a| str_of(&a["address"]).to_string(),
            )
    };
    let info = &st["nodeInfo"];
    vec![
        name,
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(",")
        }),
        age,
        json!(str_of(&info["kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or(&info["osImage"], "<unknown>")),
        json!(or(&info["kernelVersion"], "<unknown>")),
        json!(or(&info["containerRuntimeVersion"], "<unknown>")),
    ]
}

fn event(o: &Value, name: Value, now: DateTime<Utc>) -> Vec<Value> {
    let first = if parse_time(&o["firstTimestamp"]).is_some() {
        since(&o["firstTimestamp"], now)
    } else {
        since(&o["eventTime"], now)
    };
    let mut last = if parse_time(&o["lastTimestamp"]).is_some() {
        since(&o["lastTimestamp"], now)
    } else {
        first.clone()
    };
    let mut n = o["count"].as_i64().unwrap_or(0);
    if o["series"].is_object() {
        last = since(&o["series"]["lastObservedTime"], now);
        n = o["series"]["count"].as_i64().unwrap_or(0);
    } else if n == 0 {
        // Events from the new API are singletons without a count.
        n = 1;
    }
    let io = &o["involvedObject"];
    let kind = str_of(&io["kind"]).to_lowercase();
    let target = match str_of(&io["name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = or(&o["source"]["component"], str_of(&o["reportingComponent"]));
    let instance = or(&o["source"]["host"], str_of(&o["reportingInstance"]));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(str_of(&o["type"])),
        json!(str_of(&o["reason"])),
        json!(target),
        json!(str_of(&io["fieldPath"])),
        json!(source),
        json!(str_of(&o["message"]).trim()),
        json!(first),
        json!(n),
        name,
    ]
}

/// An events.k8s.io/v1 event in core/v1 shape (upstream prints both from
/// the same internal type); a core-shaped object passes through.
fn core_event(o: &Value) -> Value {
    if o.get("involvedObject").is_some() {
        return o.clone();
    }
    let mut e = o.clone();
    for (from, to) in [
        ("regarding", "involvedObject"),
        ("note", "message"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("reportingController", "reportingComponent"),
    ] {
        if let Some(v) = o.get(from) {
            e[to] = v.clone();
        }
    }
    e
}

/// `<kind>.<group>/<name>` of the controlling owner, lower case.
fn controller_of(o: &Value) -> String {
    let owner = o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["controller"] == json!(true));
    let Some(r) = owner else {
        return "<none>".into();
    };
    let api_version = str_of(&r["apiVersion"]);
    let group = match api_version.split_once('/') {
        Some((g, _)) => g,
        None => "",
    };
    let kind = str_of(&r["kind"]);
    let gk = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    if gk.is_empty() {
        str_of(&r["name"]).to_string()
    } else {
        format!("{}/{}", gk.to_lowercase(), str_of(&r["name"]))
    }
}

fn terminating_phase(o: &Value) -> String {
    if o["metadata"]["deletionTimestamp"].is_null() {
        str_of(&o["status"]["phase"]).to_string()
    } else {
        "Terminating".into()
    }
}

/// Upstream's `GetPersistentVolume(Claim)Class`: the beta annotation wins.
fn storage_class(o: &Value) -> String {
    match o["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].as_str() {
        Some(c) => c.to_string(),
        None => str_of(&o["spec"]["storageClassName"]).to_string(),
    }
}

/// Load-balancer ingress points, de-duplicated and sorted as upstream's
/// string set prints them.
fn load_balancer(lb: &Value) -> String {
    let mut ips: Vec<&str> = lb["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| match (str_of(&i["ip"]), str_of(&i["hostname"])) {
            ("", "") => None,
            ("", h) => Some(h),
            (ip, _) => Some(ip),
        })
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips.join(",")
}

fn service_external_ip(svc: &Value) -> String {
    let spec = &svc["spec"];
    let external: Vec<&str> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match str_of(&spec["type"]) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer(&svc["status"]["loadBalancer"]);
            if !external.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').collect()
                };
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => str_of(&spec["externalName"]).to_string(),
        _ => "<unknown>".into(),
    }
}

/// Upstream's `formatEndpoints`: up to three `ip:port`, then `+ N more...`.
fn endpoints(o: &Value) -> String {
    let subsets = o["subsets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list: Vec<String> = Vec::new();
    let mut total = 0usize;
    for ss in subsets {
        let addrs = ss["addresses"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ports = ss["ports"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if ports.is_empty() {
            // Headless services may have no ports.
            total += addrs.len();
            list.extend(addrs.iter().map(|a| str_of(&a["ip"]).to_string()));
            continue;
        }
        for p in ports {
            total += addrs.len();
            list.extend(
                addrs
                    .iter()
                    .map(|a| host_port(str_of(&a["ip"]), &int(&p["port"]))),
            );
        }
    }
    let shown = list.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if total > 3 {
        format!("{shown} + {} more...", total - 3)
    } else {
        shown
    }
}

/// Upstream's `formatHPAMetrics` for autoscaling/v2 objects, and for v1
/// ones (a CPU utilization target) the way their conversion presents them.
fn hpa_metrics(o: &Value) -> String {
    let spec = &o["spec"];
    let st = &o["status"];
    let mut specs: Vec<Value> = spec["metrics"].as_array().cloned().unwrap_or_default();
    let mut statuses: Vec<Value> = st["currentMetrics"].as_array().cloned().unwrap_or_default();
    if specs.is_empty()
        && let Some(t) = spec["targetCPUUtilizationPercentage"].as_i64()
    {
        specs.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": t}}}));
        if let Some(c) = st["currentCPUUtilizationPercentage"].as_i64() {
            statuses.push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}));
        }
    }
    if specs.is_empty() {
        return "<none>".into();
    }
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cur = statuses.get(i).unwrap_or(&Value::Null);
            let q = |v: &Value| int_or_string(v).unwrap_or_default();
            let current = |src: &str, field: &str| {
                let v = &cur[src]["current"][field];
                if v.is_null() {
                    "<unknown>".to_string()
                } else {
                    q(v)
                }
            };
            match str_of(&m["type"]) {
                "External" | "Object" => {
                    let src = if m["type"] == "External" {
                        "external"
                    } else {
                        "object"
                    };
                    let target = &m[src]["target"];
                    if !target["averageValue"].is_null() {
                        format!(
                            "{}/{} (avg)",
                            current(src, "averageValue"),
                            q(&target["averageValue"])
                        )
                    } else {
                        format!("{}/{}", current(src, "value"), q(&target["value"]))
                    }
                }
                "Pods" => format!(
                    "{}/{}",
                    current("pods", "averageValue"),
                    q(&m["pods"]["target"]["averageValue"])
                ),
                "Resource" | "ContainerResource" => {
                    let src = if m["type"] == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let res = str_of(&m[src]["name"]);
                    let target = &m[src]["target"];
                    if !target["averageValue"].is_null() {
                        format!(
                            "{res}: {}/{}",
                            current(src, "averageValue"),
                            q(&target["averageValue"])
                        )
                    } else {
                        let c = cur[src]["current"]["averageUtilization"]
                            .as_i64()
                            .map_or_else(|| "<unknown>".to_string(), |c| format!("{c}%"));
                        let t = target["averageUtilization"]
                            .as_i64()
                            .map_or_else(|| "<auto>".to_string(), |t| format!("{t}%"));
                        format!("{res}: {c}/{t}")
                    }
                }
                _ => "<unknown type>".into(),
            }
        })
        .collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}
