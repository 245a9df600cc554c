//! Table rows as kubectl shows them, checked against what upstream's
//! printers print for the same objects.

use api::table::{column_definitions, row_cells, table};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn names(group: &str, plural: &str, priority: i64) -> Vec<String> {
    column_definitions(group, plural)
        .into_iter()
        .filter(|c| c.priority == priority)
        .map(|c| c.name)
        .collect()
}

/// A realistic pod; `status` replaces its status.
fn pod(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d4b9c8f6-x2x9k", "namespace": "default", "creationTimestamp": "2026-01-01T11:55:00Z"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}], "restartPolicy": "Always", "schedulerName": "default-scheduler"},
        "status": status,
    })
}

fn cells(o: &Value) -> Vec<Value> {
    row_cells("", "pods", o, now())
}

#[test]
fn pod_columns() {
    assert_eq!(
        names("", "pods", 0),
        ["Name", "Ready", "Status", "Restarts", "Age"]
    );
    assert_eq!(
        names("", "pods", 1),
        ["IP", "Node", "Nominated Node", "Readiness Gates"]
    );
    let cols = column_definitions("", "pods");
    assert_eq!(cols[0].format, "name");
    assert_eq!(cols[3].type_, "string");
    assert!(
        cols[5]
            .description
            .contains("IP address allocated to the pod"),
        "{}",
        cols[5].description
    );
}

#[test]
fn pending_unscheduled_pod() {
    let p = pod(
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}),
    );
    assert_eq!(
        cells(&p),
        [
            json!("web-7d4b9c8f6-x2x9k"),
            json!("0/1"),
            json!("Pending"),
            json!("0"),
            json!("5m"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn container_creating_pod() {
    let mut p = pod(json!({"phase": "Pending", "containerStatuses": [
        {"name": "nginx", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
    p["spec"]["nodeName"] = json!("node-1");
    let c = cells(&p);
    assert_eq!(c[2], "ContainerCreating");
    assert_eq!(c[6], "node-1");
}

#[test]
fn running_pod_uses_first_pod_ip() {
    let mut p = pod(
        json!({"phase": "Running", "podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}, {"ip": "fd00::7"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "nginx", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T11:56:00Z"}}}]}),
    );
    p["spec"]["nodeName"] = json!("node-1");
    let c = cells(&p);
    assert_eq!(c[1..4], [json!("1/1"), json!("Running"), json!("0")]);
    assert_eq!(c[5], "10.42.0.7");
}

#[test]
fn crash_looping_pod_shows_last_restart() {
    let p = pod(
        json!({"phase": "Running", "containerStatuses": [{"name": "nginx", "ready": false, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-01-01T11:57:00Z"}}}]}),
    );
    let c = cells(&p);
    assert_eq!(
        c[1..4],
        [json!("0/1"), json!("CrashLoopBackOff"), json!("4 (3m ago)")]
    );
}

#[test]
fn completed_pod_and_row_condition() {
    let p = pod(
        json!({"phase": "Succeeded", "containerStatuses": [{"name": "nginx", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-01-01T11:58:00Z"}}}]}),
    );
    assert_eq!(cells(&p)[2], "Completed");
    let t = table("", "pods", &[&p], now(), "None");
    assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");
    assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
    // Deleting a finished pod does not make it "Terminating".
    let mut gone = p.clone();
    gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:00Z");
    assert_eq!(cells(&gone)[2], "Completed");
}

#[test]
fn terminated_without_reason_shows_exit_code_or_signal() {
    let p = pod(
        json!({"phase": "Failed", "containerStatuses": [{"name": "nginx", "restartCount": 0, "state": {"terminated": {"exitCode": 137}}}]}),
    );
    assert_eq!(cells(&p)[2], "ExitCode:137");
    let p = pod(
        json!({"phase": "Failed", "containerStatuses": [{"name": "nginx", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "signal": 9}}}]}),
    );
    assert_eq!(cells(&p)[2], "Signal:9");
}

#[test]
fn terminating_pod() {
    let mut p = pod(
        json!({"phase": "Running", "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
    );
    p["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:30Z");
    assert_eq!(cells(&p)[2], "Terminating");
    p["status"]["reason"] = json!("NodeLost");
    assert_eq!(cells(&p)[2], "Unknown");
}

#[test]
fn init_container_states() {
    let with_init = |init: Value| {
        let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [init],
            "containerStatuses": [{"name": "nginx", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}));
        p["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
        p
    };
    let waiting = with_init(
        json!({"name": "setup", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}),
    );
    assert_eq!(cells(&waiting)[2], "Init:0/1");
    let running = with_init(
        json!({"name": "setup", "ready": false, "restartCount": 0, "state": {"running": {}}}),
    );
    assert_eq!(cells(&running)[2], "Init:0/1");
    let pull = with_init(
        json!({"name": "setup", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}),
    );
    assert_eq!(cells(&pull)[2], "Init:ImagePullBackOff");
    let failed = with_init(json!({"name": "setup", "ready": false, "restartCount": 3,
        "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:50:00Z"}}}));
    let c = cells(&failed);
    assert_eq!(c[2], "Init:Error");
    assert_eq!(c[3], "3 (10m ago)");
    let no_reason = with_init(
        json!({"name": "setup", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}),
    );
    assert_eq!(cells(&no_reason)[2], "Init:ExitCode:2");
    let done = with_init(
        json!({"name": "setup", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}),
    );
    assert_eq!(cells(&done)[2], "PodInitializing");
}

#[test]
fn sidecar_init_containers_count_as_containers() {
    let mut p = pod(
        json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:58:00Z"}}}],
        "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
    );
    p["spec"]["initContainers"] =
        json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
    let c = cells(&p);
    assert_eq!(
        c[1..4],
        [json!("2/2"), json!("Running"), json!("1 (2m ago)")]
    );
}

#[test]
fn scheduling_gated_and_readiness_gates() {
    let mut p = pod(
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
    );
    assert_eq!(cells(&p)[2], "SchedulingGated");
    p["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/a"}, {"conditionType": "example.com/b"}]);
    p["status"]["conditions"] = json!([{"type": "example.com/a", "status": "True"}]);
    assert_eq!(cells(&p)[8], "1/2");
}

#[test]
fn completed_container_with_another_running() {
    let p = pod(
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
        {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
        {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
    );
    assert_eq!(cells(&p)[2], "NotReady");
}

#[test]
fn deployment_replicaset_statefulset_daemonset() {
    assert_eq!(
        names("apps", "deployments", 0),
        ["Name", "Ready", "Up-to-date", "Available", "Age"]
    );
    assert_eq!(
        names("apps", "deployments", 1),
        ["Containers", "Images", "Selector"]
    );
    let d = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T08:58:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "log", "image": "fluentbit"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    assert_eq!(
        row_cells("apps", "deployments", &d, now()),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("3h2m"),
            json!("nginx,log"),
            json!("nginx:1.27,fluentbit"),
            json!("app=web")
        ]
    );
    let rs = row_cells("apps", "replicasets", &d, now());
    assert_eq!(rs[1..4], [json!(3), json!(0), json!(2)]);
    assert_eq!(rs[7], "app=web");
    assert_eq!(row_cells("apps", "statefulsets", &d, now())[1], "2/3");
    let ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {}, "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": []}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}});
    let c = row_cells("apps", "daemonsets", &ds, now());
    assert_eq!(
        c[1..7],
        [
            json!(2),
            json!(2),
            json!(1),
            json!(2),
            json!(1),
            json!("kubernetes.io/os=linux")
        ]
    );
    assert_eq!(c[10], "<none>");
}

#[test]
fn jobs_and_cronjobs() {
    assert_eq!(
        names("batch", "jobs", 0),
        ["Name", "Status", "Completions", "Duration", "Age"]
    );
    let job = |conds: Value| {
        json!({"metadata": {"name": "pi"}, "spec": {"completions": 1, "parallelism": 1, "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": "2026-01-01T11:00:00Z", "completionTime": "2026-01-01T11:00:42Z", "conditions": conds}})
    };
    let c = row_cells(
        "batch",
        "jobs",
        &job(
            json!([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]),
        ),
        now(),
    );
    assert_eq!(c[1..4], [json!("Complete"), json!("1/1"), json!("42s")]);
    assert_eq!(
        row_cells(
            "batch",
            "jobs",
            &job(json!([{"type": "Failed", "status": "True"}])),
            now()
        )[1],
        "Failed"
    );
    let mut running = job(json!([]));
    running["status"]["completionTime"] = Value::Null;
    running["spec"]["completions"] = Value::Null;
    running["spec"]["parallelism"] = json!(3);
    let c = row_cells("batch", "jobs", &running, now());
    assert_eq!(c[1..4], [json!("Running"), json!("1/1 of 3"), json!("60m")]);
    let cj = json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "0 3 * * *", "suspend": false,
        "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": "2026-01-01T03:00:00Z"}});
    let c = row_cells("batch", "cronjobs", &cj, now());
    assert_eq!(
        c[1..6],
        [
            json!("0 3 * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("9h")
        ]
    );
}

#[test]
fn services() {
    let svc = |spec: Value, status: Value| json!({"metadata": {"name": "s"}, "spec": spec, "status": status});
    let np = svc(
        json!({"type": "NodePort", "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"], "selector": {"app": "web"},
        "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}),
        json!({}),
    );
    assert_eq!(
        row_cells("", "services", &np, now())[1..5],
        [
            json!("NodePort"),
            json!("10.43.0.9"),
            json!("<none>"),
            json!("80:30001/TCP,53/UDP")
        ]
    );
    assert_eq!(row_cells("", "services", &np, now())[6], "app=web");
    let lb = svc(
        json!({"type": "LoadBalancer", "clusterIPs": ["10.43.0.10"], "ports": [{"port": 443, "protocol": "TCP"}]}),
        json!({}),
    );
    assert_eq!(row_cells("", "services", &lb, now())[3], "<pending>");
    let lb = svc(
        json!({"type": "LoadBalancer", "clusterIPs": ["10.43.0.10"], "externalIPs": ["1.2.3.4"]}),
        json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}),
    );
    let c = row_cells("", "services", &lb, now());
    assert_eq!(c[3], "5.6.7.8,lb.example.com,1.2.3.4");
    assert_eq!(c[4], "<none>");
    let headless = svc(
        json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}),
        json!({}),
    );
    assert_eq!(row_cells("", "services", &headless, now())[2], "None");
    let ext = svc(
        json!({"type": "ExternalName", "externalName": "example.com"}),
        json!({}),
    );
    assert_eq!(
        row_cells("", "services", &ext, now())[2..4],
        [json!("<none>"), json!("example.com")]
    );
}

#[test]
fn nodes_and_namespaces() {
    let node = json!({"metadata": {"name": "n1", "creationTimestamp": "2025-12-30T12:00:00Z",
            "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "", "kubernetes.io/role": "worker"}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0", "containerRuntimeVersion": ""}}});
    assert_eq!(
        row_cells("", "nodes", &node, now()),
        [
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,master,worker"),
            json!("2d"),
            json!("v1.33.1"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("<unknown>")
        ]
    );
    let bare = json!({"metadata": {"name": "n2"}});
    assert_eq!(
        row_cells("", "nodes", &bare, now())[1..3],
        [json!("Unknown"), json!("<none>")]
    );
    let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2025-11-01T12:00:00Z"}, "status": {"phase": "Active"}});
    assert_eq!(
        row_cells("", "namespaces", &ns, now()),
        [json!("kube-system"), json!("Active"), json!("61d")]
    );
}

#[test]
fn events() {
    assert_eq!(
        names("", "events", 0),
        ["Last Seen", "Type", "Reason", "Object", "Message"]
    );
    assert_eq!(
        names("", "events", 1),
        ["Subobject", "Source", "First Seen", "Count", "Name"]
    );
    let ev = json!({"metadata": {"name": "web.1811"}, "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{nginx}"},
        "reason": "Pulled", "type": "Normal", "message": " Successfully pulled image \n", "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2026-01-01T11:50:00Z", "lastTimestamp": "2026-01-01T11:59:00Z", "count": 3});
    assert_eq!(
        row_cells("", "events", &ev, now()),
        [
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{nginx}"),
            json!("kubelet, n1"),
            json!("Successfully pulled image"),
            json!("10m"),
            json!(3),
            json!("web.1811")
        ]
    );
    let new_api = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"}, "eventTime": "2026-01-01T11:59:50.000000Z",
        "reportingComponent": "scheduler", "reason": "Scheduled", "type": "Normal"});
    let c = row_cells("", "events", &new_api, now());
    assert_eq!(c[0], "10s");
    assert_eq!(c[3], "node");
    assert_eq!(c[5], "scheduler");
    assert_eq!(c[8], 1);
}

#[test]
fn config_and_storage_kinds() {
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(row_cells("", "configmaps", &cm, now())[1], 3);
    let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        row_cells("", "secrets", &secret, now())[1..3],
        [json!("kubernetes.io/tls"), json!(2)]
    );
    let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv-1", "storageClassName": "local-path"},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
    assert_eq!(
        row_cells("", "persistentvolumeclaims", &pvc, now())[1..7],
        [
            json!("Bound"),
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO"),
            json!("local-path"),
            json!("<unset>")
        ]
    );
    let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        row_cells("storage.k8s.io", "storageclasses", &sc, now())[..5],
        [
            json!("local-path (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false)
        ]
    );
    let rq = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"}, "used": {"pods": "3"}}});
    assert_eq!(
        row_cells("", "resourcequotas", &rq, now())[1..3],
        [
            json!("pods: 3/10, requests.cpu: 0/1"),
            json!("limits.cpu: 0/2")
        ]
    );
}

#[test]
fn rbac_and_default_tables() {
    assert_eq!(
        names("rbac.authorization.k8s.io", "roles", 0),
        ["Name", "Created At"]
    );
    assert_eq!(names("", "limitranges", 0), ["Name", "Created At"]);
    let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]});
    assert_eq!(
        row_cells("rbac.authorization.k8s.io", "rolebindings", &rb, now())[1..],
        [
            json!("ClusterRole/view"),
            json!("<unknown>"),
            json!("alice"),
            json!("devs"),
            json!("tools/ci")
        ]
    );
    let cr = json!({"metadata": {"name": "web-5d8", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
    assert_eq!(
        row_cells("apps", "controllerrevisions", &cr, now())[1..3],
        [json!("statefulset.apps/web"), json!(2)]
    );
}

#[test]
fn endpoints_and_slices() {
    let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.42.0.1"}, {"ip": "10.42.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        row_cells("", "endpoints", &ep, now())[1],
        "10.42.0.1:80,10.42.0.2:80,10.42.0.1:443 + 1 more..."
    );
    assert_eq!(
        row_cells("", "endpoints", &json!({"metadata": {"name": "x"}}), now())[1],
        "<none>"
    );
    let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80, "name": "http"}, {"name": "x"}],
        "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]}]});
    assert_eq!(
        row_cells("discovery.k8s.io", "endpointslices", &slice, now())[1..4],
        [json!("IPv4"), json!("80,x"), json!("10.42.0.1,10.42.0.2")]
    );
    let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    assert_eq!(
        row_cells("discovery.k8s.io", "endpointslices", &empty, now())[2..4],
        [json!("<unset>"), json!("<unset>")]
    );
}

#[test]
fn autoscaling_and_policy() {
    let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35}}}]}});
    assert_eq!(
        row_cells("autoscaling", "horizontalpodautoscalers", &hpa, now())[1..6],
        [
            json!("Deployment/web"),
            json!("cpu: 35%/80%"),
            json!("1"),
            json!(5),
            json!(2)
        ]
    );
    let v1 = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
    assert_eq!(
        row_cells("autoscaling", "horizontalpodautoscalers", &v1, now())[2..4],
        [json!("cpu: <unknown>/50%"), json!("<unset>")]
    );
    let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        row_cells("policy", "poddisruptionbudgets", &pdb, now())[1..4],
        [json!("50%"), json!("N/A"), json!(1)]
    );
}

#[test]
fn events_k8s_io_events_print_like_core_events() {
    assert_eq!(names("events.k8s.io", "events", 0), names("", "events", 0));
    let ev = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Pod", "name": "web"}, "note": "Started container",
        "reason": "Started", "type": "Normal", "reportingController": "kubelet", "reportingInstance": "n1",
        "eventTime": "2026-01-01T11:59:00.000000Z"});
    let c = row_cells("events.k8s.io", "events", &ev, now());
    assert_eq!(
        c[..7],
        [
            json!("60s"),
            json!("Normal"),
            json!("Started"),
            json!("pod/web"),
            json!(""),
            json!("kubelet, n1"),
            json!("Started container")
        ]
    );
}
