//! The `networking.k8s.io` group: Ingresses (the generation tracks spec
//! changes) and NetworkPolicies (upstream's policy types and TCP ports by
//! default).

use serde_json::{Value, json};

use super::Strategy;
use super::common::{for_each_in, set_default, spec_of};

/// The Ingress strategy.
pub struct Ingress;

/// The one [`Ingress`] strategy.
pub static INGRESS: Ingress = Ingress;

impl Strategy for Ingress {
    fn name(&self) -> &'static str {
        "ingresses"
    }

    fn tracks_generation(&self) -> bool {
        true
    }
}

/// The NetworkPolicy strategy.
pub struct NetworkPolicy;

/// The one [`NetworkPolicy`] strategy.
pub static NETWORK_POLICY: NetworkPolicy = NetworkPolicy;

impl Strategy for NetworkPolicy {
    fn name(&self) -> &'static str {
        "networkpolicies"
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = spec_of(obj) else { return };
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

    fn tracks_generation(&self) -> bool {
        true
    }
}
