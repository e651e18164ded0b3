//! The gateway as this machine's one WireGuard peer, as the session plans it (the driver
//! turns it into the device's peer configuration).

use std::net::SocketAddr;

use ipnet::IpNet;
use kwg_contract::keys::PublicKey;

/// WireGuard persistent keepalive, seconds (the `wg` man page suggests 25 behind NAT).
pub const KEEPALIVE: u16 = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPeer {
    pub public_key: PublicKey,
    /// `None` keeps the device's current (possibly roamed) endpoint.
    pub endpoint: Option<SocketAddr>,
    /// The planned routes' subnets.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds.
    pub persistent_keepalive: Option<u16>,
    /// Virtual subnets the device translates between this machine and the peer (empty: none).
    pub mappings: Vec<crate::mapping::Mapping>,
}
