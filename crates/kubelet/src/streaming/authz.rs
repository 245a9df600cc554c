//! Who may use the kubelet API: a caller is authenticated by its client
//! certificate (the cluster CA's; CN the user, O the groups) and
//! authorized by a SubjectAccessReview to the API server, as upstream's
//! kubelet with `--authorization-mode=Webhook`: `/stats/*` is
//! `nodes/stats`, `/metrics*` `nodes/metrics`, `/logs/*` `nodes/log`,
//! everything else (logs of containers, exec, attach, port-forward)
//! `nodes/proxy`, each for this node's name. Decisions are cached briefly
//! (allowed 5 minutes, denied 30 seconds, as upstream's defaults).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use x509_parser::prelude::FromDer;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);

/// A caller of the kubelet API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The user name (the certificate's CN).
    pub user: String,
    /// The groups (its Os).
    pub groups: Vec<String>,
}

impl Caller {
    /// The caller a verified client certificate names.
    pub fn from_cert(der: &[u8]) -> Option<Caller> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(Caller { user, groups })
    }
}

/// The `nodes` subresource and verb a kubelet API request is, as
/// upstream's kubelet maps them.
pub fn attributes(method: &http::Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    };
    let p = path.trim_start_matches('/');
    let sub = if p.starts_with("stats") {
        "stats"
    } else if p.starts_with("metrics") {
        "metrics"
    } else if p.starts_with("logs") {
        "log"
    } else if p.starts_with("spec") {
        "spec"
    } else {
        "proxy"
    };
    (verb, sub)
}

type Key = (Caller, &'static str, &'static str);

/// Asks the API server, and remembers its answers for a while.
pub struct Authorizer {
    client: kube::Client,
    node: String,
    cache: Mutex<HashMap<Key, (bool, Instant)>>,
}

impl Authorizer {
    /// An authorizer for the kubelet API of node `node`.
    pub fn new(client: kube::Client, node: &str) -> Authorizer {
        Authorizer {
            client,
            node: node.to_string(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `caller` may `verb` `nodes/<sub>` of this node; the reason
    /// for a refusal, in upstream's words.
    pub async fn check(
        &self,
        caller: Option<&Caller>,
        verb: &'static str,
        sub: &'static str,
    ) -> Result<(), String> {
        let Some(caller) = caller else {
            return Err(format!(
                "Forbidden (user=system:anonymous, verb={verb}, resource=nodes, subresource={sub})"
            ));
        };
        let key = (caller.clone(), verb, sub);
        if let Some((allowed, at)) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            if at.elapsed() < ttl {
                return self.verdict(allowed, caller, verb, sub);
            }
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.user.clone()),
                groups: Some(caller.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(sub.into()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let allowed = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API: SubjectAccessReview failed");
                return Err(format!(
                    "Authorization error (user={}, verb={verb}, resource=nodes, subresource={sub})",
                    caller.user
                ));
            }
        };
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, (allowed, Instant::now()));
        }
        self.verdict(allowed, caller, verb, sub)
    }

    fn verdict(&self, allowed: bool, caller: &Caller, verb: &str, sub: &str) -> Result<(), String> {
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={sub})",
                caller.user
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources() {
        let get = http::Method::GET;
        assert_eq!(attributes(&get, "/stats/summary"), ("get", "stats"));
        assert_eq!(attributes(&get, "/metrics/cadvisor"), ("get", "metrics"));
        assert_eq!(attributes(&get, "/logs/syslog"), ("get", "log"));
        assert_eq!(attributes(&get, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(
            attributes(&http::Method::POST, "/exec/ns/p/c"),
            ("create", "proxy")
        );
    }

    #[test]
    fn callers_come_from_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "alice");
        dn.push(rcgen::DnType::OrganizationName, "dev");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let caller = Caller::from_cert(cert.der()).unwrap();
        assert_eq!(caller.user, "alice");
        assert_eq!(caller.groups, ["dev"]);
    }
}
