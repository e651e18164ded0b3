//! Userspace mode's set-up, as the session asks for it (the CLI's `userspace` module runs it).

use std::net::{Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use crate::dns::ForwarderConfig;
use crate::gateway::GatewayPeer;

/// What the session asks the driver to start in userspace mode.
#[derive(Debug, Clone)]
pub struct Setup {
    pub address: Ipv4Addr,
    pub gateway_ip: Ipv4Addr,
    pub gateway: GatewayPeer,
    pub subnets: Vec<IpNet>,
    pub dns: Option<ForwarderConfig>,
    pub listen: SocketAddr,
}
