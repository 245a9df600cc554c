//! The `policy` group: the generation of a PodDisruptionBudget tracks spec
//! changes (its status says which generation it observed).

use super::Strategy;

/// The PodDisruptionBudget strategy.
pub struct PodDisruptionBudget;

/// The one [`PodDisruptionBudget`] strategy.
pub static POD_DISRUPTION_BUDGET: PodDisruptionBudget = PodDisruptionBudget;

impl Strategy for PodDisruptionBudget {
    fn name(&self) -> &'static str {
        "poddisruptionbudgets"
    }

    fn tracks_generation(&self) -> bool {
        true
    }
}
