//! Events (core and `events.k8s.io`, which share storage): a PUT may
//! create them, as upstream's event strategy allows.

use crate::registry::Strategy;

/// The Event strategy.
pub struct Event;

/// The one [`Event`] strategy.
pub static EVENT: Event = Event;

impl Strategy for Event {
    fn name(&self) -> &'static str {
        "events"
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }
}
