//! Server-side printing: the meta.k8s.io/v1 Table kubectl asks for, with
//! upstream's columns for the common kinds (priority 1 columns are the
//! extra `-o wide` ones).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A column: name, type, format, description, priority.
type Col = (&'static str, &'static str, &'static str, &'static str, i64);

const NAME: Col = ("Name", "string", "name", "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", 0);
const AGE: Col = ("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", 0);
const CONTAINERS: Col = ("Containers", "string", "", "Names of each container in the template.", 1);
const IMAGES: Col = ("Images", "string", "", "Images referenced by each container in the template.", 1);
const SELECTOR: Col = ("Selector", "string", "", "Label selector for pods.", 1);

fn columns(group: &str, plural: &str) -> Vec<Col> {
    match (group, plural) {
        ("", "pods") => vec![
            NAME,
            ("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
            ("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
            ("Restarts", "string", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
            AGE,
            ("IP", "string", "", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
            ("Node", "string", "", "NodeName is a request to schedule this pod onto a specific node.", 1),
            ("Nominated Node", "string", "", "nominatedNodeName is set only when this pod preempts other pods on the node.", 1),
            ("Readiness Gates", "string", "", "If specified, all readiness gates will be evaluated for pod readiness.", 1),
        ],
        ("apps", "deployments") => vec![
            NAME,
            ("Ready", "string", "", "Number of the pod with ready state", 0),
            ("Up-to-date", "integer", "", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
            ("Available", "integer", "", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "replicasets") | ("", "replicationcontrollers") => vec![
            NAME,
            ("Desired", "integer", "", "Replicas is the number of desired replicas.", 0),
            ("Current", "integer", "", "Replicas is the most recently observed number of replicas.", 0),
            ("Ready", "integer", "", "The number of ready replicas for this replica set.", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "statefulsets") => vec![
            NAME,
            ("Ready", "string", "", "Number of the pod with ready state", 0),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("apps", "daemonsets") => vec![
            NAME,
            ("Desired", "integer", "", "The total number of nodes that should be running the daemon pod.", 0),
            ("Current", "integer", "", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.", 0),
            ("Ready", "integer", "", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.", 0),
            ("Up-to-date", "integer", "", "The total number of nodes that are running updated daemon pod", 0),
            ("Available", "integer", "", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)", 0),
            ("Node Selector", "string", "", "NodeSelector is a selector which must be true for the pod to fit on a node.", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("batch", "jobs") => vec![
            NAME,
            ("Status", "string", "", "Status of the job.", 0),
            ("Completions", "string", "", "The completion status of the job.", 0),
            ("Duration", "string", "", "Time required to complete the job.", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("batch", "cronjobs") => vec![
            NAME,
            ("Schedule", "string", "", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.", 0),
            ("Timezone", "string", "", "The time zone name for the given schedule.", 0),
            ("Suspend", "boolean", "", "This flag tells the controller to suspend subsequent executions.", 0),
            ("Active", "integer", "", "A list of pointers to currently running jobs.", 0),
            ("Last Schedule", "string", "", "Information when was the last time the job was successfully scheduled.", 0),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("", "services") => vec![
            NAME,
            ("Type", "string", "", "type determines how the Service is exposed.", 0),
            ("Cluster-IP", "string", "", "clusterIP is the IP address of the service and is usually assigned randomly.", 0),
            ("External-IP", "string", "", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", 0),
            ("Port(s)", "string", "", "The list of ports that are exposed by this service.", 0),
            AGE,
            ("Selector", "string", "", "Route service traffic to pods with label keys and values matching this selector.", 1),
        ],
        ("", "endpoints") => vec![NAME, ("Endpoints", "string", "", "Endpoints of the service.", 0), AGE],
        ("discovery.k8s.io", "endpointslices") => vec![
            NAME,
            ("AddressType", "string", "", "addressType specifies the type of address carried by this EndpointSlice.", 0),
            ("Ports", "string", "", "ports specifies the list of network ports exposed by each endpoint in this slice.", 0),
            ("Endpoints", "string", "", "endpoints is a list of unique endpoints in this slice.", 0),
            AGE,
        ],
        ("", "nodes") => vec![
            NAME,
            ("Status", "string", "", "The status of the node", 0),
            ("Roles", "string", "", "The roles of the node", 0),
            AGE,
            ("Version", "string", "", "Kubelet Version reported by the node.", 0),
            ("Internal-IP", "string", "", "List of addresses reachable to the node.", 1),
            ("External-IP", "string", "", "List of addresses reachable to the node.", 1),
            ("OS-Image", "string", "", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1),
            ("Kernel-Version", "string", "", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
            ("Container-Runtime", "string", "", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", 1),
        ],
        ("", "namespaces") => vec![NAME, ("Status", "string", "", "The status of the namespace", 0), AGE],
        ("", "configmaps") => vec![NAME, ("Data", "integer", "", "Data contains the configuration data.", 0), AGE],
        ("", "secrets") => vec![
            NAME,
            ("Type", "string", "", "The type of the secret", 0),
            ("Data", "integer", "", "The number of data entries in the secret", 0),
            AGE,
        ],
        ("", "serviceaccounts") => vec![NAME, ("Secrets", "integer", "", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", 0), AGE],
        ("", "events") => vec![
            ("Last Seen", "string", "", "Time when this Event was last observed.", 0),
            ("Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
            ("Reason", "string", "", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0),
            ("Object", "string", "", "The object that this event is about.", 0),
            ("Subobject", "string", "", "The subcomponent this event is about.", 1),
            ("Source", "string", "", "The component reporting this event.", 1),
            ("Message", "string", "", "A human-readable description of the status of this operation.", 0),
            ("First Seen", "string", "", "The time at which the event was first recorded.", 1),
            ("Count", "string", "", "The number of times this event has occurred.", 1),
            ("Name", "string", "name", NAME.3, 1),
        ],
        ("", "persistentvolumeclaims") => vec![
            NAME,
            ("Status", "string", "", "Phase represents the current phase of PersistentVolumeClaim.", 0),
            ("Volume", "string", "", "VolumeName is the binding reference to the PersistentVolume backing this claim.", 0),
            ("Capacity", "string", "", "Capacity represents the actual resources of the underlying volume.", 0),
            ("Access Modes", "string", "", "AccessModes contains the desired access modes the volume should have.", 0),
            ("StorageClass", "string", "", "StorageClassName is the name of the StorageClass required by the claim.", 0),
            ("VolumeAttributesClass", "string", "", "VolumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.", 0),
            AGE,
            ("VolumeMode", "string", "", "volumeMode defines what type of volume is required by the claim.", 1),
        ],
        ("", "persistentvolumes") => vec![
            NAME,
            ("Capacity", "string", "", "capacity is the description of the persistent volume's resources and capacity.", 0),
            ("Access Modes", "string", "", "accessModes contains all ways the volume can be mounted.", 0),
            ("Reclaim Policy", "string", "", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.", 0),
            ("Status", "string", "", "phase indicates if a volume is available, bound to a claim, or released by a claim.", 0),
            ("Claim", "string", "", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.", 0),
            ("StorageClass", "string", "", "storageClassName is the name of StorageClass to which this persistent volume belongs.", 0),
            ("VolumeAttributesClass", "string", "", "Name of VolumeAttributesClass to which this persistent volume belongs.", 0),
            ("Reason", "string", "", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.", 0),
            AGE,
            ("VolumeMode", "string", "", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.", 1),
        ],
        ("coordination.k8s.io", "leases") => vec![NAME, ("Holder", "string", "", "holderIdentity contains the identity of the holder of a current lease.", 0), AGE],
        ("networking.k8s.io", "ingresses") => vec![
            NAME,
            ("Class", "string", "", "ingressClassName is the name of an IngressClass cluster resource.", 0),
            ("Hosts", "string", "", "Hosts that incoming requests are matched against before the ingress rule", 0),
            ("Address", "string", "", "Address is a list containing ingress points for the load-balancer", 0),
            ("Ports", "string", "", "Ports of TLS configurations that open", 0),
            AGE,
        ],
        ("scheduling.k8s.io", "priorityclasses") => vec![
            NAME,
            ("Value", "integer", "", "value represents the integer value of this priority class.", 0),
            ("Global-Default", "boolean", "", "globalDefault specifies whether this PriorityClass should be considered as the default priority.", 0),
            AGE,
            ("PreemptionPolicy", "string", "", "preemptionPolicy is the Policy for preempting pods with lower priority.", 0),
        ],
        ("storage.k8s.io", "storageclasses") => vec![
            NAME,
            ("Provisioner", "string", "", "provisioner indicates the type of the provisioner.", 0),
            ("ReclaimPolicy", "string", "", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.", 0),
            ("VolumeBindingMode", "string", "", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.", 0),
            ("AllowVolumeExpansion", "string", "", "allowVolumeExpansion shows whether the storage class allow volume expand.", 0),
            AGE,
        ],
        ("policy", "poddisruptionbudgets") => vec![
            NAME,
            ("Min Available", "string", "", "The minimum number of pods that must be available simultaneously.", 0),
            ("Max Unavailable", "string", "", "The maximum number of pods that may be unavailable simultaneously.", 0),
            ("Allowed Disruptions", "integer", "", "Calculated number of pods that may be disrupted at this time.", 0),
            AGE,
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            NAME,
            ("Reference", "string", "", "Reference to the target resource.", 0),
            ("Targets", "string", "", "Targets of the metrics.", 0),
            ("MinPods", "string", "", "Lower limit for the number of pods.", 0),
            ("MaxPods", "integer", "", "Upper limit for the number of pods.", 0),
            ("Replicas", "integer", "", "Current number of replicas of pods managed by this autoscaler.", 0),
            AGE,
        ],
        ("", "resourcequotas") => vec![
            NAME,
            AGE,
            ("Request", "string", "", "Request represents a minimum amount of cpu/memory that a container may consume.", 0),
            ("Limit", "string", "", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.", 0),
        ],
        ("apps", "controllerrevisions") => vec![
            NAME,
            ("Controller", "string", "", "Controller of the object.", 0),
            ("Revision", "integer", "", "Revision indicates the revision of the state represented by Data.", 0),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => vec![NAME, ("Created At", "date", "", AGE.3, 0)],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => vec![
            NAME,
            ("Role", "string", "", "RoleRef is the reference to the role.", 0),
            AGE,
            ("Users", "string", "", "Users in the binding.", 1),
            ("Groups", "string", "", "Groups in the binding.", 1),
            ("ServiceAccounts", "string", "", "ServiceAccounts in the binding.", 1),
        ],
        _ => vec![NAME, AGE],
    }
}

/// Upstream's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", s % 60) };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        return if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let d = h / 24;
        return if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    let y = h / 24 / 365;
    if h < 24 * 365 * 8 {
        let d = (h / 24) % 365;
        return if d == 0 { format!("{y}y") } else { format!("{y}y{d}d") };
    }
    format!("{y}y")
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn age(v: &Value, now: DateTime<Utc>) -> String {
    match parse_time(v) {
        Some(t) => human_duration((now - t).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null => "<none>".into(),
        Value::String(_) => "<none>".into(),
        other => other.to_string(),
    }
}

fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

fn join_names(containers: &Value, field: &str) -> String {
    let parts: Vec<String> = containers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c[field].as_str().map(str::to_string))
        .collect();
    if parts.is_empty() { "<none>".into() } else { parts.join(",") }
}

fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel["matchLabels"].as_object() {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let vals: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        match e["operator"].as_str().unwrap_or("") {
            "In" => parts.push(format!("{key} in ({})", vals.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    if parts.is_empty() { "<none>".into() } else { parts.join(",") }
}

fn map_string(m: &Value) -> String {
    match m.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// Upstream's pod STATUS column logic (printPod).
fn pod_status(pod: &Value) -> (String, usize, usize, i64, Option<DateTime<Utc>>) {
    let st = &pod["status"];
    let mut reason = st["phase"].as_str().unwrap_or("").to_string();
    if let Some(r) = st["reason"].as_str().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    let total = pod["spec"]["containers"].as_array().map(Vec::len).unwrap_or(0);
    let mut restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut note_restart = |cs: &Value, restarts: &mut i64| {
        *restarts += cs["restartCount"].as_i64().unwrap_or(0);
        if let Some(t) = parse_time(&cs["lastState"]["terminated"]["finishedAt"])
            && last_restart.is_none_or(|l| t > l)
        {
            last_restart = Some(t);
        }
    };
    let inits = st["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    let n_init = pod["spec"]["initContainers"].as_array().map(Vec::len).unwrap_or(0);
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        note_restart(c, &mut restarts);
        let term = &c["state"]["terminated"];
        if term.is_object() && term["exitCode"].as_i64() == Some(0) {
            continue;
        }
        if term.is_object() {
            reason = match term["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match term["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", term["exitCode"].as_i64().unwrap_or(0)),
                },
            };
        } else if let Some(r) = c["state"]["waiting"]["reason"].as_str().filter(|r| !r.is_empty() && *r != "PodInitializing") {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{n_init}");
        }
        initializing = true;
        break;
    }
    let mut ready = 0usize;
    if !initializing {
        restarts = 0;
        last_restart = None;
        let mut has_running = false;
        let statuses = st["containerStatuses"].as_array().cloned().unwrap_or_default();
        for c in statuses.iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            if let Some(t) = parse_time(&c["lastState"]["terminated"]["finishedAt"])
                && last_restart.is_none_or(|l| t > l)
            {
                last_restart = Some(t);
            }
            let state = &c["state"];
            if let Some(r) = state["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if let Some(r) = state["terminated"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if state["terminated"].is_object() {
                reason = match state["terminated"]["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!("ExitCode:{}", state["terminated"]["exitCode"].as_i64().unwrap_or(0)),
                };
            } else if c["ready"] == json!(true) && state["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = if st["reason"] == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    (reason, ready, total, restarts, last_restart)
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n != 0) {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() { "<none>".into() } else { ports.join(",") }
}

fn external_ip(svc: &Value) -> String {
    let spec = &svc["spec"];
    let ingress: Vec<String> = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()).map(str::to_string))
        .collect();
    let external: Vec<String> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    match spec["type"].as_str().unwrap_or("ClusterIP") {
        "ExternalName" => s(&spec["externalName"]),
        "LoadBalancer" => {
            let all: Vec<String> = ingress.into_iter().chain(external).collect();
            if all.is_empty() { "<pending>".into() } else { all.join(",") }
        }
        _ => {
            if external.is_empty() { "<none>".into() } else { external.join(",") }
        }
    }
}

fn node_status(node: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    parts.push(match ready.map(|c| c["status"].as_str().unwrap_or("")) {
        Some("True") => "Ready".into(),
        _ => "NotReady".into(),
    });
    if node["spec"]["unschedulable"] == json!(true) {
        parts.push("SchedulingDisabled".into());
    }
    parts.join(",")
}

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = node["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                Some(r.to_string())
            } else if k == "kubernetes.io/role" {
                v.as_str().map(str::to_string)
            } else {
                None
            }
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    if roles.is_empty() { "<none>".into() } else { roles.join(",") }
}

fn node_address(node: &Value, ty: &str) -> String {
    node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == ty)
        .and_then(|a| a["address"].as_str())
        .unwrap_or("<none>")
        .to_string()
}

fn job_status(job: &Value) -> String {
    let conds = job["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let has = |t: &str| conds.iter().any(|c| c["type"] == t && c["status"] == "True");
    if has("Failed") {
        "Failed".into()
    } else if has("Complete") {
        "Complete".into()
    } else if has("Suspended") {
        "Suspended".into()
    } else if has("FailureTarget") {
        "FailureTarget".into()
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet".into()
    } else if job["metadata"]["deletionTimestamp"].is_string() {
        "Terminating".into()
    } else {
        "Running".into()
    }
}

fn cells(group: &str, plural: &str, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(o["metadata"]["name"].as_str().unwrap_or(""));
    let created = &o["metadata"]["creationTimestamp"];
    let a = json!(age(created, now));
    let spec = &o["spec"];
    let st = &o["status"];
    let tmpl_containers = &spec["template"]["spec"]["containers"];
    match (group, plural) {
        ("", "pods") => {
            let (status, ready, total, restarts, last) = pod_status(o);
            let restarts = match last {
                Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration((now - t).num_seconds())),
                _ => restarts.to_string(),
            };
            let gates = spec["readinessGates"].as_array().map(Vec::len).unwrap_or(0);
            let gates = if gates == 0 {
                "<none>".to_string()
            } else {
                let conds = st["conditions"].as_array().cloned().unwrap_or_default();
                let ok = spec["readinessGates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|g| conds.iter().any(|c| c["type"] == g["conditionType"] && c["status"] == "True"))
                    .count();
                format!("{ok}/{gates}")
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts),
                a,
                json!(s(&st["podIP"])),
                json!(s(&spec["nodeName"])),
                json!(s(&st["nominatedNodeName"])),
                json!(gates),
            ]
        }
        ("apps", "deployments") => vec![
            name,
            json!(format!("{}/{}", st["readyReplicas"].as_i64().unwrap_or(0), spec["replicas"].as_i64().unwrap_or(0))),
            int(&st["updatedReplicas"]),
            int(&st["availableReplicas"]),
            a,
            json!(join_names(tmpl_containers, "name")),
            json!(join_names(tmpl_containers, "image")),
            json!(selector_string(&spec["selector"])),
        ],
        ("apps", "replicasets") => vec![
            name,
            int(&spec["replicas"]),
            int(&st["replicas"]),
            int(&st["readyReplicas"]),
            a,
            json!(join_names(tmpl_containers, "name")),
            json!(join_names(tmpl_containers, "image")),
            json!(selector_string(&spec["selector"])),
        ],
        ("", "replicationcontrollers") => vec![
            name,
            int(&spec["replicas"]),
            int(&st["replicas"]),
            int(&st["readyReplicas"]),
            a,
            json!(join_names(tmpl_containers, "name")),
            json!(join_names(tmpl_containers, "image")),
            json!(map_string(&spec["selector"])),
        ],
        ("apps", "statefulsets") => vec![
            name,
            json!(format!("{}/{}", st["readyReplicas"].as_i64().unwrap_or(0), spec["replicas"].as_i64().unwrap_or(0))),
            a,
            json!(join_names(tmpl_containers, "name")),
            json!(join_names(tmpl_containers, "image")),
        ],
        ("apps", "daemonsets") => vec![
            name,
            int(&st["desiredNumberScheduled"]),
            int(&st["currentNumberScheduled"]),
            int(&st["numberReady"]),
            int(&st["updatedNumberScheduled"]),
            int(&st["numberAvailable"]),
            json!(map_string(&spec["template"]["spec"]["nodeSelector"])),
            a,
            json!(join_names(tmpl_containers, "name")),
            json!(join_names(tmpl_containers, "image")),
            json!(selector_string(&spec["selector"])),
        ],
        ("batch", "jobs") => {
            let completions = match spec["completions"].as_i64() {
                Some(c) => format!("{}/{c}", st["succeeded"].as_i64().unwrap_or(0)),
                None => {
                    let p = spec["parallelism"].as_i64().unwrap_or(1);
                    if p > 1 {
                        format!("{}/1 of {p}", st["succeeded"].as_i64().unwrap_or(0))
                    } else {
                        format!("{}/1", st["succeeded"].as_i64().unwrap_or(0))
                    }
                }
            };
            let duration = match (parse_time(&st["startTime"]), parse_time(&st["completionTime"])) {
                (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
                (Some(start), None) => human_duration((now - start).num_seconds()),
                _ => String::new(),
            };
            vec![
                name,
                json!(job_status(o)),
                json!(completions),
                json!(duration),
                a,
                json!(join_names(tmpl_containers, "name")),
                json!(join_names(tmpl_containers, "image")),
                json!(selector_string(&spec["selector"])),
            ]
        }
        ("batch", "cronjobs") => {
            let jc = &spec["jobTemplate"]["spec"]["template"]["spec"]["containers"];
            vec![
                name,
                json!(spec["schedule"].as_str().unwrap_or("")),
                json!(s(&spec["timeZone"])),
                json!(spec["suspend"].as_bool().unwrap_or(false)),
                json!(st["active"].as_array().map(Vec::len).unwrap_or(0)),
                json!(match parse_time(&st["lastScheduleTime"]) {
                    Some(t) => human_duration((now - t).num_seconds()),
                    None => "<none>".into(),
                }),
                a,
                json!(join_names(jc, "name")),
                json!(join_names(jc, "image")),
                json!(selector_string(&spec["jobTemplate"]["spec"]["selector"])),
            ]
        }
        ("", "services") => vec![
            name,
            json!(spec["type"].as_str().unwrap_or("ClusterIP")),
            json!(s(&spec["clusterIP"])),
            json!(external_ip(o)),
            json!(service_ports(o)),
            a,
            json!(map_string(&spec["selector"])),
        ],
        ("", "endpoints") => {
            let mut eps = Vec::new();
            for subset in o["subsets"].as_array().into_iter().flatten() {
                for addr in subset["addresses"].as_array().into_iter().flatten() {
                    let ip = addr["ip"].as_str().unwrap_or("");
                    match subset["ports"].as_array().filter(|p| !p.is_empty()) {
                        Some(ports) => eps.extend(ports.iter().map(|p| format!("{ip}:{}", p["port"]))),
                        None => eps.push(ip.to_string()),
                    }
                }
            }
            let text = if eps.is_empty() {
                "<none>".to_string()
            } else if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, json!(text), a]
        }
        ("discovery.k8s.io", "endpointslices") => {
            let ports: Vec<String> = o["ports"].as_array().into_iter().flatten().map(|p| p["port"].to_string()).collect();
            let addrs: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            vec![
                name,
                json!(o["addressType"].as_str().unwrap_or("")),
                json!(if ports.is_empty() { "<unset>".into() } else { ports.join(",") }),
                json!(if addrs.is_empty() { "<unset>".into() } else { addrs.join(",") }),
                a,
            ]
        }
        ("", "nodes") => {
            let info = &st["nodeInfo"];
            vec![
                name,
                json!(node_status(o)),
                json!(node_roles(o)),
                a,
                json!(info["kubeletVersion"].as_str().unwrap_or("")),
                json!(node_address(o, "InternalIP")),
                json!(node_address(o, "ExternalIP")),
                json!(s(&info["osImage"])),
                json!(s(&info["kernelVersion"])),
                json!(s(&info["containerRuntimeVersion"])),
            ]
        }
        ("", "namespaces") => vec![name, json!(st["phase"].as_str().unwrap_or("")), a],
        ("", "configmaps") => {
            let n = o["data"].as_object().map(|m| m.len()).unwrap_or(0) + o["binaryData"].as_object().map(|m| m.len()).unwrap_or(0);
            vec![name, json!(n), a]
        }
        ("", "secrets") => vec![
            name,
            json!(o["type"].as_str().unwrap_or("")),
            json!(o["data"].as_object().map(|m| m.len()).unwrap_or(0)),
            a,
        ],
        ("", "serviceaccounts") => vec![name, json!(o["secrets"].as_array().map(Vec::len).unwrap_or(0)), a],
        ("", "events") => {
            let last = o["lastTimestamp"].clone();
            let last = if last.is_null() { o["eventTime"].clone() } else { last };
            let first = o["firstTimestamp"].clone();
            let io = &o["involvedObject"];
            let object = format!("{}/{}", io["kind"].as_str().unwrap_or("").to_lowercase(), io["name"].as_str().unwrap_or(""));
            let count = o["count"].as_i64().unwrap_or(1).max(1);
            vec![
                json!(age(&last, now)),
                json!(o["type"].as_str().unwrap_or("")),
                json!(o["reason"].as_str().unwrap_or("")),
                json!(object),
                json!(io["fieldPath"].as_str().unwrap_or("")),
                json!(o["source"]["component"].as_str().or_else(|| o["reportingComponent"].as_str()).unwrap_or("")),
                json!(o["message"].as_str().unwrap_or("").trim()),
                json!(age(&first, now)),
                json!(count.to_string()),
                name,
            ]
        }
        ("", "persistentvolumeclaims") => vec![
            name,
            json!(st["phase"].as_str().unwrap_or("")),
            json!(spec["volumeName"].as_str().unwrap_or("")),
            json!(st["capacity"]["storage"].as_str().unwrap_or("")),
            json!(access_modes(&st["accessModes"])),
            json!(s(&spec["storageClassName"])),
            json!(s(&spec["volumeAttributesClassName"])),
            a,
            json!(spec["volumeMode"].as_str().unwrap_or("Filesystem")),
        ],
        ("", "persistentvolumes") => {
            let claim = match spec["claimRef"]["name"].as_str() {
                Some(n) => format!("{}/{n}", spec["claimRef"]["namespace"].as_str().unwrap_or("")),
                None => String::new(),
            };
            vec![
                name,
                json!(spec["capacity"]["storage"].as_str().unwrap_or("")),
                json!(access_modes(&spec["accessModes"])),
                json!(spec["persistentVolumeReclaimPolicy"].as_str().unwrap_or("")),
                json!(st["phase"].as_str().unwrap_or("")),
                json!(claim),
                json!(spec["storageClassName"].as_str().unwrap_or("")),
                json!(s(&spec["volumeAttributesClassName"])),
                json!(st["reason"].as_str().unwrap_or("")),
                a,
                json!(spec["volumeMode"].as_str().unwrap_or("Filesystem")),
            ]
        }
        ("coordination.k8s.io", "leases") => vec![name, json!(spec["holderIdentity"].as_str().unwrap_or("")), a],
        ("networking.k8s.io", "ingresses") => {
            let hosts: Vec<String> = spec["rules"].as_array().into_iter().flatten().filter_map(|r| r["host"].as_str().map(str::to_string)).collect();
            let addrs: Vec<String> = st["loadBalancer"]["ingress"].as_array().into_iter().flatten().filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()).map(str::to_string)).collect();
            let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) { "80, 443" } else { "80" };
            vec![
                name,
                json!(s(&spec["ingressClassName"])),
                json!(if hosts.is_empty() { "*".into() } else { hosts.join(",") }),
                json!(addrs.join(",")),
                json!(ports),
                a,
            ]
        }
        ("scheduling.k8s.io", "priorityclasses") => vec![
            name,
            int(&o["value"]),
            json!(o["globalDefault"].as_bool().unwrap_or(false)),
            a,
            json!(o["preemptionPolicy"].as_str().unwrap_or("PreemptLowerPriority")),
        ],
        ("storage.k8s.io", "storageclasses") => {
            let mut n = name.as_str().unwrap_or("").to_string();
            if o["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true" {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(o["provisioner"].as_str().unwrap_or("")),
                json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
                json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
                json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false).to_string()),
                a,
            ]
        }
        ("policy", "poddisruptionbudgets") => vec![
            name,
            json!(spec["minAvailable"].as_str().map(str::to_string).or_else(|| spec["minAvailable"].as_i64().map(|n| n.to_string())).unwrap_or_else(|| "N/A".into())),
            json!(spec["maxUnavailable"].as_str().map(str::to_string).or_else(|| spec["maxUnavailable"].as_i64().map(|n| n.to_string())).unwrap_or_else(|| "N/A".into())),
            int(&st["disruptionsAllowed"]),
            a,
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            name,
            json!(format!("{}/{}", spec["scaleTargetRef"]["kind"].as_str().unwrap_or(""), spec["scaleTargetRef"]["name"].as_str().unwrap_or(""))),
            json!(hpa_targets(o)),
            json!(spec["minReplicas"].as_i64().map(|n| n.to_string()).unwrap_or_else(|| "<unset>".into())),
            int(&spec["maxReplicas"]),
            int(&st["currentReplicas"]),
            a,
        ],
        ("", "resourcequotas") => {
            let hard = spec["hard"].as_object().cloned().unwrap_or_default();
            let used = &st["used"];
            let fmt = |pred: &dyn Fn(&str) -> bool| {
                let mut parts: Vec<String> = hard
                    .iter()
                    .filter(|(k, _)| pred(k))
                    .map(|(k, v)| format!("{k}: {}/{}", used[k].as_str().unwrap_or("0"), v.as_str().unwrap_or("")))
                    .collect();
                parts.sort();
                parts.join(", ")
            };
            vec![
                name,
                a,
                json!(fmt(&|k: &str| !k.starts_with("limits."))),
                json!(fmt(&|k: &str| k.starts_with("limits."))),
            ]
        }
        ("apps", "controllerrevisions") => {
            let ctrl = o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["controller"] == json!(true))
                .map(|r| format!("{}/{}", r["kind"].as_str().unwrap_or("").to_lowercase(), r["name"].as_str().unwrap_or("")))
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(ctrl), int(&o["revision"]), a]
        }
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => vec![name, json!(created.as_str().unwrap_or(""))],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let subjects = o["subjects"].as_array().cloned().unwrap_or_default();
            let of = |kind: &str| {
                subjects
                    .iter()
                    .filter(|s| s["kind"] == kind)
                    .map(|s| match (kind, s["namespace"].as_str()) {
                        ("ServiceAccount", Some(ns)) => format!("{ns}/{}", s["name"].as_str().unwrap_or("")),
                        _ => s["name"].as_str().unwrap_or("").to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!("{}/{}", o["roleRef"]["kind"].as_str().unwrap_or(""), o["roleRef"]["name"].as_str().unwrap_or(""))),
                a,
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        _ => vec![name, a],
    }
}

fn access_modes(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn hpa_targets(o: &Value) -> String {
    let metrics = o["spec"]["metrics"].as_array().cloned().unwrap_or_default();
    if metrics.is_empty() {
        if let Some(t) = o["spec"]["targetCPUUtilizationPercentage"].as_i64() {
            let cur = o["status"]["currentCPUUtilizationPercentage"].as_i64().map(|c| format!("{c}%")).unwrap_or_else(|| "<unknown>".into());
            return format!("cpu: {cur}/{t}%");
        }
        return "<none>".into();
    }
    metrics
        .iter()
        .map(|m| {
            let r = &m["resource"];
            match (r["name"].as_str(), r["target"]["averageUtilization"].as_i64()) {
                (Some(n), Some(t)) => format!("{n}: <unknown>/{t}%"),
                _ => "<unknown>".into(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column definitions for a resource.
pub fn column_definitions(group: &str, plural: &str) -> Vec<Value> {
    columns(group, plural)
        .into_iter()
        .map(|(name, ty, format, description, priority)| {
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// The cells of one row.
pub fn row_cells(group: &str, plural: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    cells(group, plural, obj, now)
}

/// Builds a meta.k8s.io/v1 Table for `rows`; `include_object` is `None`,
/// `Metadata` (PartialObjectMetadata, the default) or `Object`.
pub fn table(group: &str, plural: &str, rows: &[&Value], now: DateTime<Utc>, include_object: &str) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(group, plural, o, now)});
            match include_object {
                "None" => {}
                "Object" => row["object"] = (*o).clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(group, plural),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn human_durations() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 120, "3h2m"),
            (10 * 3600, "10h"),
            (50 * 3600, "2d2h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400, "3y"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_rows_follow_upstream_status_logic() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T11:55:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:59:00Z"}}}]}});
        let c = row_cells("", "pods", &pod, now());
        assert_eq!(c[0], "web");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "2 (60s ago)");
        assert_eq!(c[4], "5m");
        assert_eq!(c[5], "10.42.0.5");
        assert_eq!(c[6], "n1");
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        let c = row_cells("", "pods", &pending, now());
        assert_eq!(c[2], "Pending");
        assert_eq!(c[5], "<none>");
        let init = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T12:00:00Z"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(row_cells("", "pods", &init, now())[2], "Terminating");
    }

    #[test]
    fn deployment_and_service_rows() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let c = row_cells("apps", "deployments", &d, now());
        assert_eq!(c[1..4], [json!("2/3"), json!(3), json!(2)]);
        assert_eq!(c[5..], [json!("c"), json!("nginx"), json!("app=web")]);
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let c = row_cells("", "services", &svc, now());
        assert_eq!(c[1..5], [json!("NodePort"), json!("10.43.0.9"), json!("<none>"), json!("80:30001/TCP,53/UDP")]);
        let t = table("", "services", &[&svc], now(), "Metadata");
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(7));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
