//! r8s's controller runtime: what every control loop shares, whether it
//! runs in the controller manager, the scheduler, the hollow nodes or a
//! node agent. Informers (one watch and cache per kind), work queues keyed
//! by object, leader election on a Lease, the event recorder, and the
//! helpers upstream keeps in `controller_utils` (selector matching, pod
//! readiness, owner references, quantities) and
//! expectations. It depends on kube-rs only, never on a
//! component.

pub mod events;
pub mod expectations;
pub mod informer;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod quantity;
pub mod queue;
pub mod secure;

pub use expectations::Expectations;
pub use informer::{Change, Informer, Informers, key_of, owner_keys, split_key};
pub use objects::{
    controller_ref, node_ready, owner_ref, pod_active, pod_ready, pod_ready_since, pod_terminal,
    selector_is_empty, selector_matches,
};
pub use queue::Queue;
