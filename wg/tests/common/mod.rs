//! Test topology in network namespaces: unique names, guards that tear down on drop.
#![allow(dead_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kwg_contract::keys::PrivateKey;
use kwg_wg::device::{Device, DeviceConfig, DeviceHandle};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique name: `kt<pid in hex>x<counter><tag>` (at most 15 characters, an ifname's
/// limit, for pids up to Linux's 2^22 and 999 names a process). The whole pid: two test
/// processes whose pids differ by 10000 made the same names.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("kt{:x}x{}{}", std::process::id(), n, tag)
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh_ok(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique("ns");
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn exec_ok(&self, args: &[&str]) -> bool {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh_ok(&v)
    }

    /// Sends a UDP datagram from this namespace (bound to `from` if given) to `to`, where
    /// `server` echoes it; true if the echo came back within a second.
    pub fn probe(&self, server: &Netns, from: Option<&str>, to: &str) -> bool {
        let to: SocketAddr = to.parse().unwrap();
        let echo = server.run(move || std::net::UdpSocket::bind(to).unwrap());
        echo.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            if let Ok((n, src)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], src);
            }
        });
        let from = from.map(|f| format!("{f}:0").parse::<SocketAddr>().unwrap());
        let ok = self.run(move || {
            let bind = from.unwrap_or_else(|| "0.0.0.0:0".parse().unwrap());
            let s = std::net::UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            if s.send_to(b"probe", to).is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            matches!(s.recv_from(&mut buf), Ok((5, _)))
        });
        t.join().unwrap();
        ok
    }

    /// Probes until one echo arrives or `tries` attempts failed.
    pub fn probe_until(&self, server: &Netns, to: &str, tries: u32) -> bool {
        (0..tries).any(|_| self.probe(server, None, to))
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// A tokio runtime whose worker threads live in this namespace.
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        self.run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        })
    }

    /// Addresses `dev` and sets it up.
    pub fn addr_up(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
        self.ip(&["link", "set", dev, "up"]);
    }
}

pub fn enter(path: &PathBuf) {
    let f = File::open(path).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` has 192.168.77.1/24, `b` 192.168.77.2/24.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
}

impl Link {
    pub fn new() -> Link {
        let (a, b) = (Netns::new(), Netns::new());
        a.ip(&[
            "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b.name,
        ]);
        a.addr_up("va", "192.168.77.1/24");
        b.addr_up("vb", "192.168.77.2/24");
        Link { a, b }
    }
}

/// A kwg device running in a namespace on its own runtime; shut down on drop.
pub struct NsDevice {
    pub handle: DeviceHandle,
    device: Option<Device>,
    rt: Option<tokio::runtime::Runtime>,
}

impl NsDevice {
    pub fn start(ns: &Netns, key: PrivateKey, port: u16, uapi_dir: Option<PathBuf>) -> NsDevice {
        let rt = ns.runtime();
        let ifname = unique("wg");
        let mut cfg = DeviceConfig::new(ifname, key);
        cfg.listen_port = port;
        cfg.uapi_dir = uapi_dir;
        let device = rt
            .block_on(rt.spawn(Device::start(cfg)))
            .unwrap()
            .expect("device starts");
        NsDevice {
            handle: device.handle(),
            device: Some(device),
            rt: Some(rt),
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }

    pub fn ifname(&self) -> String {
        self.handle.ifname().to_owned()
    }
}

impl Drop for NsDevice {
    fn drop(&mut self) {
        if let (Some(d), Some(rt)) = (self.device.take(), self.rt.as_ref()) {
            let _ = rt.block_on(d.shutdown());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A child process stopped (by its PID: SIGTERM, then SIGKILL after 3 s) on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends SIGTERM and waits up to 3 s; true if it exited by then.
    pub fn terminate(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_for(Duration::from_secs(3), || {
            matches!(self.0.try_wait(), Ok(Some(_)))
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.terminate() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `/var/run/wireguard/<ifname>.sock`, where `wg` looks.
pub fn uapi_socket(ifname: &str) -> PathBuf {
    PathBuf::from("/var/run/wireguard").join(format!("{ifname}.sock"))
}

/// Spawns `args` inside `ns`.
pub fn spawn_in(ns: &Netns, args: &[&str], envs: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    ChildGuard(cmd.spawn().unwrap())
}

/// Waits until `cond` holds, up to `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Sends `len` bytes over TCP from `client` to a server in `server` at `addr`, which echoes a
/// checksum; returns whether it matched.
pub fn tcp_transfer(client: &Netns, server: &Netns, addr: SocketAddr, len: usize) -> bool {
    use std::io::{Read, Write};
    let listener = server.run(move || std::net::TcpListener::bind(addr).unwrap());
    let srv = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sum = 0u64;
        let mut buf = vec![0u8; 65536];
        let mut got = 0;
        while got < len {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sum = buf[..n]
                .iter()
                .fold(sum, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64));
            got += n;
        }
        s.write_all(&sum.to_le_bytes()).unwrap();
    });
    let ok = client.run(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let want = data
            .iter()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64));
        s.write_all(&data).unwrap();
        let mut got = [0u8; 8];
        s.read_exact(&mut got).unwrap();
        u64::from_le_bytes(got) == want
    });
    srv.join().unwrap();
    ok
}

/// A peer with `endpoint` and AllowedIPs `ips`.
pub fn peer(
    key: kwg_contract::keys::PublicKey,
    endpoint: Option<&str>,
    ips: &[&str],
) -> kwg_wg::device::PeerConfig {
    kwg_wg::device::PeerConfig {
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        allowed_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        ..kwg_wg::device::PeerConfig::new(key)
    }
}

/// `a` (10.70.0.1) and `b` (10.70.0.2) over the veth, kwg on both, peers configured.
pub struct Pair {
    pub link: Link,
    pub a: NsDevice,
    pub b: NsDevice,
}

pub fn pair() -> Pair {
    let link = Link::new();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let a = NsDevice::start(&link.a, ka, 0, None);
    let b = NsDevice::start(&link.b, kb, 51820, None);
    link.a.addr_up(&a.ifname(), "10.70.0.1/24");
    link.b.addr_up(&b.ifname(), "10.70.0.2/24");
    a.block_on(
        a.handle
            .upsert_peer(peer(pb, Some("192.168.77.2:51820"), &["10.70.0.2/32"])),
    )
    .unwrap();
    b.block_on(b.handle.upsert_peer(peer(pa, None, &["10.70.0.1/32"])))
        .unwrap();
    Pair { link, a, b }
}
