//! Services: upstream's `SetDefaults_Service` and the checks r8s enforces
//! of `ValidateService`. Cluster IP and node port allocation needs the
//! store and lives with the API server's admission chain.

use serde_json::{Value, json};

use crate::registry::Strategy;
use crate::registry::common::{
    FieldError, child, for_each_in, invalid, is_empty, not_supported, required, set_default,
};

/// The Service strategy.
pub struct Service;

/// The one [`Service`] strategy.
pub static SERVICE: Service = Service;

impl Strategy for Service {
    fn name(&self) -> &'static str {
        "services"
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
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

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP");
        if !matches!(
            ty,
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        ) {
            errs.push(not_supported(
                "spec.type",
                &spec["type"],
                &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
            ));
        }
        let headless = spec["clusterIP"].as_str() == Some("None");
        let ports = spec["ports"].as_array();
        if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
            errs.push(required("spec.ports"));
        }
        if ty == "ExternalName" && is_empty(&spec["externalName"]) {
            errs.push(required("spec.externalName"));
        }
        let many = ports.is_some_and(|p| p.len() > 1);
        for (i, p) in ports.into_iter().flatten().enumerate() {
            let port = p["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(invalid(
                    format!("spec.ports[{i}].port"),
                    &p["port"],
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if many && is_empty(&p["name"]) {
                errs.push(required(format!("spec.ports[{i}].name")));
            }
        }
        errs
    }
}
