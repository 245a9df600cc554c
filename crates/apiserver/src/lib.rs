//! The r8s API server: Kubernetes v1.33's REST API over HTTPS, generic over
//! kinds, backed by a revisioned store with a watch cache.

pub mod admission;
pub mod aggregator;
pub mod apply;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod backend;
mod bootstrap;
pub mod certificates;
pub mod convert;
pub mod crd;
pub mod discovery;
pub mod encryption;
pub mod error;
pub mod fieldset;
pub mod filter;
pub mod http;
pub mod join;
pub mod metrics;
pub mod objects;
pub mod resource_metrics;
pub mod rest;
pub mod router;
pub mod satoken;
pub mod server;
pub mod shape;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod watch;
pub mod watched;

pub use admission::service_alloc::SERVICE_CIDR;
pub use server::{Config, Running, ServerError, start};
