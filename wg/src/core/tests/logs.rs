//! What a user debugging a tunnel reads: events inside the peer's span, drops summarised.

use base64::Engine;

use super::*;
use crate::core::testing::capture;

fn only<'a>(lines: &'a [String], needle: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(found.len(), 1, "one line with {needle:?} in {lines:#?}");
    found[0]
}

#[test]
fn handshake_is_logged_in_the_peer_span_without_keys() {
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let secrets: Vec<String> = [&ka, &kb]
        .iter()
        .flat_map(|k| {
            [
                k.to_string(),
                kwg_contract::keys::hex32(k.as_bytes()),
                base64::engine::general_purpose::STANDARD.encode(&k.as_bytes()[..12]),
            ]
        })
        .collect();
    let (a_short, b_short) = (ka.public_key().short(), kb.public_key().short());
    let lines = capture(|| {
        let mut p = Pair::with_keys(ka, kb);
        p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
        let spoofed = ipv4([10, 9, 9, 9], [10, 0, 0, 2], b"spoofed");
        p.a_sends(&spoofed);
        p.a_sends(&spoofed);
        p.b.tick(p.now, &mut NetBatch::new(4));
        p.b.remove_peer(&p.a_key);
    });

    // A initiated towards B; B answered A. Each line sits in the span of the peer it is about.
    let initiator = only(&lines, "role=initiator");
    assert!(initiator.contains("handshake completed"), "{initiator}");
    assert!(
        initiator.contains(&format!("peer{{peer={b_short}}}")),
        "{initiator}"
    );
    let responder = only(&lines, "role=responder");
    assert!(
        responder.contains(&format!("peer{{peer={a_short}}}")),
        "{responder}"
    );
    let learned = only(&lines, "endpoint learned");
    assert!(learned.contains(A_ADDR), "{learned}");
    // Two spoofed packets, one summary line at the next tick.
    let spoofed = only(&lines, "inner source is outside");
    assert!(spoofed.contains("count=2"), "{spoofed}");
    assert!(
        spoofed.contains(&format!("peer{{peer={a_short}}}")),
        "{spoofed}"
    );
    assert_eq!(lines.iter().filter(|l| l.contains("peer added")).count(), 2);
    only(&lines, "peer removed");
    for secret in &secrets {
        for line in &lines {
            assert!(!line.contains(secret.as_str()), "private key in {line}");
        }
    }
}

#[test]
fn roaming_logs_old_and_new_endpoints() {
    let lines = capture(|| {
        let mut p = Pair::new();
        p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
        let mut net = NetBatch::new(1);
        p.a.handle_tun(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), p.now, &mut net);
        let roamed: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        for (_, d) in net.datagrams() {
            p.b.handle_udp(
                roamed,
                d,
                p.now,
                &mut NetBatch::new(1),
                &mut TunBatch::new(1),
            );
        }
    });
    let roamed = only(&lines, "endpoint roamed");
    assert!(
        roamed.contains(&format!("old={A_ADDR} new=[2001:db8::7]:4000")),
        "{roamed}"
    );
}

#[test]
fn cookie_replies_are_summarised_once_per_period() {
    let lines = capture(|| {
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let mut a = Core::new(Some(ka.clone()));
        let mut b = Core::with_handshake_limit(Some(kb.clone()), 0);
        a.upsert_peer(peer(kb.public_key(), Some(B_ADDR), &["10.0.0.2/32"]));
        b.upsert_peer(peer(ka.public_key(), None, &["10.0.0.1/32"]));
        let mut net = NetBatch::new(1);
        let now = Instant::now();
        a.handle_tun(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), now, &mut net);
        let (_, init) = net.datagrams().next().unwrap();
        for _ in 0..3 {
            let mut tun = TunBatch::new(0);
            b.handle_udp(src_of(true), init, now, &mut NetBatch::new(1), &mut tun);
        }
        b.tick(now, &mut NetBatch::new(1));
        b.tick(now + RATE_LIMIT_PERIOD, &mut NetBatch::new(1));
    });
    let cookies = only(&lines, "cookie replies sent");
    assert!(cookies.contains("count=3"), "{cookies}");
}
