//! Metrics and autoscaling with real containers: the kubelet's Prometheus
//! endpoints read with a Prometheus parser, `kubectl top` for a pod that
//! burns CPU, and a HorizontalPodAutoscaler that scales a Deployment (and
//! a custom resource with a scale subresource) up under load and down when
//! it stops. The server runs with short metric and sync periods
//! (`--metric-resolution`, `--horizontal-pod-autoscaler-sync-period`) and
//! the HPA with a short scale-down window, so the loop closes in seconds.

use std::time::Duration;

use super::{Host, start_node_with};
use crate::common::{Cluster, json};

/// A parsed Prometheus text body.
fn scrape(c: &Cluster, path: &str) -> prometheus_parse::Scrape {
    let body = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/e2e-node/proxy{path}"),
    ]);
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{path} is not Prometheus text: {e}\n{body}"))
}

fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count),
            _ => None,
        })
}

/// Millicores in `kubectl top`'s CPU column (`123m`).
fn millicores(cell: &str) -> u64 {
    cell.trim_end_matches('m').parse().unwrap_or(0)
}

const BURN: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: burn
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: spin
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "while true; do :; done"]
        resources:
          requests: {cpu: 50m, memory: 16Mi}
          limits: {cpu: 100m, memory: 64Mi}
"#;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: workers.e2e.r8s.io
spec:
  group: e2e.r8s.io
  scope: Namespaced
  names: {plural: workers, singular: worker, kind: Worker}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

/// A port free right now on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET a component's `/metrics` with `curl`: (HTTP code, body).
fn component_metrics(port: u16, token: Option<&str>) -> (String, String) {
    let url = format!("https://127.0.0.1:{port}/metrics");
    let mut args = vec!["-sk", "-o", "-", "-w", "\n%{http_code}", url.as_str()];
    let header;
    if let Some(t) = token {
        header = format!("Authorization: Bearer {t}");
        args.extend(["-H", header.as_str()]);
    }
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl (the test script installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().to_string(), body.to_string())
}

fn parse(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"))
}

#[test]
fn kubectl_top_and_the_hpa_follow_a_busy_deployment() {
    let mut host = Host::new();
    let (sched_port, cm_port) = (free_port(), free_port());
    start_node_with(
        &mut host,
        &[
            "--metric-resolution",
            "2s",
            "--horizontal-pod-autoscaler-sync-period",
            "2s",
            "--scheduler-secure-port",
            &sched_port.to_string(),
            "--controller-manager-secure-port",
            &cm_port.to_string(),
        ],
        |_| {},
    );
    let c = host.cluster();

    // The kubelet's endpoints, through the API server's node proxy.
    let resource = scrape(c, "/metrics/resource");
    assert!(
        value(&resource, "node_cpu_usage_seconds_total", &[]).is_some_and(|v| v > 0.0),
        "node CPU in /metrics/resource"
    );
    assert!(value(&resource, "node_memory_working_set_bytes", &[]).is_some_and(|v| v > 0.0));
    assert_eq!(value(&resource, "resource_scrape_error", &[]), Some(0.0));
    let cadvisor = scrape(c, "/metrics/cadvisor");
    assert!(value(&cadvisor, "machine_cpu_cores", &[]).is_some_and(|v| v >= 1.0));

    c.create(Some("default"), BURN);
    let pod = c.wait_for("a burn pod Running", Duration::from_secs(60), || {
        c.pods("default", "app=burn")
            .into_iter()
            .find(|p| crate::common::phase(p) == "Running")
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
    });

    // kubectl top: the busy pod's CPU is near its 100m limit, and the node
    // shows usage too.
    c.wait_for(
        "kubectl top pod to show the burn",
        Duration::from_secs(60),
        || {
            let out = c.kubectl(&["top", "pod", &pod, "--no-headers"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let cells: Vec<&str> = text.split_whitespace().collect();
            (out.status.success() && cells.len() >= 3 && millicores(cells[1]) >= 50).then_some(())
        },
    );
    let top = c.ok(&["top", "pod", "-A", "--containers", "--sort-by=cpu"]);
    assert!(top.contains(&pod) && top.contains("spin"), "{top}");
    // A node's usage needs two samples (as metrics-server's).
    let nodes = c.wait_for("kubectl top node", Duration::from_secs(30), || {
        let out = c.kubectl(&["top", "node", "--no-headers"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    let cells: Vec<&str> = nodes.split_whitespace().collect();
    assert_eq!(cells[0], "e2e-node", "{nodes}");
    assert!(millicores(cells[1]) >= 50, "node CPU: {nodes}");
    assert!(
        cells[3].ends_with("Mi") && cells[3] != "0Mi",
        "node memory: {nodes}"
    );
    let pm = json(&c.ok(&[
        "get",
        "--raw",
        &format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod}"),
    ]));
    assert_eq!(pm["kind"], "PodMetrics");
    assert_eq!(pm["metadata"]["labels"]["app"], "burn");
    assert_eq!(pm["containers"][0]["name"], "spin");
    let missing = c.fails(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/nope"]);
    assert!(
        missing.contains("NotFound") || missing.contains("not found"),
        "{missing}"
    );
    let resource = scrape(c, "/metrics/resource");
    assert!(
        value(
            &resource,
            "container_cpu_usage_seconds_total",
            &[
                ("pod", &pod),
                ("container", "spin"),
                ("namespace", "default")
            ]
        )
        .is_some_and(|v| v > 0.0),
        "the container's CPU in /metrics/resource"
    );
    let agent = scrape(c, "/metrics");
    assert!(value(&agent, "kubelet_running_pods", &[]).is_some_and(|v| v >= 1.0));
    assert!(
        value(&agent, "kubelet_pod_start_duration_seconds", &[]).is_some_and(|v| v >= 1.0),
        "a pod start was measured"
    );

    // The HPA scales up: 200% of the request against a 50% target.
    c.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    c.ok(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":4}}}}"#,
    ]);
    c.wait_for(
        "the HPA to scale burn to 3",
        Duration::from_secs(90),
        || {
            let d = c.get_json(&["deployment", "burn"]);
            (d["spec"]["replicas"] == 3).then_some(())
        },
    );
    let hpa = c.wait_for("the HPA status", Duration::from_secs(30), || {
        let h = c.get_json(&["hpa", "burn"]);
        (h["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
            .as_i64()
            .is_some_and(|u| u > 50))
        .then_some(h)
    });
    let cond = |h: &serde_json::Value, t: &str| -> serde_json::Value {
        h["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(cond(&hpa, "ScalingActive")["reason"], "ValidMetricFound");
    assert_eq!(cond(&hpa, "AbleToScale")["status"], "True");
    let table = c.ok(&["get", "hpa", "burn", "--no-headers"]);
    assert!(
        table.contains("cpu: ") && table.contains("%/50%"),
        "{table}"
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler",
    ]);
    assert!(
        events.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{events}"
    );

    // An HPA on a custom resource: its scale subresource names the same
    // busy pods, so it asks for more of it.
    c.create(None, CRD);
    c.wait_for("the Worker kind served", Duration::from_secs(10), || {
        c.kubectl(&["get", "workers"])
            .status
            .success()
            .then_some(())
    });
    c.create(
        Some("default"),
        "apiVersion: e2e.r8s.io/v1\nkind: Worker\nmetadata: {name: w}\nspec: {replicas: 1}\n",
    );
    c.ok(&[
        "patch",
        "worker",
        "w",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"selector":"app=burn"}}"#,
    ]);
    c.create(
        Some("default"),
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: w}
spec:
  scaleTargetRef: {apiVersion: e2e.r8s.io/v1, kind: Worker, name: w}
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
"#,
    );
    c.wait_for(
        "the HPA to scale the Worker",
        Duration::from_secs(60),
        || {
            let w = c.get_json(&["worker", "w"]);
            (w["spec"]["replicas"] == 2).then_some(())
        },
    );
    c.ok(&["delete", "hpa", "w"]);

    // The load stops: after the (shortened) window it scales back down.
    c.ok(&[
        "patch",
        "deployment",
        "burn",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sleep","3600"]}]"#,
    ]);
    c.wait_for(
        "the HPA to scale burn back to 1",
        Duration::from_secs(120),
        || {
            let d = c.get_json(&["deployment", "burn"]);
            (d["spec"]["replicas"] == 1).then_some(())
        },
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler",
    ]);
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
    let hpa = c.get_json(&["hpa", "burn"]);
    assert!(hpa["status"]["lastScaleTime"].is_string());
    assert_eq!(hpa["status"]["desiredReplicas"], 1);

    // The scheduler's and the controllers' /metrics: anonymous callers are
    // refused; a token bound to system:monitoring reads them.
    let (code, _) = component_metrics(sched_port, None);
    assert_eq!(code, "403", "anonymous /metrics of the scheduler");
    c.ok(&["create", "serviceaccount", "prometheus"]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        "prometheus-monitoring",
        "--clusterrole=system:monitoring",
        "--serviceaccount=default:prometheus",
    ]);
    let token = c.ok(&["create", "token", "prometheus"]);
    let token = token.trim();
    let (code, body) = component_metrics(sched_port, Some(token));
    assert_eq!(code, "200", "{body}");
    let sched = parse(&body);
    assert!(
        value(
            &sched,
            "scheduler_schedule_attempts_total",
            &[("result", "scheduled"), ("profile", "default-scheduler")]
        )
        .is_some_and(|v| v >= 3.0),
        "{body}"
    );
    assert!(
        value(
            &sched,
            "scheduler_pod_scheduling_sli_duration_seconds",
            &[("attempts", "1")]
        )
        .is_some_and(|v| v >= 1.0),
        "{body}"
    );
    assert!(value(&sched, "scheduler_pending_pods", &[("queue", "active")]).is_some());
    assert_eq!(
        value(
            &sched,
            "leader_election_master_status",
            &[("name", "kube-scheduler")]
        ),
        Some(1.0)
    );
    let (code, body) = component_metrics(cm_port, Some(token));
    assert_eq!(code, "200", "{body}");
    let cm = parse(&body);
    assert!(
        value(
            &cm,
            "workqueue_adds_total",
            &[("name", "horizontalpodautoscaler")]
        )
        .is_some_and(|v| v >= 1.0),
        "{body}"
    );
    assert!(value(&cm, "workqueue_depth", &[("name", "deployment")]).is_some());
    assert!(
        value(
            &cm,
            "workqueue_queue_duration_seconds",
            &[("name", "replicaset")]
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert_eq!(
        value(
            &cm,
            "leader_election_master_status",
            &[("name", "kube-controller-manager")]
        ),
        Some(1.0)
    );
    assert!(
        value(&cm, "scheduler_schedule_attempts_total", &[]).is_none(),
        "each component shows its own metrics"
    );
}
