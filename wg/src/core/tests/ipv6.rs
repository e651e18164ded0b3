//! IPv6 through two cores as a dual-stack gateway and its peer configure them: the peer's
//! AllowedIPs on the gateway are its IPv4 `/32` and its IPv6 `/128` (its IPv4 address in the
//! last 32 bits of the tunnel's /96, docs/contract.md), the peer routes the cluster's IPv6
//! ranges to the gateway.

use super::*;
use kwg_contract::{TunnelIp, tunnel_ip6_of};
use std::net::{Ipv4Addr, Ipv6Addr};

const PREFIX6: &str = "fd6b:7767::/96";

/// An IPv6 packet (no next header, RFC 8200 section 4.7) from `src` to `dst`.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..].copy_from_slice(payload);
    p
}

fn tun6(v4: Ipv4Addr) -> Ipv6Addr {
    tunnel_ip6_of(PREFIX6.parse().unwrap(), TunnelIp::new(v4))
}

/// A is the laptop at 100.77.0.2, B the gateway at 100.77.0.1.
fn dual_pair() -> Pair {
    let mut p = Pair::new();
    let laptop = Ipv4Addr::new(100, 77, 0, 2);
    let gw6 = tun6(Ipv4Addr::new(100, 77, 0, 1));
    p.a.upsert_peer(peer(
        p.b_key,
        Some(B_ADDR),
        &["100.77.0.0/16", "fd00:10:96::/112", &format!("{gw6}/128")],
    ));
    p.b.upsert_peer(peer(
        p.a_key,
        None,
        &["100.77.0.2/32", &format!("{}/128", tun6(laptop))],
    ));
    p
}

proptest! {
    #[test]
    fn ipv6_from_the_peer_tunnel_address_crosses_intact_and_spoofed_sources_do_not(
        host in 1u32..0xffff,
        payload in proptest::collection::vec(any::<u8>(), 0..1200),
        spoof in any::<u128>(),
    ) {
        let mut p = dual_pair();
        let me = tun6(Ipv4Addr::new(100, 77, 0, 2));
        let dst = Ipv6Addr::from(u128::from("fd00:10:96::".parse::<Ipv6Addr>().unwrap()) + u128::from(host));
        let packet = ipv6(me, dst, &payload);
        let got = p.a_sends(&packet);
        prop_assert_eq!(got, vec![packet]);
        // The reply comes back to the peer's IPv6 tunnel address.
        let reply = ipv6(dst, me, &payload);
        prop_assert_eq!(p.b_sends(&reply), vec![reply]);
        // Any other IPv6 source is not the peer's: dropped at the gateway.
        let other = Ipv6Addr::from(spoof);
        prop_assume!(other != me);
        let before = p.b.drops.spoofed_source;
        prop_assert!(p.a_sends(&ipv6(other, dst, &payload)).is_empty());
        prop_assert_eq!(p.b.drops.spoofed_source, before + 1);
    }

    #[test]
    fn the_ipv6_tunnel_address_carries_the_ipv4_one(v4 in any::<u32>()) {
        let v4 = Ipv4Addr::from(v4);
        let a6 = tun6(v4);
        let prefix: ipnet::Ipv6Net = PREFIX6.parse().unwrap();
        prop_assert!(prefix.contains(&a6));
        prop_assert_eq!(u128::from(a6) as u32, u32::from(v4));
    }
}
