//! The userspace WireGuard device: a TUN, one UDP socket and the protocol [`Core`], driven by
//! tokio tasks (one per direction and one for timers on the device's own data-plane thread, see
//! [`plane`]; UAPI and byte streams on the caller's runtime).

mod handle;
mod plane;
mod streams;
mod tasks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::task::JoinHandle;

use crate::Error;
use crate::core::Core;
pub use crate::io::tun::PacketChannel;
use crate::io::tun::Tun;
use crate::io::udp::Udp;
pub use crate::peer::{PeerConfig, PeerStats};
use crate::uapi;
pub use handle::DeviceHandle;
use kwg_contract::keys::PrivateKey;
pub use streams::{ByteStream, ORPHANED, UNANSWERED};

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
    /// The data-plane thread's runtime: the TUN and UDP sockets are registered with it and the
    /// packet tasks run on it.
    pub(crate) plane: tokio::runtime::Handle,
    pub(crate) tun: Tun,
    pub(crate) udp: RwLock<Arc<Udp>>,
    pub(crate) udp_task: Mutex<Option<JoinHandle<()>>>,
    pub(crate) streams: streams::Streams,
    ifname: String,
    listen_port: AtomicU16,
    fwmark: AtomicU32,
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
    /// Declared last: the thread ends after the tasks were aborted.
    _plane: plane::DataPlane,
}

/// What a device starts from, whatever carries its packets (the key may come later through
/// UAPI).
struct Setup {
    name: String,
    private_key: Option<PrivateKey>,
    listen_port: u16,
    uapi_dir: Option<PathBuf>,
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
        let plane = plane::DataPlane::start(&name).map_err(Error::Thread)?;
        let tun = {
            let _in_plane = plane.handle().enter();
            Tun::create(&name, mtu).map_err(|source| Error::Tun {
                name: name.clone(),
                source,
            })?
        };
        let setup = Setup {
            name,
            private_key,
            listen_port,
            uapi_dir,
        };
        Device::start_on(tun, setup, plane).await
    }

    /// Like [`Device::start`] on a TUN another process created and passed as `fd` (kwg-helper:
    /// the user's daemon holds no privilege); `offload` as the helper reported it.
    pub async fn start_on_fd(
        cfg: DeviceConfig,
        fd: std::os::fd::OwnedFd,
        offload: bool,
    ) -> Result<Device, Error> {
        let name = cfg.name;
        if !valid_ifname(&name) {
            return Err(Error::InvalidIfname(name));
        }
        let plane = plane::DataPlane::start(&name).map_err(Error::Thread)?;
        let tun = {
            let _in_plane = plane.handle().enter();
            Tun::from_fd(fd, name.clone(), offload).map_err(|source| Error::Tun {
                name: name.clone(),
                source,
            })?
        };
        let setup = Setup {
            name,
            private_key: Some(cfg.private_key),
            listen_port: cfg.listen_port,
            uapi_dir: cfg.uapi_dir,
        };
        Device::start_on(tun, setup, plane).await
    }

    /// A device without a TUN (userspace mode): the same core, UDP socket and tasks, with IP
    /// packets exchanged over the returned channel (a userspace TCP/IP stack's end). Nothing
    /// on the machine changes; `name` only labels logs.
    pub async fn start_userspace(
        name: String,
        private_key: PrivateKey,
        listen_port: u16,
    ) -> Result<(Device, PacketChannel), Error> {
        let plane = plane::DataPlane::start(&name).map_err(Error::Thread)?;
        let (tun, channel) = Tun::channel();
        let setup = Setup {
            name,
            private_key: Some(private_key),
            listen_port,
            uapi_dir: None,
        };
        let device = Device::start_on(tun, setup, plane).await?;
        Ok((device, channel))
    }

    async fn start_on(tun: Tun, setup: Setup, plane: plane::DataPlane) -> Result<Device, Error> {
        let Setup {
            name,
            private_key,
            listen_port,
            uapi_dir,
        } = setup;
        let udp = {
            let _in_plane = plane.handle().enter();
            Udp::bind(listen_port, 0).map_err(|source| Error::Bind {
                port: listen_port,
                source,
            })?
        };
        let uapi_listener = match &uapi_dir {
            Some(dir) => Some(uapi::server::bind(dir, &name)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(private_key)),
            plane: plane.handle().clone(),
            tun,
            listen_port: AtomicU16::new(udp.port()),
            udp: RwLock::new(Arc::new(udp)),
            udp_task: Mutex::new(None),
            streams: streams::Streams::default(),
            ifname: name,
            fwmark: AtomicU32::new(0),
        });
        let mut tasks = vec![
            plane.handle().spawn(tasks::tun_to_udp(shared.clone())),
            plane.handle().spawn(tasks::timers(shared.clone())),
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
            _plane: plane,
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
