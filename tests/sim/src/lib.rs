//! The one-machine cluster.
