use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn name(i: usize) -> PeerName {
    format!("peer-{i}").parse().unwrap()
}

fn alloc(cidr: &str) -> Allocator {
    Allocator::new(cidr.parse().unwrap()).unwrap()
}

#[test]
fn gateway_takes_first_host() {
    let mut a = alloc("100.77.0.0/16");
    assert_eq!(a.gateway_ip().to_string(), "100.77.0.1");
    assert_eq!(a.assign(&name(0)).unwrap().to_string(), "100.77.0.2");
    assert_eq!(
        a.assign(&name(0)).unwrap().to_string(),
        "100.77.0.2",
        "stable"
    );
    assert_eq!(a.assign(&name(1)).unwrap().to_string(), "100.77.0.3");
}

#[test]
fn fifty_peers_get_fifty_addresses() {
    let mut a = alloc("100.77.0.0/16");
    let ips: HashSet<_> = (0..50).map(|i| a.assign(&name(i)).unwrap()).collect();
    assert_eq!(ips.len(), 50);
    assert!(!ips.contains(&a.gateway_ip()));
}

#[test]
fn small_cidr_fills_up_and_frees() {
    let mut a = alloc("10.0.0.0/29"); // hosts .1-.6, gateway .1: 5 peers
    for i in 0..5 {
        a.assign(&name(i)).unwrap();
    }
    let err = a.assign(&name(5)).unwrap_err();
    assert!(err.to_string().contains("full"), "{err}");
    let freed = a.release(&name(2)).unwrap();
    assert_eq!(a.assign(&name(5)).unwrap(), freed);
    assert!(Allocator::new("10.0.0.0/31".parse().unwrap()).is_err());
}

#[test]
fn claims_respect_owners_and_reserved() {
    let mut a = alloc("100.77.0.0/24");
    let ip = |s: &str| s.parse::<TunnelIp>().unwrap();
    assert!(a.claim(&name(0), ip("100.77.0.9")));
    assert!(!a.claim(&name(1), ip("100.77.0.9")), "taken");
    assert!(!a.claim(&name(1), ip("100.77.0.1")), "gateway");
    assert!(!a.claim(&name(1), ip("100.77.0.0")), "network");
    assert!(!a.claim(&name(1), ip("100.77.0.255")), "broadcast");
    assert!(!a.claim(&name(1), ip("10.0.0.5")), "outside");
    assert!(a.claim(&name(0), ip("100.77.0.9")), "idempotent");
    assert!(a.claim(&name(0), ip("100.77.0.10")), "move");
    assert!(a.claim(&name(1), ip("100.77.0.9")), "old address freed");
}

#[test]
fn a_peer_registering_again_gets_its_old_address_while_nobody_took_it() {
    let mut a = alloc("10.0.0.0/29"); // peers .2-.6
    let first = a.assign(&name(0)).unwrap();
    a.assign(&name(1)).unwrap();
    a.release(&name(0));
    a.assign(&name(2)).unwrap();
    assert_eq!(a.assign(&name(0)).unwrap(), first, "slept, came back");
    // Taken by another peer meanwhile: the next free one.
    a.release(&name(0));
    for i in 3..6 {
        a.assign(&name(i)).unwrap();
    }
    a.release(&name(5));
    let other = a.assign(&name(6)).unwrap();
    assert_eq!(other, first, "the only free address");
    a.release(&name(4));
    assert_ne!(a.assign(&name(0)).unwrap(), first);
    assert!(a.released.len() <= 5 && a.released.len() == a.released_by_ip.len());
}

proptest! {
    /// Any sequence of assign/claim/release keeps addresses unique and usable.
    #[test]
    fn never_two_peers_on_one_ip(ops in proptest::collection::vec((0u8..3, 0usize..20, 0u32..16), 0..200)) {
        let mut a = alloc("10.1.0.0/28");
        for (op, peer, host) in ops {
            let peer = name(peer);
            match op {
                0 => { let _ = a.assign(&peer); }
                1 => { a.claim(&peer, TunnelIp::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + host))); }
                _ => { a.release(&peer); }
            }
            let ips: Vec<_> = a.peers().map(|p| a.get(p).unwrap()).collect();
            let unique: HashSet<_> = ips.iter().collect();
            prop_assert_eq!(unique.len(), ips.len());
            for ip in ips {
                prop_assert!(a.usable(ip.addr()));
            }
        }
    }
}
