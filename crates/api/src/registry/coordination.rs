//! The `coordination.k8s.io` group: a PUT may create a Lease (leader
//! election and node heartbeats write them unconditionally).

use super::Strategy;

/// The Lease strategy.
pub struct Lease;

/// The one [`Lease`] strategy.
pub static LEASE: Lease = Lease;

impl Strategy for Lease {
    fn name(&self) -> &'static str {
        "leases"
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }
}
