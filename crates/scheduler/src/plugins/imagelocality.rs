//! ImageLocality: favour nodes that already have the pod's images, weighted
//! by how widely the image is spread (upstream's scaled image score).

use super::CycleState;
use crate::nodeinfo::{NodeInfo, normalize_image};

/// Plugin name.
pub const NAME: &str = "ImageLocality";

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Scores nodes 0-100; `spread(image)` is how many nodes hold the image and
/// `total` the number of nodes.
pub fn score(
    state: &CycleState,
    nodes: &[&NodeInfo],
    spread: impl Fn(&str) -> usize,
    total: usize,
) -> Vec<i64> {
    let images: Vec<String> = state
        .spec()
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .filter_map(|c| c.image.as_deref())
                .map(normalize_image)
                .collect()
        })
        .unwrap_or_default();
    let max = MAX_CONTAINER_THRESHOLD * images.len().max(1) as i64;
    nodes
        .iter()
        .map(|n| {
            let sum: i64 = images
                .iter()
                .filter_map(|img| {
                    let size = *n.images.get(img)?;
                    let frac = spread(img) as f64 / total.max(1) as f64;
                    Some((size as f64 * frac) as i64)
                })
                .sum();
            let s = sum.clamp(MIN_THRESHOLD, max);
            100 * (s - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn nodes_with_big_images_score_higher() {
        let s = CycleState::simple(pod(
            "p",
            json!({}),
            json!({"containers": [{"name": "c", "image": "nginx"}]}),
        ));
        let mut with = node("a", json!({}), "1", "1Gi");
        with.images.insert("nginx:latest".into(), 523 * MB);
        let without = node("b", json!({}), "1", "1Gi");
        let scores = score(&s, &[&with, &without], |_| 1, 1);
        assert_eq!(scores, vec![51, 0]);
    }
}
