//! Endpoints: TCP ports by default, and a PUT may create them (the
//! endpoints controller writes them unconditionally).

use serde_json::{Value, json};

use crate::registry::Strategy;
use crate::registry::common::{for_each_in, set_default};

/// The Endpoints strategy.
pub struct Endpoints;

/// The one [`Endpoints`] strategy.
pub static ENDPOINTS: Endpoints = Endpoints;

impl Strategy for Endpoints {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        for_each_in(o, "subsets", |s| {
            for_each_in(s, "ports", |p| set_default(p, "protocol", json!("TCP")));
        });
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }
}
