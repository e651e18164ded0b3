//! The userspace WireGuard device: a TUN, one UDP socket and the protocol [`Core`], driven by
//! tokio tasks (one per direction, one for timers, one for UAPI).

mod streams;
mod tasks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Instant, SystemTime};

use tokio::task::JoinHandle;

use crate::Error;
use crate::core::Core;
pub use crate::io::tun::PacketChannel;
use crate::io::tun::Tun;
use crate::io::udp::Udp;
use crate::keys::{PrivateKey, PublicKey};
pub use crate::peer::{PeerConfig, PeerStats};
use crate::uapi;
pub use streams::ByteStream;

/// Default MTU: 1500 minus the largest WireGuard overhead (IPv6 40 + UDP 8 + WireGuard 32).
pub const DEFAULT_MTU: u16 = 1420;

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// TUN interface name (at most 15 characters).
    pub name: String,
    pub private_key: PrivateKey,
    /// UDP port; 0 picks any free port.
    pub listen_port: u16,
    pub mtu: u16,
    /// `Some(dir)`: serve UAPI on `dir/<name>.sock` (`wg` looks in `/var/run/wireguard`).
    pub uapi_dir: Option<PathBuf>,
}

impl DeviceConfig {
    pub fn new(name: impl Into<String>, private_key: PrivateKey) -> DeviceConfig {
        DeviceConfig {
            name: name.into(),
            private_key,
            listen_port: 0,
            mtu: DEFAULT_MTU,
            uapi_dir: None,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    pub(crate) tun: Tun,
    pub(crate) udp: RwLock<Arc<Udp>>,
    pub(crate) udp_task: Mutex<Option<JoinHandle<()>>>,
    pub(crate) streams: streams::Streams,
    ifname: String,
    listen_port: AtomicU16,
    fwmark: AtomicU32,
    mtu: u16,
}

impl Shared {
    pub(crate) fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the core usable: recover it.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn udp(&self) -> Arc<Udp> {
        self.udp.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A running device. Dropping it stops the tasks and removes the TUN; [`Device::shutdown`] also
/// reports errors.
pub struct Device {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    uapi_path: Option<PathBuf>,
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl Device {
    /// Creates the TUN (not configured: the caller adds addresses, sets it up and adds routes)
    /// and binds UDP `[::]:listen_port`.
    pub async fn start(cfg: DeviceConfig) -> Result<Device, Error> {
        Device::start_with(
            cfg.name,
            Some(cfg.private_key),
            cfg.listen_port,
            cfg.mtu,
            cfg.uapi_dir,
        )
        .await
    }

    /// Like [`Device::start`], but the private key may come later through UAPI (what the
    /// `kwg-wg` binary does, like wireguard-go).
    pub async fn start_with(
        name: String,
        private_key: Option<PrivateKey>,
        listen_port: u16,
        mtu: u16,
        uapi_dir: Option<PathBuf>,
    ) -> Result<Device, Error> {
        if !valid_ifname(&name) {
            return Err(Error::InvalidIfname(name));
        }
        let tun = Tun::create(&name, mtu).map_err(|source| Error::Tun {
            name: name.clone(),
            source,
        })?;
        Device::start_on(tun, name, private_key, listen_port, mtu, uapi_dir).await
    }

    /// A device without a TUN (userspace mode): the same core, UDP socket and tasks, with IP
    /// packets exchanged over the returned channel (a userspace TCP/IP stack's end). Nothing
    /// on the machine changes; `name` only labels logs.
    pub async fn start_userspace(
        name: String,
        private_key: PrivateKey,
        listen_port: u16,
        mtu: u16,
    ) -> Result<(Device, PacketChannel), Error> {
        let (tun, channel) = Tun::channel();
        let device = Device::start_on(tun, name, Some(private_key), listen_port, mtu, None).await?;
        Ok((device, channel))
    }

    async fn start_on(
        tun: Tun,
        name: String,
        private_key: Option<PrivateKey>,
        listen_port: u16,
        mtu: u16,
        uapi_dir: Option<PathBuf>,
    ) -> Result<Device, Error> {
        let udp = Udp::bind(listen_port, 0).map_err(|source| Error::Bind {
            port: listen_port,
            source,
        })?;
        let uapi_listener = match &uapi_dir {
            Some(dir) => Some(uapi::server::bind(dir, &name)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(private_key)),
            tun,
            listen_port: AtomicU16::new(udp.port()),
            udp: RwLock::new(Arc::new(udp)),
            udp_task: Mutex::new(None),
            streams: streams::Streams::default(),
            ifname: name,
            fwmark: AtomicU32::new(0),
            mtu,
        });
        let mut tasks = vec![
            tokio::spawn(tasks::tun_to_udp(shared.clone())),
            tokio::spawn(tasks::timers(shared.clone())),
        ];
        tasks::restart_udp_task(&shared);
        let mut uapi_path = None;
        if let Some((listener, path)) = uapi_listener {
            tasks.push(tokio::spawn(uapi::serve(listener, shared.handle())));
            uapi_path = Some(path);
        }
        tracing::info!(ifname = %shared.ifname, port = shared.listen_port.load(Ordering::Relaxed), "WireGuard device started");
        Ok(Device {
            shared,
            tasks,
            uapi_path,
        })
    }

    pub fn handle(&self) -> DeviceHandle {
        self.shared.handle()
    }

    /// Stops the device: its tasks end, the TUN disappears, the UAPI socket is removed.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.shared.streams.close_all();
        let mut tasks = std::mem::take(&mut self.tasks);
        tasks.extend(self.take_udp_task());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Some(path) = self.uapi_path.take() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Uapi { path, source: e });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.shared.streams.close_all();
        for t in &self.tasks {
            t.abort();
        }
        if let Some(t) = self.take_udp_task() {
            t.abort();
        }
    }

    fn take_udp_task(&self) -> Option<JoinHandle<()>> {
        self.shared
            .udp_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
        if let Some(path) = self.uapi_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Shared {
    pub(crate) fn handle(self: &Arc<Self>) -> DeviceHandle {
        DeviceHandle {
            shared: Arc::downgrade(self),
            ifname: self.ifname.as_str().into(),
        }
    }
}

/// A cheap, cloneable handle to change and inspect a running device. It does not keep the
/// device alive: after [`Device::shutdown`] its operations return [`Error::Stopped`].
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
        Ok(self.live()?.attach_stream(Box::new(stream), label.into()))
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
    /// [`Core::initiate_to`]); false for an unknown peer.
    pub async fn probe(&self, k: &PublicKey, via: SocketAddr) -> Result<bool, Error> {
        let s = self.live()?;
        let mut net = crate::core::NetBatch::new(1);
        let known = s.core().initiate_to(k, via, Instant::now(), &mut net);
        s.send_net(&net).await;
        Ok(known)
    }

    /// [`DeviceHandle::probe`] over the peer's endpoint; once the handshake completes, the
    /// packets sent since `since` go out again (see [`Core::initiate_replaying`]; replay must
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
            match Udp::bind(port, s.fwmark.load(Ordering::Relaxed)) {
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
