//! IP packets for the TUN device, decrypted straight into the buffers that are written.
//!
//! Behind a virtio-net header (the TUN has offloads), consecutive segments of one TCP flow are
//! coalesced into one super-packet (GRO, see [`crate::io::offload`]) without a copy: when the
//! last buffer holds an open super-packet whose headers are `hdr_len` bytes, the next datagram
//! is decrypted at `end - hdr_len`, so that a segment of the same flow has its payload exactly
//! where it must be appended. The `hdr_len` bytes it overwrites (the super-packet's tail) are
//! saved first and put back once the new header has been read; a packet that does not
//! continue the flow is then moved into a buffer of its own (a copy, rare in bulk transfers).

use super::DATA_OVERHEAD;
use crate::io::offload::{Flow, MAX_HDR_LEN, MAX_IP_LEN, VnetHdr};

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
            Pending::Fresh => {}
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
                // Another flow, or not a continuation: into a frame of its own.
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
    }
}

#[cfg(test)]
#[path = "tun_batch_tests.rs"]
mod tests;
