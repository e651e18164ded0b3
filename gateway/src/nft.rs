//! The gateway's nftables ruleset, rendered by a pure function and loaded with `nft -f -`.
//!
//! One table `inet kwg` owned by the gateway: peers (traffic entering the TUN) reach only
//! the allowed destinations (service and pod CIDRs plus admin extras), masqueraded to the
//! pod's address, and the gateway's admin port on its tunnel IP. Everything else from the
//! tunnel is dropped: link-local and cloud metadata, the node's other networks, the
//! internet, other peers (unless allowed), and IPv6 unless the tunnel has an IPv6 prefix
//! (a dual-stack cluster): then the same rules hold for IPv6.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Name of the gateway's table (family `inet`).
pub const TABLE: &str = "kwg";
/// The reach-by-RBAC table (family `inet`): created once, then changed element by element.
pub const REACH_TABLE: &str = "kwg_reach";

/// What the ruleset allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub interface: String,
    pub tunnel_cidr: Ipv4Net,
    pub gateway_ip: Ipv4Addr,
    pub admin_port: u16,
    /// Service CIDRs, pod CIDRs and admin extras (IPv6 entries are ignored: the tunnel is IPv4).
    pub allowed: Vec<IpNet>,
    pub allow_peer_to_peer: bool,
    /// Reach by RBAC: traffic from peers to the cluster is judged by the [`REACH_TABLE`]
    /// (only `@allowed`'s link-local and tunnel guards stay here); off: `@allowed` decides.
    pub reach_rbac: bool,
    /// The IPv6 tunnel prefix and the gateway's IPv6 address, when the tunnel carries IPv6
    /// (the IPv6 entries of `allowed` then count, in `@allowed6`).
    pub ipv6: Option<(Ipv6Net, Ipv6Addr)>,
}

/// Where cloud metadata services and other link-local hosts live (RFC 3927).
const LINK_LOCAL: &str = "169.254.0.0/16";
/// IPv6 link-local unicast (RFC 4291 section 2.5.6).
const LINK_LOCAL6: &str = "fe80::/10";

/// The `nft -f -` script that atomically replaces the gateway's table.
pub fn render(p: &Policy) -> String {
    let allowed = merged_v4(&p.allowed);
    let iif = &p.interface;
    let mut s = String::new();
    // Creating then deleting makes the script work whether or not the table exists; the
    // whole file is one transaction.
    let _ = writeln!(s, "table inet {TABLE} {{}}\ndelete table inet {TABLE}");
    let _ = writeln!(s, "table inet {TABLE} {{");
    if allowed.is_empty() {
        let _ = writeln!(s, "\tset allowed {{ type ipv4_addr; flags interval; }}");
    } else {
        let list = allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "\tset allowed {{ type ipv4_addr; flags interval; elements = {{ {list} }} }}"
        );
    }
    if p.ipv6.is_some() {
        let _ = writeln!(
            s,
            "\tset allowed6 {{ type ipv6_addr; flags interval;{} }}",
            elements(&merged_v6(&p.allowed))
        );
    }
    let _ = writeln!(
        s,
        "\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;"
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{iif}\" ct state established,related accept"
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{iif}\" ip daddr {} tcp dport {} accept",
        p.gateway_ip, p.admin_port
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{iif}\" ip daddr {} icmp type echo-request accept",
        p.gateway_ip
    );
    if let Some((_, gw6)) = p.ipv6 {
        let _ = writeln!(
            s,
            "\t\tiifname \"{iif}\" ip6 daddr {gw6} tcp dport {} accept",
            p.admin_port
        );
        let _ = writeln!(
            s,
            "\t\tiifname \"{iif}\" ip6 daddr {gw6} icmpv6 type echo-request accept"
        );
    }
    let _ = writeln!(s, "\t\tiifname \"{iif}\" counter drop\n\t}}");
    let _ = writeln!(
        s,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{iif}\" ip saddr != {} counter drop",
        p.tunnel_cidr
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{iif}\" ip daddr {LINK_LOCAL} counter drop"
    );
    match p.ipv6 {
        Some((tunnel6, _)) => {
            let _ = writeln!(
                s,
                "\t\tiifname \"{iif}\" meta nfproto ipv6 ip6 saddr != {tunnel6} counter drop\n\t\tiifname \"{iif}\" ip6 daddr {LINK_LOCAL6} counter drop"
            );
        }
        None => {
            let _ = writeln!(s, "\t\tiifname \"{iif}\" meta nfproto ipv6 counter drop");
        }
    }
    if p.allow_peer_to_peer {
        let _ = writeln!(
            s,
            "\t\tiifname \"{iif}\" oifname \"{iif}\" ip daddr {} accept",
            p.tunnel_cidr
        );
        if let Some((tunnel6, _)) = p.ipv6 {
            let _ = writeln!(
                s,
                "\t\tiifname \"{iif}\" oifname \"{iif}\" ip6 daddr {tunnel6} accept"
            );
        }
    }
    // Toward peers only replies: nothing in the cluster opens a connection to a laptop.
    let _ = writeln!(
        s,
        "\t\toifname \"{iif}\" ct state established,related accept\n\t\toifname \"{iif}\" counter drop"
    );
    let judge = if p.reach_rbac {
        // The reach table's forward chain decides (a packet must pass both tables).
        ""
    } else {
        " ip daddr @allowed"
    };
    let _ = writeln!(
        s,
        "\t\tiifname \"{iif}\" oifname != \"{iif}\"{judge} accept"
    );
    if p.ipv6.is_some() && !p.reach_rbac {
        let _ = writeln!(
            s,
            "\t\tiifname \"{iif}\" oifname != \"{iif}\" ip6 daddr @allowed6 accept"
        );
    }
    let _ = writeln!(s, "\t\tiifname \"{iif}\" counter drop\n\t}}");
    let _ = writeln!(
        s,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    // Only what the forward chains let through leaves the tunnel: masquerade all of it.
    let _ = writeln!(
        s,
        "\t\tip saddr {} oifname != \"{iif}\" masquerade",
        p.tunnel_cidr
    );
    if let Some((tunnel6, _)) = p.ipv6 {
        let _ = writeln!(s, "\t\tip6 saddr {tunnel6} oifname != \"{iif}\" masquerade");
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The `nft -f -` script that removes the gateway's tables (whether or not they exist).
pub fn render_teardown() -> String {
    format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {REACH_TABLE} {{}}\ndelete table inet {REACH_TABLE}\n"
    )
}

/// Most peers the per-peer drop counters track (one element per tunnel address), and most
/// refused (peer, destination) pairs remembered.
const DROP_COUNTERS: u32 = 65_536;
/// How long a refused destination is remembered after its last packet.
const REFUSED_KEPT_SECS: u64 = 3600;

/// The `nft -f -` script creating the reach table, empty: `dest_ns` maps a ClusterIP or pod
/// IP to its namespace's id (the packet mark), `peer_ns` holds `peer . namespace` grants,
/// `dns` the cluster DNS addresses (port 53 for all), `extra` the admin's `--allow-cidr`.
/// Whatever else a peer sends out of the tunnel is refused at once (a TCP reset, else ICMP
/// administratively prohibited, RFC 1812 5.2.7.1: type 3 code 13), counted in `peer_drops` per
/// peer address, and remembered in `refused` (`peer . destination`, an hour from its last
/// packet) so `/peers` names the last one. The answer is routed like any reply toward the
/// peer: into the tunnel. [`crate::policy::sets::Diff::render`] fills the sets.
///
/// The bookkeeping rules come before the verdict, each on its own: an update of a full
/// dynamic set fails and ends its rule (the kernel's NFT_BREAK), so a peer sweeping 65,536
/// unused addresses would otherwise make the refusing rule stop matching and every packet
/// fall through to the chain's `policy accept`. The last rule refuses unconditionally. (The
/// policy stays accept: the chain also sees the node's own forwarded traffic.)
pub fn render_reach(interface: &str, extra: &[IpNet]) -> String {
    let t = REACH_TABLE;
    let iif = interface;
    let extra6 = elements(&merged_v6(extra));
    let elements = elements(&merged_v4(extra));
    format!(
        "table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{
\tmap dest_ns {{ typeof ip daddr : meta mark; }}
\tset peer_ns {{ typeof ip saddr . meta mark; }}
\tset dns {{ typeof ip daddr; }}
\tset extra {{ type ipv4_addr; flags interval;{elements} }}
\tset peer_drops {{ typeof ip saddr; size {DROP_COUNTERS}; flags dynamic; counter; }}
\tset refused {{ typeof ip saddr . ip daddr; size {DROP_COUNTERS}; flags dynamic, timeout; timeout {REFUSED_KEPT_SECS}s; }}
\tmap dest_ns6 {{ typeof ip6 daddr : meta mark; }}
\tset peer_ns6 {{ typeof @nh,160,32 . meta mark; }}
\tset peer_drops6 {{ typeof @nh,160,32; size {DROP_COUNTERS}; flags dynamic; counter; }}
\tset dns6 {{ typeof ip6 daddr; }}
\tset extra6 {{ type ipv6_addr; flags interval;{extra6} }}
\tchain refuse {{
\t\tmeta l4proto tcp reject with tcp reset
\t\treject with icmpx admin-prohibited
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter + 10; policy accept;
\t\tiifname \"{iif}\" oifname \"{iif}\" accept
\t\tiifname \"{iif}\" meta l4proto {{ tcp, udp }} th dport 53 ip daddr @dns accept
\t\tiifname \"{iif}\" ip daddr @extra accept
\t\tiifname \"{iif}\" meta mark set ip daddr map @dest_ns
\t\tiifname \"{iif}\" ip saddr . meta mark @peer_ns accept
\t\tiifname \"{iif}\" meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr @dns6 accept
\t\tiifname \"{iif}\" ip6 daddr @extra6 accept
\t\tiifname \"{iif}\" meta mark set ip6 daddr map @dest_ns6
\t\tiifname \"{iif}\" meta nfproto ipv6 @nh,160,32 . meta mark @peer_ns6 accept
\t\tiifname \"{iif}\" meta nfproto ipv6 update @peer_drops6 {{ @nh,160,32 }}
\t\tiifname \"{iif}\" update @peer_drops {{ ip saddr }}
\t\tiifname \"{iif}\" update @refused {{ ip saddr . ip daddr }}
\t\tiifname \"{iif}\" counter goto refuse
\t}}
}}
"
    )
}

/// Packets dropped per peer address, from `nft -j list set inet kwg_reach peer_drops` (or
/// `peer_drops6`, whose elements are the peer's IPv4 address as the integer its IPv6 source
/// carries in its last 32 bits).
pub fn parse_drops(json: &str) -> Vec<(Ipv4Addr, u64)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let sets = v["nftables"].as_array().into_iter().flatten();
    sets.filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .filter_map(|e| {
            let val = &e["elem"]["val"];
            let ip = match val.as_u64() {
                Some(n) => Ipv4Addr::from(u32::try_from(n).ok()?),
                None => val.as_str()?.parse().ok()?,
            };
            Some((ip, e["elem"]["counter"]["packets"].as_u64()?))
        })
        .collect()
}

/// The destination each peer address was last refused, from `nft -j list set inet kwg_reach
/// refused`: of a peer's elements, the one whose timeout was refreshed last (most time left).
pub fn parse_last_refused(json: &str) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let sets = v["nftables"].as_array().into_iter().flatten();
    let mut last: std::collections::BTreeMap<Ipv4Addr, (u64, Ipv4Addr)> = Default::default();
    let elems = sets.filter_map(|o| o["set"]["elem"].as_array()).flatten();
    for e in elems {
        let pair = e["elem"]["val"]["concat"].as_array();
        let addr = |i: usize| pair?.get(i)?.as_str()?.parse::<Ipv4Addr>().ok();
        let (Some(peer), Some(dest)) = (addr(0), addr(1)) else {
            continue;
        };
        let left = e["elem"]["expires"].as_u64().unwrap_or(0);
        let slot = last.entry(peer).or_insert((left, dest));
        if left > slot.0 {
            *slot = (left, dest);
        }
    }
    last.into_iter().map(|(p, (_, d))| (p, d)).collect()
}

/// ` elements = { a, b }` of an interval set, or nothing for none.
fn elements<N: std::fmt::Display>(nets: &[N]) -> String {
    if nets.is_empty() {
        return String::new();
    }
    let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
    format!(" elements = {{ {} }}", list.join(", "))
}

/// IPv6 destinations, merged.
fn merged_v6(allowed: &[IpNet]) -> Vec<Ipv6Net> {
    let v6: Vec<Ipv6Net> = allowed
        .iter()
        .filter_map(|n| match n {
            IpNet::V6(n) => Some(n.trunc()),
            IpNet::V4(_) => None,
        })
        .collect();
    Ipv6Net::aggregate(&v6)
}

/// IPv4 destinations, merged (nft interval sets refuse overlaps). The tunnel CIDR and
/// link-local space need no filtering here: the drop rules before the set and the
/// `oifname != <tun>` condition keep them out even when an admin allows 0.0.0.0/0.
fn merged_v4(allowed: &[IpNet]) -> Vec<Ipv4Net> {
    let v4: Vec<Ipv4Net> = allowed
        .iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n.trunc()),
            IpNet::V6(_) => None,
        })
        .collect();
    Ipv4Net::aggregate(&v4)
}

#[cfg(test)]
mod tests;
