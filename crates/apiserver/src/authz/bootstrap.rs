//! Upstream's bootstrap RBAC policy (`plugin/pkg/auth/authorizer/rbac/
//! bootstrappolicy`): the ClusterRoles and ClusterRoleBindings every
//! cluster starts with, created at start and reconciled while they carry
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`.

use serde_json::{Value, json};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    for (k, v) in labels {
        l.insert((*k).into(), (*v).into());
    }
    json!({
        "name": name,
        "labels": l,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn role(name: &str, rules: Vec<Value>) -> Value {
    labeled_role(name, &[], rules)
}

fn labeled_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, labels), "rules": rules,
    })
}

fn aggregated(name: &str, labels: &[(&str, &str)], aggregate_to: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{aggregate_to}"): "true"}},
        ]},
        "rules": [],
    })
}

const TO_ADMIN: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-admin", "true");
const TO_EDIT: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-edit", "true");
const TO_VIEW: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-view", "true");

/// What a node agent may do beyond its own objects (upstream's
/// `NodeRules`, plus the service proxy's rules: r8s's node agent is
/// also its kube-proxy and DNS).
pub fn node_rules() -> Vec<Value> {
    vec![
        rule(
            &["create", "delete"],
            &["authentication.k8s.io"],
            &["tokenreviews"],
        ),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[""], &["services"]),
        rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(&["update", "patch"], &[""], &["nodes"]),
        rule(
            &["create", "update", "patch"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(&["get"], &[""], &["endpoints"]),
        rule(
            &["list", "watch"],
            &["", "discovery.k8s.io"],
            &["endpoints", "endpointslices"],
        ),
        rule(
            &["list", "watch"],
            &["networking.k8s.io"],
            &["servicecidrs", "networkpolicies"],
        ),
        // The NetworkPolicy agent: namespaceSelector peers match
        // namespace labels.
        rule(&["list", "watch"], &[""], &["namespaces"]),
        rule(
            &["get", "update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(
            READ,
            &["storage.k8s.io"],
            &["csidrivers", "volumeattachments", "csinodes"],
        ),
        rule(
            &["get", "list", "watch"],
            &["node.k8s.io"],
            &["runtimeclasses"],
        ),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
    ]
}

/// The ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = vec![
        role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
            ],
        ),
        aggregated("admin", &[], "admin"),
        aggregated("edit", &[TO_ADMIN], "edit"),
        aggregated("view", &[TO_EDIT], "view"),
        labeled_role(
            "system:aggregate-to-admin",
            &[TO_ADMIN],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    READ_WRITE,
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
            ],
        ),
        labeled_role("system:aggregate-to-edit", &[TO_EDIT], edit_rules()),
        labeled_role("system:aggregate-to-view", &[TO_VIEW], view_rules()),
        // What metrics-server's manifest adds, for the built-in metrics
        // API: whoever may view may `kubectl top`.
        labeled_role(
            "system:aggregated-metrics-reader",
            &[TO_VIEW, TO_EDIT, TO_ADMIN],
            vec![rule(
                &["get", "list", "watch"],
                &["metrics.k8s.io"],
                &["pods", "nodes"],
            )],
        ),
        role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role("system:node", node_rules()),
        role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"], &[""], &["services", "endpoints"]),
                rule(&["get", "list", "watch"], &[""], &["nodes"]),
                rule(
                    &["create", "update", "patch"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                rule(
                    &["list", "watch"],
                    &["networking.k8s.io"],
                    &["servicecidrs"],
                ),
            ],
        ),
        role(
            "system:kube-dns",
            vec![
                rule(&["list", "watch"], &[""], &["endpoints", "services"]),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        role("system:kube-scheduler", scheduler_rules()),
        role(
            "system:volume-scheduler",
            vec![
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                rule(&["create"], &["", "events.k8s.io"], &["events"]),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
                rule(&["delete"], &[""], &["secrets"]),
                rule(
                    &["get"],
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                rule(&["update"], &[""], &["secrets", "serviceaccounts"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
    ];
    roles.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    roles
}

fn edit_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["jobs", "cronjobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses"],
        ),
        rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
    ]
}

fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses", "ingresses/status"],
        ),
    ]
}

fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
        rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
        rule(READ, &[""], &["nodes", "namespaces"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(READ, &[""], &["replicationcontrollers", "services"]),
        rule(READ, &["apps"], &["replicasets", "statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(
            READ,
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
        rule(
            READ,
            &["storage.k8s.io"],
            &["csinodes", "csidrivers", "csistoragecapacities"],
        ),
        rule(
            READ,
            &["resource.k8s.io"],
            &["resourceclaims", "deviceclasses", "resourceslices"],
        ),
        // r8s's scheduler reads PriorityClasses (preemption) and
        // StorageClasses (volume binding) itself.
        rule(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
        rule(READ, &["storage.k8s.io"], &["storageclasses"]),
    ]
}

fn binding(name: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": meta(name, &[]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn group(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name})
}

fn user(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name})
}

/// The ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            vec![group("system:masters")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            vec![group("system:authenticated")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            vec![group("system:authenticated")],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            vec![group("system:monitoring")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            vec![user("system:kube-proxy")],
        ),
        binding(
            "system:kube-dns",
            "system:kube-dns",
            vec![json!({"kind": "ServiceAccount", "name": "kube-dns", "namespace": "kube-system"})],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
        // Upstream binds no one to system:node: the Node authorizer
        // decides for nodes.
        binding("system:node", "system:node", vec![]),
    ]
}

/// Whether a stored bootstrap object may be brought up to date.
pub fn autoupdate(stored: &Value) -> bool {
    stored["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] != "false"
}

/// The stored role with the bootstrap one's rules and aggregation added,
/// when something is missing (upstream's reconciliation only adds).
pub fn reconcile_role(stored: &Value, want: &Value) -> Option<Value> {
    let mut out = stored.clone();
    let mut changed = false;
    if want.get("aggregationRule").is_some() {
        if stored["aggregationRule"] != want["aggregationRule"] {
            out["aggregationRule"] = want["aggregationRule"].clone();
            changed = true;
        }
        // The aggregation controller owns the rules.
        return changed.then_some(out);
    }
    let have: Vec<Value> = stored["rules"].as_array().cloned().unwrap_or_default();
    let mut rules = have.clone();
    for r in want["rules"].as_array().into_iter().flatten() {
        if !have.contains(r) {
            rules.push(r.clone());
            changed = true;
        }
    }
    out["rules"] = Value::Array(rules);
    changed.then_some(out)
}

/// The stored binding with the bootstrap one's subjects added.
pub fn reconcile_binding(stored: &Value, want: &Value) -> Option<Value> {
    let have: Vec<Value> = stored["subjects"].as_array().cloned().unwrap_or_default();
    let mut subjects = have.clone();
    for s in want["subjects"].as_array().into_iter().flatten() {
        let same = |h: &Value| {
            h["kind"] == s["kind"] && h["name"] == s["name"] && h["namespace"] == s["namespace"]
        };
        if !have.iter().any(same) {
            subjects.push(s.clone());
        }
    }
    (subjects.len() != have.len()).then(|| {
        let mut out = stored.clone();
        out["subjects"] = Value::Array(subjects);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliation_only_adds() {
        let want = role("r", vec![rule(&["get"], &[""], &["pods"])]);
        let mut stored = want.clone();
        assert!(reconcile_role(&stored, &want).is_none());
        stored["rules"] = json!([{"verbs": ["list"], "apiGroups": [""], "resources": ["x"]}]);
        let out = reconcile_role(&stored, &want).unwrap();
        assert_eq!(out["rules"].as_array().unwrap().len(), 2);

        let want = binding("b", "r", vec![group("g")]);
        let mut stored = want.clone();
        assert!(reconcile_binding(&stored, &want).is_none());
        stored["subjects"] = json!([{"kind": "User", "name": "u"}]);
        let out = reconcile_binding(&stored, &want).unwrap();
        assert_eq!(out["subjects"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn every_binding_names_a_bootstrap_role() {
        let roles = cluster_roles();
        for b in cluster_role_bindings() {
            assert!(
                roles
                    .iter()
                    .any(|r| r["metadata"]["name"] == b["roleRef"]["name"]),
                "{b}"
            );
        }
    }
}
