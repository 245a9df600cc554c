//! Node groups as users declare them: the cluster-scoped custom resource
//! `NodeGroup` (autoscaling.r8s.io/v1alpha1), which r8s installs. A
//! resource rather than a flag or a file, so that groups are created,
//! listed and changed with kubectl like everything else:
//!
//! ```yaml
//! apiVersion: autoscaling.r8s.io/v1alpha1
//! kind: NodeGroup
//! metadata: {name: workers}
//! spec:
//!   minSize: 1
//!   maxSize: 10
//!   provider: hollow            # or: command
//!   template:                   # what a new node looks like
//!     capacity: {cpu: "4", memory: 8Gi, pods: "110"}
//!     labels: {pool: workers}
//!     taints: [{key: dedicated, value: batch, effect: NoSchedule}]
//!   command:                    # provider: command
//!     scaleUp: [/usr/local/bin/make-machine]
//!     scaleDown: [/usr/local/bin/remove-machine]
//!   scaleDownUnneededTime: 10m  # optional, else the server's flag
//! ```

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// What a new node of a group looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// CPU capacity.
    pub cpu: String,
    /// Memory capacity.
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints (`spec.taints` entries).
    pub taints: Vec<Value>,
}

/// The command provider's programs.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Makes one machine (argv).
    pub scale_up: Vec<String>,
    /// Removes one machine (argv).
    pub scale_down: Vec<String>,
}

/// One node group.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeGroup {
    /// The group's name.
    pub name: String,
    /// Fewest nodes.
    pub min_size: usize,
    /// Most nodes.
    pub max_size: usize,
    /// `hollow` or `command`.
    pub provider: String,
    /// New nodes.
    pub template: Template,
    /// For the command provider.
    pub command: Option<Command>,
    /// How long a node must be unneeded before it goes (seconds).
    pub unneeded_secs: Option<u64>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Go-style durations (`10m`, `30s`, `1h30m`) in seconds.
pub fn duration_secs(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    num.is_empty().then_some(total)
}

impl NodeGroup {
    /// A group from its object; `Err` says what is wrong with it.
    pub fn from_object(o: &Value) -> Result<NodeGroup, String> {
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        let spec = &o["spec"];
        let min_size = spec["minSize"].as_u64().unwrap_or(0) as usize;
        let max_size = spec["maxSize"].as_u64().ok_or("spec.maxSize is required")? as usize;
        if min_size > max_size {
            return Err(format!(
                "spec.minSize ({min_size}) is above spec.maxSize ({max_size})"
            ));
        }
        let provider = spec["provider"].as_str().unwrap_or("hollow").to_string();
        let t = &spec["template"];
        let cap = &t["capacity"];
        let q = |v: &Value, d: &str| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => d.to_string(),
        };
        let template = Template {
            cpu: q(&cap["cpu"], "4"),
            memory: q(&cap["memory"], "16Gi"),
            pods: q(&cap["pods"], "110").parse().unwrap_or(110),
            labels: t["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            taints: t["taints"].as_array().cloned().unwrap_or_default(),
        };
        let command = match provider.as_str() {
            "hollow" => None,
            "command" => {
                let c = &spec["command"];
                let cmd = Command {
                    scale_up: strings(&c["scaleUp"]),
                    scale_down: strings(&c["scaleDown"]),
                };
                if cmd.scale_up.is_empty() || cmd.scale_down.is_empty() {
                    return Err("provider command needs spec.command.scaleUp and scaleDown".into());
                }
                Some(cmd)
            }
            other => return Err(format!("unknown provider {other:?} (hollow or command)")),
        };
        let unneeded_secs = match spec["scaleDownUnneededTime"].as_str() {
            Some(s) => Some(duration_secs(s).ok_or_else(|| {
                format!("spec.scaleDownUnneededTime {s:?} is not a duration like 10m")
            })?),
            None => None,
        };
        Ok(NodeGroup {
            name,
            min_size,
            max_size,
            provider,
            template,
            command,
            unneeded_secs,
        })
    }
}

fn spec_schema() -> Value {
    let int_or_string = json!({"x-kubernetes-int-or-string": true});
    let taint = json!({
        "type": "object", "required": ["key", "effect"],
        "properties": {
            "key": {"type": "string"}, "value": {"type": "string"},
            "effect": {"type": "string", "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        },
    });
    let template = json!({
        "type": "object",
        "properties": {
            "capacity": {"type": "object", "additionalProperties": int_or_string},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "taints": {"type": "array", "items": taint},
        },
    });
    let strings = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "type": "object",
        "required": ["maxSize"],
        "properties": {
            "minSize": {"type": "integer", "minimum": 0},
            "maxSize": {"type": "integer", "minimum": 0},
            "provider": {"type": "string", "enum": ["hollow", "command"], "default": "hollow"},
            "scaleDownUnneededTime": {"type": "string"},
            "template": template,
            "command": {"type": "object", "properties": {"scaleUp": strings, "scaleDown": strings}},
        },
        "x-kubernetes-validations": [
            {"rule": "!has(self.minSize) || self.minSize <= self.maxSize",
             "message": "minSize must not be above maxSize"},
        ],
    })
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "currentSize": {"type": "integer"},
            "targetSize": {"type": "integer"},
            "nodes": {"type": "array", "items": {"type": "string"}},
            "lastScaleUpTime": {"type": "string", "format": "date-time"},
            "lastScaleDownTime": {"type": "string", "format": "date-time"},
        },
    })
}

/// The NodeGroup CustomResourceDefinition r8s installs.
pub fn definition() -> Value {
    let columns = json!([
        {"name": "Min", "type": "integer", "jsonPath": ".spec.minSize"},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.maxSize"},
        {"name": "Current", "type": "integer", "jsonPath": ".status.currentSize"},
        {"name": "Target", "type": "integer", "jsonPath": ".status.targetSize"},
        {"name": "Provider", "type": "string", "jsonPath": ".spec.provider"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]);
    let schema = json!({"openAPIV3Schema": {"type": "object",
        "properties": {"spec": spec_schema(), "status": status_schema()}}});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "nodegroups.autoscaling.r8s.io"},
        "spec": {
            "group": "autoscaling.r8s.io",
            "scope": "Cluster",
            "names": {"plural": "nodegroups", "singular": "nodegroup", "kind": "NodeGroup",
                      "listKind": "NodeGroupList", "shortNames": ["ng"]},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": schema,
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_with_defaults_and_bad_ones_say_why() {
        let g = NodeGroup::from_object(&json!({"metadata": {"name": "w"},
            "spec": {"minSize": 1, "maxSize": 3, "template": {"capacity": {"cpu": 2, "memory": "4Gi"},
                "labels": {"pool": "w"}}, "scaleDownUnneededTime": "1m30s"}}))
        .unwrap();
        assert_eq!(
            (g.min_size, g.max_size, g.provider.as_str()),
            (1, 3, "hollow")
        );
        assert_eq!((g.template.cpu.as_str(), g.template.pods), ("2", 110));
        assert_eq!(g.unneeded_secs, Some(90));
        let e = NodeGroup::from_object(
            &json!({"metadata": {"name": "w"}, "spec": {"minSize": 4, "maxSize": 3}}),
        )
        .unwrap_err();
        assert!(e.contains("minSize"), "{e}");
        let e = NodeGroup::from_object(
            &json!({"metadata": {"name": "w"}, "spec": {"maxSize": 3, "provider": "command"}}),
        )
        .unwrap_err();
        assert!(e.contains("scaleUp"), "{e}");
        assert_eq!(duration_secs("10m"), Some(600));
        assert_eq!(duration_secs("x"), None);
    }
}
