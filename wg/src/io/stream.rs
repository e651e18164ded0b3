//! WireGuard datagrams over a byte stream (TCP, or a port-forward stream through the API
//! server): each datagram is framed with a 2-byte big-endian length, as Mullvad's udp-over-tcp
//! does. The stream only ever carries WireGuard's encrypted datagrams; WireGuard stays end to
//! end. Pure encode/decode here; [`set_stream_options`] is the one socket edge.
//!
//! A stream cannot resynchronise after a bad length, so an oversized frame is an error that
//! ends the connection (the peer reconnects and WireGuard re-handshakes).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The largest length a 2-byte prefix can carry.
pub const MAX_FRAME: usize = u16::MAX as usize;
/// Bytes of the length prefix.
pub const PREFIX: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error(
        "a datagram of {len} bytes does not fit a stream frame (at most {max}); lower the tunnel MTU"
    )]
    TooLarge { len: usize, max: usize },
    #[error(
        "the peer sent a stream frame of {len} bytes, more than the {max} allowed; the connection is dropped (is the peer speaking another protocol on this port?)"
    )]
    Oversized { len: usize, max: usize },
}

/// Append one framed datagram to `out`.
pub fn encode(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
    if datagram.len() > MAX_FRAME {
        return Err(StreamError::TooLarge {
            len: datagram.len(),
            max: MAX_FRAME,
        });
    }
    out.reserve(PREFIX + datagram.len());
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Frame as many of `datagrams` as fit in `max_bytes` (at least one) into `out`, for one write
/// syscall; returns how many were taken. A datagram too large for a frame is an error and
/// nothing of it is written.
pub fn encode_batch<'a>(
    datagrams: impl IntoIterator<Item = &'a [u8]>,
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<usize, StreamError> {
    let start = out.len();
    let mut taken = 0;
    for d in datagrams {
        if taken > 0 && out.len() - start + PREFIX + d.len() > max_bytes {
            break;
        }
        encode(d, out)?;
        taken += 1;
    }
    Ok(taken)
}

/// Reassembles datagrams from stream reads of any size.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (consumed bytes are dropped on the next push).
    start: usize,
    max: usize,
}

impl Decoder {
    /// A decoder refusing frames longer than `max` bytes (e.g. the tunnel MTU + 32 for
    /// WireGuard's data header and tag, or [`MAX_FRAME`]).
    pub fn new(max: usize) -> Self {
        Decoder {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            max: max.min(MAX_FRAME),
        }
    }

    /// Add bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole datagram, `None` until more bytes arrive. Zero-length frames are
    /// returned as empty datagrams (the caller drops them). After an error the decoder
    /// must not be used again.
    pub fn next_datagram(&mut self) -> Result<Option<&[u8]>, StreamError> {
        let rest = &self.buf[self.start..];
        if rest.len() < PREFIX {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len > self.max {
            return Err(StreamError::Oversized { len, max: self.max });
        }
        if rest.len() < PREFIX + len {
            return Ok(None);
        }
        let at = self.start + PREFIX;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// Bytes held that do not yet make a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Streams appear to the protocol core as endpoints in `100::/64`, the IPv6 discard-only prefix
/// (RFC 6666): a datagram from there over UDP is spoofed and dropped on receive
/// ([`crate::io::udp::RecvBufs::datagrams`]), so a peer roams between UDP and a stream
/// exactly as between two UDP addresses, on authenticated packets only.
pub fn stream_endpoint(id: u64) -> SocketAddr {
    let ip = Ipv6Addr::from((0x0100u128 << 112) | u128::from(id));
    SocketAddr::new(IpAddr::V6(ip), 0)
}

/// Whether `a` names a stream (see [`stream_endpoint`]), not a UDP address.
pub fn is_stream_endpoint(a: &SocketAddr) -> bool {
    match a.ip() {
        IpAddr::V6(ip) => u128::from(ip) >> 64 == 0x0100u128 << 48,
        IpAddr::V4(_) => false,
    }
}

/// Socket options for a stream carrying WireGuard: `TCP_NODELAY` (a handshake or a small
/// packet must not wait for Nagle's timer) and keepalive so a dead path is noticed by the
/// kernel too.
pub fn set_stream_options(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    sock.set_keepalive(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_have_a_big_endian_length_prefix() {
        let mut out = Vec::new();
        encode(&[0xaa; 300], &mut out).unwrap();
        assert_eq!(&out[..2], &[0x01, 0x2c]);
        assert_eq!(out.len(), 302);
        assert_eq!(
            encode(&vec![0; MAX_FRAME + 1], &mut out),
            Err(StreamError::TooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
        assert_eq!(out.len(), 302, "nothing written for a refused datagram");
    }

    #[test]
    fn partial_reads_wait_and_oversized_frames_are_refused() {
        let mut d = Decoder::new(1452);
        d.push(&[0x00]);
        assert_eq!(d.next_datagram(), Ok(None));
        d.push(&[0x03, b'a', b'b']);
        assert_eq!(d.next_datagram(), Ok(None));
        d.push(&[b'c', 0x00, 0x00]);
        assert_eq!(d.next_datagram(), Ok(Some(&b"abc"[..])));
        assert_eq!(d.next_datagram(), Ok(Some(&[][..])));
        assert_eq!(d.pending(), 0);
        d.push(&[0x05, 0xad]);
        assert_eq!(
            d.next_datagram(),
            Err(StreamError::Oversized {
                len: 0x05ad,
                max: 1452
            })
        );
    }

    #[test]
    fn batches_respect_the_byte_budget_but_take_at_least_one() {
        let a = [1u8; 100];
        let b = [2u8; 100];
        let mut out = Vec::new();
        let n = encode_batch([&a[..], &b[..]], 150, &mut out).unwrap();
        assert_eq!((n, out.len()), (1, 102));
        let mut out = Vec::new();
        let n = encode_batch([&a[..], &b[..]], 204, &mut out).unwrap();
        assert_eq!((n, out.len()), (2, 204));
        let mut out = Vec::new();
        assert_eq!(encode_batch([&a[..]], 10, &mut out), Ok(1));
    }

    #[test]
    fn stream_endpoints_are_in_the_discard_prefix_and_never_udp_addresses() {
        let a = stream_endpoint(7);
        assert_eq!(a.to_string(), "[100::7]:0");
        assert!(is_stream_endpoint(&a));
        assert!(is_stream_endpoint(&stream_endpoint(u64::MAX)));
        for udp in [
            "192.0.2.1:31820",
            "[fd00::1]:51820",
            "[100:0:0:1::1]:0",
            "[::ffff:1.2.3.4]:1",
        ] {
            assert!(!is_stream_endpoint(&udp.parse().unwrap()), "{udp}");
        }
    }

    proptest! {
        /// Any datagrams, framed and cut into reads of any sizes, come out whole and in order.
        #[test]
        fn round_trip_through_arbitrary_reads(
            datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 0..20),
            cuts in prop::collection::vec(1usize..700, 1..50),
        ) {
            let mut wire = Vec::new();
            let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
            let n = encode_batch(refs.iter().copied(), usize::MAX, &mut wire).unwrap();
            prop_assert_eq!(n, datagrams.len());
            let mut d = Decoder::new(MAX_FRAME);
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let take = cuts[i % cuts.len()].min(rest.len());
                d.push(&rest[..take]);
                rest = &rest[take..];
                i += 1;
                while let Some(dg) = d.next_datagram().unwrap() {
                    got.push(dg.to_vec());
                }
            }
            prop_assert_eq!(got, datagrams);
            prop_assert_eq!(d.pending(), 0);
        }

        /// Random bytes never panic the decoder; it yields datagrams or one error.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096), max in 0usize..2000) {
            let mut d = Decoder::new(max);
            d.push(&bytes);
            while let Ok(Some(dg)) = d.next_datagram() {
                prop_assert!(dg.len() <= max);
            }
        }
    }
}
