//! The Kubernetes API model as r8s serves it: the resource catalogue,
//! per-kind strategies, selectors, patches and table printing.

pub mod catalogue;
pub mod crd;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod quota;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod table;
pub mod validation;
