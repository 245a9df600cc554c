//! Resource quotas: quantities and the evaluators that measure usage.

mod quantity;
mod usage;

pub use quantity::{Format, Qty};
pub use usage::*;
