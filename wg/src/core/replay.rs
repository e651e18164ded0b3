//! Packets sent into a session that died, sent again through the next one.
//!
//! When a client's session dies under it (the gateway replica holding it went away), every
//! packet sent until it notices is lost; a lost TCP SYN costs its connection a full second
//! (the first retransmission). A peer with replay on keeps copies of what it sent during the
//! last [`WINDOW`]; when the owner starts a new handshake because nothing came back since
//! some instant, the packets sent since then go out again once that handshake completes,
//! under the new session's keys and counters (a duplicate is harmless for TCP and allowed for
//! UDP, as in any IP network). Pure: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long sent packets are kept.
pub const WINDOW: Duration = Duration::from_secs(2);
/// At most this many packets and bytes are kept (the oldest go first).
pub const MAX_PACKETS: usize = 256;
pub const MAX_BYTES: usize = 512 * 1024;

#[derive(Debug, Default)]
pub struct Replay {
    sent: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    /// Replay what was sent since this instant once the next handshake completes.
    armed: Option<Instant>,
}

impl Replay {
    /// Keeps a copy of a packet sent at `now`.
    pub fn record(&mut self, packet: &[u8], now: Instant) {
        if packet.is_empty() || packet.len() > MAX_BYTES {
            return;
        }
        self.sent.push_back((now, packet.to_vec()));
        self.bytes += packet.len();
        while self.sent.len() > MAX_PACKETS
            || self.bytes > MAX_BYTES
            || self
                .sent
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            let Some((_, p)) = self.sent.pop_front() else {
                break;
            };
            self.bytes -= p.len();
        }
    }

    /// The next completed handshake replays what was sent since `since`.
    pub fn arm(&mut self, since: Instant) {
        self.armed = Some(since);
    }

    /// On a completed handshake: the packets to send again (oldest first), if armed and
    /// still within [`WINDOW`] of `now`; disarms.
    pub fn take(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let Some(since) = self.armed.take() else {
            return Vec::new();
        };
        let out = self
            .sent
            .iter()
            .filter(|(t, _)| *t >= since && now.duration_since(*t) <= WINDOW)
            .map(|(_, p)| p.clone())
            .collect();
        self.sent.clear();
        self.bytes = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_packets_since_the_stall_and_within_the_window_are_replayed_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Replay::default();
        r.record(b"answered", at(0));
        r.record(b"syn-1", at(600));
        r.record(b"", at(650)); // a keepalive: nothing to replay
        r.record(b"dns", at(700));
        assert!(r.take(at(800)).is_empty(), "not armed: nothing");
        r.record(b"syn-2", at(900));
        r.arm(at(500));
        assert_eq!(
            r.take(at(1100)),
            [b"syn-1".to_vec(), b"dns".to_vec(), b"syn-2".to_vec()]
        );
        r.record(b"late", at(1200));
        r.arm(at(1000));
        assert_eq!(
            r.take(at(1200) + WINDOW + Duration::from_millis(1)),
            Vec::<Vec<u8>>::new()
        );
        assert!(r.take(at(1300)).is_empty(), "disarmed");
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let t0 = Instant::now();
        let mut r = Replay::default();
        for i in 0..1000u32 {
            r.record(&[0u8; 1400], t0 + Duration::from_micros(u64::from(i)));
        }
        assert!(r.sent.len() <= MAX_PACKETS && r.bytes <= MAX_BYTES);
        r.record(&[1u8; 10], t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(r.sent.len(), 1, "older than the window: gone");
        r.arm(t0);
        assert_eq!(r.take(t0 + WINDOW + Duration::from_secs(1)).len(), 1);
    }
}
