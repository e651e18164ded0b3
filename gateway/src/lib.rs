//! kwg gateway: the in-cluster end of every kwg tunnel.
//!
//! Pure parts: [`alloc`] (tunnel IPs), [`core`] (reconcile Secrets against the device), [`peers::writes`] (which writes the leader sends),
//! [`nft`] (the firewall ruleset), [`reach`] (who reaches what), [`discovery`]'s parsers, [`metrics`] rendering,
//! [`peer_object`] (Secrets as the reflector store keeps them), [`election`] (leader election).
//! I/O edges: [`kube_io`] (watcher, patches, Events, key, info), [`discovery_watch`] (watchers
//! keeping discovery current), [`reach_watch`] (reach by RBAC: reviews, nftables elements), [`leader`] (the Lease), [`net`] (device, interface, nftables), [`tcp`] (WireGuard over TCP), [`admin`] (HTTP), tied
//! together by [`run`].

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
