//! The legacy core group (`/api/v1`).

pub mod configmap;
pub mod endpoints;
pub mod event;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod pod_subresources;
pub mod podspec;
pub mod podtemplate;
pub mod replicationcontroller;
pub mod secret;
pub mod service;
pub mod volume;
