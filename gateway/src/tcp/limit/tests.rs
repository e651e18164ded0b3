use super::*;
use crate::tcp::MAX_STREAMS;
use kwg_wg::io::stream;

fn src(s: &str) -> Source {
    Source::of(s.parse().unwrap())
}

#[test]
fn one_source_holds_at_most_its_share_of_unauthenticated_connections() {
    let mut p = Pending::new(3);
    let (a, b) = (src("192.0.2.7"), src("198.51.100.1"));
    for _ in 0..3 {
        assert_eq!(p.admit(a, 0), Ok(()));
    }
    assert_eq!(p.admit(a, 0), Err(Refusal::Source));
    assert_eq!(p.held(a), 3);
    // Another address is not affected; the same address through IPv4-mapped IPv6 is.
    assert_eq!(p.admit(b, 0), Ok(()));
    assert_eq!(p.admit(src("::ffff:192.0.2.7"), 0), Err(Refusal::Source));
    // One authenticates (or closes): a slot frees up for that source.
    p.release(a);
    assert_eq!(p.admit(a, 0), Ok(()));
    for _ in 0..5 {
        p.release(a);
    }
    assert_eq!(p.held(a), 0, "releases beyond the count are ignored");
    // Every slot of the device taken: refused whatever the source.
    assert_eq!(p.admit(src("203.0.113.9"), MAX_STREAMS), Err(Refusal::Full));
    assert_eq!(p.held(src("203.0.113.9")), 0);
}

#[test]
fn an_ipv6_source_is_its_64() {
    assert_eq!(src("2001:db8:1:2::1"), src("2001:db8:1:2:ffff::9"));
    assert_ne!(src("2001:db8:1:2::1"), src("2001:db8:1:3::1"));
    assert_eq!(src("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    assert_eq!(src("::ffff:10.0.0.1").to_string(), "10.0.0.1");
    let mut p = Pending::new(1);
    assert_eq!(p.admit(src("2001:db8::1"), 0), Ok(()));
    assert_eq!(p.admit(src("2001:db8::2"), 0), Err(Refusal::Source));
}

#[test]
fn refusals_are_logged_at_most_once_per_interval_with_their_count() {
    let mut p = Pending::new(1);
    let t0 = Instant::now();
    let a = src("192.0.2.7");
    assert_eq!(p.log_due(t0), None, "nothing refused");
    p.admit(a, 0).unwrap();
    for _ in 0..3 {
        p.admit(a, 0).unwrap_err();
    }
    p.admit(a, MAX_STREAMS).unwrap_err();
    let first = RefusedLog {
        source: 3,
        full: 1,
        last_source: Some(a),
    };
    assert_eq!(p.log_due(t0), Some(first));
    p.admit(a, 0).unwrap_err();
    assert_eq!(p.log_due(t0 + LOG_EVERY / 2), None, "logged recently");
    p.admit(a, 0).unwrap_err();
    let second = RefusedLog {
        source: 2,
        full: 0,
        last_source: Some(a),
    };
    assert_eq!(p.log_due(t0 + LOG_EVERY), Some(second));
    assert_eq!(p.log_due(t0 + LOG_EVERY * 5), None, "nothing new");
}

/// A datagram of WireGuard message type `ty` (the type, 3 reserved zero bytes, a body).
fn msg(ty: u8, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[0] = ty;
    d
}

fn framed(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        stream::encode(d, &mut out).unwrap();
    }
    out
}

#[test]
fn a_stream_authenticates_with_the_first_handshake_response_or_data_in_any_split() {
    // Cookie replies (3) go to anyone under load, and initiations (1) are the gateway's own:
    // neither authenticates. Type bytes inside a body do not count either.
    let cookie = msg(3, 64);
    let mut body_with_types = msg(3, 300);
    body_with_types[1..].fill(TRANSPORT_DATA);
    let before = framed(&[cookie.clone(), vec![], body_with_types, msg(1, 148)]);
    let mut w = FrameWatch::default();
    assert!(!w.push(&before));
    for (ty, auth) in [
        (HANDSHAKE_RESPONSE, true),
        (TRANSPORT_DATA, true),
        (3, false),
    ] {
        let mut all = before.clone();
        all.extend(framed(&[msg(ty, 92), cookie.clone()]));
        for split in [1, 2, 3, 7, 64, 301, all.len()] {
            let mut w = FrameWatch::default();
            let seen = all.chunks(split).any(|c| w.push(c));
            assert_eq!(seen, auth, "type {ty}, written {split} bytes at a time");
        }
    }
}
