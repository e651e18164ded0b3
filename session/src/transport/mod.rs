//! The ways to the gateway ([`Rung`], [`Mode`]) and the [`ladder`] that climbs them (pure,
//! time passed in); the CLI's `transport` module does the I/O.

pub mod ladder;
mod rungs;

pub use ladder::{Failure, Ladder, Step, Timings};
pub use rungs::{Mode, Rung};

use std::net::SocketAddr;

/// Where the gateway peer points before the transport chose: its UDP endpoint, or nowhere in
/// the stream-only modes (no datagram may go out over UDP then).
pub fn first_endpoint(mode: Mode, udp: Option<SocketAddr>) -> Option<SocketAddr> {
    match mode {
        Mode::Auto | Mode::Udp => udp,
        Mode::Tcp | Mode::ApiServer => None,
    }
}

#[cfg(test)]
mod tests;
