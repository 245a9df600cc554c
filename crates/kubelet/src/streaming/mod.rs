//! Streaming to and from containers: the kubelet's HTTPS API (`server`)
//! and exec, attach and port-forward over SPDY and WebSocket.

pub mod attach;
pub mod authz;
pub mod exec;
pub(crate) mod exec_tty;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
