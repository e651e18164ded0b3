//! kwg gateway: the in-cluster end of every kwg tunnel.
//!
//! `Config` → [`build`] → [`Gateway::run`] (`run.rs`): one drain signal, each long-running task
//! in a span of its own. The rooms:
//! - the peer loop, [`peers`] (Secrets → device, the leader's writes), on the pure [`core`]
//!   (reconcile Secrets against the device), [`alloc`] (tunnel IPs) and [`peers::writes`]
//!   (which writes go, when a failed one goes again); [`peer_object`] (Secrets as the
//!   reflector store keeps them);
//! - reach by RBAC: [`policy`], its pure decisions (who may reach which namespace, which
//!   reviews go when, the nftables sets), and [`reach_watch`], its I/O (watches, reviews,
//!   `nft`);
//! - discovery: [`discovery`] (pure parsers) and [`discovery_watch`] (watches, firewall, the
//!   gateway info); [`nft`] renders the firewall;
//! - the Lease: [`election`] (pure) and [`leader`] (I/O);
//! - serving: [`tcp`] (WireGuard over TCP), [`udp_watch`] (the node's UDP receive), [`admin`]
//!   (HTTP, only reading [`shared`]: one `watch` per piece of state, written by its owner),
//!   [`siblings`] (the other replicas' statistics), [`metrics`], [`cache`];
//! - the edges: [`kube_io`] (watches, patches, Events, key, info), [`net`] (device,
//!   forwarding, nftables).

pub mod admin;
pub mod alloc;
pub mod cache;
pub mod config;
pub mod core;
pub mod discovery;
pub mod discovery_watch;
pub mod election;
mod error;
pub mod kube_io;
pub mod leader;
pub mod metrics;
pub mod net;
pub mod nft;
pub mod peer_object;
pub mod peers;
pub mod policy;
pub mod reach_watch;
mod run;
pub mod shared;
pub mod siblings;
pub mod tcp;
pub mod udp_watch;

pub use config::Config;
pub use error::GatewayError;
pub use run::{Gateway, build};
