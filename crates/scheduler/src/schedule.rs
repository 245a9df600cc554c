//! One scheduling decision: filter a sample of nodes starting at a rotating
//! index, score the feasible ones and pick the best (ties broken at random).

use std::collections::HashMap;

use crate::cache::Cache;
use crate::framework::Status;
use crate::nodeinfo::NodeInfo;
use crate::plugins::{self, CycleState};

/// Upstream's minimum number of feasible nodes to look for.
const MIN_FEASIBLE_NODES: usize = 100;
/// Upstream's floor for the adaptive percentage.
const MIN_FEASIBLE_PERCENTAGE: usize = 5;

/// How many feasible nodes to find before scoring (`percentage` 0 = adaptive:
/// 50% - nodes/125, at least 5%, and never fewer than 100 nodes).
pub fn num_feasible_nodes_to_find(num_nodes: usize, percentage: u32) -> usize {
    if num_nodes < MIN_FEASIBLE_NODES || percentage >= 100 {
        return num_nodes;
    }
    let pct = if percentage == 0 {
        (50usize.saturating_sub(num_nodes / 125)).max(MIN_FEASIBLE_PERCENTAGE)
    } else {
        percentage as usize
    };
    (num_nodes * pct / 100).max(MIN_FEASIBLE_NODES)
}

/// Rotating start index and tie-break randomness, kept across decisions.
#[derive(Debug)]
pub struct Picker {
    /// Where the next search starts in the node order.
    pub next_start: usize,
    rng: u64,
    /// percentageOfNodesToScore (0 = adaptive).
    pub percentage: u32,
}

impl Picker {
    /// A picker seeded from the clock.
    pub fn new(percentage: u32) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Picker {
            next_start: 0,
            rng: seed | 1,
            percentage,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64: tie-breaking needs no quality beyond uniformity.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Why no node was chosen: per-node failures (all nodes were evaluated).
#[derive(Debug, Clone)]
pub struct NoFit {
    /// Node count at decision time.
    pub num_nodes: usize,
    /// Failure per node name.
    pub statuses: HashMap<String, Status>,
}

/// Picks a node for the pod, or explains why none fits.
pub fn schedule(cache: &Cache, state: &CycleState, picker: &mut Picker) -> Result<String, NoFit> {
    let n = cache.num_nodes();
    // A pod nominated by an earlier preemption tries its node first.
    if let Some(nom) = state
        .pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        && let Some(node) = cache.node(nom)
        && plugins::filter(state, node).is_ok()
    {
        return Ok(nom.to_string());
    }
    let want = num_feasible_nodes_to_find(n, picker.percentage);
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(n));
    let mut statuses = HashMap::new();
    let mut processed = 0;
    for i in 0..n {
        let node = cache.at((picker.next_start + i) % n);
        processed += 1;
        match plugins::filter(state, node) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(s) => {
                statuses.insert(node.name.clone(), s);
            }
        }
    }
    if n > 0 {
        picker.next_start = (picker.next_start + processed) % n;
    }
    match feasible.len() {
        0 => Err(NoFit {
            num_nodes: n,
            statuses,
        }),
        1 => Ok(feasible[0].name.clone()),
        _ => {
            let scores = plugins::score(cache, state, &feasible);
            Ok(feasible[select(&scores, picker)].name.clone())
        }
    }
}

/// Index of the highest score, choosing uniformly among ties.
pub fn select(scores: &[i64], picker: &mut Picker) -> usize {
    let mut best = 0;
    let mut ties = 0u64;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
            ties = 1;
        } else if *s == scores[best] {
            ties += 1;
            if picker.next_rand().is_multiple_of(ties) {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_percentage_matches_upstream() {
        assert_eq!(num_feasible_nodes_to_find(50, 0), 50);
        assert_eq!(num_feasible_nodes_to_find(100, 0), 100);
        // 50 - 1000/125 = 42%.
        assert_eq!(num_feasible_nodes_to_find(1000, 0), 420);
        // 50 - 5000/125 = 10%.
        assert_eq!(num_feasible_nodes_to_find(5000, 0), 500);
        // Floor of 5%.
        assert_eq!(num_feasible_nodes_to_find(10000, 0), 500);
        // Never fewer than 100.
        assert_eq!(num_feasible_nodes_to_find(150, 10), 100);
        assert_eq!(num_feasible_nodes_to_find(1000, 100), 1000);
    }

    #[test]
    fn select_prefers_highest_and_spreads_ties() {
        let mut p = Picker::new(0);
        assert_eq!(select(&[1, 5, 3], &mut p), 1);
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[select(&[7, 7, 7], &mut p)] += 1;
        }
        assert!(seen.iter().all(|c| *c > 50), "{seen:?}");
    }
}
