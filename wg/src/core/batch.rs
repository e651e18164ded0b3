//! Datagrams the core fills and the I/O layer sends, grouped for UDP GSO (the TUN's side is
//! [`super::TunBatch`]).

use std::net::SocketAddr;

/// Largest payload of one UDP GSO send (the kernel's limit is 64 KiB including headers).
const MAX_GSO_BYTES: usize = 60_000;

/// Datagrams to send. Consecutive datagrams to the same destination with the same size are
/// grouped into one buffer so the kernel can segment them (UDP GSO); only a group's last datagram
/// may be shorter.
pub struct NetBatch {
    buf: Vec<u8>,
    used: usize,
    groups: Vec<Group>,
    max_segments: usize,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    dst: SocketAddr,
    start: usize,
    len: usize,
    segment: usize,
    closed: bool,
}

impl NetBatch {
    /// `max_segments` is how many datagrams one send may carry (1 without UDP GSO).
    pub fn new(max_segments: usize) -> NetBatch {
        NetBatch {
            buf: vec![0; 256 * 1024],
            used: 0,
            groups: Vec::with_capacity(128),
            max_segments: max_segments.max(1),
        }
    }

    pub fn set_max_segments(&mut self, n: usize) {
        self.max_segments = n.max(1);
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn clear(&mut self) {
        self.used = 0;
        self.groups.clear();
    }

    /// Appends one datagram of at most `max_len` bytes written by `write`, which returns the
    /// length it wrote or `None` to write nothing.
    pub fn push_with(
        &mut self,
        dst: SocketAddr,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        if self.buf.len() < self.used + max_len {
            self.buf
                .resize((self.used + max_len).max(self.buf.len() * 2), 0);
        }
        let n = write(&mut self.buf[self.used..self.used + max_len])?;
        let start = self.used;
        self.used += n;
        let max_segments = self.max_segments;
        match self.groups.last_mut() {
            Some(g)
                if !g.closed
                    && g.dst == dst
                    && n <= g.segment
                    && g.start + g.len == start
                    && g.len / g.segment < max_segments
                    && g.len + n <= MAX_GSO_BYTES =>
            {
                g.len += n;
                g.closed = n < g.segment;
            }
            _ => self.groups.push(Group {
                dst,
                start,
                len: n,
                segment: n.max(1),
                closed: max_segments == 1,
            }),
        }
        Some(n)
    }

    pub fn push(&mut self, dst: SocketAddr, data: &[u8]) {
        self.push_with(dst, data.len(), |b| {
            b.copy_from_slice(data);
            Some(data.len())
        });
    }

    /// `(destination, contents, segment size)` per send; contents hold one or more datagrams.
    pub fn sends(&self) -> impl Iterator<Item = (SocketAddr, &[u8], usize)> {
        self.groups
            .iter()
            .map(|g| (g.dst, &self.buf[g.start..g.start + g.len], g.segment))
    }

    /// Every datagram on its own (for tests and for sockets without GSO).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.sends()
            .flat_map(|(dst, data, seg)| data.chunks(seg).map(move |c| (dst, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_equal_sizes_and_closes_on_short_segment() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let mut n = NetBatch::new(64);
        n.push(a, &[1; 100]);
        n.push(a, &[2; 100]);
        n.push(a, &[3; 50]);
        n.push(a, &[4; 50]);
        n.push(b, &[5; 50]);
        let sends: Vec<_> = n.sends().map(|(d, c, s)| (d, c.len(), s)).collect();
        assert_eq!(sends, vec![(a, 250, 100), (a, 50, 50), (b, 50, 50)]);
        assert_eq!(n.datagrams().count(), 5);
        let mut one = NetBatch::new(1);
        one.push(a, &[1; 100]);
        one.push(a, &[1; 100]);
        assert_eq!(one.sends().count(), 2);
    }
}
