//! Defaulting as upstream's `SetDefaults_*` functions do it, applied to
//! JSON so that every kind shares one code path.

use serde_json::{Map, Value, json};

/// Sets `obj[key] = value` when the key is absent or null.
fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// Gets `obj[key]` as an object, creating it when absent.
fn child<'a>(obj: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    set_default(obj, key, json!({}));
    obj.get_mut(key).and_then(Value::as_object_mut)
}

fn for_each_in(
    obj: &mut Map<String, Value>,
    key: &str,
    mut f: impl FnMut(&mut Map<String, Value>),
) {
    if let Some(Value::Array(items)) = obj.get_mut(key) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

/// Applies the defaults of every kind (by group and plural).
pub fn apply(group: &str, plural: &str, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    match (group, plural) {
        ("", "pods") => {
            if let Some(spec) = child(o, "spec") {
                pod_spec(spec);
            }
        }
        ("", "podtemplates") => template(o),
        ("", "replicationcontrollers") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "minReadySeconds", json!(0));
                template_in(spec);
            }
        }
        ("apps", "deployments") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                if let Some(strategy) = child(spec, "strategy") {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate"))
                        && let Some(ru) = child(strategy, "rollingUpdate")
                    {
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
                template_in(spec);
            }
        }
        ("apps", "replicasets") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "replicas", json!(1));
                template_in(spec);
            }
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                if let Some(us) = child(spec, "updateStrategy") {
                    set_default(us, "type", json!("RollingUpdate"));
                    if us.get("type") == Some(&json!("RollingUpdate"))
                        && let Some(ru) = child(us, "rollingUpdate")
                    {
                        set_default(ru, "partition", json!(0));
                    }
                }
                if let Some(p) = child(spec, "persistentVolumeClaimRetentionPolicy") {
                    set_default(p, "whenDeleted", json!("Retain"));
                    set_default(p, "whenScaled", json!("Retain"));
                }
                for_each_in(spec, "volumeClaimTemplates", |pvc| {
                    if let Some(s) = child(pvc, "spec") {
                        set_default(s, "volumeMode", json!("Filesystem"));
                    }
                    set_default(pvc, "apiVersion", json!("v1"));
                    set_default(pvc, "kind", json!("PersistentVolumeClaim"));
                });
                template_in(spec);
            }
        }
        ("apps", "daemonsets") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                if let Some(us) = child(spec, "updateStrategy") {
                    set_default(us, "type", json!("RollingUpdate"));
                    if us.get("type") == Some(&json!("RollingUpdate"))
                        && let Some(ru) = child(us, "rollingUpdate")
                    {
                        set_default(ru, "maxUnavailable", json!(1));
                        set_default(ru, "maxSurge", json!(0));
                    }
                }
                template_in(spec);
            }
        }
        ("batch", "jobs") => {
            if let Some(spec) = child(o, "spec") {
                job_spec(spec);
            }
        }
        ("batch", "cronjobs") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = child(spec, "jobTemplate")
                    && let Some(js) = child(jt, "spec")
                {
                    job_spec(js);
                }
            }
        }
        ("", "services") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                let ty = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if ty != "ExternalName" {
                    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if ty == "NodePort" || ty == "LoadBalancer" {
                    set_default(spec, "externalTrafficPolicy", json!("Cluster"));
                }
                if ty == "LoadBalancer" {
                    set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
                }
                for_each_in(spec, "ports", |p| {
                    set_default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_default(p, "targetPort", port);
                    }
                });
            }
            if let Some(status) = child(o, "status") {
                set_default(status, "loadBalancer", json!({}));
            }
        }
        ("", "namespaces") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = child(o, "status") {
                set_default(status, "phase", json!("Active"));
            }
            let name = o
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if let (Some(name), Some(meta)) = (name, child(o, "metadata"))
                && let Some(labels) = child(meta, "labels")
            {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("", "secrets") => {
            set_default(o, "type", json!("Opaque"));
        }
        ("", "persistentvolumeclaims") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = child(o, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "persistentvolumes") => {
            if let Some(spec) = child(o, "spec") {
                set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = child(o, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "endpoints") => {
            for_each_in(o, "subsets", |s| {
                for_each_in(s, "ports", |p| set_default(p, "protocol", json!("TCP")));
            });
        }
        ("discovery.k8s.io", "endpointslices") => {
            for_each_in(o, "ports", |p| set_default(p, "protocol", json!("TCP")));
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            for_each_in(o, "subjects", |s| {
                let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
                if kind == "User" || kind == "Group" {
                    set_default(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            });
        }
        ("networking.k8s.io", "networkpolicies") => {
            if let Some(spec) = child(o, "spec") {
                let has_egress = spec.get("egress").is_some();
                set_default(
                    spec,
                    "policyTypes",
                    if has_egress {
                        json!(["Ingress", "Egress"])
                    } else {
                        json!(["Ingress"])
                    },
                );
                for rule in ["ingress", "egress"] {
                    for_each_in(spec, rule, |r| {
                        for_each_in(r, "ports", |p| set_default(p, "protocol", json!("TCP")));
                    });
                }
            }
        }
        ("storage.k8s.io", "storageclasses") => {
            set_default(o, "reclaimPolicy", json!("Delete"));
            set_default(o, "volumeBindingMode", json!("Immediate"));
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            set_default(o, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        _ => {}
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    let has_completions = spec.get("completions").is_some_and(|v| !v.is_null());
    let has_parallelism = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !has_completions && !has_parallelism {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template_in(spec);
}

fn template_in(spec: &mut Map<String, Value>) {
    if let Some(t) = child(spec, "template")
        && let Some(s) = child(t, "spec")
    {
        pod_spec(s);
    }
}

fn template(o: &mut Map<String, Value>) {
    if let Some(t) = child(o, "template")
        && let Some(s) = child(t, "spec")
    {
        pod_spec(s);
    }
}

/// Upstream's SetDefaults_PodSpec and the container defaults under it.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for key in ["containers", "initContainers"] {
        for_each_in(spec, key, |c| container(c, host_network));
    }
    for_each_in(spec, "ephemeralContainers", |c| container(c, host_network));
    for_each_in(spec, "volumes", volume);
}

fn container(c: &mut Map<String, Value>, host_network: bool) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "resources", json!({}));
    for_each_in(c, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        if host_network && let Some(cp) = p.get("containerPort").cloned() {
            set_default(p, "hostPort", cp);
        }
    });
    for_each_in(c, "env", |e| {
        if let Some(Value::Object(vf)) = e.get_mut("valueFrom")
            && let Some(Value::Object(fr)) = vf.get_mut("fieldRef")
        {
            set_default(fr, "apiVersion", json!("v1"));
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(Value::Object(h)) = p.get_mut("httpGet") {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
    // Limits without requests mean requests equal to the limits.
    if let Some(Value::Object(res)) = c.get_mut("resources")
        && let Some(Value::Object(limits)) = res.get("limits").cloned()
        && let Some(req) = child(res, "requests")
    {
        for (k, v) in limits {
            req.entry(k).or_insert(v);
        }
    }
}

fn volume(v: &mut Map<String, Value>) {
    // A volume that names no source is an emptyDir (upstream's
    // SetDefaults_Volume).
    if !v.iter().any(|(k, x)| k != "name" && !x.is_null()) {
        v.insert("emptyDir".into(), json!({}));
    }
    for (key, mode) in [
        ("secret", 420),
        ("configMap", 420),
        ("projected", 420),
        ("downwardAPI", 420),
    ] {
        if let Some(Value::Object(src)) = v.get_mut(key) {
            set_default(src, "defaultMode", json!(mode));
        }
    }
    if let Some(Value::Object(hp)) = v.get_mut("hostPath") {
        set_default(hp, "type", json!(""));
    }
}

/// Whether an image reference pulls `:latest` (explicitly or by omission).
pub fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a
    // registry port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_like_upstream() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}}}});
        apply("apps", "deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply("apps", "deployments", &mut d);
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn latest_tag_detection() {
        assert!(image_tag_is_latest("busybox"));
        assert!(image_tag_is_latest("busybox:latest"));
        assert!(!image_tag_is_latest("busybox:1.36"));
        assert!(image_tag_is_latest("localhost:5000/busybox"));
        assert!(!image_tag_is_latest("localhost:5000/busybox:1"));
        assert!(!image_tag_is_latest("busybox@sha256:abc"));
    }
}
