//! ClusterRole aggregation: a ClusterRole with an `aggregationRule` holds
//! the rules of every ClusterRole its selectors match, kept up to date as
//! they change (upstream's clusterrole-aggregation controller). It runs
//! in the API server, beside the cache it reads, so that `admin`, `edit`
//! and `view` are complete from the first request on, whether or not the
//! controllers run.

use std::sync::Arc;

use api::selector::LabelSelector;
use serde_json::Value;
use store::SharedStore;

use crate::watched::Watched;

/// The rules `role` should hold, if it aggregates.
pub fn aggregate(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors: Vec<LabelSelector> = role["aggregationRule"]["clusterRoleSelectors"]
        .as_array()?
        .iter()
        .filter_map(|s| LabelSelector::from_label_selector(s).ok())
        .collect();
    let me = role["metadata"]["name"].as_str();
    let mut rules: Vec<Value> = Vec::new();
    for other in all {
        if other["metadata"]["name"].as_str() == me
            || !selectors.iter().any(|s| s.matches_object(other))
        {
            continue;
        }
        for r in other["rules"].as_array().into_iter().flatten() {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
    }
    Some(rules)
}

/// Keeps aggregated ClusterRoles up to date; runs forever.
pub async fn run(store: SharedStore, roles: Arc<Watched>) {
    let Some(info) = api::catalogue::find("rbac.authorization.k8s.io", "v1", "clusterroles") else {
        return;
    };
    let mut updates = roles.updates();
    loop {
        let all = roles.items();
        for role in all.iter() {
            let Some(want) = aggregate(role, &all) else {
                continue;
            };
            let have = role["rules"].as_array().cloned().unwrap_or_default();
            if have == want {
                continue;
            }
            let name = role["metadata"]["name"].as_str().unwrap_or("");
            let key = crate::objects::object_key(info, None, name);
            // Write over exactly the version read; a conflict means a newer
            // one is on its way to the cache.
            let Ok(Some(kv)) = store.get(&key).await else {
                continue;
            };
            let Ok(mut stored) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            stored["rules"] = Value::Array(want);
            if let Some(m) = stored["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            if let Ok(bytes) = serde_json::to_vec(&stored)
                && let Err(e) = store.update(&key, bytes, kv.mod_revision).await
            {
                tracing::debug!(role = name, error = %e, "aggregating a ClusterRole");
            }
        }
        if updates.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn aggregates_matching_roles_once() {
        let agg = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"to-view": "true"}}]}});
        let r = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        let all = vec![
            agg.clone(),
            json!({"metadata": {"name": "a", "labels": {"to-view": "true"}}, "rules": [r]}),
            json!({"metadata": {"name": "b", "labels": {"to-view": "true"}}, "rules": [r,
                {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]}),
            json!({"metadata": {"name": "c"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
        ];
        let rules = super::aggregate(&agg, &all).unwrap();
        assert_eq!(rules.len(), 2);
        assert!(super::aggregate(&all[1], &all).is_none());
    }
}
