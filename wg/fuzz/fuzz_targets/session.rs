//! Past authentication: two cores complete a handshake, then arbitrary inner packets are
//! encrypted by one and decrypted, source-checked and routed by the other, and arbitrary bytes
//! behind a valid data header (right receiver index) reach the session's counter and AEAD code.
//! Must never panic, and nothing outside the sender's AllowedIPs reaches the TUN.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use kwg_wg::core::{Core, NetBatch, TunBatch};
use kwg_contract::keys::PrivateKey;
use kwg_wg::peer::PeerConfig;
use libfuzzer_sys::fuzz_target;

const A: &str = "192.0.2.1:51820";
const B: &str = "192.0.2.2:51820";

static KEYS: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Hands every datagram in `out` (sent by `a` if `from_a`) to the other core, and the replies
/// back, until quiet. Returns the last data datagram A sent and what B's TUN received.
fn deliver(a: &mut Core, b: &mut Core, from_a: bool, out: &NetBatch) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut pending: Vec<(bool, Vec<u8>)> =
        out.datagrams().map(|(_, d)| (from_a, d.to_vec())).collect();
    let mut last_data = Vec::new();
    let mut to_b_tun = Vec::new();
    while let Some((sender_a, d)) = pending.pop() {
        if sender_a && d.first() == Some(&4) {
            last_data = d.clone();
        }
        let (rx, from) = if sender_a {
            (&mut *b, addr(A))
        } else {
            (&mut *a, addr(B))
        };
        let (mut net, mut tun) = (NetBatch::new(64), TunBatch::new(0));
        rx.handle_udp(from, &d, Instant::now(), &mut net, &mut tun);
        if sender_a {
            to_b_tun.extend(tun.packets().map(<[u8]>::to_vec));
        }
        pending.extend(net.datagrams().map(|(_, d)| (!sender_a, d.to_vec())));
    }
    (last_data, to_b_tun)
}

/// Two cores with a live session and a data header of it, built once: a handshake per input
/// would cost more than the rest of the run. Sessions last minutes; a rekey on the way is carried
/// by `deliver` like any other handshake.
fn session() -> (Core, Core, Vec<u8>) {
    let (ka, kb) = KEYS.get_or_init(|| (PrivateKey::generate(), PrivateKey::generate()));
    let mut a = Core::new(Some(ka.clone()));
    let mut b = Core::new(Some(kb.clone()));
    let mut to_b = PeerConfig::new(kb.public_key());
    to_b.endpoint = Some(addr(B));
    to_b.allowed_ips = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    a.upsert_peer(to_b);
    let mut to_a = PeerConfig::new(ka.public_key());
    to_a.allowed_ips = vec![
        "10.0.0.1/32".parse().unwrap(),
        "fd00::1/128".parse().unwrap(),
    ];
    b.upsert_peer(to_a);
    let mut hello = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    hello.extend_from_slice(&[0; 8]);
    let mut net = NetBatch::new(64);
    a.handle_tun(&hello, Instant::now(), &mut net);
    let (header, got) = deliver(&mut a, &mut b, true, &net);
    assert_eq!(got, vec![hello], "handshake and first packet");
    (a, b, header[..16].to_vec())
}

static SESSION: Mutex<Option<(Core, Core, Vec<u8>)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b, header) = guard.get_or_insert_with(session);

    // An arbitrary inner packet, encrypted by A: B delivers it only if its source is A's.
    let mut net = NetBatch::new(64);
    a.handle_tun(data, Instant::now(), &mut net);
    let before = b.drops.spoofed_source;
    let (_, got) = deliver(a, b, true, &net);
    for p in &got {
        let from_a = match p.first().map(|v| v >> 4) {
            Some(4) => p.get(12..16) == Some(&[10, 0, 0, 1][..]),
            Some(6) => p
                .get(8..24)
                .is_some_and(|s| s[0] == 0xfd && s[15] == 1 && s[1..15].iter().all(|b| *b == 0)),
            _ => false,
        };
        assert!(
            from_a,
            "a packet from outside A's AllowedIPs reached the TUN: {p:?}"
        );
    }
    assert!(b.drops.spoofed_source >= before);

    // Arbitrary bytes behind a valid data header: counter and AEAD checks.
    let mut forged = header.clone();
    forged.extend_from_slice(data);
    let mut tun = TunBatch::new(0);
    b.handle_udp(
        addr(A),
        &forged,
        Instant::now(),
        &mut NetBatch::new(64),
        &mut tun,
    );
    assert!(tun.is_empty(), "forged datagram decrypted");
});
