//! A pod's affinity and anti-affinity terms, resolved once when the pod
//! enters the cache (its namespace defaults and match/mismatch label keys
//! applied) so that the InterPodAffinity plugin only compares.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::PodInfo;
use crate::selector::{Labels, matches};

/// Namespace labels by namespace name.
pub type NamespaceLabels = HashMap<String, Labels>;

/// A pod affinity term resolved against its owner's namespace.
#[derive(Debug, Clone)]
pub struct Term {
    selector: Option<LabelSelector>,
    namespaces: Vec<String>,
    ns_selector: Option<LabelSelector>,
    /// The term's topology key.
    pub topology_key: String,
    /// Weight (preferred terms; 1 for required).
    pub weight: i64,
}

impl Term {
    /// Resolves a term of a pod in namespace `owner_ns` with labels
    /// `owner_labels` (matchLabelKeys/mismatchLabelKeys take their values
    /// from them, as the API server's merge would).
    pub fn new(t: &PodAffinityTerm, owner_ns: &str, owner_labels: &Labels, weight: i64) -> Self {
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(owner_ns.to_string());
        }
        let mut selector = t.label_selector.clone();
        if let Some(sel) = selector.as_mut() {
            let keys = [
                (t.match_label_keys.as_deref(), "In"),
                (t.mismatch_label_keys.as_deref(), "NotIn"),
            ];
            for (keys, op) in keys {
                for k in keys.unwrap_or_default() {
                    if let Some(v) = owner_labels.get(k) {
                        sel.match_expressions.get_or_insert_with(Vec::new).push(
                            LabelSelectorRequirement {
                                key: k.clone(),
                                operator: op.into(),
                                values: Some(vec![v.clone()]),
                            },
                        );
                    }
                }
            }
        }
        Term {
            selector,
            namespaces,
            ns_selector: t.namespace_selector.clone(),
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    /// Whether the term selects pod `p`.
    pub fn matches(&self, p: &PodInfo, ns: &NamespaceLabels) -> bool {
        let ns_ok = self.namespaces.contains(&p.namespace)
            || self.ns_selector.as_ref().is_some_and(|s| {
                let empty = Labels::new();
                matches(s, ns.get(&p.namespace).unwrap_or(&empty))
            });
        ns_ok
            && self
                .selector
                .as_ref()
                .is_some_and(|s| matches(s, p.labels()))
    }
}

/// The four term lists of a pod's affinity.
#[derive(Debug, Default, Clone)]
pub struct Terms {
    /// Required affinity.
    pub affinity: Vec<Term>,
    /// Required anti-affinity.
    pub anti_affinity: Vec<Term>,
    /// Preferred affinity.
    pub preferred_affinity: Vec<Term>,
    /// Preferred anti-affinity.
    pub preferred_anti_affinity: Vec<Term>,
}

impl Terms {
    /// Resolves every term of a pod.
    pub fn of(p: &PodInfo) -> Self {
        let Some(a) = p.pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return Terms::default();
        };
        let ns = p.namespace.as_str();
        let req = |ts: Option<&Vec<PodAffinityTerm>>| {
            ts.into_iter()
                .flatten()
                .map(|t| Term::new(t, ns, p.labels(), 1))
                .collect()
        };
        let pref = |ts: Option<&Vec<WeightedPodAffinityTerm>>| {
            ts.into_iter()
                .flatten()
                .map(|w| Term::new(&w.pod_affinity_term, ns, p.labels(), w.weight as i64))
                .collect()
        };
        let pa = a.pod_affinity.as_ref();
        let paa = a.pod_anti_affinity.as_ref();
        Terms {
            affinity: req(pa.and_then(|x| {
                x.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            anti_affinity: req(paa.and_then(|x| {
                x.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: pref(pa.and_then(|x| {
                x.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: pref(paa.and_then(|x| {
                x.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        }
    }
}
