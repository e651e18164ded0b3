//! Reach by RBAC, the pure decisions: who may reach which namespace, and when to ask.
//!
//! - [`inventory`]: what the cluster holds that peers may reach (pod IPs, ClusterIPs by their
//!   EndpointSlices, the graces for departed pods and removed endpoints);
//! - [`grants`]: who a review asks about ([`grants::Subject`]), the reviews each peer's reach
//!   needs, what each peer reaches by name, the RoleBinding that would allow a refused one;
//! - [`rbac`]: which namespaces a Role or RoleBinding change can affect;
//! - [`possible`]: the local pre-evaluation of RBAC: which pairs a review could allow (only
//!   those are asked), which certainly not (denied without a review);
//! - [`reviews`]: the cache of answers and which reviews to send when (changes, the periodic
//!   re-review, retries, the rate limit);
//! - [`schedule`]: the periodic safety re-review spread over its period, the global rate limit;
//! - [`sets`]: the nftables sets that enforce it and the element diffs that move them;
//! - [`view`]: what a peer is told of its own reach (`/peers`).
//!
//! The I/O (watches, SubjectAccessReviews, `nft`) is [`crate::reach_watch`].

pub mod grants;
pub mod inventory;
pub mod possible;
pub mod rbac;
pub mod reviews;
pub mod schedule;
pub mod sets;
pub mod view;

#[cfg(test)]
pub(crate) mod fixtures;
