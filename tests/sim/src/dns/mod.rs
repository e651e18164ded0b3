//! DNS of the one-machine cluster: the cluster DNS server (CoreDNS kubernetes-plugin
//! semantics, fed by watchers of Services and EndpointSlices) and the LAN's ordinary
//! authoritative resolver for a non-cluster zone.
//!
//! Both are a pure core (index + query → [`Reply`]) behind one small I/O edge (`server`):
//! hickory's UDP/TCP server (which sets TC when a UDP answer does not fit) and a relay to the
//! upstream resolver.

pub mod cluster;
pub mod lan;
mod reply;
mod server;

use std::net::SocketAddr;

pub use reply::{Reply, Resolution, ZoneApex};

/// Errors of the DNS servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{what} {value:?} is not a valid DNS name ({reason}); use dot-separated labels like \"cluster.local\""
    )]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "the DNS server's sockets failed: {0}; check that the UDP and TCP sockets are bound and usable"
    )]
    Server(#[from] hickory_server::net::NetError),
    #[error("the DNS server stopped serving its sockets")]
    Stopped,
    #[error(
        "upstream resolver {upstream} did not answer in time; check that it runs and is reachable"
    )]
    UpstreamTimeout { upstream: SocketAddr },
    #[error(
        "upstream resolver {upstream} unreachable: {source}; check that it runs and is reachable"
    )]
    Upstream {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream resolver {upstream} sent an undecodable reply: {reason}")]
    UpstreamReply {
        upstream: SocketAddr,
        reason: String,
    },
}

/// Parses a zone name given by configuration into an absolute name.
fn zone_name(what: &'static str, value: &str) -> Result<hickory_proto::rr::Name, Error> {
    let invalid = |reason: String| Error::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    let mut name =
        hickory_proto::rr::Name::from_ascii(value).map_err(|e| invalid(e.to_string()))?;
    if name.is_root() {
        return Err(invalid("the root zone cannot be served here".into()));
    }
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}
