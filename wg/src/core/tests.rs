//! Two cores talking in memory: handshakes, data, cryptokey routing, timers on a fake clock.

use super::*;
use ipnet::IpNet;
use proptest::prelude::*;
use std::time::SystemTime;

mod ipv6;
mod logs;
mod offload;
mod replay;
mod trust;

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";

pub(crate) use super::testing::ipv4;

struct Pair {
    a: Core,
    b: Core,
    a_key: PublicKey,
    b_key: PublicKey,
    now: Instant,
}

fn peer(key: PublicKey, endpoint: Option<&str>, ips: &[&str]) -> PeerConfig {
    PeerConfig {
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        allowed_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        ..PeerConfig::new(key)
    }
}

impl Pair {
    fn new() -> Pair {
        Pair::with_keys(PrivateKey::generate(), PrivateKey::generate())
    }

    fn with_keys(ka: PrivateKey, kb: PrivateKey) -> Pair {
        let (a_key, b_key) = (ka.public_key(), kb.public_key());
        let mut a = Core::new(Some(ka));
        let mut b = Core::new(Some(kb));
        a.upsert_peer(peer(b_key, Some(B_ADDR), &["10.0.0.2/32"]));
        b.upsert_peer(peer(a_key, None, &["10.0.0.1/32"]));
        Pair {
            a,
            b,
            a_key,
            b_key,
            now: Instant::now(),
        }
    }

    /// Delivers every datagram in `out` from `from_a`'s side to the other core, and their
    /// replies back, until quiet. Returns the IP packets each TUN received.
    fn deliver(&mut self, from_a: bool, first: NetBatch) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut tun_a = Vec::new();
        let mut tun_b = Vec::new();
        let mut pending: Vec<(bool, SocketAddr, Vec<u8>)> = first
            .datagrams()
            .map(|(_, d)| (from_a, src_of(from_a), d.to_vec()))
            .collect();
        let mut rounds = 0;
        while let Some((sender_is_a, from, dgram)) = pending.pop() {
            rounds += 1;
            assert!(rounds < 100, "ping-pong does not settle");
            let (rx, tuns) = if sender_is_a {
                (&mut self.b, &mut tun_b)
            } else {
                (&mut self.a, &mut tun_a)
            };
            let (replies, packets) = super::testing::receive(rx, from, &dgram, self.now);
            tuns.extend(packets);
            for d in replies {
                pending.push((!sender_is_a, src_of(!sender_is_a), d));
            }
        }
        (tun_a, tun_b)
    }

    fn a_sends(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut net = NetBatch::new(64);
        self.a.handle_tun(packet, self.now, &mut net);
        self.deliver(true, net).1
    }

    fn b_sends(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut net = NetBatch::new(64);
        self.b.handle_tun(packet, self.now, &mut net);
        self.deliver(false, net).0
    }
}

fn src_of(a: bool) -> SocketAddr {
    (if a { A_ADDR } else { B_ADDR }).parse().unwrap()
}

#[test]
fn handshake_then_data_both_ways() {
    let mut p = Pair::new();
    let ping = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"ping");
    // The first packet waits in A's queue during the handshake and is flushed after it.
    assert_eq!(p.a_sends(&ping), vec![ping.clone()]);
    let pong = ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"pong");
    assert_eq!(p.b_sends(&pong), vec![pong.clone()]);
    // B learned A's endpoint from the handshake (roaming) and both report a handshake.
    let sb =
        p.b.peer_stats(&p.a_key, Instant::now(), SystemTime::now())
            .unwrap();
    assert_eq!(sb.endpoint, Some(A_ADDR.parse().unwrap()));
    assert!(sb.last_handshake.is_some());
    assert!(sb.rx_bytes > 0 && sb.tx_bytes > 0);
    let sa =
        p.a.peer_stats(&p.b_key, Instant::now(), SystemTime::now())
            .unwrap();
    assert!(sa.last_handshake.is_some());
}

#[test]
fn each_completed_handshake_gets_a_new_serial() {
    let mut p = Pair::new();
    assert_eq!(p.a.handshake_serial(&p.b_key), Some(0));
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"one"));
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"two"));
    // One handshake carried both packets; data is not a handshake.
    assert_eq!(p.a.handshake_serial(&p.b_key), Some(1));
    assert_eq!(p.b.handshake_serial(&p.a_key), Some(1));
    let ep = B_ADDR.parse().unwrap();
    let mut net = NetBatch::new(1);
    assert!(p.a.initiate_to(&p.b_key, ep, p.now, &mut net));
    p.deliver(true, net);
    assert_eq!(p.a.handshake_serial(&p.b_key), Some(2));
    // Removed and added again: 0 until its first handshake, then a number not seen before.
    let cfg = p.a.peer_config(&p.b_key).unwrap().clone();
    p.a.remove_peer(&p.b_key);
    p.a.upsert_peer(cfg);
    assert_eq!(p.a.handshake_serial(&p.b_key), Some(0));
    let mut net = NetBatch::new(1);
    assert!(p.a.initiate_to(&p.b_key, ep, p.now, &mut net));
    p.deliver(true, net);
    assert_eq!(p.a.handshake_serial(&p.b_key), Some(3));
    assert_eq!(
        p.a.handshake_serial(&PrivateKey::generate().public_key()),
        None
    );
}

#[test]
fn packets_waiting_for_a_handshake_are_counted_as_held() {
    let mut p = Pair::new();
    let packet = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"ping");
    // No session: the first packet starts a handshake (148 bytes out), the next ones wait
    // behind it and move no byte counter; all three are held.
    for _ in 0..3 {
        let mut lost = NetBatch::new(1);
        p.a.handle_tun(&packet, p.now, &mut lost);
    }
    let tx = |p: &Pair| {
        p.a.peer_stats(&p.b_key, p.now, SystemTime::now())
            .unwrap()
            .tx_bytes
    };
    assert_eq!(tx(&p), HANDSHAKE_INIT_LEN as u64);
    assert_eq!(p.a.held_packets(&p.b_key), Some(3));
    // A keepalive is not a packet of the user's.
    let mut cfg = p.a.peer_config(&p.b_key).unwrap().clone();
    cfg.persistent_keepalive = Some(25);
    p.a.upsert_peer(cfg);
    let mut lost = NetBatch::new(1);
    p.a.tick(p.now + Duration::from_secs(30), &mut lost);
    assert_eq!(p.a.held_packets(&p.b_key), Some(3));
    // With a session packets go out at once and are not held.
    let mut net = NetBatch::new(1);
    assert!(p.a.initiate_to(&p.b_key, B_ADDR.parse().unwrap(), p.now, &mut net));
    p.deliver(true, net);
    let before = tx(&p);
    assert_eq!(p.a_sends(&packet), [packet.clone()]);
    assert!(tx(&p) > before);
    assert_eq!(p.a.held_packets(&p.b_key), Some(3));
    assert_eq!(p.a.held_packets(&PrivateKey::generate().public_key()), None);
}

#[test]
fn spoofed_inner_source_is_dropped() {
    let mut p = Pair::new();
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
    let spoofed = ipv4([10, 9, 9, 9], [10, 0, 0, 2], b"spoofed");
    assert!(p.a_sends(&spoofed).is_empty());
    assert_eq!(p.b.drops.spoofed_source, 1);
}

#[test]
fn allowed_ips_update_keeps_the_session() {
    let mut p = Pair::new();
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
    let from_new = ipv4([10, 0, 1, 5], [10, 0, 0, 2], b"x");
    assert!(p.a_sends(&from_new).is_empty());
    p.b.upsert_peer(peer(p.a_key, None, &["10.0.0.1/32", "10.0.1.0/24"]));
    // No handshake in between: exactly one data datagram crosses and arrives.
    let mut net = NetBatch::new(64);
    p.a.handle_tun(&from_new, p.now, &mut net);
    let d: Vec<_> = net.datagrams().map(|(_, d)| d.to_vec()).collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0][0], 4, "a data message, not a new handshake");
    assert_eq!(p.deliver(true, net).1, vec![from_new]);
    // The endpoint B learned survives an update without one.
    assert_eq!(
        p.b.peer_config(&p.a_key).unwrap().endpoint,
        Some(A_ADDR.parse().unwrap())
    );
}

#[test]
fn removed_peer_gets_no_traffic() {
    let mut p = Pair::new();
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
    assert!(p.b.remove_peer(&p.a_key));
    assert!(
        p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"again"))
            .is_empty()
    );
    let mut net = NetBatch::new(1);
    p.b.handle_tun(&ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"x"), p.now, &mut net);
    assert!(net.is_empty());
    assert_eq!(p.b.drops.no_route, 1);
}

#[test]
fn roaming_follows_the_latest_authenticated_source() {
    let mut p = Pair::new();
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
    let mut net = NetBatch::new(1);
    p.a.handle_tun(
        &ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"moved"),
        p.now,
        &mut net,
    );
    let roamed: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
    let mut tun = TunBatch::new(0);
    for (_, d) in net.datagrams() {
        p.b.handle_udp(roamed, d, p.now, &mut NetBatch::new(1), &mut tun);
    }
    assert_eq!(tun.counts(), (1, 1));
    assert_eq!(p.b.peer_config(&p.a_key).unwrap().endpoint, Some(roamed));
    // A forged datagram from elsewhere does not move the endpoint.
    let forged: SocketAddr = "198.51.100.1:1".parse().unwrap();
    let mut junk = vec![4u8, 0, 0, 0];
    junk.extend_from_slice(&[0; 60]);
    p.b.handle_udp(forged, &junk, p.now, &mut NetBatch::new(1), &mut tun);
    assert_eq!(p.b.peer_config(&p.a_key).unwrap().endpoint, Some(roamed));
}

#[test]
fn persistent_keepalive_on_the_fake_clock() {
    let mut p = Pair::new();
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
    let mut cfg = p.a.peer_config(&p.b_key).unwrap().clone();
    cfg.persistent_keepalive = Some(25);
    p.a.upsert_peer(cfg);
    let mut net = NetBatch::new(1);
    p.a.tick(p.now + Duration::from_secs(10), &mut net);
    assert!(net.is_empty(), "keepalive before its interval");
    p.a.tick(p.now + Duration::from_secs(26), &mut net);
    let d: Vec<_> = net.datagrams().map(|(_, d)| d.len()).collect();
    assert_eq!(d, vec![32], "one empty data message");
    let rx_before =
        p.b.peer_stats(&p.a_key, Instant::now(), SystemTime::now())
            .unwrap()
            .rx_bytes;
    assert!(p.deliver(true, net).1.is_empty());
    let rx_after =
        p.b.peer_stats(&p.a_key, Instant::now(), SystemTime::now())
            .unwrap()
            .rx_bytes;
    assert_eq!(rx_after, rx_before + 32);
}

#[test]
fn handshake_flood_gets_cookie_replies() {
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (a_key, b_key) = (ka.public_key(), kb.public_key());
    let mut a = Core::new(Some(ka));
    let mut b = Core::with_handshake_limit(Some(kb), 0);
    a.upsert_peer(peer(b_key, Some(B_ADDR), &["10.0.0.2/32"]));
    b.upsert_peer(peer(a_key, None, &["10.0.0.1/32"]));
    let mut net = NetBatch::new(1);
    a.handle_tun(
        &ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"),
        Instant::now(),
        &mut net,
    );
    let init: Vec<u8> = net.datagrams().next().unwrap().1.to_vec();
    let mut reply = NetBatch::new(1);
    let mut tun = TunBatch::new(0);
    b.handle_udp(
        A_ADDR.parse().unwrap(),
        &init,
        Instant::now(),
        &mut reply,
        &mut tun,
    );
    let cookie: Vec<u8> = reply.datagrams().next().unwrap().1.to_vec();
    assert_eq!((cookie[0], cookie.len()), (3, 64), "a cookie reply");
    assert_eq!(b.drops.cookies_sent, 1);
    assert!(
        b.peer_stats(&a_key, Instant::now(), SystemTime::now())
            .unwrap()
            .last_handshake
            .is_none()
    );
    a.handle_udp(
        B_ADDR.parse().unwrap(),
        &cookie,
        Instant::now(),
        &mut NetBatch::new(1),
        &mut tun,
    );
    assert_eq!(a.drops.invalid, 0, "A accepts the cookie");
}

#[test]
fn ten_thousand_peers_fit_in_memory_budget() {
    // An idle peer holds no Tunn; one with sessions adds boringtun's Tunn (8 session slots).
    let idle = std::mem::size_of::<Peer>();
    assert!(idle < 512, "idle peer state is {idle} bytes");
    let active = idle + std::mem::size_of::<Tunn>();
    assert!(active < 12 * 1024, "active peer state is {active} bytes");
    let mut core = Core::new(Some(PrivateKey::generate()));
    for i in 0..10_000u32 {
        let mut cfg = PeerConfig::new(PrivateKey::generate().public_key());
        cfg.allowed_ips =
            vec![IpNet::new(IpAddr::from((0x6400_0000u32 + i).to_be_bytes()), 32).unwrap()];
        core.upsert_peer(cfg);
    }
    assert_eq!(core.peer_count(), 10_000);
}

proptest! {
    #[test]
    fn garbage_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), kind in 0u8..6) {
        let mut p = Pair::new();
        p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
        let mut d = data;
        if d.len() >= 4 { d[0] = kind; d[1] = 0; d[2] = 0; d[3] = 0; }
        let mut tun = TunBatch::new(0);
        p.b.handle_udp(A_ADDR.parse().unwrap(), &d, p.now, &mut NetBatch::new(64), &mut tun);
        p.b.handle_tun(&d, p.now, &mut NetBatch::new(64));
        prop_assert!(tun.is_empty());
    }
}

#[test]
fn virtual_subnets_translate_what_comes_out_of_the_tunnel_after_the_cryptokey_check() {
    use crate::translate::{PrefixMap, Translator};
    let mut p = Pair::new();
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
    let map = PrefixMap {
        real: "10.0.0.2/32".parse().unwrap(),
        mapped: "10.224.0.2/32".parse().unwrap(),
    };
    p.a.set_translation(Some(Translator::new(&[map]).unwrap()));
    // B's packet passes A's AllowedIPs with its real source, then A's TUN sees the mapped one.
    let got = p.b_sends(&ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"pong"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][12..20], [10, 224, 0, 2, 10, 0, 0, 1]);
    assert_eq!(&got[0][28..], b"pong");
    // A source outside B's AllowedIPs is still dropped, mapped or not.
    assert!(
        p.b_sends(&ipv4([10, 224, 0, 2], [10, 0, 0, 1], b"x"))
            .is_empty()
    );
    assert_eq!(p.a.drops.spoofed_source, 1);
    // Off again: as it came.
    p.a.set_translation(None);
    let pong = ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"pong");
    assert_eq!(p.b_sends(&pong), vec![pong]);
}
