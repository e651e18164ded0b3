//! What a peer is told of its own reach (pure): the namespaces enforced for it, its refused
//! packets, and the destination last refused with the RoleBinding that would allow it.

use kwg_contract::{ReachStatus, RefusedDestination};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// What the gateway forwards each peer to, as enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachView {
    /// `false` with `--reach=all` (every peer reaches everything).
    pub enforced: bool,
    /// Reachable namespaces per peer address; a peer not here is not decided yet.
    pub by_peer: HashMap<Ipv4Addr, Vec<String>>,
    /// The namespaces each pod IP and ClusterIP belongs to ([`super::inventory::address_namespaces`]),
    /// to say what a refused destination was.
    pub namespaces_of: Arc<HashMap<Ipv4Addr, Vec<String>>>,
}

impl ReachView {
    /// `--reach=all`.
    pub fn open() -> ReachView {
        ReachView {
            enforced: false,
            by_peer: HashMap::new(),
            namespaces_of: Arc::default(),
        }
    }

    /// What `/peers` shows a peer of `owner` about its own reach (`None`: not decided yet),
    /// with its drops and the destination last refused to it (`refused`: per peer address).
    pub fn of(&self, peer: Ipv4Addr, owner: &str, counted: Counted<'_>) -> Option<ReachStatus> {
        let namespaces = match self.enforced {
            true => self.by_peer.get(&peer)?.clone(),
            false => Vec::new(),
        };
        let last_refused = counted
            .refused
            .iter()
            .find(|r| r.0 == peer)
            .map(|&(_, dest)| {
                let of = self.namespaces_of.get(&dest).cloned().unwrap_or_default();
                RefusedDestination {
                    address: dest,
                    allow: of
                        .iter()
                        .filter(|ns| !namespaces.contains(ns))
                        .map(|ns| super::grants::allow_command(owner, ns))
                        .collect(),
                    namespaces: of,
                }
            });
        Some(ReachStatus {
            enforced: self.enforced,
            namespaces,
            dropped_packets: counted
                .drops
                .iter()
                .find(|d| d.0 == peer)
                .map_or(0, |d| d.1),
            last_refused,
        })
    }
}

/// What the reach table counted per peer address: packets refused (summed over the replicas
/// that answered) and the destination last refused (this replica's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counted<'a> {
    pub drops: &'a [(Ipv4Addr, u64)],
    pub refused: &'a [(Ipv4Addr, Ipv4Addr)],
}
