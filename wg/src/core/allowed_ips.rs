//! Cryptokey routing: a longest-prefix-match table from AllowedIPs to a peer index.

use std::cell::Cell;
use std::net::IpAddr;

use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use ipnet::IpNet;

/// AllowedIPs of every peer; one owner per network, as in the kernel (adding a network to a peer
/// takes it away from its previous owner).
///
/// The last lookup is remembered: the packets of one TUN read or one UDP receive are mostly
/// one flow, and the trie walk cost ~4% of the CPU per direction. Any change forgets it.
#[derive(Default)]
pub struct AllowedIps {
    table: IpNetworkTable<u32>,
    last: Cell<Option<(IpAddr, Option<u32>)>>,
}

fn to_network(net: IpNet) -> IpNetwork {
    IpNetwork::new_truncate(net.addr(), net.prefix_len()).expect("ipnet prefix is always valid")
}

impl AllowedIps {
    /// Maps `net` to `idx`; returns the previous owner if it was another peer.
    pub fn insert(&mut self, net: IpNet, idx: u32) -> Option<u32> {
        self.last.set(None);
        self.table
            .insert(to_network(net), idx)
            .filter(|old| *old != idx)
    }

    /// Removes `net` if `idx` owns it.
    pub fn remove(&mut self, net: IpNet, idx: u32) {
        let n = to_network(net);
        self.last.set(None);
        if self.table.exact_match(n) == Some(&idx) {
            self.table.remove(n);
        }
    }

    /// The peer whose AllowedIPs contain `ip` most specifically.
    pub fn lookup(&self, ip: IpAddr) -> Option<u32> {
        if let Some((last, idx)) = self.last.get()
            && last == ip
        {
            return idx;
        }
        let idx = self.table.longest_match(ip).map(|(_, idx)| *idx);
        self.last.set(Some((ip, idx)));
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_owner_moves() {
        let mut t = AllowedIps::default();
        assert_eq!(t.insert("10.0.0.0/8".parse().unwrap(), 1), None);
        assert_eq!(t.insert("10.1.0.0/16".parse().unwrap(), 2), None);
        assert_eq!(t.insert("::/0".parse().unwrap(), 3), None);
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("10.2.2.3".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
        assert_eq!(t.lookup("fd00::1".parse().unwrap()), Some(3));
        assert_eq!(t.insert("10.1.0.0/16".parse().unwrap(), 1), Some(2));
        t.remove("10.1.0.0/16".parse().unwrap(), 2); // not the owner any more: no-op
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(1));
        t.remove("10.0.0.0/8".parse().unwrap(), 1);
        assert_eq!(t.lookup("10.2.2.3".parse().unwrap()), None);
    }

    #[test]
    fn a_remembered_lookup_follows_every_change() {
        let mut t = AllowedIps::default();
        let ip = "10.1.2.3".parse().unwrap();
        assert_eq!(t.lookup(ip), None);
        t.insert("10.0.0.0/8".parse().unwrap(), 1);
        assert_eq!(t.lookup(ip), Some(1));
        assert_eq!(t.lookup(ip), Some(1));
        t.insert("10.1.0.0/16".parse().unwrap(), 2);
        assert_eq!(t.lookup(ip), Some(2));
        t.insert("10.1.0.0/16".parse().unwrap(), 3);
        assert_eq!(t.lookup(ip), Some(3));
        t.remove("10.1.0.0/16".parse().unwrap(), 3);
        assert_eq!(t.lookup(ip), Some(1));
        assert_eq!(t.lookup("10.9.9.9".parse().unwrap()), Some(1));
        t.remove("10.0.0.0/8".parse().unwrap(), 1);
        assert_eq!(t.lookup(ip), None);
    }
}
