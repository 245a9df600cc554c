//! VolumeBinding, the part r8s needs: a pod's PersistentVolumeClaims must
//! exist and be bound before it is placed (the pre-filter, in the
//! scheduler), and a bound volume's node affinity (a local or provisioned
//! `local-path` volume lives on one node) must match the node.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod};

use super::CycleState;
use crate::framework::{FilterResult, Status};
use crate::nodeinfo::NodeInfo;
use crate::selector::terms_match;

/// Plugin name.
pub const NAME: &str = "VolumeBinding";
/// Upstream reason for a node the pod's volumes cannot be used on.
pub const CONFLICT: &str = "node(s) had volume node affinity conflict";

/// The node-affinity terms of the pod's bound volumes, or why the pod
/// cannot be scheduled yet (upstream's messages).
pub fn prefilter(
    pod: &Pod,
    claim: impl Fn(&str, &str) -> Option<Arc<PersistentVolumeClaim>>,
    volume: impl Fn(&str) -> Option<Arc<PersistentVolume>>,
) -> Result<Vec<Vec<NodeSelectorTerm>>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut terms = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(src) = &v.persistent_volume_claim else {
            continue;
        };
        let name = &src.claim_name;
        let Some(pvc) = claim(ns, name) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or("");
        if !bound || pv_name.is_empty() {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        let Some(pv) = volume(pv_name) else {
            return Err(format!("persistentvolume \"{pv_name}\" not found"));
        };
        if let Some(req) = pv
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
        {
            terms.push(req.node_selector_terms.clone());
        }
    }
    Ok(terms)
}

/// Rejects nodes a bound volume cannot be used on.
pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    if state.volume_affinity.is_empty() {
        return Ok(());
    }
    let Some(n) = &node.node else {
        return Err(Status::unresolvable(NAME, CONFLICT));
    };
    if state.volume_affinity.iter().all(|t| terms_match(t, n)) {
        Ok(())
    } else {
        Err(Status::unresolvable(NAME, CONFLICT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_with_claim() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
        }))
        .unwrap()
    }

    fn claim(phase: &str, volume: &str) -> Arc<PersistentVolumeClaim> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "data", "namespace": "ns"},
                "spec": {"volumeName": volume},
                "status": {"phase": phase},
            }))
            .unwrap(),
        )
    }

    fn local_pv(node: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "pv1"},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn claims_must_exist_and_be_bound_and_volumes_pin_nodes() {
        let p = pod_with_claim();
        let none = prefilter(&p, |_, _| None, |_| None);
        assert_eq!(none, Err("persistentvolumeclaim \"data\" not found".into()));
        let pending = prefilter(&p, |_, _| Some(claim("Pending", "")), |_| None);
        assert_eq!(
            pending,
            Err("pod has unbound immediate PersistentVolumeClaims".into())
        );
        let terms = prefilter(
            &p,
            |_, _| Some(claim("Bound", "pv1")),
            |_| Some(local_pv("n2")),
        )
        .unwrap();
        assert_eq!(terms.len(), 1);

        let mut state = CycleState::simple(crate::plugins::testutil::pod(
            "p",
            json!({}),
            json!({"containers": []}),
        ));
        state.volume_affinity = terms;
        let n1 = crate::plugins::testutil::node(
            "n1",
            json!({"kubernetes.io/hostname": "n1"}),
            "4",
            "8Gi",
        );
        let n2 = crate::plugins::testutil::node(
            "n2",
            json!({"kubernetes.io/hostname": "n2"}),
            "4",
            "8Gi",
        );
        assert_eq!(
            filter(&state, &n1).unwrap_err().reasons,
            vec![CONFLICT.to_string()]
        );
        assert!(filter(&state, &n2).is_ok());
    }
}
