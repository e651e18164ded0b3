//! Tunnel IP allocation: the gateway takes the first host address, every peer one other.
//!
//! Pure: the allocator only knows names and addresses. It is rebuilt after a restart from the
//! `kwg.io/tunnel-ip` annotations (see [`crate::core::Core`]), so peers keep their addresses.

use crate::GatewayError;
use ipnet::Ipv4Net;
use kwg_contract::{PeerName, TunnelIp};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// Assigns addresses of a tunnel CIDR to peers; never one address to two peers.
#[derive(Debug, Clone)]
pub struct Allocator {
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    by_ip: BTreeMap<Ipv4Addr, PeerName>,
    by_peer: HashMap<PeerName, Ipv4Addr>,
    /// Where the search for a free address continues (keeps assignment O(1) on average and
    /// avoids handing a just-freed address straight to the next peer).
    cursor: u32,
    /// The address each peer held last, while nobody else took it: a peer whose lease ended
    /// (a laptop that slept) gets it back when it registers again. At most one entry per
    /// address.
    released: HashMap<PeerName, Ipv4Addr>,
    released_by_ip: BTreeMap<Ipv4Addr, PeerName>,
}

impl Allocator {
    /// An allocator over `cidr`; the gateway takes its first host address.
    pub fn new(cidr: Ipv4Net) -> Result<Allocator, GatewayError> {
        let cidr = cidr.trunc();
        if cidr.prefix_len() > 30 {
            return Err(GatewayError::Config(format!(
                "tunnel CIDR {cidr} is too small: use a prefix of /30 or shorter, like 100.77.0.0/16"
            )));
        }
        let gateway = Ipv4Addr::from(u32::from(cidr.network()) + 1);
        Ok(Allocator {
            cidr,
            gateway,
            by_ip: BTreeMap::new(),
            by_peer: HashMap::new(),
            cursor: u32::from(gateway) + 1,
            released: HashMap::new(),
            released_by_ip: BTreeMap::new(),
        })
    }

    /// The gateway's own tunnel address.
    pub fn gateway_ip(&self) -> TunnelIp {
        TunnelIp::new(self.gateway)
    }

    /// The address a peer holds.
    pub fn get(&self, peer: &PeerName) -> Option<TunnelIp> {
        self.by_peer.get(peer).copied().map(TunnelIp::new)
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip)
            && ip != self.cidr.network()
            && ip != self.cidr.broadcast()
            && ip != self.gateway
    }

    /// Gives `peer` the address `ip` it held before (from its annotation), if that address
    /// is a peer address of the CIDR and nobody else holds it. Returns whether it did.
    pub fn claim(&mut self, peer: &PeerName, ip: TunnelIp) -> bool {
        let ip = ip.addr();
        if self.by_peer.get(peer) == Some(&ip) {
            return true;
        }
        if !self.usable(ip) || self.by_ip.contains_key(&ip) {
            return false;
        }
        self.release(peer);
        self.take(peer, ip);
        true
    }

    /// Gives `ip` (free) to `peer`, forgetting whose it was before.
    fn take(&mut self, peer: &PeerName, ip: Ipv4Addr) {
        if let Some(before) = self.released_by_ip.remove(&ip) {
            self.released.remove(&before);
        }
        if let Some(old) = self.released.remove(peer) {
            self.released_by_ip.remove(&old);
        }
        self.by_ip.insert(ip, peer.clone());
        self.by_peer.insert(peer.clone(), ip);
    }

    /// The peer's address, assigning the next free one when it has none.
    pub fn assign(&mut self, peer: &PeerName) -> Result<TunnelIp, GatewayError> {
        if let Some(ip) = self.get(peer) {
            return Ok(ip);
        }
        if let Some(&ip) = self
            .released
            .get(peer)
            .filter(|ip| !self.by_ip.contains_key(ip))
        {
            self.take(peer, ip);
            return Ok(TunnelIp::new(ip));
        }
        let first = u32::from(self.cidr.network()) + 2; // skip network and gateway
        let last = u32::from(self.cidr.broadcast()) - 1;
        let span = last - first + 1;
        for i in 0..span {
            let candidate = first + (self.cursor.saturating_sub(first) + i) % span;
            let ip = Ipv4Addr::from(candidate);
            if !self.by_ip.contains_key(&ip) {
                self.take(peer, ip);
                self.cursor = candidate + 1;
                return Ok(TunnelIp::new(ip));
            }
        }
        Err(GatewayError::TunnelCidrFull { cidr: self.cidr })
    }

    /// Frees the peer's address.
    pub fn release(&mut self, peer: &PeerName) -> Option<TunnelIp> {
        let ip = self.by_peer.remove(peer)?;
        self.by_ip.remove(&ip);
        if let Some(old) = self.released.insert(peer.clone(), ip) {
            self.released_by_ip.remove(&old);
        }
        self.released_by_ip.insert(ip, peer.clone());
        Some(TunnelIp::new(ip))
    }

    /// Peers holding an address, in no particular order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerName> {
        self.by_peer.keys()
    }
}

#[cfg(test)]
mod tests;
