//! Who may use the kubelet API: a caller is authenticated by its client
//! certificate (the cluster CA's; CN the user, O the groups) and
//! authorized by a SubjectAccessReview to the API server, as upstream's
//! kubelet with `--authorization-mode=Webhook`: `/stats/*` is
//! `nodes/stats`, `/metrics*` `nodes/metrics`, `/logs/*` `nodes/log`,
//! everything else (logs of containers, exec, attach, port-forward)
//! `nodes/proxy`, each for this node's name. Decisions are cached briefly
//! (allowed 5 minutes, denied 30 seconds, as upstream's defaults).

pub use controller_runtime::secure::Caller;

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

/// Asks the API server (a SubjectAccessReview, cached as upstream's
/// kubelet caches them).
pub struct Authorizer {
    delegated: controller_runtime::secure::Delegated,
    node: String,
}

impl Authorizer {
    /// An authorizer for the kubelet API of node `node`.
    pub fn new(client: kube::Client, node: &str) -> Authorizer {
        Authorizer {
            delegated: controller_runtime::secure::Delegated::new(client),
            node: node.to_string(),
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
        let user = caller.map_or("system:anonymous", |c| c.user.as_str());
        let forbidden =
            || format!("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={sub})");
        let Some(caller) = caller else {
            return Err(forbidden());
        };
        let attrs = controller_runtime::secure::Attributes::Resource {
            verb: verb.into(),
            resource: "nodes".into(),
            subresource: sub.into(),
            name: self.node.clone(),
        };
        match self.delegated.allowed(caller, &attrs).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(forbidden()),
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API: SubjectAccessReview failed");
                Err(format!(
                    "Authorization error (user={user}, verb={verb}, resource=nodes, subresource={sub})"
                ))
            }
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
}
