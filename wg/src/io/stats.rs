//! Segments per syscall on each edge of the data plane (TUN read/write, UDP send/receive):
//! how well the batching works. Relaxed atomic counters, bumped once per syscall.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One edge: successful syscalls and the IP packets (TUN) or datagrams (UDP) they carried.
#[derive(Debug, Default)]
pub struct Edge {
    calls: AtomicU64,
    segments: AtomicU64,
}

impl Edge {
    /// One syscall that moved `segments` packets or datagrams.
    pub fn add(&self, segments: usize) {
        self.add_calls(1, segments);
    }

    /// `calls` syscalls that moved `segments` in all.
    pub fn add_calls(&self, calls: usize, segments: usize) {
        self.calls.fetch_add(calls as u64, Ordering::Relaxed);
        self.segments.fetch_add(segments as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> EdgeCount {
        EdgeCount {
            calls: self.calls.load(Ordering::Relaxed),
            segments: self.segments.load(Ordering::Relaxed),
        }
    }
}

/// A reading of an [`Edge`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EdgeCount {
    pub calls: u64,
    pub segments: u64,
}

impl EdgeCount {
    pub fn per_call(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.segments as f64 / self.calls as f64
        }
    }
}

/// The four edges of a device, as read at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStats {
    pub tun_read: EdgeCount,
    pub tun_write: EdgeCount,
    pub udp_send: EdgeCount,
    pub udp_recv: EdgeCount,
    /// The UDP receive's messages (`calls`: one per recvmmsg entry) and the datagrams they
    /// held (`segments`): more than one only when a GRO engine on the way coalesced them.
    pub udp_recv_gro: EdgeCount,
}

impl IoStats {
    fn edges(&self) -> [(&'static str, EdgeCount); 5] {
        [
            ("tun_read", self.tun_read),
            ("tun_write", self.tun_write),
            ("udp_send", self.udp_send),
            ("udp_recv", self.udp_recv),
            ("udp_recv_gro", self.udp_recv_gro),
        ]
    }
}

/// One line per edge: `EDGE calls=N segments=M per_call=X.XX` (what `kwg-wg` writes to the
/// `KWG_WG_STATS` file; `scripts/bench-tunnel.sh` reads it).
impl fmt::Display for IoStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, e) in self.edges() {
            writeln!(
                f,
                "{name} calls={} segments={} per_call={:.2}",
                e.calls,
                e.segments,
                e.per_call()
            )?;
        }
        Ok(())
    }
}

/// Datagrams received in a window before its receive pattern is judged: fewer is not load
/// (20 000 datagrams of ~1400 bytes are ~28 MB).
pub const LOAD_WINDOW_DATAGRAMS: u64 = 20_000;

/// At or below this many datagrams per received message, datagrams arrive one per frame: no
/// GRO engine coalesced them (with the node's UDP GRO forwarding on, a UDP_GRO socket gets
/// ~40 per message; see docs/performance.md).
pub const ONE_PER_FRAME_MAX: f64 = 1.5;

/// How datagrams reached the UDP socket over a window under load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReceivePattern {
    /// About one datagram per received message: nothing coalesced them on the way (the node's
    /// `rx-udp-gro-forwarding` is off, or GRO is off).
    OnePerFrame { per_message: f64 },
    /// Coalesced: several datagrams per received message.
    Coalesced { per_message: f64 },
}

impl ReceivePattern {
    pub fn one_per_frame(&self) -> bool {
        matches!(self, ReceivePattern::OnePerFrame { .. })
    }
}

/// Judges the receive pattern from the GRO edge's growth over a window (`now` minus
/// `before`, two readings of [`IoStats::udp_recv_gro`]): `None` while the window holds fewer
/// than `window` datagrams (not under load; keep accumulating) or the counters went back
/// (the socket was bound again).
pub fn judge_receive(before: EdgeCount, now: EdgeCount, window: u64) -> Option<ReceivePattern> {
    let messages = now.calls.checked_sub(before.calls)?;
    let datagrams = now.segments.checked_sub(before.segments)?;
    if datagrams < window || messages == 0 {
        return None;
    }
    let per_message = datagrams as f64 / messages as f64;
    Some(if per_message <= ONE_PER_FRAME_MAX {
        ReceivePattern::OnePerFrame { per_message }
    } else {
        ReceivePattern::Coalesced { per_message }
    })
}

/// How many segments a coalesced TUN write carried, from its virtio-net header (the 10 bytes
/// before the packet): 1 unless it is a GSO super-packet, then its payload divided by the
/// segment size, rounded up.
pub fn vnet_segments(hdr: &[u8], packet_len: usize) -> usize {
    const GSO_NONE: u8 = 0;
    let (Some(&gso_type), Some(hdr_len), Some(gso_size)) = (
        hdr.get(1),
        hdr.get(2..4).map(|b| u16::from_le_bytes([b[0], b[1]])),
        hdr.get(4..6).map(|b| u16::from_le_bytes([b[0], b[1]])),
    ) else {
        return 1;
    };
    if gso_type == GSO_NONE || gso_size == 0 {
        return 1;
    }
    packet_len
        .saturating_sub(usize::from(hdr_len))
        .div_ceil(usize::from(gso_size))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_prints_per_call() {
        let e = Edge::default();
        e.add(64);
        e.add(2);
        e.add_calls(2, 2);
        let s = IoStats {
            udp_recv: e.get(),
            ..Default::default()
        };
        assert_eq!(s.udp_recv.calls, 4);
        assert_eq!(s.udp_recv.segments, 68);
        let text = s.to_string();
        assert!(
            text.contains("udp_recv calls=4 segments=68 per_call=17.00\n"),
            "{text}"
        );
        assert!(
            text.contains("tun_read calls=0 segments=0 per_call=0.00\n"),
            "{text}"
        );
    }

    fn count(calls: u64, segments: u64) -> EdgeCount {
        EdgeCount { calls, segments }
    }

    #[test]
    fn one_datagram_per_message_under_load_is_one_per_frame() {
        let before = count(100, 150);
        let p = judge_receive(before, count(100 + 20_000, 150 + 20_400), 20_000).unwrap();
        assert!(p.one_per_frame(), "{p:?}");
        assert_eq!(p, ReceivePattern::OnePerFrame { per_message: 1.02 });
    }

    #[test]
    fn coalesced_datagrams_are_not_one_per_frame() {
        let p = judge_receive(count(0, 0), count(500, 20_000), 20_000).unwrap();
        assert_eq!(p, ReceivePattern::Coalesced { per_message: 40.0 });
        assert!(!p.one_per_frame());
        // Just above the line: coalesced.
        let p = judge_receive(count(0, 0), count(10_000, 16_000), 10_000).unwrap();
        assert!(!p.one_per_frame(), "{p:?}");
    }

    #[test]
    fn no_verdict_without_load_or_after_a_rebind() {
        // A trickle (keepalives, a ping): not judged, whatever its pattern.
        assert_eq!(
            judge_receive(count(0, 0), count(19_999, 19_999), 20_000),
            None
        );
        // The socket was bound again: its counters restarted.
        assert_eq!(
            judge_receive(count(50_000, 50_000), count(10, 10), 20_000),
            None
        );
    }

    #[test]
    fn vnet_header_segments() {
        // TCPv4 GSO (type 1), headers 52 bytes, MSS 1368: 10 segments, the last one short.
        let mut hdr = [0u8; 10];
        hdr[1] = 1;
        hdr[2..4].copy_from_slice(&52u16.to_le_bytes());
        hdr[4..6].copy_from_slice(&1368u16.to_le_bytes());
        assert_eq!(vnet_segments(&hdr, 52 + 9 * 1368 + 100), 10);
        assert_eq!(vnet_segments(&hdr, 52 + 1368), 1);
        assert_eq!(vnet_segments(&[0; 10], 1420), 1);
        assert_eq!(vnet_segments(&[], 1420), 1);
    }
}
