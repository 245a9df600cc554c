//! The StatefulSet controller's ordering decisions, free of I/O: which
//! ordinal to create, delete or wait for (OrderedReady one at a time,
//! ascending on the way up and descending on the way down; Parallel all at
//! once), and the rolling update from the highest ordinal down to the
//! partition.

use std::collections::BTreeMap;
use std::ops::Range;

/// What the controller sees of one pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodState {
    /// Running and Ready.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Phase Failed or Succeeded: must be recreated.
    pub finished: bool,
    /// At the update revision.
    pub updated: bool,
}

/// One step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create the pod with this ordinal.
    Create(i32),
    /// Delete the pod with this ordinal.
    Delete(i32),
}

/// Decides the next steps; an empty list means wait (or nothing to do).
/// `partition` is Some for RollingUpdate (None for OnDelete).
pub fn plan(
    pods: &BTreeMap<i32, PodState>,
    want: Range<i32>,
    parallel: bool,
    partition: Option<i32>,
) -> Vec<Action> {
    let mut out = Vec::new();
    for i in want.clone() {
        match pods.get(&i) {
            None => {
                out.push(Action::Create(i));
                if !parallel {
                    return out;
                }
            }
            Some(p) if p.finished && !p.terminating => {
                out.push(Action::Delete(i));
                if !parallel {
                    return out;
                }
            }
            Some(p) if !parallel && (p.terminating || !p.ready) => return out,
            Some(_) => {}
        }
    }
    // Scale down: highest ordinal first.
    let condemned: Vec<(i32, PodState)> = pods
        .iter()
        .rev()
        .filter(|(i, _)| !want.contains(i))
        .map(|(i, p)| (*i, *p))
        .collect();
    for (i, p) in &condemned {
        if p.terminating {
            if !parallel {
                return out;
            }
            continue;
        }
        out.push(Action::Delete(*i));
        if !parallel {
            return out;
        }
    }
    if !out.is_empty() || !condemned.is_empty() {
        return out;
    }
    // Rolling update: only with every pod healthy, one at a time, from the
    // highest ordinal down to the partition.
    let Some(partition) = partition else {
        return out;
    };
    if pods.values().any(|p| p.terminating || !p.ready) {
        return out;
    }
    for i in want.rev() {
        if i < partition {
            break;
        }
        if pods.get(&i).is_some_and(|p| !p.updated) {
            out.push(Action::Delete(i));
            break;
        }
    }
    out
}

/// The ordinal in a pod name `<set>-<ordinal>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok().filter(|i| *i >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: PodState = PodState {
        ready: true,
        terminating: false,
        finished: false,
        updated: true,
    };

    fn set(states: &[(i32, PodState)]) -> BTreeMap<i32, PodState> {
        states.iter().copied().collect()
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_after_the_previous_is_ready() {
        assert_eq!(
            plan(&set(&[]), 0..3, false, Some(0)),
            vec![Action::Create(0)]
        );
        let starting = PodState {
            ready: false,
            ..READY
        };
        assert!(plan(&set(&[(0, starting)]), 0..3, false, Some(0)).is_empty());
        assert_eq!(
            plan(&set(&[(0, READY)]), 0..3, false, Some(0)),
            vec![Action::Create(1)]
        );
    }

    #[test]
    fn parallel_creates_all_missing_at_once() {
        assert_eq!(
            plan(&set(&[(1, READY)]), 0..3, true, Some(0)),
            vec![Action::Create(0), Action::Create(2)]
        );
    }

    #[test]
    fn scale_down_deletes_highest_first_and_waits_for_termination() {
        let pods = set(&[(0, READY), (1, READY), (2, READY)]);
        assert_eq!(plan(&pods, 0..1, false, Some(0)), vec![Action::Delete(2)]);
        let gone2 = set(&[
            (0, READY),
            (1, READY),
            (
                2,
                PodState {
                    terminating: true,
                    ..READY
                },
            ),
        ]);
        assert!(plan(&gone2, 0..1, false, Some(0)).is_empty());
        assert_eq!(
            plan(&pods, 0..1, true, Some(0)),
            vec![Action::Delete(2), Action::Delete(1)]
        );
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition_one_at_a_time() {
        let old = PodState {
            updated: false,
            ..READY
        };
        let pods = set(&[(0, old), (1, old), (2, old)]);
        assert_eq!(plan(&pods, 0..3, false, Some(0)), vec![Action::Delete(2)]);
        let pods = set(&[(0, old), (1, old), (2, READY)]);
        assert_eq!(plan(&pods, 0..3, false, Some(0)), vec![Action::Delete(1)]);
        // Partition 2: ordinals below stay at the old revision.
        assert!(plan(&pods, 0..3, false, Some(2)).is_empty());
        // OnDelete: never.
        assert!(plan(&set(&[(0, old)]), 0..1, false, None).is_empty());
        // An unready pod holds the update.
        let pods = set(&[
            (0, old),
            (
                1,
                PodState {
                    ready: false,
                    ..READY
                },
            ),
            (2, READY),
        ]);
        assert!(plan(&pods, 0..3, true, Some(0)).is_empty());
    }

    #[test]
    fn failed_pods_are_replaced() {
        let dead = PodState {
            finished: true,
            ready: false,
            ..READY
        };
        assert_eq!(
            plan(&set(&[(0, dead)]), 0..2, false, Some(0)),
            vec![Action::Delete(0)]
        );
    }

    #[test]
    fn ordinals_parse_only_exact_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "webx-1"), None);
        assert_eq!(ordinal("web", "web-a-1"), None);
    }
}
