//! Plugin results and the upstream-format "0/N nodes are available" message.

use std::collections::BTreeMap;

/// How a node failed a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Might fit if pods were removed (preemption may help).
    Unschedulable,
    /// Removing pods would not help.
    UnschedulableAndUnresolvable,
}

/// A failed filter: which plugin, how, and the reasons shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The failing plugin.
    pub plugin: &'static str,
    /// Whether preemption could help.
    pub code: Code,
    /// User-facing reasons (upstream strings).
    pub reasons: Vec<String>,
}

impl Status {
    /// A resolvable failure with one reason.
    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Self {
        Status {
            plugin,
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
        }
    }

    /// An unresolvable failure with one reason.
    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Self {
        Status {
            plugin,
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
        }
    }
}

/// Result of one filter.
pub type FilterResult = Result<(), Status>;

/// `0/N nodes are available: <sorted histogram>.` as upstream's FitError.
pub fn fit_message<'a>(num_nodes: usize, statuses: impl IntoIterator<Item = &'a Status>) -> String {
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        for r in &s.reasons {
            *hist.entry(r.as_str()).or_default() += 1;
        }
    }
    histogram_message(num_nodes, hist)
}

/// Formats reason counts like upstream (entries `"<count> <reason>"`, sorted as strings).
pub fn histogram_message(num_nodes: usize, hist: BTreeMap<&str, usize>) -> String {
    let mut parts: Vec<String> = hist.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_sorted_histogram() {
        let a = Status::unschedulable("NodeResourcesFit", "Insufficient cpu");
        let b = Status::unresolvable(
            "TaintToleration",
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        );
        let msg = fit_message(5, [&a, &a, &a, &b, &b]);
        assert_eq!(
            msg,
            "0/5 nodes are available: 2 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 3 Insufficient cpu."
        );
    }
}
