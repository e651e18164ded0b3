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
}

impl IoStats {
    fn edges(&self) -> [(&'static str, EdgeCount); 4] {
        [
            ("tun_read", self.tun_read),
            ("tun_write", self.tun_write),
            ("udp_send", self.udp_send),
            ("udp_recv", self.udp_recv),
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
