//! Helpers shared by kwg-wg's own core tests and the out-of-workspace ones (`wg/timer-tests`,
//! which run the core on boringtun's mock clock). Not part of the API.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};

use super::{Core, NetBatch, TunBatch};
use kwg_contract::keys::{PrivateKey, PublicKey};

/// A minimal IPv4/UDP packet from `src` to `dst` carrying `payload`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[28..].copy_from_slice(payload);
    p
}

/// A handshake initiation from `from` to `to`, as boringtun makes it.
pub fn initiation(from: &PrivateKey, to: &PublicKey) -> Vec<u8> {
    let mut t = Tunn::new(from.to_secret(), to.to_x25519(), None, None, 1, None);
    let mut buf = vec![0; 256];
    match t.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("boringtun made no initiation"),
    }
}

/// Hands `datagram` from `from` to `core`: returns the datagrams it answers with and the IP
/// packets it writes to its TUN.
pub fn receive(
    core: &mut Core,
    from: SocketAddr,
    datagram: &[u8],
    now: Instant,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut net = NetBatch::new(1);
    let mut tun = TunBatch::new(0);
    core.handle_udp(from, datagram, now, &mut net, &mut tun);
    let replies = net.datagrams().map(|(_, d)| d.to_vec()).collect();
    (replies, tun.packets().map(<[u8]>::to_vec).collect())
}

thread_local! {
    /// Formatted log lines of this thread while `capture` runs.
    static CAPTURED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Writes into this thread's capture buffer, or nowhere. Cores are synchronous, so their events
/// are written on the thread that drives them.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with_borrow_mut(|c| c.as_mut().map(|v| v.extend_from_slice(buf)));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` and returns the lines it logged at debug level and above. One global subscriber
/// serves every test: scoped ones (`with_default`) race with tracing's per-callsite interest
/// cache when other tests hit the same callsites in parallel, and lose events.
pub fn capture(f: impl FnOnce()) -> Vec<String> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
    });
    // Callsites first hit by another thread before the subscriber existed cached "disabled".
    tracing::callsite::rebuild_interest_cache();
    CAPTURED.with_borrow_mut(|c| *c = Some(Vec::new()));
    f();
    let bytes = CAPTURED.with_borrow_mut(Option::take).unwrap_or_default();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
