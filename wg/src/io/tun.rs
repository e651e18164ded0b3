//! The TUN device: created here, configured (addresses, routes, up) by the caller over netlink.
//! With IFF_VNET_HDR offloads one read yields a whole TCP/UDP GSO batch and writes are
//! coalesced (GRO); without them, one packet per syscall.

use std::io;

use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use crate::core::TunBatch;

pub struct Tun {
    dev: AsyncDevice,
    offload: bool,
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
        match build(true) {
            Ok(dev) => Ok(Tun { dev, offload: true }),
            Err(e) => {
                tracing::debug!(error = %e, "TUN offloads unavailable; one packet per syscall");
                Ok(Tun {
                    dev: build(false)?,
                    offload: false,
                })
            }
        }
    }

    pub fn name(&self) -> io::Result<String> {
        self.dev.name()
    }

    /// Header room [`TunBatch`] buffers need for [`Tun::send`].
    pub fn offset(&self) -> usize {
        if self.offload { VIRTIO_NET_HDR_LEN } else { 0 }
    }

    pub async fn send(&self, batch: &mut TunBatch, gro: &mut GROTable) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.offload {
            self.dev
                .send_multiple(gro, &mut batch.bufs[..batch.len], batch.offset)
                .await?;
        } else {
            for p in batch.packets() {
                self.dev.send(p).await?;
            }
        }
        Ok(())
    }

    /// Waits for packets and reads one batch into `bufs`; returns how many packets.
    pub async fn recv(&self, bufs: &mut TunRecvBufs) -> io::Result<usize> {
        self.dev
            .recv_multiple(&mut bufs.original, &mut bufs.bufs, &mut bufs.sizes, 0)
            .await
    }

    /// Like [`Tun::recv`] but returns `WouldBlock` instead of waiting.
    pub fn try_recv(&self, bufs: &mut TunRecvBufs) -> io::Result<usize> {
        self.dev
            .try_recv_multiple(&mut bufs.original, &mut bufs.bufs, &mut bufs.sizes, 0)
    }
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

    pub fn packets(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.bufs[..n]
            .iter()
            .zip(&self.sizes)
            .map(|(b, s)| &b[..*s])
    }
}
