//! The nftables sets that enforce reach (pure): which destinations each peer may reach, as
//! the contents of three sets, and the element commands that move the loaded sets to new
//! contents. The sets (see [`crate::nft`]):
//! - `dest_ns`: destination address → namespace id (one element per ClusterIP and pod IP);
//! - `peer_ns`: peer address . namespace id (one element per peer and granted namespace);
//! - `dns`: the cluster DNS addresses (port 53 for every peer).
//!
//! IPv6 (a dual-stack cluster): `dest_ns6` and `dns6` hold the IPv6 twins of those addresses
//! (a pod's or Service's IPv6 address goes where its IPv4 one goes; an IPv6-only one's where
//! its own key ([`super::inventory::Keys6`]) goes, which stays out of the IPv4 sets), and
//! `peer_ns6` the `peer_ns` grants keyed by the peer's IPv4 address as the last 32 bits of
//! its IPv6 tunnel address carry it (`kwg_contract::GatewayInfo6`).
//!
//! So a packet costs two hash lookups whatever the number of peers, Services or pods, and the
//! sets hold peers × namespaces + destinations elements, not peers × destinations.

use super::grants::{PeerReach, Subject};
use super::inventory::Inventory;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A namespace's number in the `dest_ns` and `peer_ns` sets (the packet mark the lookup sets;
/// never 0, the mark of a packet whose destination is in no namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsId(u32);

impl NsId {
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Stable ids per namespace name: a namespace keeps its id while the gateway runs, so a
/// change elsewhere never rewrites its elements.
#[derive(Debug, Default)]
pub struct NsIds {
    ids: HashMap<String, NsId>,
}

impl NsIds {
    pub fn id(&mut self, namespace: &str) -> NsId {
        let next = NsId(u32::try_from(self.ids.len() + 1).unwrap_or(u32::MAX));
        *self.ids.entry(namespace.to_owned()).or_insert(next)
    }
}

/// The `dest_ns` key of a span: its namespaces joined by commas (a namespace name, a DNS
/// label, holds no comma, so a span never shares an id with a namespace).
fn span_key(namespaces: &BTreeSet<String>) -> String {
    namespaces
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The contents of the three sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sets {
    pub dest_ns: BTreeMap<Ipv4Addr, NsId>,
    pub peer_ns: BTreeSet<(Ipv4Addr, NsId)>,
    pub dns: BTreeSet<Ipv4Addr>,
    /// The IPv6 twins of `dest_ns`'s addresses.
    pub dest_ns6: BTreeMap<Ipv6Addr, NsId>,
    /// The IPv6 twins of `dns`'s addresses.
    pub dns6: BTreeSet<Ipv6Addr>,
}

impl Sets {
    /// Namespaces a peer reaches (for logs and tests).
    pub fn granted(&self, peer: Ipv4Addr) -> impl Iterator<Item = NsId> + '_ {
        self.peer_ns
            .range((peer, NsId(0))..=(peer, NsId(u32::MAX)))
            .map(|(_, n)| *n)
    }
}

/// What the sets must hold, given the cluster, the peers and the owners' grants (`allowed`
/// answers a review; an unanswered one counts as denied until it is answered).
pub fn desired(
    inv: &Inventory,
    peers: &[PeerReach],
    allowed: impl Fn(&Subject, &str) -> bool,
    ids: &mut NsIds,
) -> Sets {
    let mut sets = Sets {
        dns: inv.dns.clone(),
        ..Sets::default()
    };
    // The namespaces claiming each address: an address in two namespaces (a stale pod IP
    // already reused, a pod IP that is also a span's) is a span of them all, so a peer needs
    // reach in each, whichever pod answers.
    let mut claims: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for (ns, addrs) in &inv.by_namespace {
        for a in addrs {
            claims.entry(*a).or_default().insert(ns.clone());
        }
    }
    for (a, span) in &inv.spans {
        claims.entry(*a).or_default().extend(span.iter().cloned());
    }
    let mut spans: BTreeSet<&BTreeSet<String>> = BTreeSet::new();
    for (a, namespaces) in &claims {
        let id = match namespaces.first() {
            Some(ns) if namespaces.len() == 1 => ids.id(ns),
            _ => {
                spans.insert(namespaces);
                ids.id(&span_key(namespaces))
            }
        };
        sets.dest_ns.insert(*a, id);
    }
    for (a6, a4) in &inv.twins6 {
        if let Some(id) = sets.dest_ns.get(a4) {
            sets.dest_ns6.insert(*a6, *id);
        }
        if sets.dns.contains(a4) {
            sets.dns6.insert(*a6);
        }
    }
    // IPv6-only objects' keys are no IPv4 addresses: only their IPv6 twins go in the sets.
    sets.dest_ns.retain(|a, _| !super::inventory::is_key6(*a));
    sets.dns.retain(|a| !super::inventory::is_key6(*a));
    for p in peers {
        let granted: BTreeSet<&str> = p.wanted(inv).filter(|ns| allowed(&p.subject, ns)).collect();
        for ns in &granted {
            sets.peer_ns.insert((p.ip, ids.id(ns)));
        }
        for span in spans
            .iter()
            .filter(|s| s.iter().all(|ns| granted.contains(ns.as_str())))
        {
            sets.peer_ns.insert((p.ip, ids.id(&span_key(span))));
        }
    }
    sets
}

/// Element commands taking the loaded sets from `old` to `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub del_dest: Vec<Ipv4Addr>,
    pub add_dest: Vec<(Ipv4Addr, NsId)>,
    pub del_peer: Vec<(Ipv4Addr, NsId)>,
    pub add_peer: Vec<(Ipv4Addr, NsId)>,
    pub del_dns: Vec<Ipv4Addr>,
    pub add_dns: Vec<Ipv4Addr>,
    pub del_dest6: Vec<Ipv6Addr>,
    pub add_dest6: Vec<(Ipv6Addr, NsId)>,
    pub del_dns6: Vec<Ipv6Addr>,
    pub add_dns6: Vec<Ipv6Addr>,
}

pub fn diff(old: &Sets, new: &Sets) -> Diff {
    let mut d = Diff::default();
    for (a, id) in &old.dest_ns {
        // A changed namespace is a delete then an add (nft keeps a map element's value on add).
        if new.dest_ns.get(a) != Some(id) {
            d.del_dest.push(*a);
        }
    }
    for (a, id) in &new.dest_ns {
        if old.dest_ns.get(a) != Some(id) {
            d.add_dest.push((*a, *id));
        }
    }
    d.del_peer = old.peer_ns.difference(&new.peer_ns).copied().collect();
    d.add_peer = new.peer_ns.difference(&old.peer_ns).copied().collect();
    d.del_dns = old.dns.difference(&new.dns).copied().collect();
    d.add_dns = new.dns.difference(&old.dns).copied().collect();
    d.del_dest6 = changed_keys(&old.dest_ns6, &new.dest_ns6);
    d.add_dest6 = changed_keys(&new.dest_ns6, &old.dest_ns6)
        .into_iter()
        .map(|a| (a, new.dest_ns6[&a]))
        .collect();
    d.del_dns6 = old.dns6.difference(&new.dns6).copied().collect();
    d.add_dns6 = new.dns6.difference(&old.dns6).copied().collect();
    d
}

/// Keys of `a` whose value `b` lacks or holds otherwise (a changed namespace is a delete then
/// an add: nft keeps a map element's value on add).
fn changed_keys<K: Ord + Copy, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> Vec<K> {
    a.iter()
        .filter(|(k, v)| b.get(k) != Some(v))
        .map(|(k, _)| *k)
        .collect()
}

/// Elements per `nft` command line (bounds one line's length; the script is one transaction).
const CHUNK: usize = 2000;

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements added or deleted.
    pub fn len(&self) -> usize {
        self.del_dest.len()
            + self.add_dest.len()
            + self.del_peer.len()
            + self.add_peer.len()
            + self.del_dns.len()
            + self.add_dns.len()
            + self.del_dest6.len()
            + self.add_dest6.len()
            + self.del_dns6.len()
            + self.add_dns6.len()
    }

    /// The `nft -f -` script (one transaction): deletes first, then adds.
    pub fn render(&self, table: &str) -> String {
        let mut s = String::new();
        let dest = |(a, id): &(Ipv4Addr, NsId)| format!("{a} : {}", id.0);
        let pair = |(a, id): &(Ipv4Addr, NsId)| format!("{a} . {}", id.0);
        let addr = |a: &Ipv4Addr| a.to_string();
        lines(&mut s, "delete", table, "dest_ns", &self.del_dest, addr);
        lines(&mut s, "delete", table, "peer_ns", &self.del_peer, pair);
        lines(&mut s, "delete", table, "dns", &self.del_dns, addr);
        lines(&mut s, "add", table, "dest_ns", &self.add_dest, dest);
        lines(&mut s, "add", table, "peer_ns", &self.add_peer, pair);
        lines(&mut s, "add", table, "dns", &self.add_dns, addr);
        // IPv6: the same grants keyed by the peer's IPv4 address as an integer (the last 32
        // bits of its IPv6 tunnel address), the IPv6 twins of the destinations.
        let pair6 = |(a, id): &(Ipv4Addr, NsId)| format!("0x{:08x} . {}", u32::from(*a), id.0);
        let dest6 = |(a, id): &(Ipv6Addr, NsId)| format!("{a} : {}", id.0);
        let addr6 = |a: &Ipv6Addr| a.to_string();
        lines(&mut s, "delete", table, "dest_ns6", &self.del_dest6, addr6);
        lines(&mut s, "delete", table, "peer_ns6", &self.del_peer, pair6);
        lines(&mut s, "delete", table, "dns6", &self.del_dns6, addr6);
        lines(&mut s, "add", table, "dest_ns6", &self.add_dest6, dest6);
        lines(&mut s, "add", table, "peer_ns6", &self.add_peer, pair6);
        lines(&mut s, "add", table, "dns6", &self.add_dns6, addr6);
        s
    }
}

fn lines<T>(
    s: &mut String,
    verb: &str,
    table: &str,
    set: &str,
    items: &[T],
    fmt: impl Fn(&T) -> String,
) {
    for chunk in items.chunks(CHUNK) {
        let list: Vec<String> = chunk.iter().map(&fmt).collect();
        let _ = writeln!(
            s,
            "{verb} element inet {table} {set} {{ {} }}",
            list.join(", ")
        );
    }
}

#[cfg(test)]
mod tests;
