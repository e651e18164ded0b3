//! Who is asking the admin server, and what of `/peers` each caller sees (pure): a caller is
//! told apart by its connection's addresses (loopback: the gateway pod or a port-forward; a
//! tunnel address to the gateway's tunnel address: that peer; anyone else), and a peer sees
//! its own entry in full, others' only by name, address and handshake time.

use crate::core::ActivePeer;
use crate::policy::view::{Counted, ReachView};
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use ipnet::Ipv4Net;
use kwg_contract::GatewayPeer;
use kwg_wg::device::PeerStats;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::TcpListener;

/// Both ends of an admin connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Connected<IncomingStream<'_, TcpListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Conn {
        let remote = *stream.remote_addr();
        Conn {
            local: stream.io().local_addr().unwrap_or(remote),
            remote,
        }
    }
}

/// Who is asking, by the connection's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// From loopback: a process in the gateway's pod or a kwg user's port-forward.
    Local,
    /// Through the tunnel, from this peer address.
    Peer(Ipv4Addr),
    /// Anyone else (pods, nodes, the kubelet).
    Other,
}

impl Caller {
    pub fn of(conn: Conn, tunnel_cidr: Ipv4Net) -> Caller {
        let (local, remote) = (
            conn.local.ip().to_canonical(),
            conn.remote.ip().to_canonical(),
        );
        match (local, remote) {
            (_, r) if r.is_loopback() => Caller::Local,
            (IpAddr::V4(l), IpAddr::V4(r))
                if tunnel_cidr.contains(&l) && tunnel_cidr.contains(&r) =>
            {
                Caller::Peer(r)
            }
            _ => Caller::Other,
        }
    }
}

/// The active peers a caller may ask [`super::OWN_PATH`] about: a peer's own, by its tunnel address
/// (`None`: not a peer).
pub fn own_peers(peers: &[ActivePeer], caller: Caller) -> Option<Vec<ActivePeer>> {
    let Caller::Peer(ip) = caller else {
        return None;
    };
    Some(
        peers
            .iter()
            .filter(|p| p.ip.addr() == ip)
            .cloned()
            .collect(),
    )
}

/// Joins the active peers with the device's statistics and their reach and drops (the
/// `/peers` JSON). A peer caller gets other peers without their public endpoint, hostname
/// and reach.
pub fn gateway_peers(
    peers: &[ActivePeer],
    stats: &[PeerStats],
    (reach, counted): (&ReachView, Counted<'_>),
    caller: Caller,
) -> Vec<GatewayPeer> {
    let by_key: HashMap<_, _> = stats.iter().map(|s| (s.public_key, s)).collect();
    peers
        .iter()
        .map(|p| {
            let st = by_key.get(&p.spec.public_key);
            let full = match caller {
                Caller::Local => false,
                Caller::Peer(ip) => ip == p.ip.addr(),
                Caller::Other => false,
            };
            GatewayPeer {
                name: p.spec.name.clone(),
                public_key: p.spec.public_key,
                tunnel_ip: Some(p.ip),
                owner: p.spec.owner.clone(),
                hostname: full.then(|| p.spec.hostname.clone()),
                namespaces: p.spec.namespaces.clone(),
                lease_expires: p.spec.lease_expires,
                endpoint: st.and_then(|s| s.endpoint).filter(|_| full),
                last_handshake: st.and_then(|s| s.last_handshake).map(Into::into),
                rx_bytes: st.map_or(0, |s| s.rx_bytes),
                tx_bytes: st.map_or(0, |s| s.tx_bytes),
                reach: reach
                    .of(p.ip.addr(), &p.spec.owner, counted)
                    .filter(|_| full),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
