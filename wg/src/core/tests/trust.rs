//! What an attacker who sees or knows handshakes cannot do: move a peer's endpoint without a
//! packet that authenticated.

use super::*;

const ATTACKER: &str = "198.51.100.66:666";

fn endpoint(core: &Core, key: &PublicKey) -> Option<SocketAddr> {
    core.peer_config(key).unwrap().endpoint
}

/// A's datagrams after it sends `packet` (the first is its initiation while it has no session).
fn sent_by(core: &mut Core, packet: &[u8], now: Instant) -> Vec<Vec<u8>> {
    let mut net = NetBatch::new(1);
    core.handle_tun(packet, now, &mut net);
    net.datagrams().map(|(_, d)| d.to_vec()).collect()
}

#[test]
fn cookie_reply_under_load_does_not_move_the_endpoint() {
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (a_key, b_key) = (ka.public_key(), kb.public_key());
    let mut b = Core::with_handshake_limit(Some(kb), 2);
    b.upsert_peer(peer(a_key, None, &["10.0.0.1/32"]));
    let mut a = Core::new(Some(ka.clone()));
    a.upsert_peer(peer(b_key, Some(B_ADDR), &["10.0.0.2/32"]));
    let mut p = Pair {
        a,
        b,
        a_key,
        b_key,
        now: Instant::now(),
    };
    let ping = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"ping");
    assert_eq!(p.a_sends(&ping), vec![ping.clone()]);
    assert_eq!(endpoint(&p.b, &a_key), Some(A_ADDR.parse().unwrap()));

    // A restarts and initiates again; an attacker on the path sends that initiation on from
    // its own address. A's first initiation and a stranger's have brought B's limiter (two
    // handshakes a period, each counted twice) to its threshold between the core's check and
    // boringtun's: the core lets the initiation through and `Tunn` answers with a cookie reply.
    let mut a2 = Core::new(Some(ka));
    a2.upsert_peer(peer(b_key, Some(B_ADDR), &["10.0.0.2/32"]));
    let init = sent_by(&mut a2, &ping, p.now).remove(0);
    let attacker: SocketAddr = ATTACKER.parse().unwrap();
    let (replies, _) = testing::receive(
        &mut p.b,
        attacker,
        &testing::initiation(&PrivateKey::generate(), &b_key),
        p.now,
    );
    assert!(replies.is_empty(), "{replies:?}");
    let (replies, tun) = testing::receive(&mut p.b, attacker, &init, p.now);
    assert!(tun.is_empty());
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!((replies[0][0], replies[0].len()), (COOKIE_REPLY, 64));
    assert_eq!(p.b.drops.cookies_sent, 1);
    assert_eq!(
        endpoint(&p.b, &a_key),
        Some(A_ADDR.parse().unwrap()),
        "a cookie reply moved the endpoint to the attacker"
    );

    // The cookie, sent on to A from the attacker's address, is accepted but moves nothing.
    let (replies, _) = testing::receive(&mut a2, attacker, &replies[0], p.now);
    assert!(replies.is_empty());
    assert_eq!(a2.drops.invalid, 0, "A accepts the cookie");
    assert_eq!(endpoint(&a2, &b_key), Some(B_ADDR.parse().unwrap()));
}

#[test]
fn replayed_initiation_is_refused_after_the_session_restarts() {
    let mut p = Pair::new();
    let mut a = Core::new(None);
    std::mem::swap(&mut a, &mut p.a);
    let init = sent_by(&mut a, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hi"), p.now).remove(0);
    p.a = a;
    let (replies, _) = testing::receive(&mut p.b, A_ADDR.parse().unwrap(), &init, p.now);
    assert_eq!(
        replies.first().map(|r| r[0]),
        Some(2),
        "a handshake response"
    );

    // A new preshared key drops B's `Tunn` (and with it boringtun's own replay memory).
    let mut cfg = p.b.peer_config(&p.a_key).unwrap().clone();
    cfg.preshared_key = Some(kwg_contract::keys::PresharedKey::generate());
    p.b.upsert_peer(cfg);
    let attacker: SocketAddr = ATTACKER.parse().unwrap();
    let (replies, _) = testing::receive(&mut p.b, attacker, &init, p.now);
    assert!(replies.is_empty(), "a replayed initiation was answered");
    assert_eq!(p.b.drops.replayed_initiations, 1);
    assert_eq!(endpoint(&p.b, &p.a_key), Some(A_ADDR.parse().unwrap()));
}

#[test]
fn forged_initiation_naming_a_peer_moves_nothing() {
    // Knowing both public keys is enough to make B's core open the static key, not the
    // timestamp: the initiation is refused before boringtun sees it.
    let mut p = Pair::new();
    p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
    let mut a = Core::new(None);
    std::mem::swap(&mut a, &mut p.a);
    let a_priv = a.private_key().unwrap().clone();
    p.a = a;
    let mut a2 = Core::new(Some(a_priv));
    a2.upsert_peer(peer(p.b_key, Some(B_ADDR), &["10.0.0.2/32"]));
    let mut init = sent_by(&mut a2, b"", p.now);
    if init.is_empty() {
        init = sent_by(&mut a2, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), p.now);
    }
    let mut forged = init.remove(0);
    forged[100] ^= 1; // inside the encrypted timestamp
    let before = p.b.drops.invalid;
    let (replies, _) = testing::receive(&mut p.b, ATTACKER.parse().unwrap(), &forged, p.now);
    assert!(replies.is_empty());
    assert_eq!(p.b.drops.invalid, before + 1);
    assert_eq!(endpoint(&p.b, &p.a_key), Some(A_ADDR.parse().unwrap()));
}
