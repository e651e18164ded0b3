//! Peer configuration and statistics, shared by the core, the device and UAPI.

use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use kwg_contract::keys::{PresharedKey, PublicKey};

/// The desired state of one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// `None` on an update keeps the current (possibly roamed) endpoint.
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    /// Seconds; `None` or `Some(0)` disables persistent keepalive.
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer with only a public key: no endpoint, no AllowedIPs.
    pub fn new(public_key: PublicKey) -> PeerConfig {
        PeerConfig {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }
}

/// What `wg show` prints about one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    pub last_handshake: Option<SystemTime>,
    /// Bytes of authenticated WireGuard datagrams received from the peer.
    pub rx_bytes: u64,
    /// Bytes of WireGuard datagrams sent to the peer.
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}
