//! Table cells of CertificateSigningRequests, as upstream's printer.

use serde_json::{Value, json};

use super::format::{human_duration, str_of};

/// Name, Age, SignerName, Requestor, RequestedDuration, Condition.
pub(super) fn csr(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let spec = &o["spec"];
    let duration = spec["expirationSeconds"]
        .as_i64()
        .map(human_duration)
        .unwrap_or_else(|| "<none>".into());
    let mut conditions: Vec<&str> = o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    if conditions.is_empty() {
        conditions.push("Pending");
    }
    if o["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
    {
        conditions.push("Issued");
    }
    vec![
        name,
        age,
        json!(str_of(&spec["signerName"])),
        json!(str_of(&spec["username"])),
        json!(duration),
        json!(conditions.join(",")),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn conditions_and_duration_as_kubectl_prints_them() {
        let o = json!({"spec": {"signerName": "s", "username": "u", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved"}], "certificate": "Zm9v"}});
        let row = super::csr(&o, json!("n"), json!("1s"));
        assert_eq!(row[4], "24h");
        assert_eq!(row[5], "Approved,Issued");
        let row = super::csr(&json!({}), json!("n"), json!("1s"));
        assert_eq!(
            (row[4].as_str(), row[5].as_str()),
            (Some("<none>"), Some("Pending"))
        );
    }
}
