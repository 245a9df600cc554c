//! The `discovery.k8s.io` group: EndpointSlice ports are TCP by default.

use serde_json::{Value, json};

use super::Strategy;
use super::common::{for_each_in, set_default};

/// The EndpointSlice strategy.
pub struct EndpointSlice;

/// The one [`EndpointSlice`] strategy.
pub static ENDPOINT_SLICE: EndpointSlice = EndpointSlice;

impl Strategy for EndpointSlice {
    fn name(&self) -> &'static str {
        "endpointslices"
    }

    fn default(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        for_each_in(o, "ports", |p| set_default(p, "protocol", json!("TCP")));
    }
}
