//! The TUN device: created here, configured (addresses, routes, up) by the caller over netlink.
//! With IFF_VNET_HDR offloads one write carries a coalesced TCP super-packet (see
//! [`crate::io::offload`]) and one read a whole TCP/UDP GSO batch; without them, one packet
//! per syscall.
//!
//! Or, in userspace mode, no TUN at all: the same device tasks read and write IP packets over
//! an in-process [`PacketChannel`] whose other end is a userspace TCP/IP stack.

use std::io;

use tokio::sync::{Mutex, mpsc};
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::core::TunBatch;
use crate::io::offload::{self, MAX_IP_LEN, VNET_HDR_LEN};
use crate::io::stats::{Edge, vnet_segments};

/// Packets queued between the device and the userspace stack, each way (beyond it the
/// sender waits: the stack's TCP slows down as on a full NIC ring).
pub const CHANNEL_PACKETS: usize = 1024;
/// Packets taken from the channel per batch.
const CHANNEL_BATCH: usize = 128;

pub struct Tun {
    backend: Backend,
    /// Syscalls and packets of the kernel TUN (a channel device counts nothing).
    pub reads: Edge,
    pub writes: Edge,
}

enum Backend {
    Kernel {
        dev: AsyncDevice,
        offload: bool,
    },
    Channel(ChannelSide),
    /// A TUN descriptor made by someone else (kwg-helper, passed over SCM_RIGHTS), read and
    /// written directly: tun-rs adopts no descriptor with IFF_VNET_HDR.
    Fd(FdTun),
}

/// A passed TUN descriptor: nonblocking, registered with the runtime.
struct FdTun {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    name: String,
    offload: bool,
}

impl FdTun {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: reads at most buf.len() bytes into buf from a descriptor we own.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: writes buf.len() bytes of buf to a descriptor we own.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|_| self.read(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|_| self.write(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The device's side of a packet channel.
struct ChannelSide {
    /// Packets the stack sends into the tunnel (one reader: the encrypting task).
    from_stack: Mutex<mpsc::Receiver<Vec<u8>>>,
    /// Decrypted packets for the stack.
    to_stack: mpsc::Sender<Vec<u8>>,
}

/// The userspace stack's side of a channel device: IP packets in and out of the tunnel.
pub struct PacketChannel {
    /// Send an IP packet into the tunnel (it is encrypted for the peer whose AllowedIPs hold
    /// its destination).
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Decrypted IP packets from the tunnel.
    pub rx: mpsc::Receiver<Vec<u8>>,
}

impl Tun {
    pub fn create(name: &str, mtu: u16) -> io::Result<Tun> {
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(name)
                .mtu(mtu)
                .offload(offload)
                .build_async()
        };
        let (dev, offload) = match build(true) {
            Ok(dev) => (dev, true),
            Err(e) => {
                tracing::debug!(error = %e, "TUN offloads unavailable; one packet per syscall");
                (build(false)?, false)
            }
        };
        Ok(Tun {
            backend: Backend::Kernel { dev, offload },
            reads: Edge::default(),
            writes: Edge::default(),
        })
    }

    /// The TUN `name` whose descriptor `fd` another process made (kwg-helper) and passed here;
    /// `offload` says it has IFF_VNET_HDR with TSO/USO on, as [`Tun::create`] sets them up.
    /// Needs a tokio runtime (the descriptor is registered with it).
    pub fn from_fd(fd: std::os::fd::OwnedFd, name: String, offload: bool) -> io::Result<Tun> {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        // SAFETY: an OwnedFd stays open and the same descriptor for the AsyncFd's lifetime.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Tun {
            backend: Backend::Fd(FdTun { fd, name, offload }),
            reads: Edge::default(),
            writes: Edge::default(),
        })
    }

    /// No TUN: packets go to and come from the returned [`PacketChannel`].
    pub fn channel() -> (Tun, PacketChannel) {
        let (tx, from_stack) = mpsc::channel(CHANNEL_PACKETS);
        let (to_stack, rx) = mpsc::channel(CHANNEL_PACKETS);
        let side = ChannelSide {
            from_stack: Mutex::new(from_stack),
            to_stack,
        };
        let tun = Tun {
            backend: Backend::Channel(side),
            reads: Edge::default(),
            writes: Edge::default(),
        };
        (tun, PacketChannel { tx, rx })
    }

    pub fn name(&self) -> io::Result<String> {
        match &self.backend {
            Backend::Kernel { dev, .. } => dev.name(),
            Backend::Channel(_) => Ok("userspace".into()),
            Backend::Fd(f) => Ok(f.name.clone()),
        }
    }

    /// Header room [`TunBatch`] buffers need for [`Tun::send`].
    pub fn offset(&self) -> usize {
        match self.backend {
            Backend::Kernel { offload: true, .. } => VNET_HDR_LEN,
            Backend::Fd(FdTun { offload: true, .. }) => VNET_HDR_LEN,
            _ => 0,
        }
    }

    /// Writes the batch: one write per frame (a coalesced TCP super-packet or one packet).
    /// A failed write does not stop the others; the first error is returned.
    pub async fn send(&self, batch: &mut TunBatch) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (frames, packets) = batch.counts();
        let mut result = Ok(());
        match &self.backend {
            Backend::Kernel { dev, .. } => {
                for f in batch.frames() {
                    if let Err(e) = dev.send(f).await
                        && result.is_ok()
                    {
                        result = Err(e);
                    }
                }
                self.writes.add_calls(frames, packets);
            }
            Backend::Fd(t) => {
                for f in batch.frames() {
                    if let Err(e) = t.send(f).await
                        && result.is_ok()
                    {
                        result = Err(e);
                    }
                }
                self.writes.add_calls(frames, packets);
            }
            Backend::Channel(c) => {
                for p in batch.packets() {
                    c.to_stack.send(p.to_vec()).await.map_err(|_| gone())?;
                }
            }
        }
        result
    }

    /// Waits for packets and reads one batch into `bufs` (one TUN read, or what the channel
    /// holds); [`TunRecvBufs::drain`] then hands out its IP packets.
    pub async fn recv(&self, bufs: &mut TunRecvBufs) -> io::Result<()> {
        match &self.backend {
            Backend::Kernel { dev, offload } => {
                let n = dev.recv(&mut bufs.raw).await?;
                self.read(bufs, n, *offload);
            }
            Backend::Fd(t) => {
                let n = t.recv(&mut bufs.raw).await?;
                self.read(bufs, n, t.offload);
            }
            Backend::Channel(c) => {
                let mut rx = c.from_stack.lock().await;
                let first = rx.recv().await.ok_or_else(gone)?;
                bufs.fill(first, &mut rx);
            }
        }
        Ok(())
    }

    /// Like [`Tun::recv`] but returns `WouldBlock` instead of waiting.
    pub fn try_recv(&self, bufs: &mut TunRecvBufs) -> io::Result<()> {
        match &self.backend {
            Backend::Kernel { dev, offload } => {
                let n = dev.try_recv(&mut bufs.raw)?;
                self.read(bufs, n, *offload);
            }
            Backend::Fd(t) => {
                let n = t.read(&mut bufs.raw)?;
                self.read(bufs, n, t.offload);
            }
            Backend::Channel(c) => {
                let mut rx = c.from_stack.try_lock().map_err(|_| would_block())?;
                let first = rx.try_recv().map_err(|e| match e {
                    mpsc::error::TryRecvError::Empty => would_block(),
                    mpsc::error::TryRecvError::Disconnected => gone(),
                })?;
                bufs.fill(first, &mut rx);
            }
        }
        Ok(())
    }

    fn read(&self, bufs: &mut TunRecvBufs, n: usize, vnet: bool) {
        if n == bufs.raw.len() {
            // Larger than any IP packet: the kernel truncated it; splitting would send a
            // shortened last segment with a fresh, valid checksum.
            tracing::debug!(bytes = n, "TUN read dropped: truncated");
            bufs.len = 0;
            return;
        }
        (bufs.len, bufs.vnet) = (n, vnet);
        let segments = match vnet {
            true if n >= VNET_HDR_LEN => vnet_segments(&bufs.raw[..VNET_HDR_LEN], n - VNET_HDR_LEN),
            _ => 1,
        };
        self.reads.add(segments);
    }
}

/// The stack's end of the channel is gone: like a deleted interface (the tasks stop).
fn gone() -> io::Error {
    io::Error::from_raw_os_error(libc::ENODEV)
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

/// Fixed IPv6 header, outside the payload length.
const IPV6_HDR_LEN: usize = 40;

/// Buffers for [`Tun::recv`]: one raw TUN read (a TSO/USO super-packet is split in place),
/// or the packets the userspace stack queued.
pub struct TunRecvBufs {
    /// Virtio-net header (with offloads) and packet.
    raw: Vec<u8>,
    /// Bytes of `raw` read and not yet drained.
    len: usize,
    vnet: bool,
    queued: Vec<Vec<u8>>,
}

impl Default for TunRecvBufs {
    fn default() -> TunRecvBufs {
        TunRecvBufs {
            // The largest read (an IPv6 header and 64 KiB of payload behind the virtio-net
            // header) plus one byte, so that a truncated read shows as a full buffer.
            raw: vec![0; VNET_HDR_LEN + IPV6_HDR_LEN + MAX_IP_LEN + 1],
            len: 0,
            vnet: false,
            queued: Vec::new(),
        }
    }
}

impl TunRecvBufs {
    /// Puts `first` and whatever more the channel holds (up to a batch) into the queue.
    fn fill(&mut self, first: Vec<u8>, rx: &mut mpsc::Receiver<Vec<u8>>) {
        self.queued.push(first);
        while self.queued.len() < CHANNEL_BATCH
            && let Ok(p) = rx.try_recv()
        {
            self.queued.push(p);
        }
    }

    /// Translates the packets received since the last drain (virtual subnets: mapped →
    /// real destination), before they are split and drained. A super-packet is translated
    /// once: its segments' checksums are computed from its rewritten headers.
    pub fn translate(&mut self, t: &crate::translate::Translator) {
        let n = self.len;
        if self.vnet && n >= VNET_HDR_LEN {
            let partial = offload::VnetHdr::decode(&self.raw[..n]).is_some_and(|h| h.needs_csum());
            t.outbound(&mut self.raw[VNET_HDR_LEN..n], partial);
        } else if !self.vnet && n > 0 {
            t.outbound(&mut self.raw[..n], false);
        }
        for p in &mut self.queued {
            t.outbound(p, false);
        }
    }

    /// Calls `f` with each IP packet received since the last drain, in order. A read the
    /// kernel's offloads made unsplittable is dropped (and logged).
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        let n = std::mem::take(&mut self.len);
        if self.vnet && n > 0 {
            if let Err(e) = offload::split(&mut self.raw[..n], &mut f) {
                tracing::debug!(error = %e, "TUN read dropped");
            }
        } else if n > 0 {
            f(&self.raw[..n]);
        }
        for p in self.queued.drain(..) {
            f(&p);
        }
    }
}
