//! The machinery every controller shares: informers (one watch and cache
//! per kind) and work queues keyed by object.

pub mod informer;
pub mod queue;

pub use informer::{Change, Informer, Informers, key_of, owner_keys, split_key};
pub use queue::Queue;
