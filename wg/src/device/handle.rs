//! [`DeviceHandle`]: changes and inspects a running device from anywhere (the driver, UAPI,
//! the transport ladder) without keeping it alive.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use super::{ByteStream, PeerConfig, PeerStats, Shared, tasks};
use crate::Error;
use crate::io::udp::Udp;
use crate::uapi;
use kwg_contract::keys::PublicKey;

impl Shared {
    pub(crate) fn handle(self: &Arc<Self>) -> DeviceHandle {
        DeviceHandle {
            shared: Arc::downgrade(self),
            ifname: self.ifname.as_str().into(),
        }
    }
}

/// A cheap, cloneable handle to change and inspect a running device. It does not keep the
/// device alive: after [`Device::shutdown`](super::Device::shutdown) its operations return [`Error::Stopped`].
#[derive(Clone)]
pub struct DeviceHandle {
    shared: Weak<Shared>,
    ifname: Arc<str>,
}

impl DeviceHandle {
    fn live(&self) -> Result<Arc<Shared>, Error> {
        self.shared.upgrade().ok_or(Error::Stopped)
    }

    /// Adds a peer or updates it live; the sessions of this and every other peer continue.
    pub async fn upsert_peer(&self, p: PeerConfig) -> Result<(), Error> {
        self.live()?.core().upsert_peer(p);
        Ok(())
    }

    pub async fn remove_peer(&self, k: &PublicKey) -> Result<(), Error> {
        self.live()?.core().remove_peer(k);
        Ok(())
    }

    /// Every peer's statistics (empty once the device stopped).
    pub async fn peers(&self) -> Vec<PeerStats> {
        self.live()
            .map(|s| s.core().peers(Instant::now(), SystemTime::now()))
            .unwrap_or_default()
    }

    /// The interface's public key (all zeros before a private key is set or once stopped).
    pub fn public_key(&self) -> PublicKey {
        self.live()
            .ok()
            .and_then(|s| s.core().public_key())
            .unwrap_or_else(|| PublicKey::from_bytes([0; 32]))
    }

    /// The bound UDP port (0 once stopped).
    pub fn listen_port(&self) -> u16 {
        self.live()
            .map(|s| s.listen_port.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// A descriptor of the current UDP socket (a new one after each rebind).
    pub fn udp_socket(&self) -> Result<std::os::fd::OwnedFd, Error> {
        Ok(self.live()?.udp().try_clone_fd()?)
    }

    /// Where a peer's traffic currently goes.
    pub async fn peer_endpoint(&self, k: &PublicKey) -> Option<SocketAddr> {
        let s = self.live().ok()?;
        s.core().peer_config(k).and_then(|c| c.endpoint)
    }

    /// Carries WireGuard datagrams over `stream` (framed, see [`crate::io::stream`]); returns
    /// the stream's endpoint. A peer moves onto it by sending an authenticated packet through
    /// it, or by [`DeviceHandle::set_endpoint`]. The stream ends when either side closes it,
    /// on a malformed frame, or on [`DeviceHandle::close_stream`].
    pub fn attach_stream(
        &self,
        stream: impl ByteStream,
        label: impl Into<String>,
    ) -> Result<SocketAddr, Error> {
        Ok(self
            .live()?
            .attach_stream(Box::new(stream), label.into(), None))
    }

    /// [`DeviceHandle::attach_stream`] for a connection someone else opened (a listener's):
    /// closed when the device has sent nothing over it within
    /// [`UNANSWERED`](super::UNANSWERED) of attaching. The device answers only
    /// handshakes from known peers (and cookie replies under load), so a connection that
    /// never authenticates holds its slot only that long.
    pub fn accept_stream(
        &self,
        stream: impl ByteStream,
        label: impl Into<String>,
    ) -> Result<SocketAddr, Error> {
        Ok(self.live()?.attach_stream(
            Box::new(stream),
            label.into(),
            Some(super::streams::UNANSWERED),
        ))
    }

    /// Whether the stream of endpoint `ep` still runs.
    pub fn stream_open(&self, ep: &SocketAddr) -> bool {
        self.live().is_ok_and(|s| s.streams.is_open(ep))
    }

    /// How many streams are attached.
    pub fn streams(&self) -> usize {
        self.live().map_or(0, |s| s.streams.len())
    }

    pub fn close_stream(&self, ep: &SocketAddr) {
        if let Ok(s) = self.live() {
            s.streams.close(ep);
        }
    }

    /// Moves a peer's traffic to `ep` (a UDP address or a stream endpoint); its session stays.
    pub async fn set_endpoint(&self, k: &PublicKey, ep: SocketAddr) -> Result<(), Error> {
        let s = self.live()?;
        let cfg = s.core().peer_config(k).cloned();
        if let Some(mut cfg) = cfg {
            cfg.endpoint = Some(ep);
            s.core().upsert_peer(cfg);
        }
        Ok(())
    }

    /// Sends the peer a handshake initiation over `via` without moving its endpoint (see
    /// [`Core::initiate_to`](crate::core::Core::initiate_to)); false for an unknown peer.
    pub async fn probe(&self, k: &PublicKey, via: SocketAddr) -> Result<bool, Error> {
        let s = self.live()?;
        let mut net = crate::core::NetBatch::new(1);
        let known = s.core().initiate_to(k, via, Instant::now(), &mut net);
        s.send_net(&net).await;
        Ok(known)
    }

    /// [`DeviceHandle::probe`] over the peer's endpoint; once the handshake completes, the
    /// packets sent since `since` go out again (see [`Core::initiate_replaying`](crate::core::Core::initiate_replaying); replay must
    /// be on: [`DeviceHandle::set_replay`]).
    pub async fn rehandshake(
        &self,
        k: &PublicKey,
        via: SocketAddr,
        since: Instant,
    ) -> Result<bool, Error> {
        let s = self.live()?;
        let mut net = crate::core::NetBatch::new(1);
        let known = s
            .core()
            .initiate_replaying(k, via, since, Instant::now(), &mut net);
        s.send_net(&net).await;
        Ok(known)
    }

    /// Sets the virtual subnets translated between the TUN and the peers (see
    /// [`crate::translate`]); `None` turns translation off.
    pub fn set_translation(&self, t: Option<crate::translate::Translator>) -> Result<(), Error> {
        self.live()?.core().set_translation(t);
        Ok(())
    }

    /// Keeps copies of what is sent to the peer for [`DeviceHandle::rehandshake`].
    pub fn set_replay(&self, k: &PublicKey, on: bool) -> Result<(), Error> {
        self.live()?.core().set_replay(k, on);
        Ok(())
    }

    /// Moves a peer to `ep` and pins it there: only this side chooses the path from now on
    /// (a client's transport ladder). [`DeviceHandle::heard_other`] tells when another path
    /// answered.
    pub async fn pin_endpoint(&self, k: &PublicKey, ep: SocketAddr) -> Result<(), Error> {
        self.set_endpoint(k, ep).await?;
        self.live()?.core().pin_endpoint(k, true);
        Ok(())
    }

    /// The serial number of the peer's last completed handshake (see
    /// [`Core::handshake_serial`](crate::core::Core::handshake_serial)): a changed number is a
    /// new handshake. The `last_handshake` of [`DeviceHandle::peers`] cannot tell that: it
    /// differs on every read (wall time minus a monotonic age, read at different instants).
    pub fn handshake_serial(&self, k: &PublicKey) -> Option<u64> {
        self.live().ok()?.core().handshake_serial(k)
    }

    /// How many packets to the peer waited for a handshake since it was added (see
    /// [`Core::held_packets`](crate::core::Core::held_packets)): sending that the byte
    /// counters of [`DeviceHandle::peers`] do not show.
    pub fn held_packets(&self, k: &PublicKey) -> Option<u64> {
        self.live().ok()?.core().held_packets(k)
    }

    /// The last address other than a pinned endpoint an authenticated packet came from, and
    /// how long ago.
    pub fn heard_other(&self, k: &PublicKey) -> Option<(SocketAddr, std::time::Duration)> {
        let s = self.live().ok()?;
        let (from, at) = s.core().heard_other(k)?;
        Some((from, at.elapsed()))
    }

    /// Syscalls and segments on each edge so far (UDP: since the socket was last bound).
    pub fn io_stats(&self) -> crate::io::stats::IoStats {
        let Ok(s) = self.live() else {
            return Default::default();
        };
        let udp = s.udp();
        crate::io::stats::IoStats {
            tun_read: s.tun.reads.get(),
            tun_write: s.tun.writes.get(),
            udp_send: udp.sends.get(),
            udp_recv: udp.recvs.get(),
            udp_recv_gro: udp.recv_gro.get(),
        }
    }

    /// The UAPI `get=1` answer.
    pub fn uapi_get(&self) -> Result<String, Error> {
        let s = self.live()?;
        let info = uapi::InterfaceInfo {
            listen_port: s.listen_port.load(Ordering::Relaxed),
            fwmark: s.fwmark.load(Ordering::Relaxed),
        };
        Ok(uapi::format_get(
            &s.core(),
            &info,
            Instant::now(),
            SystemTime::now(),
        ))
    }

    /// Applies a UAPI `set=1` request; returns the errno to report (0 on success).
    pub fn uapi_set(&self, req: &uapi::SetRequest) -> i32 {
        let Ok(s) = self.live() else {
            return libc::ENODEV;
        };
        if let Some(port) = req.listen_port
            && port != s.listen_port.load(Ordering::Relaxed)
        {
            let bound = {
                let _in_plane = s.plane.enter();
                Udp::bind(port, s.fwmark.load(Ordering::Relaxed))
            };
            match bound {
                Ok(udp) => {
                    s.listen_port.store(udp.port(), Ordering::Relaxed);
                    *s.udp.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(udp);
                    tasks::restart_udp_task(&s);
                }
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot bind the new listen port");
                    return uapi::EADDRINUSE;
                }
            }
        }
        if let Some(mark) = req.fwmark {
            s.fwmark.store(mark, Ordering::Relaxed);
            if let Err(e) = s.udp().set_mark(mark) {
                tracing::warn!(mark, error = %e, "cannot set fwmark");
                return libc::EPERM;
            }
        }
        uapi::apply_to_core(req, &mut s.core());
        0
    }
}
