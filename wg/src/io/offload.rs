//! TUN offloads without copies, as pure functions over byte buffers: splitting a TSO/USO
//! super-packet read from the TUN into its segments in place (each segment's headers are
//! written just before its payload, over the previous segment's already consumed bytes), and
//! coalescing decrypted TCP segments into one super-packet for one virtio-net write.
//!
//! The rules follow Linux (`tcp_gro_receive`, `tcp_gso_segment`) and wireguard-go's
//! `tun/offload_linux.go`. Unlike them, coalescing does not verify the segments' TCP
//! checksums: every segment arrived authenticated (Poly1305) from the peer that built it, and
//! a peer sending bad checksums could as well send good ones; the IPv4 header checksum is
//! still checked.

use thiserror::Error;

/// Size of `struct virtio_net_hdr` (without `num_buffers`), which precedes every TUN read and
/// write once the TUN has IFF_VNET_HDR.
pub const VNET_HDR_LEN: usize = 10;
/// Largest IP packet (the IPv4 total length and IPv6 payload length fields are 16 bits).
pub const MAX_IP_LEN: usize = 65535;
/// Largest header a segment carries (IPv4 with options or IPv6, plus TCP with options).
pub const MAX_HDR_LEN: usize = 128;

// include/uapi/linux/virtio_net.h
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;
const TCP: u8 = 6;
const UDP: u8 = 17;
// TCP flags (RFC 9293, RFC 3168).
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;

/// `struct virtio_net_hdr`, in the machine's byte order (the TUN's default).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        (b.len() >= VNET_HDR_LEN).then(|| VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The transport checksum field holds the pseudo-header's sum for the device to complete.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    pub fn encode(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// The Internet checksum's running sum (RFC 1071) of `data` added to `initial`, not folded.
pub fn sum(data: &[u8], initial: u64) -> u64 {
    // Native-order 32-bit words: the folded sum is byte-order independent up to a final swap.
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut tail = [0u8; 4];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    acc += u64::from(u32::from_ne_bytes(tail));
    initial + u64::from(u16::from_be_bytes(fold(acc).to_ne_bytes()))
}

/// Folds a running sum into 16 bits (not complemented).
pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    s as u16
}

/// The TCP/UDP pseudo-header's sum (RFC 9293 section 3.1, RFC 8200 section 8.1).
fn pseudo(pkt: &[u8], v6: bool, proto: u8, len: usize) -> u64 {
    let addrs = if v6 { &pkt[8..40] } else { &pkt[12..20] };
    sum(addrs, u64::from(proto) + len as u64)
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// Recomputes an IPv4 header's checksum (header of `ihl` bytes at the start of `pkt`).
fn ipv4_checksum(pkt: &mut [u8], ihl: usize) {
    put16(pkt, 10, 0);
    let c = !fold(sum(&pkt[..ihl], 0));
    put16(pkt, 10, c);
}

/// A TUN read the kernel handed over that cannot be split.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("TUN read shorter than its virtio-net header and headers ({0} bytes)")]
    Short(usize),
    #[error(
        "unsupported virtio-net header {0:?} (the TUN's offloads were set by kwg-wg: report this)"
    )]
    Header(VnetHdr),
}

/// Splits one TUN read (virtio-net header then packet) into IP packets, in place, calling
/// `emit` with each in order; returns how many. A super-packet (TCP TSO or UDP USO) becomes
/// segments of `gso_size` payload bytes with their own lengths, sequence numbers, IPv4 ids,
/// flags and checksums; a single packet whose checksum was left to the device gets it.
/// `emit` sees each segment once: its bytes are overwritten by the next segment's headers.
pub fn split(buf: &mut [u8], mut emit: impl FnMut(&[u8])) -> Result<usize, SplitError> {
    let hdr = VnetHdr::decode(buf).ok_or(Short(buf.len()))?;
    let pkt = &mut buf[VNET_HDR_LEN..];
    let bad = || SplitError::Header(hdr);
    let cstart = usize::from(hdr.csum_start);
    let csum_at = cstart + usize::from(hdr.csum_offset);
    if hdr.gso_type == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            if csum_at + 2 > pkt.len() {
                return Err(bad());
            }
            // The field holds the pseudo-header's sum: add the rest and complement.
            let initial = u64::from(be16(pkt, csum_at));
            put16(pkt, csum_at, 0);
            let c = !fold(sum(&pkt[cstart..], initial));
            // As Linux's skb_checksum_help (CSUM_MANGLED_0): a zero UDP checksum would mean
            // none (IPv6 receivers drop it); 0xffff is the same sum for TCP.
            put16(pkt, csum_at, if c == 0 { 0xffff } else { c });
        }
        emit(pkt);
        return Ok(1);
    }
    let v6 = match pkt.first().map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ => return Err(bad()),
    };
    let tcp = match (hdr.gso_type & !GSO_ECN, v6) {
        (GSO_TCPV4, false) | (GSO_TCPV6, true) => true,
        (GSO_UDP_L4, _) => false,
        _ => return Err(bad()),
    };
    // Like wireguard-go, the transport header's length comes from the packet: the kernel's
    // hdr_len may cover more (the whole first segment on the forwarding path).
    let min_ip = if v6 { 40 } else { 20 };
    let thl = match tcp {
        true if pkt.len() > cstart + 12 => usize::from(pkt[cstart + 12] >> 4) * 4,
        false => 8,
        true => return Err(Short(pkt.len())),
    };
    let hlen = cstart + thl;
    let gso = usize::from(hdr.gso_size);
    if cstart < min_ip || thl < 8 || hlen > MAX_HDR_LEN || gso == 0 || (tcp && thl < 20) {
        return Err(bad());
    }
    if hlen > pkt.len() {
        return Err(Short(pkt.len()));
    }
    let mut template = [0u8; MAX_HDR_LEN];
    template[..hlen].copy_from_slice(&pkt[..hlen]);
    let (seq, id) = (be32(pkt, cstart + 4), be16(pkt, 4));
    let total = pkt.len();
    let mut start = hlen; // where this segment's payload starts
    let mut i = 0usize;
    while start < total || i == 0 {
        let end = total.min(start + gso);
        let last = end == total;
        let seg = &mut pkt[start - hlen..end];
        if i > 0 {
            seg[..hlen].copy_from_slice(&template[..hlen]);
        }
        let len = seg.len();
        if v6 {
            put16(seg, 4, (len - 40) as u16);
        } else {
            put16(seg, 2, len as u16);
            put16(seg, 4, id.wrapping_add(i as u16));
            ipv4_checksum(seg, cstart);
        }
        let t = cstart;
        if tcp {
            seg[t + 4..t + 8].copy_from_slice(&seq.wrapping_add((i * gso) as u32).to_be_bytes());
            if i > 0 {
                seg[t + 13] &= !CWR; // as Linux's TSO: CWR on the first segment only
            }
            if !last {
                seg[t + 13] &= !(FIN | PSH);
            }
        } else {
            put16(seg, t + 4, (len - t) as u16);
        }
        put16(seg, t + if tcp { 16 } else { 6 }, 0);
        let proto = if tcp { TCP } else { UDP };
        let c = !fold(sum(&seg[t..], pseudo(seg, v6, proto, len - t)));
        // RFC 768: a computed UDP checksum of zero is sent as all ones.
        let c = if c == 0 && !tcp { 0xffff } else { c };
        put16(seg, t + if tcp { 16 } else { 6 }, c);
        emit(seg);
        i += 1;
        start = end;
    }
    Ok(i)
}

use SplitError::Short;

/// An open TCP super-packet being coalesced: what the next segment must continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    v6: bool,
    /// IP header length (where the TCP header starts).
    ip_len: usize,
    /// IP plus TCP header length: the bytes each segment repeats.
    pub hdr_len: usize,
    /// Payload bytes of every segment but the last.
    gso_size: usize,
    next_seq: u32,
    /// Length of the super-packet so far (IP header included).
    pub len: usize,
    pub segments: usize,
    /// A short segment or PSH ended it: nothing more may be appended.
    pub closed: bool,
}

/// What coalescing needs of a TCP segment's headers.
struct Segment {
    v6: bool,
    ip_len: usize,
    hdr_len: usize,
    seq: u32,
    flags: u8,
}

/// Parses the headers of a TCP segment that may take part in coalescing: IPv4 without options
/// or fragments and with a valid header checksum, or IPv6 with TCP as next header; TCP with
/// only ACK (and maybe PSH) set. `head` is the start of the packet, `len` its length.
fn segment(head: &[u8], len: usize) -> Option<Segment> {
    let v6 = match head.first()? >> 4 {
        4 => false,
        6 => true,
        _ => return None,
    };
    let ip_len = if v6 { 40 } else { 20 };
    if head.len() < ip_len + 20 {
        return None;
    }
    if v6 {
        if head[6] != TCP || usize::from(be16(head, 4)) + 40 != len {
            return None;
        }
    } else if head[0] != 0x45
        || usize::from(be16(head, 2)) != len
        || be16(head, 6) & 0x3fff != 0
        || head[9] != TCP
        || fold(sum(&head[..20], 0)) != 0xffff
    {
        return None;
    }
    let hdr_len = ip_len + usize::from(head[ip_len + 12] >> 4) * 4;
    let flags = head[ip_len + 13];
    if hdr_len < ip_len + 20 || hdr_len > head.len() || flags & !PSH != ACK || len <= hdr_len {
        return None;
    }
    let seq = be32(head, ip_len + 4);
    Some(Segment {
        v6,
        ip_len,
        hdr_len,
        seq,
        flags,
    })
}

impl Flow {
    /// A flow headed by `pkt` (a whole packet), or `None` if it cannot be coalesced with.
    pub fn start(pkt: &[u8]) -> Option<Flow> {
        let s = segment(pkt, pkt.len())?;
        let payload = pkt.len() - s.hdr_len;
        Some(Flow {
            v6: s.v6,
            ip_len: s.ip_len,
            hdr_len: s.hdr_len,
            gso_size: payload,
            next_seq: s.seq.wrapping_add(payload as u32),
            len: pkt.len(),
            segments: 1,
            closed: s.flags & PSH != 0,
        })
    }

    /// Whether a packet of `len` bytes starting with `head` (at least its first `hdr_len`
    /// bytes, or all of it) continues this flow, whose first segment's headers are `first`.
    /// If so the flow takes it (its payload must then be appended) and `first` gets its PSH.
    pub fn append(&mut self, first: &mut [u8], head: &[u8], len: usize) -> bool {
        let h = self.hdr_len;
        if self.closed || head.len() < h || len <= h || self.len + len - h > MAX_IP_LEN {
            return false;
        }
        let Some(s) = segment(&head[..h], len) else {
            return false;
        };
        let payload = len - h;
        let t = self.ip_len;
        let same = |a: usize, b: usize| first[a..b] == head[a..b];
        let ip_same = if self.v6 {
            // version, traffic class, flow label; next header; hop limit; addresses
            same(0, 4) && same(6, 40)
        } else {
            // TOS; DF; TTL and protocol; addresses
            same(1, 2) && same(6, 7) && same(8, 10) && same(12, 20)
        };
        // Without DF the IDs must count up (Linux's flush_id): the kernel gives the segments it
        // cuts consecutive IDs, so only such a run comes back out as it went in.
        let id_ok = self.v6
            || first[6] & 0x40 != 0
            || be16(head, 4) == be16(first, 4).wrapping_add(self.segments as u16);
        let tcp_same = same(t, t + 4) // ports
            && same(t + 8, t + 13) // ack number, data offset
            && same(t + 14, t + 16) // window
            && same(t + 20, h); // options
        if s.v6 != self.v6
            || s.hdr_len != h
            || !ip_same
            || !id_ok
            || !tcp_same
            || s.seq != self.next_seq
            || payload > self.gso_size
        {
            return false;
        }
        self.len += payload;
        self.segments += 1;
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        if s.flags & PSH != 0 {
            first[t + 13] |= PSH;
        }
        self.closed = s.flags & PSH != 0 || payload < self.gso_size;
        true
    }

    /// Writes the virtio-net header into `buf[..VNET_HDR_LEN]` for the super-packet that
    /// follows it, and fixes that packet's lengths and checksums: a lone segment is left as
    /// it came (flags zero); two or more become one TSO packet whose TCP checksum field holds
    /// the pseudo-header sum for the device to complete (what Linux and wireguard-go do).
    pub fn finish(&self, buf: &mut [u8]) {
        let (vnet, pkt) = buf.split_at_mut(VNET_HDR_LEN);
        let pkt = &mut pkt[..self.len];
        if self.segments < 2 {
            VnetHdr::default().encode(vnet);
            return;
        }
        let t = self.ip_len;
        if self.v6 {
            put16(pkt, 4, (self.len - 40) as u16);
        } else {
            put16(pkt, 2, self.len as u16);
            ipv4_checksum(pkt, t);
        }
        let p = fold(pseudo(pkt, self.v6, TCP, self.len - t));
        put16(pkt, t + 16, p);
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if self.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: self.hdr_len as u16,
            gso_size: self.gso_size as u16,
            csum_start: t as u16,
            csum_offset: 16,
        }
        .encode(vnet);
    }
}

#[cfg(test)]
pub(crate) mod tests;
