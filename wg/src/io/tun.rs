//! The TUN device: created here, configured (addresses, routes, up) by the caller over netlink.
//! With IFF_VNET_HDR offloads one write carries a coalesced TCP super-packet (see
//! [`crate::io::offload`]) and one read a whole TCP/UDP GSO batch; without them, one packet
//! per syscall.
//!
//! Or, in userspace mode, no TUN at all: the same device tasks read and write IP packets over
//! an in-process [`PacketChannel`] whose other end is a userspace TCP/IP stack.

use std::io;

use tokio::sync::{Mutex, mpsc};
use tun_rs::{AsyncDevice, DeviceBuilder, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use crate::core::TunBatch;
use crate::io::stats::Edge;

/// Packets queued between the device and the userspace stack, each way (beyond it the
/// sender waits: the stack's TCP slows down as on a full NIC ring).
pub const CHANNEL_PACKETS: usize = 1024;

pub struct Tun {
    backend: Backend,
    /// Syscalls and packets of the kernel TUN (a channel device counts nothing).
    pub reads: Edge,
    pub writes: Edge,
}

enum Backend {
    Kernel { dev: AsyncDevice, offload: bool },
    Channel(ChannelSide),
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
        }
    }

    /// Header room [`TunBatch`] buffers need for [`Tun::send`].
    pub fn offset(&self) -> usize {
        match self.backend {
            Backend::Kernel { offload: true, .. } => VIRTIO_NET_HDR_LEN,
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
            Backend::Channel(c) => {
                for p in batch.packets() {
                    c.to_stack.send(p.to_vec()).await.map_err(|_| gone())?;
                }
            }
        }
        result
    }

    /// Waits for packets and reads one batch into `bufs`; returns how many packets.
    pub async fn recv(&self, bufs: &mut TunRecvBufs) -> io::Result<usize> {
        match &self.backend {
            Backend::Kernel { dev, .. } => {
                let n = dev
                    .recv_multiple(&mut bufs.original, &mut bufs.bufs, &mut bufs.sizes, 0)
                    .await?;
                self.reads.add(n);
                Ok(n)
            }
            Backend::Channel(c) => {
                let mut rx = c.from_stack.lock().await;
                let first = rx.recv().await.ok_or_else(gone)?;
                Ok(bufs.fill(first, &mut rx))
            }
        }
    }

    /// Like [`Tun::recv`] but returns `WouldBlock` instead of waiting.
    pub fn try_recv(&self, bufs: &mut TunRecvBufs) -> io::Result<usize> {
        match &self.backend {
            Backend::Kernel { dev, .. } => {
                let n =
                    dev.try_recv_multiple(&mut bufs.original, &mut bufs.bufs, &mut bufs.sizes, 0)?;
                self.reads.add(n);
                Ok(n)
            }
            Backend::Channel(c) => {
                let mut rx = c.from_stack.try_lock().map_err(|_| would_block())?;
                let first = rx.try_recv().map_err(|e| match e {
                    mpsc::error::TryRecvError::Empty => would_block(),
                    mpsc::error::TryRecvError::Disconnected => gone(),
                })?;
                Ok(bufs.fill(first, &mut rx))
            }
        }
    }
}

/// The stack's end of the channel is gone: like a deleted interface (the tasks stop).
fn gone() -> io::Error {
    io::Error::from_raw_os_error(libc::ENODEV)
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

/// Buffers for [`Tun::recv`]: one raw read split into MTU-sized packets.
pub struct TunRecvBufs {
    original: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl TunRecvBufs {
    pub fn new(mtu: u16) -> TunRecvBufs {
        TunRecvBufs {
            original: vec![0; VIRTIO_NET_HDR_LEN + 65535],
            // Segments of a GSO read fit the MTU; a single unsegmented packet lands in the
            // first buffer, which takes any size (the MTU may be raised after creation).
            bufs: (0..IDEAL_BATCH_SIZE)
                .map(|i| {
                    vec![
                        0;
                        if i == 0 {
                            65535
                        } else {
                            usize::from(mtu).max(9000) + 64
                        }
                    ]
                })
                .collect(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
        }
    }

    /// Puts `first` and whatever more the channel holds (up to a batch) into the buffers.
    fn fill(&mut self, first: Vec<u8>, rx: &mut mpsc::Receiver<Vec<u8>>) -> usize {
        let mut n = 0;
        let mut next = Some(first);
        while let Some(p) = next {
            let b = &mut self.bufs[n];
            if b.len() < p.len() {
                b.resize(p.len(), 0);
            }
            b[..p.len()].copy_from_slice(&p);
            self.sizes[n] = p.len();
            n += 1;
            next = (n < self.bufs.len()).then(|| rx.try_recv().ok()).flatten();
        }
        n
    }

    pub fn packets(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.bufs[..n]
            .iter()
            .zip(&self.sizes)
            .map(|(b, s)| &b[..*s])
    }
}
