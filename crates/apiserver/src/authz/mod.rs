//! Authorization: may this user do this? Every request is decided here
//! after authentication, by upstream's chain: members of `system:masters`
//! may do anything, the Node authorizer decides for node agents, and RBAC
//! for everyone else. A denial is a 403 in upstream's words.

mod aggregation;
pub mod bootstrap;
pub mod escalation;
pub mod impersonate;
pub mod node;
pub mod rbac;

use std::sync::{Arc, RwLock};

use api::catalogue::ResourceInfo;
use serde_json::Value;
use store::{Revision, SharedStore};

use crate::auth::User;
use crate::error::ApiError;
use crate::watched::Watched;

pub use rbac::Rule;

/// How requests are authorized (`r8s server --authorization-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The Node authorizer, then RBAC (upstream's `Node,RBAC`).
    #[default]
    NodeRbac,
    /// Everything authenticated is allowed (upstream's `AlwaysAllow`):
    /// only for measuring what authorization costs.
    AlwaysAllow,
}

/// What a request asks to do, as upstream's `authorizer.Attributes`.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a User,
    /// `get`, `list`, `watch`, `create`, …; for paths the lower-case
    /// HTTP method.
    pub verb: String,
    /// A resource (true) or a path like `/healthz` (false).
    pub resource_request: bool,
    /// The namespace, empty for cluster-scoped requests.
    pub namespace: String,
    /// The API group (empty for the core group).
    pub api_group: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource, e.g. `log`.
    pub subresource: String,
    /// The object's name, if the request names one.
    pub name: String,
    /// The request path (non-resource requests).
    pub path: String,
}

impl<'a> Attributes<'a> {
    /// A resource request.
    pub fn resource(
        user: &'a User,
        verb: &str,
        namespace: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb: verb.to_string(),
            resource_request: true,
            namespace: namespace.to_string(),
            api_group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            name: name.to_string(),
            path: String::new(),
        }
    }

    /// A non-resource request.
    pub fn path(user: &'a User, verb: &str, path: &str) -> Attributes<'a> {
        Attributes {
            user,
            verb: verb.to_string(),
            resource_request: false,
            namespace: String::new(),
            api_group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
            path: path.to_string(),
        }
    }

    /// The attributes of an HTTP request, parsed from its path as
    /// upstream's RequestInfo resolver does (so that requests for
    /// aggregated and unknown resources are resource requests too).
    pub fn of_request(
        user: &'a User,
        method: &http::Method,
        path: &str,
        query: Option<&str>,
    ) -> Attributes<'a> {
        let lower = method.as_str().to_lowercase();
        let segs: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let (group, rest) = match segs.first().map(String::as_str) {
            Some("api") if segs.len() >= 3 => (String::new(), &segs[2..]),
            Some("apis") if segs.len() >= 4 => (segs[1].clone(), &segs[3..]),
            _ => return Self::path(user, &lower, path),
        };
        let mut parts: &[String] = rest;
        let pairs = || {
            query
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
        };
        let mut watch = pairs().any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
        if parts.first().is_some_and(|p| p == "watch") {
            watch = true;
            parts = &parts[1..];
        }
        let mut namespace = String::new();
        if parts.first().is_some_and(|p| p == "namespaces") && parts.len() > 1 {
            namespace = parts[1].clone();
            // `namespaces/<ns>/status` and `/finalize` are the namespace's own.
            if parts.len() > 2 && !matches!(parts[2].as_str(), "status" | "finalize") {
                parts = &parts[2..];
            }
        }
        let at = |i: usize| parts.get(i).cloned().unwrap_or_default();
        let (resource, mut name, subresource) = (at(0), at(1), at(2));
        let verb = match *method {
            http::Method::GET | http::Method::HEAD if watch => "watch",
            http::Method::GET | http::Method::HEAD if name.is_empty() => "list",
            http::Method::GET | http::Method::HEAD => "get",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if name.is_empty() => "deletecollection",
            http::Method::DELETE => "delete",
            _ => lower.as_str(),
        }
        .to_string();
        // A list or watch of one object by field selector is about that
        // object (how `kubectl get pod x -w` asks), as upstream.
        if (verb == "list" || verb == "watch") && name.is_empty() {
            for (k, v) in pairs() {
                if k != "fieldSelector" {
                    continue;
                }
                let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned();
                for term in v.split(',') {
                    if let Some(n) = term.trim().strip_prefix("metadata.name=") {
                        name = n.trim_start_matches('=').to_string();
                    }
                }
            }
        }
        Attributes {
            user,
            verb,
            resource_request: true,
            namespace,
            api_group: group,
            resource,
            subresource,
            name,
            path: String::new(),
        }
    }

    fn qualified_resource(&self) -> String {
        if self.api_group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.api_group)
        }
    }
}

/// The decision of one authorizer in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Refused, with a reason appended to the message.
    Deny(String),
    /// This authorizer has nothing to say; the next one decides.
    NoOpinion,
}

/// upstream's `forbiddenMessage`.
fn forbidden_message(a: &Attributes) -> String {
    let user = &a.user.name;
    if !a.resource_request {
        return format!("User {user:?} cannot {} path {:?}", a.verb, a.path);
    }
    let mut resource = a.resource.clone();
    if !a.subresource.is_empty() {
        resource = format!("{resource}/{}", a.subresource);
    }
    if a.namespace.is_empty() {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            a.verb, a.api_group
        )
    } else {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            a.verb, a.api_group, a.namespace
        )
    }
}

/// The 403 for a refused request, as upstream's `responsewriters.Forbidden`.
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let mut msg = forbidden_message(a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    if !a.resource_request {
        return ApiError::forbidden(format!("forbidden: {msg}"));
    }
    let qualified = a.qualified_resource();
    let message = if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", a.name)
    };
    let mut err = ApiError::forbidden(message);
    err.details = Some(Box::new(serde_json::json!({
        "name": a.name, "group": a.api_group, "kind": a.resource,
    })));
    err
}

/// The four RBAC kinds' caches and the index built from them.
pub struct Authorizer {
    mode: RwLock<Mode>,
    cluster_roles: Arc<Watched>,
    roles: Arc<Watched>,
    cluster_bindings: Arc<Watched>,
    bindings: Arc<Watched>,
    index: RwLock<Built>,
}

/// An index and the cache contents it was built from.
struct Built {
    from: [Arc<Vec<Value>>; 4],
    index: Arc<rbac::Index>,
}

const GROUP: &str = "rbac.authorization.k8s.io";

impl Default for Authorizer {
    fn default() -> Self {
        Authorizer::new()
    }
}

impl Authorizer {
    /// Empty caches; [`Authorizer::start`] fills them.
    pub fn new() -> Authorizer {
        let empty = Arc::new(Vec::new());
        Authorizer {
            mode: RwLock::new(Mode::default()),
            cluster_roles: Watched::of(GROUP, "clusterroles"),
            roles: Watched::of(GROUP, "roles"),
            cluster_bindings: Watched::of(GROUP, "clusterrolebindings"),
            bindings: Watched::of(GROUP, "rolebindings"),
            index: RwLock::new(Built {
                from: [empty.clone(), empty.clone(), empty.clone(), empty],
                index: Arc::new(rbac::Index::default()),
            }),
        }
    }

    /// Sets how requests are authorized.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.write().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    fn mode(&self) -> Mode {
        *self.mode.read().unwrap_or_else(|e| e.into_inner())
    }

    fn caches(&self) -> [&Arc<Watched>; 4] {
        [
            &self.cluster_roles,
            &self.roles,
            &self.cluster_bindings,
            &self.bindings,
        ]
    }

    /// Starts the caches and the ClusterRole aggregation, and waits for
    /// the first read.
    pub async fn start(&self, store: &SharedStore) {
        for c in self.caches() {
            c.clone().spawn(store.clone());
        }
        if let Ok(rev) = store.current_revision().await {
            for c in self.caches() {
                c.wait_synced(rev).await;
            }
        }
        tokio::spawn(aggregation::run(store.clone(), self.cluster_roles.clone()));
    }

    /// After a write of `info` at `revision`: when it was an RBAC object,
    /// waits until the caches have it, so the writer's next request is
    /// decided under it.
    pub async fn written(&self, info: &ResourceInfo, revision: Revision) {
        if info.group != GROUP {
            return;
        }
        let c = match info.plural {
            "clusterroles" => &self.cluster_roles,
            "roles" => &self.roles,
            "clusterrolebindings" => &self.cluster_bindings,
            _ => &self.bindings,
        };
        c.wait_synced(revision).await;
    }

    /// The index over the caches' current contents (rebuilt only when one
    /// of them changed since the last build).
    pub fn index(&self) -> Arc<rbac::Index> {
        let now = self.caches().map(|c| c.items());
        {
            let built = self.index.read().unwrap_or_else(|e| e.into_inner());
            if built.from.iter().zip(&now).all(|(a, b)| Arc::ptr_eq(a, b)) {
                return built.index.clone();
            }
        }
        let index = Arc::new(rbac::Index::build(&now[0], &now[1], &now[2], &now[3]));
        let mut built = self.index.write().unwrap_or_else(|e| e.into_inner());
        *built = Built {
            from: now,
            index: index.clone(),
        };
        index
    }

    /// Decides a request.
    pub async fn authorize(&self, store: &SharedStore, a: &Attributes<'_>) -> Decision {
        if self.mode() == Mode::AlwaysAllow || a.user.groups.iter().any(|g| g == "system:masters") {
            return Decision::Allow;
        }
        match node::authorize(store, a).await {
            Decision::NoOpinion => {}
            d => return d,
        }
        if self.index().allows(a) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }

    /// Every rule `user` holds in `ns` (SelfSubjectRulesReview).
    pub fn rules_for(&self, user: &User, ns: &str) -> Vec<Rule> {
        let mut rules = self.index().rules_for(user, ns);
        if self.mode() == Mode::NodeRbac {
            rules.extend(node::rules_of(user).iter().cloned());
        }
        rules
    }

    /// Authorizes, turning a refusal into upstream's 403.
    pub async fn check(&self, store: &SharedStore, a: &Attributes<'_>) -> Result<(), ApiError> {
        match self.authorize(store, a).await {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(forbidden(a, &reason)),
            Decision::NoOpinion => Err(forbidden(a, "")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_are_upstreams() {
        let alice = User::new("alice", vec![]);
        let a = Attributes::resource(&alice, "delete", "dev", "", "pods", "", "x");
        assert_eq!(
            forbidden(&a, "").message,
            "pods \"x\" is forbidden: User \"alice\" cannot delete resource \"pods\" in API group \"\" in the namespace \"dev\""
        );
        let a = Attributes::resource(&alice, "list", "", "apps", "deployments", "", "");
        assert_eq!(
            forbidden(&a, "").message,
            "deployments.apps is forbidden: User \"alice\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let a = Attributes::resource(&alice, "get", "dev", "", "pods", "log", "p");
        assert!(forbidden(&a, "").message.contains("resource \"pods/log\""));
        let a = Attributes::path(&alice, "get", "/metrics");
        assert_eq!(
            forbidden(&a, "").message,
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn request_attributes_are_parsed_from_the_path() {
        let u = User::new("u", vec![]);
        let get = http::Method::GET;
        let a = Attributes::of_request(&u, &get, "/api/v1/namespaces/dev/pods/p/log", None);
        assert_eq!(
            (
                a.verb.as_str(),
                a.namespace.as_str(),
                a.resource.as_str(),
                a.name.as_str(),
                a.subresource.as_str()
            ),
            ("get", "dev", "pods", "p", "log")
        );
        let a = Attributes::of_request(&u, &get, "/apis/apps/v1/deployments", Some("watch=true"));
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str(), a.namespace.as_str()),
            ("watch", "apps", "")
        );
        let a = Attributes::of_request(
            &u,
            &get,
            "/api/v1/namespaces/dev/pods",
            Some("fieldSelector=metadata.name%3Dp&watch=1"),
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "p"));
        let a = Attributes::of_request(&u, &get, "/api/v1/namespaces/dev", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "dev", "dev")
        );
        let a = Attributes::of_request(
            &u,
            &http::Method::DELETE,
            "/api/v1/namespaces/dev/pods",
            None,
        );
        assert_eq!(a.verb, "deletecollection");
        let a = Attributes::of_request(&u, &get, "/apis/apps", None);
        assert!(!a.resource_request);
        assert_eq!(a.path, "/apis/apps");
        let a = Attributes::of_request(
            &u,
            &http::Method::POST,
            "/api/v1/namespaces/dev/serviceaccounts/sa/token",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("create", "token")
        );
    }
}
