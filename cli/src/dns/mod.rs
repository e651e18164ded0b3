//! Split DNS: the decision, the forwarder and the machine's resolver configuration.

pub mod follow;
pub mod forwarder;
pub mod mapped;
pub mod primary;
pub mod resolvconf;
pub mod resolved;
