//! Pod status documents a kubelet would report, as strategic merge patches
//! of the status subresource (conditions merge by `type`, so a scheduler's
//! PodScheduled condition keeps its own transition time).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

/// Pod annotation: how long a Never/OnFailure pod runs (Go duration or
/// seconds; default 1s).
pub const RUN_DURATION_ANNOTATION: &str = "r8s.io/hollow-run-duration";
/// Pod annotation: the exit code a Never/OnFailure pod ends with (default 0).
pub const EXIT_CODE_ANNOTATION: &str = "r8s.io/hollow-exit-code";

/// The containers of a pod, as status reports need them.
#[derive(Debug)]
pub(crate) struct Containers {
    /// Name, image of each app container.
    pub app: Vec<(String, String)>,
    /// Name, image and sidecar-ness (restartPolicy Always) of init containers.
    pub init: Vec<(String, String, bool)>,
}

impl Containers {
    /// Reads the containers of a pod's spec.
    pub fn of(pod: &Pod) -> Containers {
        let pair = |c: &Container| (c.name.clone(), c.image.clone().unwrap_or_default());
        let spec = pod.spec.as_ref();
        Containers {
            app: spec
                .map(|s| s.containers.iter().map(pair).collect())
                .unwrap_or_default(),
            init: spec
                .and_then(|s| s.init_containers.as_ref())
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            let (n, i) = pair(c);
                            (n, i, c.restart_policy.as_deref() == Some("Always"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// How long a run-to-completion pod runs, from its annotation.
pub(crate) fn run_duration(pod: &Pod) -> Duration {
    annotation(pod, RUN_DURATION_ANNOTATION)
        .and_then(parse_go_duration)
        .unwrap_or(Duration::from_secs(1))
}

/// The exit code a run-to-completion pod ends with, from its annotation.
pub(crate) fn exit_code(pod: &Pod) -> i32 {
    annotation(pod, EXIT_CODE_ANNOTATION)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Parses a Go duration (`1m30s`, `500ms`, `2h`) or a bare number of seconds.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * scale;
    }
    Some(Duration::from_secs_f64(total))
}

/// A stable fake image digest.
fn image_id(image: &str) -> String {
    let mut hex = String::with_capacity(64);
    for round in 0u8..4 {
        let mut h = DefaultHasher::new();
        (round, image).hash(&mut h);
        hex.push_str(&format!("{:016x}", h.finish()));
    }
    let repo = image.split('@').next().unwrap_or(image);
    format!("{repo}@sha256:{hex}")
}

fn container_id(uid: &str, name: &str) -> String {
    format!("hollow://{uid}-{name}")
}

fn condition(t: &str, status: &str, at: &str) -> Value {
    json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": at})
}

/// Where and when a pod runs.
pub(crate) struct Placement<'a> {
    /// Pod UID (container IDs derive from it).
    pub uid: &'a str,
    /// Pod IP.
    pub pod_ip: &'a str,
    /// Node InternalIP.
    pub host_ip: &'a str,
    /// When the pod started (RFC 3339).
    pub started: &'a str,
    /// Whether the pod already has a PodScheduled condition to keep.
    pub has_scheduled: bool,
}

fn addressing(p: &Placement<'_>) -> Value {
    json!({
        "hostIP": p.host_ip, "hostIPs": [{"ip": p.host_ip}],
        "podIP": p.pod_ip, "podIPs": [{"ip": p.pod_ip}],
        "startTime": p.started,
    })
}

fn completed_init(p: &Placement<'_>, c: &Containers) -> Vec<Value> {
    c.init
        .iter()
        .map(|(name, image, sidecar)| {
            let cid = container_id(p.uid, name);
            let state = if *sidecar {
                json!({"running": {"startedAt": p.started}})
            } else {
                json!({"terminated": {
                    "exitCode": 0, "reason": "Completed", "containerID": cid,
                    "startedAt": p.started, "finishedAt": p.started,
                }})
            };
            json!({
                "name": name, "image": image, "imageID": image_id(image),
                "containerID": cid, "ready": *sidecar, "started": *sidecar,
                "restartCount": 0, "state": state,
            })
        })
        .collect()
}

fn scheduled(p: &Placement<'_>, at: &str) -> Value {
    if p.has_scheduled {
        json!({"type": "PodScheduled", "status": "True"})
    } else {
        condition("PodScheduled", "True", at)
    }
}

/// The status patch that makes a pod Running and Ready.
pub(crate) fn running(p: &Placement<'_>, c: &Containers) -> Value {
    let at = p.started;
    let app: Vec<Value> = c
        .app
        .iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": image_id(image),
                "containerID": container_id(p.uid, name),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": at}},
            })
        })
        .collect();
    let mut status = addressing(p);
    status["phase"] = json!("Running");
    status["conditions"] = json!([
        condition("PodReadyToStartContainers", "True", at),
        condition("Initialized", "True", at),
        condition("Ready", "True", at),
        condition("ContainersReady", "True", at),
        scheduled(p, at),
    ]);
    status["containerStatuses"] = json!(app);
    status["initContainerStatuses"] = json!(completed_init(p, c));
    json!({"status": status})
}

/// The status patch of a pod whose containers all exited with `exit_code`
/// at `finished`: Succeeded for 0, Failed otherwise.
pub(crate) fn terminated(
    p: &Placement<'_>,
    c: &Containers,
    exit_code: i32,
    finished: &str,
) -> Value {
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let app: Vec<Value> = c
        .app
        .iter()
        .map(|(name, image)| {
            let cid = container_id(p.uid, name);
            json!({
                "name": name, "image": image, "imageID": image_id(image),
                "containerID": cid, "ready": false, "started": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code, "reason": reason, "containerID": cid,
                    "startedAt": p.started, "finishedAt": finished,
                }},
            })
        })
        .collect();
    let mut init = completed_init(p, c);
    // Sidecars stop with the pod.
    for s in &mut init {
        if s["state"].get("running").is_some() {
            s["state"] = json!({"terminated": {
                "exitCode": 0, "reason": "Completed", "containerID": s["containerID"],
                "startedAt": p.started, "finishedAt": finished,
            }});
            s["ready"] = json!(false);
            s["started"] = json!(false);
        }
    }
    let not_ready = |t: &str| {
        json!({"type": t, "status": "False", "reason": "PodCompleted",
               "lastProbeTime": null, "lastTransitionTime": finished})
    };
    let mut status = addressing(p);
    status["phase"] = json!(if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    });
    status["conditions"] = json!([
        condition("PodReadyToStartContainers", "False", finished),
        condition("Initialized", "True", p.started),
        not_ready("Ready"),
        not_ready("ContainersReady"),
        scheduled(p, p.started),
    ]);
    status["containerStatuses"] = json!(app);
    status["initContainerStatuses"] = json!(init);
    json!({"status": status})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("-1"), None);
    }

    fn placement() -> Placement<'static> {
        Placement {
            uid: "u1",
            pod_ip: "10.64.0.2",
            host_ip: "10.200.0.1",
            started: "2026-01-01T00:00:00Z",
            has_scheduled: false,
        }
    }

    #[test]
    fn running_status_is_ready_with_ips() {
        let c = Containers {
            app: vec![("app".into(), "nginx".into())],
            init: vec![("setup".into(), "busybox".into(), false)],
        };
        let s = &running(&placement(), &c)["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.64.0.2");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
    }

    #[test]
    fn non_zero_exit_fails_the_pod() {
        let c = Containers {
            app: vec![("app".into(), "busybox".into())],
            init: vec![],
        };
        let s = &terminated(&placement(), &c, 3, "2026-01-01T00:00:05Z")["status"];
        assert_eq!(s["phase"], "Failed");
        let t = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 3);
        assert_eq!(t["reason"], "Error");
    }
}
