//! Version conversion for kinds served at more than one group version:
//! HorizontalPodAutoscaler (stored as autoscaling/v2, also served as v1) and
//! Event (stored as core v1, also served as events.k8s.io/v1).

use api::catalogue::ResourceInfo;
use serde_json::{Map, Value, json};

/// The apiVersion objects of this resource are stored at.
pub fn storage_api_version(info: &ResourceInfo) -> String {
    if info.custom && !info.storage_version.is_empty() {
        return format!("{}/{}", info.group, info.storage_version);
    }
    match (info.group, info.plural) {
        ("autoscaling", "horizontalpodautoscalers") => "autoscaling/v2".into(),
        ("events.k8s.io", "events") => "v1".into(),
        _ => info.api_version(),
    }
}

/// Converts an incoming object of `info`'s version to its storage version.
pub fn to_storage(info: &ResourceInfo, obj: &mut Value) {
    match (info.group, info.version, info.plural) {
        ("autoscaling", "v1", "horizontalpodautoscalers") => hpa_v1_to_v2(obj),
        ("events.k8s.io", "v1", "events") => event_new_to_core(obj),
        _ => {}
    }
}

/// Converts a stored object to `info`'s version (and sets apiVersion/kind).
pub fn to_version(info: &ResourceInfo, obj: &mut Value) {
    let stored = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // A conversion webhook (run by the caller, `crd::conversion`) must
    // see the version the object is stored at.
    if info.conversion_webhook && !stored.is_empty() && stored != info.api_version() {
        return;
    }
    match (info.group, info.version, info.plural) {
        ("autoscaling", "v1", "horizontalpodautoscalers") if stored != "autoscaling/v1" => {
            hpa_v2_to_v1(obj)
        }
        ("events.k8s.io", "v1", "events") if stored != "events.k8s.io/v1" => event_core_to_new(obj),
        _ => {}
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(info.api_version()));
        o.insert("kind".into(), json!(info.kind));
    }
}

fn take(o: &mut Map<String, Value>, k: &str) -> Option<Value> {
    o.remove(k).filter(|v| !v.is_null())
}

fn hpa_v1_to_v2(obj: &mut Value) {
    obj["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(pct) = take(spec, "targetCPUUtilizationPercentage")
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": pct}}}]),
        );
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(pct) = take(status, "currentCPUUtilizationPercentage")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct}}}]),
        );
    }
}

fn hpa_v2_to_v1(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = take(spec, "metrics");
        spec.remove("behavior");
        let cpu = metrics.as_ref().and_then(Value::as_array).and_then(|m| {
            m.iter().find_map(|m| {
                (m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                    .then(|| m["resource"]["target"]["averageUtilization"].clone())
                    .filter(|v| !v.is_null())
            })
        });
        if let Some(cpu) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), cpu);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = take(status, "currentMetrics");
        status.remove("conditions");
        let cpu = current.as_ref().and_then(Value::as_array).and_then(|m| {
            m.iter().find_map(|m| {
                (m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                    .then(|| m["resource"]["current"]["averageUtilization"].clone())
                    .filter(|v| !v.is_null())
            })
        });
        if let Some(cpu) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
    }
}

const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn event_new_to_core(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        for (new, core) in EVENT_RENAMES {
            if let Some(v) = take(o, new) {
                o.insert((*core).into(), v);
            }
        }
        o.insert("apiVersion".into(), json!("v1"));
        o.insert("kind".into(), json!("Event"));
    }
}

fn event_core_to_new(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        for (new, core) in EVENT_RENAMES {
            if let Some(v) = take(o, core) {
                o.insert((*new).into(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::catalogue;

    #[test]
    fn hpa_roundtrip_keeps_cpu_target() {
        let v1 = catalogue::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let mut o = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": {"maxReplicas": 5, "targetCPUUtilizationPercentage": 70}});
        to_storage(v1, &mut o);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        to_version(v1, &mut o);
        assert_eq!(o["apiVersion"], "autoscaling/v1");
        assert_eq!(o["spec"]["targetCPUUtilizationPercentage"], 70);
        assert!(o["spec"].get("metrics").is_none());
    }

    #[test]
    fn events_rename_fields() {
        let ev = catalogue::find("events.k8s.io", "v1", "events").unwrap();
        let mut o = json!({"apiVersion": "v1", "kind": "Event", "message": "hi", "involvedObject": {"name": "p"}});
        to_version(ev, &mut o);
        assert_eq!(o["note"], "hi");
        assert_eq!(o["regarding"]["name"], "p");
        assert_eq!(o["apiVersion"], "events.k8s.io/v1");
    }
}
