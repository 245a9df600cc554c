//! `certificates.k8s.io/v1` CertificateSigningRequests: the request and
//! who asked are fixed at creation; the `approval` subresource changes
//! only the Approved/Denied conditions, the `status` subresource the
//! issued certificate.

use base64::Engine;
use serde_json::{Value, json};

use super::Strategy;
use super::common::{FieldError, invalid, not_supported, required};

/// The CertificateSigningRequest strategy.
pub struct Csr;

/// The strategy instance.
pub static CERTIFICATE_SIGNING_REQUEST: Csr = Csr;

const SIGNERS_WITH_RULES: &[&str] = &[
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kubelet-serving",
    "kubernetes.io/legacy-unknown",
];

const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// The PEM text of a CSR's `spec.request` (base64 in JSON).
pub fn request_pem(obj: &Value) -> Option<String> {
    let b64 = obj["spec"]["request"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

impl Strategy for Csr {
    fn name(&self) -> &'static str {
        "certificatesigningrequests"
    }

    fn record_requester(&self, obj: &mut Value, r: &super::Requester<'_>) {
        // Who asked is the server's to say, never the requester's.
        let spec = &mut obj["spec"];
        spec["username"] = json!(r.name);
        spec["groups"] = json!(r.groups);
        match r.uid {
            "" => {
                if let Some(s) = spec.as_object_mut() {
                    s.remove("uid");
                }
            }
            uid => spec["uid"] = json!(uid),
        }
        if r.extra.is_empty() {
            if let Some(s) = spec.as_object_mut() {
                s.remove("extra");
            }
        } else {
            spec["extra"] = json!(r.extra);
        }
    }

    fn prepare_for_update(
        &self,
        _info: &crate::catalogue::ResourceInfo,
        new: &mut Value,
        old: &Value,
        _sub: Option<&str>,
    ) {
        // The request and the status are not the main resource's to change.
        new["spec"] = old["spec"].clone();
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }

    fn prepare_for_subresource_update(
        &self,
        sub: Option<&str>,
        new: &Value,
        old: &Value,
    ) -> Option<Value> {
        if sub != Some("approval") {
            return None;
        }
        // Only the conditions change; the certificate stays as issued.
        let mut out = old.clone();
        out["status"]["conditions"] = new["status"]["conditions"].clone();
        if out["status"]["conditions"].is_null()
            && let Some(s) = out["status"].as_object_mut()
        {
            s.remove("conditions");
        }
        Some(out)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        match request_pem(obj) {
            None if spec["request"].is_null() => {
                errs.push(required("spec.request"));
            }
            None => errs.push(invalid(
                "spec.request",
                &json!("<bytes>"),
                "PEM block type must be CERTIFICATE REQUEST",
            )),
            Some(pem) if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") => {
                errs.push(invalid(
                    "spec.request",
                    &json!("<bytes>"),
                    "PEM block type must be CERTIFICATE REQUEST",
                ));
            }
            Some(_) => {}
        }
        match spec["signerName"].as_str() {
            None | Some("") => errs.push(required("spec.signerName")),
            Some(s) if !s.contains('/') => errs.push(invalid(
                "spec.signerName",
                &json!(s),
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            )),
            Some(_) => {}
        }
        match spec["usages"].as_array() {
            None => errs.push(required("spec.usages")),
            Some(u) => {
                for (i, usage) in u.iter().enumerate() {
                    let s = usage.as_str().unwrap_or("");
                    if !USAGES.contains(&s) {
                        errs.push(not_supported(
                            format!("spec.usages[{i}]"),
                            &json!(s),
                            USAGES,
                        ));
                    }
                }
            }
        }
        if let Some(e) = spec["expirationSeconds"].as_i64()
            && e < 600
        {
            errs.push(invalid(
                "spec.expirationSeconds",
                &json!(e),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
        errs.extend(validate_conditions(obj));
        errs
    }

    fn validate_update(&self, new: &Value, _old: &Value, _sub: Option<&str>) -> Vec<FieldError> {
        validate_conditions(new)
    }
}

fn validate_conditions(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let conds = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] != "False")
    };
    for (i, c) in conds.iter().enumerate() {
        let t = c["type"].as_str().unwrap_or("");
        if t.is_empty() {
            errs.push(required(format!("status.conditions[{i}].type")));
        }
        if t == "Denied" && has("Approved") || t == "Approved" && has("Denied") {
            errs.push(invalid(
                format!("status.conditions[{i}].type"),
                &json!(t),
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
    }
    errs
}

/// Whether the signer is one of the built-in ones r8s issues for.
pub fn known_signer(name: &str) -> bool {
    SIGNERS_WITH_RULES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(signer: &str) -> Value {
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
        json!({"spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer, "usages": ["client auth"],
        }})
    }

    #[test]
    fn requests_are_validated() {
        assert!(
            CERTIFICATE_SIGNING_REQUEST
                .validate(&csr("kubernetes.io/kube-apiserver-client"))
                .is_empty()
        );
        let errs = CERTIFICATE_SIGNING_REQUEST.validate(&json!({"spec": {}}));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.request", "spec.signerName", "spec.usages"]);
    }

    #[test]
    fn approval_changes_only_conditions() {
        let old = csr("kubernetes.io/kube-apiserver-client");
        let mut new = old.clone();
        new["spec"]["signerName"] = json!("x/y");
        new["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}]);
        let out = CERTIFICATE_SIGNING_REQUEST
            .prepare_for_subresource_update(Some("approval"), &new, &old)
            .unwrap();
        assert_eq!(out["spec"], old["spec"]);
        assert_eq!(out["status"]["conditions"][0]["type"], "Approved");
        new["status"]["conditions"] = json!([
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]);
        assert_eq!(
            CERTIFICATE_SIGNING_REQUEST
                .validate_update(&new, &old, Some("approval"))
                .len(),
            2
        );
    }
}
