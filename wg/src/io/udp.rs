//! The device's UDP socket: dual-stack `[::]:port` (IPv4 only if IPv6 is disabled), batched
//! receives (recvmmsg + GRO) and segmented sends (GSO) via quinn-udp.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

use crate::io::stats::Edge;
use crate::io::stream::is_stream_endpoint;

/// Socket buffer size: room for a few GSO batches in flight (kwg-helper forces the same on a
/// normal user's socket). A gateway under 16 laptops overflows it in bursts (thousands of drops
/// in 5 s, TCP's signal to slow down); 32 MiB there dropped nothing, queued 22 MB (58 ms) and
/// never coalesced better (docs/performance.md, Many laptops).
const SOCKET_BUFFER: usize = kwg_host::sockbuf::UDP_SOCKET_BUFFER;
/// Receive buffer per datagram slot: a GRO batch can reach 64 KiB.
const RECV_SLOT: usize = 65536;

pub struct Udp {
    sock: tokio::net::UdpSocket,
    state: UdpSocketState,
    v6: bool,
    port: u16,
    /// sendmsg/recvmmsg calls and the datagrams they carried (since this socket was bound).
    pub sends: Edge,
    pub recvs: Edge,
    /// Received messages (recvmmsg entries) and the datagrams they held: more than one per
    /// message only when GRO coalesced them before the socket.
    pub recv_gro: Edge,
}

impl Udp {
    pub fn bind(port: u16, fwmark: u32) -> io::Result<Udp> {
        let v6 = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).and_then(|s| {
            s.set_only_v6(false)?;
            s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
            Ok(s)
        });
        let (sock, v6) = match v6 {
            Ok(s) => (s, true),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
            Err(_) => {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).into())?;
                (s, false)
            }
        };
        // Root may exceed net.core.{r,w}mem_max; others get what the sysctl allows.
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
            let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        }
        if setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
            let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        }
        if fwmark != 0 {
            sock.set_mark(fwmark)?;
        }
        sock.set_nonblocking(true)?;
        let std_sock: std::net::UdpSocket = sock.into();
        let state = UdpSocketState::new((&std_sock).into())?;
        let port = std_sock.local_addr()?.port();
        let sock = tokio::net::UdpSocket::from_std(std_sock)?;
        tracing::debug!(
            port,
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP socket bound"
        );
        Ok(Udp {
            sock,
            state,
            v6,
            port,
            sends: Edge::default(),
            recvs: Edge::default(),
            recv_gro: Edge::default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A descriptor of the socket (kwg-helper forces its buffers for a normal user's daemon).
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.sock.as_fd().try_clone_to_owned()
    }

    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        socket2::SockRef::from(&self.sock).set_mark(mark)
    }

    fn wire_addr(&self, dst: SocketAddr) -> SocketAddr {
        match (self.v6, dst) {
            (true, SocketAddr::V4(a)) => {
                SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
            }
            _ => dst,
        }
    }

    async fn send_one(
        &self,
        dst: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        let t = Transmit {
            destination: self.wire_addr(dst),
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        loop {
            self.sock.writable().await?;
            match self.sock.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.sock).into(), &t)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => {
                    if r.is_ok() {
                        let seg = segment.unwrap_or(contents.len()).max(1);
                        self.sends.add(contents.len().div_ceil(seg));
                    }
                    return r;
                }
            }
        }
    }

    /// Sends every datagram of `sends` (a `NetBatch`'s), segmented where the batch grouped
    /// them.
    pub async fn send_batch<'a>(&self, sends: impl Iterator<Item = (SocketAddr, &'a [u8], usize)>) {
        for (dst, contents, seg) in sends {
            let segment = (contents.len() > seg).then_some(seg);
            if let Err(e) = self.send_one(dst, contents, segment).await {
                if segment.is_none() {
                    tracing::debug!(%dst, error = %e, "UDP send failed");
                    continue;
                }
                // GSO refused (quinn-udp turns it off on EIO): send one by one.
                for chunk in contents.chunks(seg) {
                    if let Err(e) = self.send_one(dst, chunk, None).await {
                        tracing::debug!(%dst, error = %e, "UDP send failed");
                    }
                }
            }
        }
    }

    /// Waits for datagrams and reads a batch. Each received entry may hold several datagrams of
    /// `stride` bytes (GRO).
    pub async fn recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        loop {
            self.sock.readable().await?;
            match self.sock.try_io(Interest::READABLE, || self.read(bufs)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Like [`Udp::recv`] but returns `WouldBlock` instead of waiting: what the socket already
    /// holds, for a receive task that folds several batches into one TUN write.
    pub fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        self.sock.try_io(Interest::READABLE, || self.read(bufs))
    }

    /// One recvmmsg into `bufs`, counted.
    fn read(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        // On the stack: no allocation per receive.
        let mut slots = bufs.bufs.iter_mut();
        let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] = std::array::from_fn(|_| {
            IoSliceMut::new(slots.next().expect("one buffer per batch slot"))
        });
        let n = self
            .state
            .recv((&self.sock).into(), &mut slices, &mut bufs.meta)?;
        let datagrams = bufs.meta[..n]
            .iter()
            .map(|m| m.len.div_ceil(m.stride.max(1)))
            .sum();
        self.recvs.add(datagrams);
        self.recv_gro.add_calls(n, datagrams);
        Ok(n)
    }
}

/// Receive buffers for [`Udp::recv`].
pub struct RecvBufs {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

impl Default for RecvBufs {
    fn default() -> Self {
        let n = quinn_udp::BATCH_SIZE;
        RecvBufs {
            bufs: vec![vec![0; RECV_SLOT]; n],
            meta: vec![RecvMeta::default(); n],
        }
    }
}

impl RecvBufs {
    /// `(source, datagram)` for every datagram of the first `n` entries. A source in the
    /// streams' prefix (`100::/64`, [`is_stream_endpoint`]) is spoofed: dropped, so that no
    /// datagram over UDP can pass for one from a stream (an answer queued into a client's
    /// stream, a peer moved onto a stream).
    pub fn datagrams(&self, n: usize) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta[..n]
            .iter()
            .zip(&self.bufs)
            .filter(|(m, _)| !is_stream_endpoint(&m.addr))
            .flat_map(|(m, b)| b[..m.len].chunks(m.stride.max(1)).map(move |d| (m.addr, d)))
    }

    /// Puts `datagrams` into the buffers as one receive round of one datagram per entry (at
    /// most a batch's); the entries filled, as [`Udp::recv`] returns them.
    #[cfg(test)]
    pub(crate) fn fill(&mut self, datagrams: &[(SocketAddr, Vec<u8>)]) -> usize {
        assert!(
            datagrams.len() <= self.meta.len(),
            "one round holds at most a batch"
        );
        for (i, (from, d)) in datagrams.iter().enumerate() {
            self.bufs[i][..d.len()].copy_from_slice(d);
            self.meta[i] = RecvMeta::default();
            self.meta[i].addr = *from;
            self.meta[i].len = d.len();
            self.meta[i].stride = d.len();
        }
        datagrams.len()
    }

    /// Puts `datagrams` from `from`, all of one size, into the buffers as one receive round that
    /// UDP GRO coalesced: as many per entry as a slot holds. The entries filled.
    #[cfg(test)]
    pub(crate) fn fill_gro(&mut self, from: SocketAddr, datagrams: &[Vec<u8>]) -> usize {
        let stride = datagrams[0].len();
        let chunks = datagrams.chunks(RECV_SLOT / stride);
        assert!(
            chunks.len() <= self.meta.len(),
            "one round holds at most a batch"
        );
        for (i, chunk) in chunks.enumerate() {
            let len = chunk.iter().map(|d| d.len()).sum();
            self.bufs[i][..len].copy_from_slice(&chunk.concat());
            self.meta[i] = RecvMeta::default();
            self.meta[i].addr = from;
            self.meta[i].len = len;
            self.meta[i].stride = stride;
        }
        datagrams.len().div_ceil(RECV_SLOT / stride)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::stream::stream_endpoint;

    fn meta(addr: SocketAddr, len: usize) -> RecvMeta {
        let mut m = RecvMeta::default();
        m.addr = addr;
        m.len = len;
        m.stride = len;
        m
    }

    #[test]
    fn datagrams_from_the_stream_prefix_are_dropped() {
        let mut bufs = RecvBufs::default();
        let udp: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:51820".parse().unwrap();
        bufs.meta[0] = meta(udp, 3);
        bufs.meta[1] = meta(stream_endpoint(1), 4);
        bufs.meta[2] = meta("[100::ffff:0:1]:0".parse().unwrap(), 5);
        bufs.meta[3] = meta(mapped, 6);
        let got: Vec<(SocketAddr, usize)> = bufs.datagrams(4).map(|(a, d)| (a, d.len())).collect();
        assert_eq!(got, [(udp, 3), (mapped, 6)]);
    }
}
