//! The pod row: upstream's `printPod` (READY, STATUS, RESTARTS logic with
//! init and sidecar containers, scheduling gates, termination).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::format::{human_duration, parse_time, since, str_of};

/// Upstream's `node.NodeUnreachablePodReason`.
const NODE_UNREACHABLE: &str = "NodeLost";

fn condition_true(status: &Value, ty: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == ty && c["status"] == "True")
}

fn last_termination(c: &Value) -> Option<DateTime<Utc>> {
    let t = &c["lastState"]["terminated"];
    if t.is_object() {
        parse_time(&t["finishedAt"])
    } else {
        None
    }
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn restart_count(c: &Value) -> i64 {
    c["restartCount"].as_i64().unwrap_or(0)
}

/// What the STATUS, READY and RESTARTS columns are computed from.
struct Summary {
    reason: String,
    ready: usize,
    total: usize,
    restarts: i64,
    last_restart: Option<DateTime<Utc>>,
}

fn summarize(pod: &Value) -> Summary {
    let spec = &pod["spec"];
    let st = &pod["status"];
    let phase = str_of(&st["phase"]);
    let mut reason = phase.to_string();
    if let Some(r) = st["reason"].as_str().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    // A pod held by scheduling gates says so rather than "Pending".
    for c in st["conditions"].as_array().into_iter().flatten() {
        if c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }
    let init_specs = spec["initContainers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| c["name"] == name && c["restartPolicy"] == "Always")
    };
    let mut total = spec["containers"].as_array().map(Vec::len).unwrap_or(0);
    total += init_specs
        .iter()
        .filter(|c| c["restartPolicy"] == "Always")
        .count();

    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;
    let mut initializing = false;
    let inits = st["initContainerStatuses"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, c) in inits.iter().enumerate() {
        restarts += restart_count(c);
        last_restart = later(last_restart, last_termination(c));
        let sidecar = is_sidecar(str_of(&c["name"]));
        if sidecar {
            sidecar_restarts += restart_count(c);
            last_sidecar_restart = later(last_sidecar_restart, last_termination(c));
        }
        let term = &c["state"]["terminated"];
        let waiting = str_of(&c["state"]["waiting"]["reason"]);
        if term.is_object() && term["exitCode"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        if sidecar && c["started"] == json!(true) {
            if c["ready"] == json!(true) {
                ready += 1;
            }
            continue;
        }
        reason = if term.is_object() {
            match str_of(&term["reason"]) {
                "" => match term["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", term["exitCode"].as_i64().unwrap_or(0)),
                },
                r => format!("Init:{r}"),
            }
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(st, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        let statuses = st["containerStatuses"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Upstream walks backwards so the first container's state wins.
        for c in statuses.iter().rev() {
            restarts += restart_count(c);
            last_restart = later(last_restart, last_termination(c));
            let state = &c["state"];
            let waiting = str_of(&state["waiting"]["reason"]);
            let term = &state["terminated"];
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if term.is_object() && !str_of(&term["reason"]).is_empty() {
                reason = str_of(&term["reason"]).to_string();
            } else if term.is_object() {
                reason = match term["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!("ExitCode:{}", term["exitCode"].as_i64().unwrap_or(0)),
                };
            } else if c["ready"] == json!(true) && state["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(st, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    if deleting && str_of(&st["reason"]) == NODE_UNREACHABLE {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    Summary {
        reason,
        ready,
        total,
        restarts,
        last_restart,
    }
}

fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// The nine cells of a pod row (the wide ones included, as the server
/// always prints wide).
pub fn cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let s = summarize(pod);
    let restarts = match s.last_restart {
        Some(t) if s.restarts != 0 => format!(
            "{} ({} ago)",
            s.restarts,
            human_duration((now - t).num_seconds())
        ),
        _ => s.restarts.to_string(),
    };
    let spec = &pod["spec"];
    let st = &pod["status"];
    let ip = st["podIPs"][0]["ip"]
        .as_str()
        .or_else(|| st["podIP"].as_str())
        .unwrap_or("");
    let gates = spec["readinessGates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = st["conditions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ok = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .find(|c| c["type"] == g["conditionType"])
                    .is_some_and(|c| c["status"] == "True")
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        json!(str_of(&pod["metadata"]["name"])),
        json!(format!("{}/{}", s.ready, s.total)),
        json!(s.reason),
        json!(restarts),
        json!(since(&pod["metadata"]["creationTimestamp"], now)),
        json!(none_if_empty(ip)),
        json!(none_if_empty(str_of(&spec["nodeName"]))),
        json!(none_if_empty(str_of(&st["nominatedNodeName"]))),
        json!(readiness),
    ]
}

/// Upstream marks finished pods' rows with a `Completed` condition, which
/// clients use to tell finished pods apart.
pub fn conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_of(&pod["status"]["phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}
