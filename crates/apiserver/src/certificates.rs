//! The built-in certificate signers and the node client approver, as
//! kube-controller-manager's `csrsigning` and `csrapproving` controllers:
//! an approved CertificateSigningRequest for `kubernetes.io/kube-apiserver-
//! client`, `…/kube-apiserver-client-kubelet` or `…/kubelet-serving` gets a
//! certificate from the cluster CA; a node's own client certificate
//! request is approved automatically. They run in the API server because
//! it holds the CA key (r8s keeps no separate controller-manager files).

use std::sync::Arc;

use api::catalogue;
use base64::Engine;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use store::SharedStore;
use x509_parser::prelude::FromDer;

use crate::watched::Watched;

const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// Certificates last a year unless the request asks for less.
const MAX_SECONDS: i64 = 365 * 24 * 3600;

fn condition(csr: &Value, kind: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] != "False")
}

/// The subject of a PEM CSR: (CN, [O]).
fn subject(pem: &str) -> Result<(String, Vec<String>), String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("decoding the request: {e}"))?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("parsing the request: {e}"))?;
    let subj = &req.certification_request_info.subject;
    let cn = subj
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .next()
        .unwrap_or("")
        .to_string();
    let orgs = subj
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    Ok((cn, orgs))
}

fn usages(csr: &Value) -> Vec<String> {
    csr["spec"]["usages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a node asks for its own client certificate (upstream's
/// `selfnodeclient`), or a bootstrapper for a node's (`nodeclient`).
fn auto_approvable(csr: &Value) -> bool {
    if csr["spec"]["signerName"] != KUBELET_CLIENT
        || condition(csr, "Approved")
        || condition(csr, "Denied")
    {
        return false;
    }
    let Some(pem) = api::registry::certificates::request_pem(csr) else {
        return false;
    };
    let Ok((cn, orgs)) = subject(&pem) else {
        return false;
    };
    let node_subject = cn.starts_with("system:node:") && orgs == ["system:nodes"];
    let by_self = csr["spec"]["username"] == cn.as_str();
    let by_bootstrapper = csr["spec"]["groups"]
        .as_array()
        .is_some_and(|g| g.iter().any(|g| g == "system:bootstrappers"));
    node_subject && (by_self || by_bootstrapper)
}

/// Signs an approved request, or says why it cannot be.
pub fn sign(csr: &Value, ca_cert_pem: &str, ca_key_pem: &str) -> Result<String, String> {
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
    let pem = api::registry::certificates::request_pem(csr).ok_or("the request is not PEM")?;
    let (cn, orgs) = subject(&pem)?;
    let usages = usages(csr);
    let allowed: &[&str] = match signer {
        CLIENT => &["digital signature", "key encipherment", "client auth"],
        KUBELET_CLIENT => &["digital signature", "key encipherment", "client auth"],
        KUBELET_SERVING => &["digital signature", "key encipherment", "server auth"],
        _ => return Err(format!("signer {signer:?} is not one r8s signs for")),
    };
    if let Some(bad) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!(
            "usage {bad:?} is not allowed for signer {signer:?}"
        ));
    }
    if signer != CLIENT && (!cn.starts_with("system:node:") || orgs != ["system:nodes"]) {
        return Err(format!(
            "subject must be CN=system:node:<name>, O=system:nodes for signer {signer:?}"
        ));
    }
    let mut req = CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| format!("parsing the request: {e}"))?;
    let seconds = csr["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(MAX_SECONDS)
        .clamp(600, MAX_SECONDS);
    let now = time::OffsetDateTime::now_utc();
    let p = &mut req.params;
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::seconds(seconds);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = usages
        .iter()
        .filter_map(|u| match u.as_str() {
            "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    p.extended_key_usages = usages
        .iter()
        .filter_map(|u| match u.as_str() {
            "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
            _ => None,
        })
        .collect();
    if signer != KUBELET_SERVING {
        p.subject_alt_names.clear();
    }
    let key = KeyPair::from_pem(ca_key_pem).map_err(|e| format!("the CA key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, &key).map_err(|e| format!("the CA: {e}"))?;
    let cert = req
        .signed_by(&issuer)
        .map_err(|e| format!("signing: {e}"))?;
    Ok(cert.pem())
}

/// What the controllers do to one request, if anything: the object to
/// write back.
fn reconcile(csr: &Value, ca_cert_pem: &str, ca_key_pem: &str) -> Option<Value> {
    let now = crate::rest::now_rfc3339();
    let mut out = csr.clone();
    if auto_approvable(csr) {
        let mut conds = csr["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds.push(json!({
            "type": "Approved", "status": "True", "reason": "AutoApproved",
            "message": "Auto approving self kubelet client certificate after SubjectAccessReview.",
            "lastUpdateTime": now, "lastTransitionTime": now,
        }));
        out["status"]["conditions"] = Value::Array(conds);
        return Some(out);
    }
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
    if !condition(csr, "Approved")
        || condition(csr, "Denied")
        || condition(csr, "Failed")
        || csr["status"]["certificate"].is_string()
        || ![CLIENT, KUBELET_CLIENT, KUBELET_SERVING].contains(&signer)
    {
        return None;
    }
    match sign(csr, ca_cert_pem, ca_key_pem) {
        Ok(pem) => {
            out["status"]["certificate"] =
                json!(base64::engine::general_purpose::STANDARD.encode(pem));
        }
        Err(why) => {
            let mut conds = csr["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conds.push(json!({
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                "message": why, "lastUpdateTime": now, "lastTransitionTime": now,
            }));
            out["status"]["conditions"] = Value::Array(conds);
        }
    }
    Some(out)
}

/// Approves and signs requests as they change; runs forever.
pub async fn run(store: SharedStore, ca_cert_pem: String, ca_key_pem: String) {
    let Some(info) = catalogue::find("certificates.k8s.io", "v1", "certificatesigningrequests")
    else {
        return;
    };
    let csrs: Arc<Watched> = Watched::of("certificates.k8s.io", "certificatesigningrequests");
    csrs.clone().spawn(store.clone());
    let mut updates = csrs.updates();
    loop {
        for csr in csrs.items().iter() {
            let Some(mut out) = reconcile(csr, &ca_cert_pem, &ca_key_pem) else {
                continue;
            };
            let name = csr["metadata"]["name"].as_str().unwrap_or("");
            let key = crate::objects::object_key(info, None, name);
            let Ok(Some(kv)) = store.get(&key).await else {
                continue;
            };
            // Write over exactly the version decided on.
            let Ok(stored) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if stored["metadata"]["resourceVersion"] != csr["metadata"]["resourceVersion"] {
                continue;
            }
            if let Some(m) = out["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            if let Ok(bytes) = serde_json::to_vec(&out)
                && let Err(e) = store.update(&key, bytes, kv.mod_revision).await
            {
                tracing::debug!(csr = name, error = %e, "updating a CertificateSigningRequest");
            }
        }
        if updates.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, org: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        dn.push(rcgen::DnType::OrganizationName, org);
        params.distinguished_name = dn;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn csr(signer: &str, pem: &str, username: &str) -> Value {
        json!({"metadata": {"name": "c"}, "spec": {
            "signerName": signer, "usages": ["client auth"], "username": username, "groups": [],
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
        }})
    }

    #[test]
    fn approved_client_requests_are_signed_with_their_subject() {
        let (ca_cert, ca_key) = ca();
        let mut c = csr(CLIENT, &request("alice", "dev"), "admin");
        assert!(
            reconcile(&c, &ca_cert, &ca_key).is_none(),
            "not approved yet"
        );
        c["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}]);
        let out = reconcile(&c, &ca_cert, &ca_key).unwrap();
        let b64 = out["status"]["certificate"].as_str().unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let der = block.contents;
        let (user, groups) = crate::tls::user_from_cert(&der).unwrap();
        assert_eq!((user.as_str(), groups), ("alice", vec!["dev".to_string()]));
    }

    #[test]
    fn a_nodes_own_request_is_approved_and_bad_subjects_fail() {
        let (ca_cert, ca_key) = ca();
        let own = csr(
            KUBELET_CLIENT,
            &request("system:node:n1", "system:nodes"),
            "system:node:n1",
        );
        let out = reconcile(&own, &ca_cert, &ca_key).unwrap();
        assert_eq!(out["status"]["conditions"][0]["reason"], "AutoApproved");
        let other = csr(
            KUBELET_CLIENT,
            &request("system:node:n2", "system:nodes"),
            "system:node:n1",
        );
        assert!(reconcile(&other, &ca_cert, &ca_key).is_none());
        let mut bad = csr(KUBELET_CLIENT, &request("alice", "dev"), "admin");
        bad["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}]);
        let out = reconcile(&bad, &ca_cert, &ca_key).unwrap();
        assert_eq!(out["status"]["conditions"][1]["type"], "Failed");
    }
}
