//! A client's session dies with the replica holding it: the packets sent into it go out
//! again once a handshake with another replica (same key) completes.

use super::*;

fn failover(replay: bool) -> Vec<Vec<u8>> {
    let kb = PrivateKey::generate();
    let mut p = Pair::with_keys(PrivateKey::generate(), kb.clone());
    p.a.set_replay(&p.b_key, replay);
    let ping = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"ping");
    assert_eq!(p.a_sends(&ping), vec![ping.clone()]);
    // The replica holding the session goes; the Service sends A's packets to another one.
    p.b = Core::new(Some(kb));
    p.b.upsert_peer(peer(p.a_key, None, &["10.0.0.1/32"]));
    p.now += Duration::from_millis(50);
    let stall = p.now;
    p.now += Duration::from_millis(50);
    let syn = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"syn");
    assert!(
        p.a_sends(&syn).is_empty(),
        "the new replica cannot read the old session"
    );
    p.now += Duration::from_millis(500);
    let mut net = NetBatch::new(4);
    let b_key = p.b_key;
    assert!(p.a.initiate_replaying(&b_key, B_ADDR.parse().unwrap(), stall, p.now, &mut net));
    p.deliver(true, net).1
}

#[test]
fn packets_sent_into_a_dead_session_arrive_after_the_new_handshake() {
    let syn = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"syn");
    assert_eq!(failover(true), vec![syn]);
    // Without replay only the handshake's keepalive goes.
    assert!(failover(false).is_empty());
}
