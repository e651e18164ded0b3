//! IP packets for the TUN device, decrypted straight into the buffers that are written.
//!
//! Behind a virtio-net header (the TUN has offloads), consecutive segments of one TCP flow are
//! coalesced into one super-packet (GRO, see [`crate::io::offload`]) without a copy: when the
//! last buffer holds an open super-packet whose headers are `hdr_len` bytes, the next datagram
//! is decrypted at `end - hdr_len`, so that a segment of the same flow has its payload exactly
//! where it must be appended. The `hdr_len` bytes it overwrites (the super-packet's tail) are
//! saved first and put back once the new header has been read; a packet that does not
//! continue the flow is then moved into a buffer of its own (a copy, rare in bulk transfers),
//! unless it continues the super-packet of its own TCP connection in an earlier buffer: flows
//! interleave when several peers send at once, and each would otherwise end the others'
//! super-packets (16 laptops uploading: 6 segments per write instead of 18). That append is a
//! copy of its payload; packets of one connection never change order.

use super::DATA_OVERHEAD;
use crate::io::offload::{Flow, MAX_HDR_LEN, MAX_IP_LEN, VnetHdr};
use std::collections::HashMap;

/// Buffers per TUN write batch (what wireguard-go and tun-rs call the ideal batch size). With
/// offloads each may grow to a 64 KiB super-packet, so at most 8 MiB, touched only as used.
pub const TUN_BATCH: usize = 128;
/// Smallest destination for a decapsulation (boringtun writes handshake answers there too).
const MIN_DST: usize = 148;

pub struct TunBatch {
    frames: Vec<Frame>,
    /// Frames in use.
    len: usize,
    /// IP packets in the frames in use.
    packets: usize,
    offset: usize,
    /// Coalesce TCP segments (the frames start with a virtio-net header).
    gro: bool,
    pending: Pending,
    /// The frame of each TCP connection's latest packet in the batch (with `gro`).
    latest: HashMap<ConnKey, usize>,
}

/// A TCP connection as its packets name it: IP version, addresses and ports (a direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    v6: bool,
    addrs: [u8; 32],
    ports: [u8; 4],
}

/// The connection of a TCP packet starting with `head`; `None` for anything else.
fn conn_key(head: &[u8]) -> Option<ConnKey> {
    const TCP: u8 = 6;
    let mut addrs = [0; 32];
    let (v6, t) = match head.first()? >> 4 {
        4 if head.len() >= 20 && head[9] == TCP => {
            addrs[..8].copy_from_slice(&head[12..20]);
            (false, usize::from(head[0] & 15) * 4)
        }
        6 if head.len() >= 40 && head[6] == TCP => {
            addrs.copy_from_slice(&head[8..40]);
            (true, 40)
        }
        _ => return None,
    };
    let ports = head.get(t..t + 4)?.try_into().ok()?;
    Some(ConnKey { v6, addrs, ports })
}

/// Whether the super-packet of the frame holding connection `key`'s latest packet, among
/// `frames`, takes the packet of `n` bytes starting with `head` (at least that frame's headers):
/// then its flow has taken it and the frame's index and headers' length are returned; the
/// payload, `n` minus those headers, must be appended.
fn join_latest(
    latest: &HashMap<ConnKey, usize>,
    frames: &mut [Frame],
    off: usize,
    key: ConnKey,
    head: &[u8],
    n: usize,
) -> Option<(usize, usize)> {
    let j = *latest.get(&key)?;
    let f = frames.get_mut(j)?;
    let flow = f.flow.as_mut()?;
    let h = flow.hdr_len;
    flow.append(&mut f.buf[off..off + h], head, n)
        .then_some((j, h))
}

/// One write: `buf[..offset]` the virtio-net header's room, `buf[offset..end]` the packet.
struct Frame {
    buf: Vec<u8>,
    end: usize,
    /// The TCP super-packet this frame holds, if it may take more segments.
    flow: Option<Flow>,
}

/// Where the packet being decrypted lands.
enum Pending {
    None,
    /// At the start of the next frame.
    Fresh,
    /// At `at` in the last frame, over `len` bytes saved in `saved`.
    InPlace {
        at: usize,
        len: usize,
        saved: [u8; MAX_HDR_LEN],
    },
}

impl TunBatch {
    /// `offset`: room left before each packet for the TUN's virtio-net header (0 without
    /// offloads); with a full header the batch coalesces TCP segments.
    pub fn new(offset: usize) -> TunBatch {
        TunBatch {
            frames: Vec::new(),
            len: 0,
            packets: 0,
            offset,
            gro: offset == crate::io::offload::VNET_HDR_LEN,
            pending: Pending::None,
            latest: HashMap::new(),
        }
    }

    /// Where to decrypt a datagram of `len` bytes into: boringtun writes there the plaintext
    /// and its 16-byte tag (or a handshake answer). Nothing is kept unless [`TunBatch::commit`]
    /// follows.
    pub fn dst(&mut self, len: usize) -> &mut [u8] {
        self.restore();
        let open = self.len.checked_sub(1).and_then(|i| {
            let f = &self.frames[i];
            let flow = f.flow.filter(|f| !f.closed)?;
            (f.end - flow.hdr_len + len <= f.buf.len()).then_some((i, flow.hdr_len))
        });
        if let Some((i, h)) = open {
            let f = &mut self.frames[i];
            let at = f.end - h;
            let mut saved = [0; MAX_HDR_LEN];
            saved[..h].copy_from_slice(&f.buf[at..f.end]);
            self.pending = Pending::InPlace { at, len: h, saved };
            return &mut f.buf[at..];
        }
        let need = self.offset + len.max(MIN_DST);
        let f = self.fresh();
        if f.buf.len() < need {
            f.buf.resize(need, 0);
        }
        self.pending = Pending::Fresh;
        &mut self.frames[self.len].buf[self.offset..]
    }

    /// The next unused frame (made on first use).
    fn fresh(&mut self) -> &mut Frame {
        if self.frames.len() == self.len {
            // calloc'd: the pages are touched only as packets fill them.
            let size = if self.gro {
                self.offset + MAX_IP_LEN + DATA_OVERHEAD
            } else {
                0
            };
            self.frames.push(Frame {
                buf: vec![0; size],
                end: 0,
                flow: None,
            });
        }
        &mut self.frames[self.len]
    }

    /// Keeps the packet of `n` bytes just decrypted into [`TunBatch::dst`].
    pub fn commit(&mut self, n: usize) {
        let (off, gro) = (self.offset, self.gro);
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => return,
            Pending::Fresh => {
                let (done, rest) = self.frames.split_at_mut(self.len);
                let packet = &rest[0].buf[off..off + n];
                let joined = conn_key(packet)
                    .and_then(|key| join_latest(&self.latest, done, off, key, packet, n));
                if let Some((j, h)) = joined {
                    let to = &mut done[j];
                    to.buf[to.end..to.end + n - h].copy_from_slice(&packet[h..]);
                    to.end += n - h;
                    self.packets += 1;
                    return;
                }
            }
            Pending::InPlace { at, len: h, saved } => {
                let last = self.len - 1;
                let f = &mut self.frames[last];
                // The new packet's first bytes, then the super-packet's tail back in place.
                let mut head = [0; MAX_HDR_LEN];
                let k = n.min(h);
                head[..k].copy_from_slice(&f.buf[at..at + k]);
                f.buf[at..at + h].copy_from_slice(&saved[..h]);
                let flow = f.flow.as_mut().expect("an open flow");
                if flow.append(&mut f.buf[off..off + h], &head[..k], n) {
                    f.end += n - h;
                    self.packets += 1;
                    return;
                }
                // Another flow: the super-packet of its own connection in an earlier frame
                // may take it (the last frame is not tried again). Its headers may be longer
                // than the last frame's: `head` takes up to MAX_HDR_LEN bytes, the rest is
                // still where it was decrypted.
                let (before, from) = self.frames.split_at_mut(last);
                let from = &from[0].buf;
                let k2 = n.min(MAX_HDR_LEN);
                head[k..k2].copy_from_slice(&from[at + k..at + k2]);
                let joined = conn_key(&head[..k2])
                    .and_then(|key| join_latest(&self.latest, before, off, key, &head[..k2], n));
                if let Some((j, hj)) = joined {
                    let to = &mut before[j];
                    let e = to.end;
                    to.buf[e..e + k2 - hj].copy_from_slice(&head[hj..k2]);
                    let e = e + k2 - hj;
                    to.buf[e..e + n - k2].copy_from_slice(&from[at + k2..at + n]);
                    to.end = e + n - k2;
                    self.packets += 1;
                    return;
                }
                // Not a continuation: into a frame of its own.
                self.fresh();
                let (done, rest) = self.frames.split_at_mut(self.len);
                let (from, to) = (&done[last].buf, &mut rest[0].buf);
                to[off..off + k].copy_from_slice(&head[..k]);
                if n > h {
                    to[off + h..off + n].copy_from_slice(&from[at + h..at + n]);
                }
            }
        }
        let f = &mut self.frames[self.len];
        f.end = off + n;
        f.flow = gro.then(|| Flow::start(&f.buf[off..off + n])).flatten();
        if let Some(key) = conn_key(&f.buf[off..off + n]).filter(|_| gro) {
            self.latest.insert(key, self.len);
        }
        self.len += 1;
        self.packets += 1;
    }

    /// Appends a copy of `packet`.
    pub fn push(&mut self, packet: &[u8]) {
        self.dst(packet.len())[..packet.len()].copy_from_slice(packet);
        self.commit(packet.len());
    }

    /// Puts back what an uncommitted in-place decryption overwrote.
    fn restore(&mut self) {
        if let Pending::InPlace { at, len, saved } =
            std::mem::replace(&mut self.pending, Pending::None)
        {
            self.frames[self.len - 1].buf[at..at + len].copy_from_slice(&saved[..len]);
        }
    }

    /// The writes, each with its virtio-net header filled in when the batch has one (a
    /// coalesced super-packet's lengths and checksum fixed as the device expects).
    pub fn frames(&mut self) -> impl Iterator<Item = &[u8]> {
        self.restore();
        let (off, gro) = (self.offset, self.gro);
        self.frames[..self.len].iter_mut().map(move |f| {
            if gro {
                match f.flow {
                    Some(flow) => flow.finish(&mut f.buf[..f.end]),
                    None => VnetHdr::default().encode(&mut f.buf[..off]),
                }
            }
            &f.buf[..f.end]
        })
    }

    /// The IP packets (super-packets once coalesced), without the header room.
    pub fn packets(&mut self) -> impl Iterator<Item = &[u8]> {
        let off = self.offset;
        self.frames().map(move |f| &f[off..])
    }

    /// Writes (frames) and IP packets in the batch.
    pub fn counts(&self) -> (usize, usize) {
        (self.len, self.packets)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// [`TUN_BATCH`] frames are waiting: write them before adding more.
    pub fn is_full(&self) -> bool {
        self.len >= TUN_BATCH
    }

    pub fn clear(&mut self) {
        self.restore();
        self.len = 0;
        self.packets = 0;
        self.latest.clear();
    }
}

#[cfg(test)]
mod tests;
