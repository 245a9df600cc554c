//! RBAC escalation prevention: a user may only write a Role or
//! ClusterRole whose rules they hold themselves (or with the `escalate`
//! verb), and only bind a role whose rules they hold (or with `bind` on
//! that role), as upstream's RBAC registry strategies.

use api::catalogue::ResourceInfo;
use serde_json::Value;
use store::SharedStore;

use super::rbac::Rule;
use super::{Attributes, Authorizer, Decision};
use crate::auth::User;
use crate::error::ApiError;

const GROUP: &str = "rbac.authorization.k8s.io";

/// Checks a Role, ClusterRole, RoleBinding or ClusterRoleBinding about to
/// be written by `user`; other kinds pass.
pub async fn check(
    authz: &Authorizer,
    store: &SharedStore,
    user: &User,
    info: &ResourceInfo,
    namespace: Option<&str>,
    obj: &Value,
) -> Result<(), ApiError> {
    if info.group != GROUP || user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let ns = namespace.unwrap_or("");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let (wanted, verb_attrs) = match info.plural {
        "roles" | "clusterroles" => {
            // An aggregated ClusterRole's rules are the controller's to
            // fill; writing one is as much as writing its rules.
            let esc = Attributes::resource(user, "escalate", ns, GROUP, info.plural, "", name);
            (Rule::parse_all(obj), esc)
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
            let role = obj["roleRef"]["name"].as_str().unwrap_or("");
            let (plural, role_ns) = if kind == "Role" {
                ("roles", ns)
            } else {
                ("clusterroles", "")
            };
            let bind = Attributes::resource(user, "bind", ns, GROUP, plural, "", role);
            let rules = match role_rules(authz, plural, role_ns, role) {
                Some(r) => r,
                // A missing role grants nothing yet; only `bind` may name it.
                None if matches!(authz.authorize(store, &bind).await, Decision::Allow) => {
                    return Ok(());
                }
                None => {
                    return Err(ApiError::not_found(GROUP, plural, role));
                }
            };
            (rules, bind)
        }
        _ => return Ok(()),
    };
    if matches!(authz.authorize(store, &verb_attrs).await, Decision::Allow) {
        return Ok(());
    }
    let held = authz.rules_for(user, ns);
    let missing: Vec<String> = wanted
        .iter()
        .flat_map(atoms)
        .filter(|atom| !held.iter().any(|h| covers(h, atom)))
        .map(|atom| describe(&atom))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let qualified = format!("{}.{GROUP}", info.plural);
    Err(ApiError::forbidden(format!(
        "{qualified} {name:?} is forbidden: user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        go_strings(&user.groups),
        missing.join("\n")
    )))
}

fn go_strings(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn role_rules(authz: &Authorizer, plural: &str, ns: &str, name: &str) -> Option<Vec<Rule>> {
    let cache = if plural == "roles" {
        authz.roles.items()
    } else {
        authz.cluster_roles.items()
    };
    cache
        .iter()
        .find(|r| {
            r["metadata"]["name"] == name
                && (plural == "clusterroles" || r["metadata"]["namespace"] == ns)
        })
        .map(Rule::parse_all)
}

/// A rule broken into single permissions, as upstream's `BreakdownRule`.
fn atoms(rule: &Rule) -> Vec<Rule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            out.push(Rule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..Rule::default()
            });
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                if rule.resource_names.is_empty() {
                    out.push(Rule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..Rule::default()
                    });
                }
                for name in &rule.resource_names {
                    out.push(Rule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: one(name),
                        ..Rule::default()
                    });
                }
            }
        }
    }
    out
}

/// Whether `owner` holds the single permission `atom`.
fn covers(owner: &Rule, atom: &Rule) -> bool {
    let has = |items: &[String], want: &str| items.iter().any(|i| i == "*" || i == want);
    if !has(&owner.verbs, &atom.verbs[0]) {
        return false;
    }
    if let Some(url) = atom.non_resource_urls.first() {
        return owner.non_resource_urls.iter().any(|u| {
            u == "*" || u == url || u.strip_suffix('*').is_some_and(|p| url.starts_with(p))
        });
    }
    if !has(&owner.api_groups, &atom.api_groups[0]) {
        return false;
    }
    let res = &atom.resources[0];
    let res_ok = owner.resources.iter().any(|r| {
        r == "*"
            || r == res
            || r.strip_prefix("*/")
                .is_some_and(|sub| res.split_once('/').is_some_and(|(_, s)| s == sub))
    });
    res_ok
        && (owner.resource_names.is_empty()
            || atom
                .resource_names
                .first()
                .is_some_and(|n| owner.resource_names.contains(n)))
}

/// A permission as upstream prints a PolicyRule (`{APIGroups:[""],
/// Resources:["pods"], Verbs:["delete"]}`).
fn describe(r: &Rule) -> String {
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:{}", go_strings(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:{}", go_strings(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:{}", go_strings(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!(
            "NonResourceURLs:{}",
            go_strings(&r.non_resource_urls)
        ));
    }
    parts.push(format!("Verbs:{}", go_strings(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], res: &[&str]) -> Rule {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Rule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(res),
            ..Rule::default()
        }
    }

    #[test]
    fn only_held_permissions_are_covered() {
        let held = [
            rule(&["get", "list"], &[""], &["pods"]),
            rule(&["*"], &["apps"], &["*"]),
        ];
        let ok = |r: &Rule| atoms(r).iter().all(|a| held.iter().any(|h| covers(h, a)));
        assert!(ok(&rule(&["get"], &[""], &["pods"])));
        assert!(ok(&rule(
            &["delete"],
            &["apps"],
            &["deployments", "deployments/scale"]
        )));
        assert!(!ok(&rule(&["delete"], &[""], &["pods"])));
        assert!(!ok(&rule(&["get"], &[""], &["*"])));
        assert!(!ok(&rule(&["*"], &[""], &["pods"])));
        assert_eq!(
            describe(&atoms(&rule(&["delete"], &[""], &["pods"]))[0]),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
    }
}
