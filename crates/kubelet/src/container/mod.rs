//! What makes one container: the OCI runtime spec built from the pod
//! (`spec`), its seccomp, AppArmor and sysctl confinement, its resources,
//! and the service environment variables it is given.

pub mod apparmor;
pub mod resources;
pub mod seccomp;
pub mod spec;
pub mod svcenv;
pub mod sysctls;
