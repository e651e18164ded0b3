//! Two kwg devices in network namespaces, driven through the library API.

mod common;

use std::time::Duration;

use common::*;
use kwg_contract::keys::PrivateKey;

#[test]
fn two_kwg_devices_carry_udp_and_tcp() {
    let p = pair();
    assert!(
        p.link.a.probe_until(&p.link.b, "10.70.0.2:7000", 5),
        "UDP through the tunnel"
    );
    assert!(tcp_transfer(
        &p.link.a,
        &p.link.b,
        "10.70.0.2:5001".parse().unwrap(),
        8 << 20
    ));
    let stats = p.a.block_on(p.a.handle.peers());
    assert_eq!(stats.len(), 1);
    assert!(stats[0].last_handshake.is_some());
    assert!(stats[0].tx_bytes > 8 << 20, "tx {}", stats[0].tx_bytes);
    let b_stats = p.b.block_on(p.b.handle.peers());
    assert_eq!(
        b_stats[0].endpoint.map(|e| e.ip().to_string()),
        Some("192.168.77.1".to_owned()),
        "b learned a's endpoint by roaming"
    );
}

#[test]
fn spoofed_inner_source_is_dropped() {
    let p = pair();
    assert!(p.link.a.probe_until(&p.link.b, "10.70.0.2:7000", 5));
    // A second address on a's tunnel that b does not allow for a.
    p.link
        .a
        .ip(&["addr", "add", "10.70.0.9/24", "dev", &p.a.ifname()]);
    let spoofed = || {
        p.link
            .a
            .probe(&p.link.b, Some("10.70.0.9"), "10.70.0.2:7001")
    };
    assert!(!spoofed(), "b accepted a source outside a's AllowedIPs");
    // Once b allows it, the same ping passes (same session).
    let pa = p.a.handle.public_key();
    p.b.block_on(
        p.b.handle
            .upsert_peer(peer(pa, None, &["10.70.0.1/32", "10.70.0.9/32"])),
    )
    .unwrap();
    assert!(spoofed(), "the AllowedIPs update did not take effect");
}

#[test]
fn removing_a_peer_stops_only_its_traffic() {
    // b is a hub with two spokes: a (10.70.0.1) and c (10.70.0.3) in a third namespace.
    let p = pair();
    let c_ns = Netns::new();
    c_ns.ip(&[
        "link",
        "add",
        "vc",
        "type",
        "veth",
        "peer",
        "name",
        "vbc",
        "netns",
        &p.link.b.name,
    ]);
    c_ns.addr_up("vc", "192.168.78.3/24");
    p.link.b.addr_up("vbc", "192.168.78.2/24");
    let kc = PrivateKey::generate();
    let pc = kc.public_key();
    let c = NsDevice::start(&c_ns, kc, 0, None);
    c_ns.addr_up(&c.ifname(), "10.70.0.3/24");
    let pb = p.b.handle.public_key();
    c.block_on(
        c.handle
            .upsert_peer(peer(pb, Some("192.168.78.2:51820"), &["10.70.0.2/32"])),
    )
    .unwrap();
    p.b.block_on(p.b.handle.upsert_peer(peer(pc, None, &["10.70.0.3/32"])))
        .unwrap();
    assert!(p.link.a.probe_until(&p.link.b, "10.70.0.2:7000", 5));
    assert!(c_ns.probe_until(&p.link.b, "10.70.0.2:7001", 5));

    let pa = p.a.handle.public_key();
    p.b.block_on(p.b.handle.remove_peer(&pa)).unwrap();
    assert!(
        !p.link.a.probe(&p.link.b, None, "10.70.0.2:7002"),
        "removed peer still reaches b"
    );
    assert!(
        c_ns.probe(&p.link.b, None, "10.70.0.2:7003"),
        "the other peer lost its traffic"
    );
    assert_eq!(p.b.block_on(p.b.handle.peers()).len(), 1);
    drop(c);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn oversized_and_junk_datagrams_neither_stop_receiving_nor_move_the_endpoint() {
    // GotaTun's receive task panicked on a datagram larger than its buffer (fixed in its 0.7.2):
    // kwg's 64 KiB receive slots hold the largest UDP datagram, and junk is dropped.
    let p = pair();
    assert!(p.link.a.probe_until(&p.link.b, "10.70.0.2:7000", 5));
    let endpoint = p.b.block_on(p.b.handle.peers())[0].endpoint;
    p.link.a.run(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let to = "192.168.77.2:51820";
        s.send_to(&vec![4u8; 65507], to).unwrap();
        for len in [0usize, 1, 4, 16, 32, 148, 1500, 9000] {
            for kind in 0u8..6 {
                let mut d = vec![0xa5u8; len];
                if let Some(b) = d.first_mut() {
                    *b = kind;
                }
                s.send_to(&d, to).unwrap();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        p.link.a.probe_until(&p.link.b, "10.70.0.2:7002", 5),
        "the tunnel stopped after junk"
    );
    let stats = p.b.block_on(p.b.handle.peers());
    assert_eq!(stats[0].endpoint, endpoint, "junk moved the endpoint");
}
