//! kwg: join this machine to a Kubernetes cluster over WireGuard, with split DNS.

pub mod cluster;
pub mod dns;
pub mod error;
pub mod output;
pub mod routes;
pub mod state;

pub use error::Error;
