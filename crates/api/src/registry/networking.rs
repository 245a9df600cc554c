//! The `networking.k8s.io` group: Ingresses (the generation tracks spec
//! changes) and NetworkPolicies (upstream's policy types and TCP ports by
//! default, and upstream's validation of ports, peers and ipBlocks).

use serde_json::{Value, json};

use super::Strategy;
use super::common::{
    FieldError, for_each_in, forbidden, invalid, not_supported, required, set_default, spec_of,
};

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

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_policy_spec(&obj["spec"])
    }

    fn tracks_generation(&self) -> bool {
        true
    }
}

/// Upstream's `ValidateNetworkPolicySpec` (ports, peers, ipBlocks, policy
/// types), with its field paths and messages.
fn validate_policy_spec(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in spec[dir].as_array().into_iter().flatten().enumerate() {
            let path = format!("spec.{dir}[{i}]");
            for (j, port) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                validate_port(port, &format!("{path}.ports[{j}]"), &mut errs);
            }
            for (j, peer) in rule[peers].as_array().into_iter().flatten().enumerate() {
                validate_peer(peer, &format!("{path}.{peers}[{j}]"), &mut errs);
            }
        }
    }
    if let Some(types) = spec["policyTypes"].as_array() {
        if types.len() > 2 {
            errs.push(invalid(
                "spec.policyTypes",
                &spec["policyTypes"],
                "may not specify more than two policyTypes",
            ));
        } else {
            for (i, t) in types.iter().enumerate() {
                if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
                    errs.push(not_supported(
                        format!("spec.policyTypes[{i}]"),
                        t,
                        &["Ingress", "Egress"],
                    ));
                }
            }
        }
    }
    errs
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

fn validate_port(port: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(p) = port.get("protocol").filter(|p| !p.is_null())
        && !matches!(p.as_str(), Some("TCP" | "UDP" | "SCTP"))
    {
        errs.push(not_supported(
            format!("{path}.protocol"),
            p,
            &["TCP", "UDP", "SCTP"],
        ));
    }
    let end = port.get("endPort").filter(|e| !e.is_null());
    match port.get("port").filter(|p| !p.is_null()) {
        Some(Value::String(name)) => {
            if let Some(e) = end {
                errs.push(invalid(
                    format!("{path}.endPort"),
                    e,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for msg in port_name_errors(name) {
                errs.push(invalid(format!("{path}.port"), &port["port"], msg));
            }
        }
        Some(p) => {
            let n = p.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                errs.push(invalid(format!("{path}.port"), p, PORT_RANGE));
            }
            if let Some(e) = end {
                let en = e.as_i64().unwrap_or(0);
                if en < n {
                    // Upstream reports the port, not the endPort, here.
                    errs.push(invalid(
                        format!("{path}.endPort"),
                        p,
                        "must be greater than or equal to `port`",
                    ));
                }
                if !(1..=65535).contains(&en) {
                    errs.push(invalid(format!("{path}.endPort"), e, PORT_RANGE));
                }
            }
        }
        None => {
            if let Some(e) = end {
                errs.push(invalid(
                    format!("{path}.endPort"),
                    e,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

/// Upstream's `IsValidPortName` (an IANA service name).
fn port_name_errors(name: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if name.len() > 15 {
        out.push("must be no more than 15 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if name.contains("--") {
        out.push("must not contain consecutive hyphens");
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)");
    }
    if name.starts_with('-') || name.ends_with('-') {
        out.push("must not begin or end with a hyphen");
    }
    out
}

fn validate_peer(peer: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let has = |k: &str| peer.get(k).is_some_and(|v| !v.is_null());
    let count = ["podSelector", "namespaceSelector", "ipBlock"]
        .iter()
        .filter(|k| has(k))
        .count();
    if has("ipBlock") {
        validate_ip_block(&peer["ipBlock"], &format!("{path}.ipBlock"), errs);
    }
    if count == 0 {
        let mut e = required(path);
        e.message = "Required value: must specify a peer".into();
        errs.push(e);
    } else if count > 1 && has("ipBlock") {
        errs.push(forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
}

const CIDR_FORMAT: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

fn validate_ip_block(b: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let cidr = b["cidr"].as_str().unwrap_or("");
    if cidr.is_empty() {
        errs.push(required(format!("{path}.cidr")));
        return;
    }
    let Ok(net) = cidr.parse::<ipnet::IpNet>() else {
        errs.push(invalid(format!("{path}.cidr"), &b["cidr"], CIDR_FORMAT));
        return;
    };
    for (i, e) in b["except"].as_array().into_iter().flatten().enumerate() {
        let field = format!("{path}.except[{i}]");
        match e.as_str().and_then(|s| s.parse::<ipnet::IpNet>().ok()) {
            None => errs.push(invalid(field, e, CIDR_FORMAT)),
            Some(x) => {
                if !net.contains(&x.network()) || net.prefix_len() >= x.prefix_len() {
                    errs.push(invalid(field, e, "must be a strict subset of `cidr`"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: Value) -> Vec<(String, String)> {
        validate_policy_spec(&spec)
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn a_sound_policy_passes() {
        let spec = json!({
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"podSelector": {}, "namespaceSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}, {"port": "http"}, {"protocol": "UDP"}],
            }],
            "egress": [{}],
        });
        assert_eq!(errors(spec), vec![]);
    }

    #[test]
    fn ports_are_checked_as_upstream_does() {
        let spec = json!({"ingress": [{"ports": [
            {"port": 80, "endPort": 70},
            {"port": "http", "endPort": 90},
            {"endPort": 90},
            {"port": 0},
            {"port": "Web--Port-Name-Too-Long"},
            {"protocol": "ICMP", "port": 1},
        ]}]});
        let e = errors(spec);
        assert!(e.contains(&(
            "spec.ingress[0].ports[0].endPort".into(),
            "Invalid value: 80: must be greater than or equal to `port`".into()
        )));
        assert!(e.contains(&(
            "spec.ingress[0].ports[1].endPort".into(),
            "Invalid value: 90: may not be specified when `port` is non-numeric".into()
        )));
        assert!(e.contains(&(
            "spec.ingress[0].ports[2].endPort".into(),
            "Invalid value: 90: may not be specified when `port` is not specified".into()
        )));
        assert!(e.contains(&(
            "spec.ingress[0].ports[3].port".into(),
            "Invalid value: 0: must be between 1 and 65535, inclusive".into()
        )));
        assert!(e.iter().any(|(f, m)| f == "spec.ingress[0].ports[4].port"
            && m.contains("must be no more than 15 characters")));
        assert!(
            e.iter()
                .any(|(f, m)| f == "spec.ingress[0].ports[5].protocol"
                    && m.starts_with("Unsupported value: \"ICMP\""))
        );
    }

    #[test]
    fn peers_and_ip_blocks_are_checked_as_upstream_does() {
        let spec = json!({"egress": [{"to": [
            {},
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16", "10.0.0.0/8", "nope"]}},
            {"ipBlock": {"cidr": "10.0.0.0/33"}},
        ]}], "policyTypes": ["Ingress", "Sideways"]});
        let e = errors(spec);
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.egress[0].to[0]",
                "spec.egress[0].to[1]",
                "spec.egress[0].to[2].ipBlock.except[0]",
                "spec.egress[0].to[2].ipBlock.except[1]",
                "spec.egress[0].to[2].ipBlock.except[2]",
                "spec.egress[0].to[3].ipBlock.cidr",
                "spec.policyTypes[1]",
            ],
            "{e:?}"
        );
        assert_eq!(e[0].1, "Required value: must specify a peer");
        assert_eq!(
            e[1].1,
            "Forbidden: may not specify both ipBlock and another peer"
        );
        assert_eq!(
            e[2].1,
            "Invalid value: \"192.168.0.0/16\": must be a strict subset of `cidr`"
        );
    }
}
