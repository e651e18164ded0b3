//! The one-machine cluster.

pub mod dns;
