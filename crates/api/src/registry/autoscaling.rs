//! The `autoscaling` group (v1 and v2 share storage and rules): the
//! generation of a HorizontalPodAutoscaler tracks spec changes.

use super::Strategy;

/// The HorizontalPodAutoscaler strategy.
pub struct HorizontalPodAutoscaler;

/// The one [`HorizontalPodAutoscaler`] strategy.
pub static HORIZONTAL_POD_AUTOSCALER: HorizontalPodAutoscaler = HorizontalPodAutoscaler;

impl Strategy for HorizontalPodAutoscaler {
    fn name(&self) -> &'static str {
        "horizontalpodautoscalers"
    }

    fn tracks_generation(&self) -> bool {
        true
    }
}
