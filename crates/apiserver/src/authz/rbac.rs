//! The RBAC authorizer: Roles and ClusterRoles say what may be done,
//! RoleBindings and ClusterRoleBindings say who may do it.
//!
//! The four kinds are read from caches kept in step with the store; an
//! [`Index`] built from them (rebuilt when one of them changes) maps each
//! subject to the rules it holds, so a decision reads only the rules of
//! the caller's own bindings, however many bindings the cluster has.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::Attributes;
use crate::auth::User;

/// One PolicyRule, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Verbs (`*` for all).
    pub verbs: Vec<String>,
    /// API groups (`""` core, `*` all).
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*`, `*/subresource`.
    pub resources: Vec<String>,
    /// Names the rule is limited to (empty: any).
    pub resource_names: Vec<String>,
    /// Non-resource paths, with a trailing `*` as a prefix match.
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// A rule from its JSON form.
    pub fn parse(v: &Value) -> Rule {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// The rules of a Role or ClusterRole.
    pub fn parse_all(role: &Value) -> Vec<Rule> {
        role["rules"]
            .as_array()
            .map(|a| a.iter().map(Rule::parse).collect())
            .unwrap_or_default()
    }

    /// Whether this rule allows the request, as upstream's
    /// `RuleAllows`.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !has(&self.api_groups, &a.api_group) {
            return false;
        }
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            match r.split_once('/') {
                // `resource/subresource`, or `*/subresource` for every
                // resource's (e.g. `*/scale`).
                Some((res, sub)) => sub == a.subresource && (res == "*" || res == a.resource),
                None => a.subresource.is_empty() && *r == a.resource,
            }
        });
        if !resource_ok {
            return false;
        }
        self.resource_names.is_empty() || self.resource_names.contains(&a.name)
    }
}

fn has(items: &[String], wanted: &str) -> bool {
    items.iter().any(|i| i == "*" || i == wanted)
}

/// A binding's role reference.
enum RoleRef {
    ClusterRole(String),
    Role(String),
}

/// Who a binding's subject is: users (service accounts become their user
/// names) and groups.
enum Subject {
    User(String),
    Group(String),
}

fn subjects(binding: &Value) -> Vec<Subject> {
    let ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
    binding["subjects"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    let name = s["name"].as_str()?.to_string();
                    match s["kind"].as_str()? {
                        "User" => Some(Subject::User(name)),
                        "Group" => Some(Subject::Group(name)),
                        "ServiceAccount" => {
                            // A subject without a namespace means the
                            // binding's own (RoleBindings only).
                            let sns = s["namespace"]
                                .as_str()
                                .filter(|n| !n.is_empty())
                                .unwrap_or(ns);
                            Some(Subject::User(format!("system:serviceaccount:{sns}:{name}")))
                        }
                        _ => None,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn role_ref(binding: &Value) -> Option<RoleRef> {
    let name = binding["roleRef"]["name"].as_str()?.to_string();
    match binding["roleRef"]["kind"].as_str()? {
        "ClusterRole" => Some(RoleRef::ClusterRole(name)),
        "Role" => Some(RoleRef::Role(name)),
        _ => None,
    }
}

type Rules = Arc<Vec<Rule>>;

/// The rules bound to each user and group in one scope, resolved when the
/// index is built so that a decision allocates nothing.
#[derive(Default)]
struct Grants {
    users: HashMap<String, Vec<Rules>>,
    groups: HashMap<String, Vec<Rules>>,
}

impl Grants {
    fn add(&mut self, subject: Subject, rules: &Rules) {
        let (map, name) = match subject {
            Subject::User(n) => (&mut self.users, n),
            Subject::Group(n) => (&mut self.groups, n),
        };
        map.entry(name).or_default().push(rules.clone());
    }

    fn of<'a>(&'a self, user: &'a User) -> impl Iterator<Item = &'a Rule> + 'a {
        let by_user = self.users.get(&user.name).into_iter().flatten();
        let by_group = user
            .groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .flatten();
        by_user.chain(by_group).flat_map(|r| r.iter())
    }
}

/// Who holds which rules, cluster-wide and per namespace.
#[derive(Default)]
pub struct Index {
    cluster: Grants,
    namespaced: HashMap<String, Grants>,
}

impl Index {
    /// Builds the index from the four kinds' objects.
    pub fn build(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_bindings: &[Value],
        bindings: &[Value],
    ) -> Index {
        let name = |v: &Value| v["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = |v: &Value| {
            v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let cluster_rules: HashMap<String, Rules> = cluster_roles
            .iter()
            .map(|r| (name(r), Arc::new(Rule::parse_all(r))))
            .collect();
        let role_rules: HashMap<(String, String), Rules> = roles
            .iter()
            .map(|r| ((ns(r), name(r)), Arc::new(Rule::parse_all(r))))
            .collect();
        let mut ix = Index::default();
        for b in cluster_bindings {
            // A ClusterRoleBinding can only name a ClusterRole; a binding to
            // a missing role grants nothing (until the role exists).
            let Some(RoleRef::ClusterRole(role)) = role_ref(b) else {
                continue;
            };
            let Some(rules) = cluster_rules.get(&role) else {
                continue;
            };
            for s in subjects(b) {
                ix.cluster.add(s, rules);
            }
        }
        for b in bindings {
            let bns = ns(b);
            let rules = match role_ref(b) {
                Some(RoleRef::ClusterRole(role)) => cluster_rules.get(&role),
                Some(RoleRef::Role(role)) => role_rules.get(&(bns.clone(), role)),
                None => None,
            };
            let Some(rules) = rules else { continue };
            let grants = ix.namespaced.entry(bns).or_default();
            for s in subjects(b) {
                grants.add(s, rules);
            }
        }
        ix
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones first; an
    /// empty namespace means cluster-wide only).
    fn rules<'a>(&'a self, user: &'a User, namespace: &str) -> impl Iterator<Item = &'a Rule> + 'a {
        let local = (!namespace.is_empty())
            .then(|| self.namespaced.get(namespace))
            .flatten();
        self.cluster
            .of(user)
            .chain(local.into_iter().flat_map(move |g| g.of(user)))
    }

    /// Whether some rule of `a.user`'s allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        self.rules(a.user, &a.namespace).any(|r| r.allows(a))
    }

    /// The rules `user` holds in `namespace`, for SelfSubjectRulesReview.
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<Rule> {
        let mut out: Vec<Rule> = Vec::new();
        for r in self.rules(user, namespace) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User::new(name, groups.iter().map(|g| g.to_string()).collect())
    }

    fn attrs<'a>(
        u: &'a User,
        verb: &str,
        ns: &str,
        group: &str,
        res: &str,
        name: &str,
    ) -> Attributes<'a> {
        Attributes::resource(u, verb, ns, group, res, "", name)
    }

    fn index() -> Index {
        let roles = [
            json!({"metadata": {"name": "pod-reader", "namespace": "dev"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}),
        ];
        let croles = [
            json!({"metadata": {"name": "cm-one"}, "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"], "verbs": ["*"]}]}),
            json!({"metadata": {"name": "scaler"}, "rules": [
                {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]},
                {"nonResourceURLs": ["/healthz", "/logs/*"], "verbs": ["get"]}]}),
        ];
        let rbs = [
            json!({"metadata": {"name": "b", "namespace": "dev"},
                "roleRef": {"kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "robot"}]}),
            json!({"metadata": {"name": "c", "namespace": "dev"},
                "roleRef": {"kind": "ClusterRole", "name": "cm-one"},
                "subjects": [{"kind": "Group", "name": "devs"}]}),
        ];
        let crbs = [
            json!({"metadata": {"name": "s"}, "roleRef": {"kind": "ClusterRole", "name": "scaler"},
            "subjects": [{"kind": "User", "name": "ops"}]}),
        ];
        Index::build(&croles, &roles, &crbs, &rbs)
    }

    #[test]
    fn a_role_binding_grants_only_in_its_namespace() {
        let ix = index();
        let alice = user("alice", &[]);
        assert!(ix.allows(&attrs(&alice, "list", "dev", "", "pods", "")));
        assert!(!ix.allows(&attrs(&alice, "delete", "dev", "", "pods", "x")));
        assert!(!ix.allows(&attrs(&alice, "list", "default", "", "pods", "")));
        assert!(!ix.allows(&attrs(&alice, "list", "", "", "pods", "")));
        let log = Attributes::resource(&alice, "get", "dev", "", "pods", "log", "x");
        assert!(ix.allows(&log));
        let exec = Attributes::resource(&alice, "get", "dev", "", "pods", "exec", "x");
        assert!(!ix.allows(&exec));
    }

    #[test]
    fn service_accounts_groups_and_resource_names() {
        let ix = index();
        let robot = user(
            "system:serviceaccount:dev:robot",
            &["system:serviceaccounts"],
        );
        assert!(ix.allows(&attrs(&robot, "get", "dev", "", "pods", "p")));
        let dev = user("bob", &["devs"]);
        assert!(ix.allows(&attrs(&dev, "delete", "dev", "", "configmaps", "one")));
        assert!(!ix.allows(&attrs(&dev, "delete", "dev", "", "configmaps", "two")));
        assert!(!ix.allows(&attrs(&dev, "list", "dev", "", "configmaps", "")));
    }

    #[test]
    fn star_subresources_and_non_resource_urls() {
        let ix = index();
        let ops = user("ops", &[]);
        let scale = Attributes::resource(&ops, "update", "x", "apps", "deployments", "scale", "d");
        assert!(ix.allows(&scale));
        let plain = attrs(&ops, "update", "x", "apps", "deployments", "d");
        assert!(!ix.allows(&plain));
        assert!(ix.allows(&Attributes::path(&ops, "get", "/healthz")));
        assert!(ix.allows(&Attributes::path(&ops, "get", "/logs/kubelet.log")));
        assert!(!ix.allows(&Attributes::path(&ops, "get", "/metrics")));
        assert!(!ix.allows(&Attributes::path(&ops, "post", "/healthz")));
    }
}
