//! The Node authorizer (with NodeRestriction's object checks): a node
//! agent (`system:node:<name>` in `system:nodes`) reads only the Secrets,
//! ConfigMaps, claims and service-account tokens of pods bound to it, and
//! changes only its own Node, Lease and pods. Everything else it may do
//! is upstream's `NodeRules`; what those do not cover is left to RBAC.

use api::catalogue;
use serde_json::Value;
use store::SharedStore;

use super::rbac::Rule;
use super::{Attributes, Decision};

fn node_name<'a>(a: &'a Attributes) -> Option<&'a str> {
    node_of(a.user)
}

fn node_of(user: &crate::auth::User) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    user.groups
        .iter()
        .any(|g| g == "system:nodes")
        .then_some(name)
}

/// The rules a node holds everywhere (none for other users).
pub fn rules_of(user: &crate::auth::User) -> &'static [Rule] {
    if node_of(user).is_some() {
        static_rules()
    } else {
        &[]
    }
}

fn static_rules() -> &'static [Rule] {
    static RULES: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let mut rules: Vec<Rule> = super::bootstrap::node_rules()
            .iter()
            .map(Rule::parse)
            .collect();
        // r8s's node-side local-path provisioner cleans up the volumes it
        // made (upstream runs it as its own service account).
        rules.push(Rule {
            verbs: ["get", "list", "watch", "update", "patch"]
                .map(String::from)
                .to_vec(),
            api_groups: vec![String::new()],
            resources: vec!["persistentvolumes".into()],
            ..Rule::default()
        });
        rules
    })
}

/// Decides for node agents; no opinion about anyone else.
pub async fn authorize(store: &SharedStore, a: &Attributes<'_>) -> Decision {
    let Some(node) = node_name(a) else {
        return Decision::NoOpinion;
    };
    if !a.resource_request || !a.api_group.is_empty() && a.api_group != "coordination.k8s.io" {
        return rules(a);
    }
    let no_relationship = || {
        Decision::Deny(format!(
            "no relationship found between node '{node}' and this object"
        ))
    };
    match (a.resource.as_str(), a.subresource.as_str()) {
        ("secrets" | "configmaps" | "persistentvolumeclaims", "")
            if !matches!(a.verb.as_str(), "get" | "list" | "watch") || a.name.is_empty() =>
        {
            no_relationship()
        }
        // r8s's kubelet reads the service account of a pod that names no
        // pull secrets (upstream's admission copies them into the pod).
        ("secrets" | "configmaps" | "persistentvolumeclaims", "") | ("serviceaccounts", "")
            if matches!(a.verb.as_str(), "get" | "list" | "watch") && !a.name.is_empty() =>
        {
            related(store, node, a, &a.resource).await
        }
        ("serviceaccounts", "token") if a.verb == "create" => {
            related(store, node, a, "serviceaccounts").await
        }
        ("nodes", _) if matches!(a.verb.as_str(), "update" | "patch" | "delete") => {
            if a.name == node {
                rules(a)
            } else {
                Decision::Deny(format!(
                    "node {node:?} is not allowed to modify node {:?}",
                    a.name
                ))
            }
        }
        ("leases", _) if a.api_group == "coordination.k8s.io" => {
            if a.namespace == "kube-node-lease" && (a.name == node || a.verb == "create") {
                rules(a)
            } else {
                Decision::Deny(format!(
                    "node {node:?} can only access its own lease in the kube-node-lease namespace"
                ))
            }
        }
        ("pods", "status") | ("pods", "")
            if matches!(a.verb.as_str(), "update" | "patch" | "delete") =>
        {
            match bound_node(store, &a.namespace, &a.name).await {
                Some(n) if n == node => rules(a),
                Some(_) => Decision::Deny(format!(
                    "node {node:?} can only update pods with spec.nodeName set to itself"
                )),
                // Gone or unreadable: the request fails on its own.
                None => rules(a),
            }
        }
        _ => rules(a),
    }
}

/// NodeRestriction's checks of what a node creates (the authorizer sees
/// no bodies): its own Node only, and only mirror pods bound to itself.
pub fn restrict_create(
    user: &crate::auth::User,
    info: &api::catalogue::ResourceInfo,
    obj: &Value,
) -> Result<(), crate::error::ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    if !info.group.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let refuse = |why: String| {
        crate::error::ApiError::forbidden(format!("{} {name:?} is forbidden: {why}", info.plural))
    };
    match info.plural {
        "nodes" if name != node => Err(refuse(format!(
            "node {node:?} is not allowed to modify node {name:?}"
        ))),
        "pods" if !obj["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string() => {
            Err(refuse(format!(
                "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
            )))
        }
        "pods" if obj["spec"]["nodeName"] != node => Err(refuse(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ))),
        _ => Ok(()),
    }
}

/// Allowed when a pod bound to `node` names the requested object (of kind
/// `resource`, see [`refs`]).
async fn related(store: &SharedStore, node: &str, a: &Attributes<'_>, resource: &str) -> Decision {
    if referenced(store, node, a, |pod| refs(pod, resource)).await {
        Decision::Allow
    } else {
        Decision::Deny(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

fn rules(a: &Attributes) -> Decision {
    if static_rules().iter().any(|r| r.allows(a)) {
        Decision::Allow
    } else {
        Decision::NoOpinion
    }
}

/// The node a pod is bound to.
async fn bound_node(store: &SharedStore, ns: &str, name: &str) -> Option<String> {
    let info = catalogue::find("", "v1", "pods")?;
    let kv = store
        .get(&crate::objects::object_key(info, Some(ns), name))
        .await
        .ok()??;
    let pod: Value = serde_json::from_slice(&kv.value).ok()?;
    pod["spec"]["nodeName"].as_str().map(str::to_string)
}

/// Whether a pod bound to `node` in the request's namespace names the
/// requested object (as `names` lists what a pod names).
async fn referenced(
    store: &SharedStore,
    node: &str,
    a: &Attributes<'_>,
    names: impl Fn(&Value) -> Vec<String>,
) -> bool {
    let Some(info) = catalogue::find("", "v1", "pods") else {
        return false;
    };
    let prefix = crate::objects::collection_prefix(info, Some(&a.namespace));
    let Ok(res) = store.range(&prefix, None, 0, 0).await else {
        return false;
    };
    res.kvs.iter().any(|kv| {
        serde_json::from_slice::<Value>(&kv.value)
            .is_ok_and(|pod| pod["spec"]["nodeName"] == node && names(&pod).contains(&a.name))
    })
}

/// The objects of kind `resource` a pod names: volumes (also projected
/// and ephemeral ones), env and envFrom references, image pull secrets,
/// its service account.
pub fn refs(pod: &Value, resource: &str) -> Vec<String> {
    if resource == "serviceaccounts" {
        let sa = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        return vec![sa.to_string()];
    }
    let mut out = Vec::new();
    let mut ephemeral = Vec::new();
    let mut push = |v: &Value| {
        if let Some(s) = v.as_str() {
            out.push(s.to_string());
        }
    };
    let spec = &pod["spec"];
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        match resource {
            "secrets" => {
                push(&vol["secret"]["secretName"]);
                for k in ["csi", "flexVolume", "iscsi", "rbd", "cephfs", "azureFile"] {
                    push(&vol[k]["nodePublishSecretRef"]["name"]);
                    push(&vol[k]["secretRef"]["name"]);
                }
            }
            "configmaps" => push(&vol["configMap"]["name"]),
            _ => {
                push(&vol["persistentVolumeClaim"]["claimName"]);
                if vol["ephemeral"].is_object()
                    && let Some(v) = vol["name"].as_str()
                {
                    ephemeral.push(format!("{pod_name}-{v}"));
                }
            }
        }
        for src in vol["projected"]["sources"].as_array().into_iter().flatten() {
            match resource {
                "secrets" => push(&src["secret"]["name"]),
                "configmaps" => push(&src["configMap"]["name"]),
                _ => {}
            }
        }
    }
    if resource == "secrets" {
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            push(&s["name"]);
        }
    }
    let (ref_key, from_key) = match resource {
        "secrets" => ("secretKeyRef", "secretRef"),
        "configmaps" => ("configMapKeyRef", "configMapRef"),
        _ => {
            out.extend(ephemeral);
            return out;
        }
    };
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                push(&e["valueFrom"][ref_key]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                push(&e[from_key]["name"]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_pod_names_its_secrets_configmaps_and_claims() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "configMap": {"name": "cm"}},
                {"name": "c", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "root"}}]}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
            ],
            "containers": [{"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "envcm"}}]}],
        }});
        let mut s = super::refs(&pod, "secrets");
        s.sort();
        assert_eq!(s, ["env", "proj", "pull", "vol"]);
        let mut c = super::refs(&pod, "configmaps");
        c.sort();
        assert_eq!(c, ["cm", "envcm", "root"]);
        assert_eq!(super::refs(&pod, "persistentvolumeclaims"), ["data", "p-e"]);
    }
}
