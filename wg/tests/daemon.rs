//! `kwg-wg IFNAME` (daemon mode) driven exactly as `wg-quick` and `scripts/bench-tunnel.sh` do,
//! and how the daemon ends.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use kwg_contract::keys::{PrivateKey, write_private_key_file};

const KWG: &str = env!("CARGO_BIN_EXE_kwg-wg");

/// The daemon serving `ifname` (started by us, found by its unique interface name); stopped by
/// its PID on drop if it is still running, with its socket.
struct Daemon {
    ifname: String,
    pid: i32,
}

impl Daemon {
    /// `kwg-wg IFNAME` in `ns`: returns once the interface exists (like wireguard-go).
    fn start(ns: &Netns, tag: &str) -> Daemon {
        let ifname = unique(tag);
        ns.exec(&[KWG, &ifname]);
        Daemon::find(&ifname)
    }

    fn find(ifname: &str) -> Daemon {
        let needle = format!("--detached\0{ifname}\0");
        let pid = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .unwrap_or_else(|| panic!("no kwg-wg daemon for {ifname}"));
        Daemon {
            ifname: ifname.to_owned(),
            pid,
        }
    }

    fn running(&self) -> bool {
        std::fs::read(format!("/proc/{}/cmdline", self.pid)).is_ok_and(|c| {
            String::from_utf8_lossy(&c).contains(&format!("--detached\0{}\0", self.ifname))
        })
    }

    /// True once the process is gone and its socket removed (within 5 s).
    fn exits(&self) -> bool {
        wait_for(Duration::from_secs(5), || {
            !self.running() && !uapi_socket(&self.ifname).exists()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            let pid = nix::unistd::Pid::from_raw(self.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = std::fs::remove_file(uapi_socket(&self.ifname));
        }
    }
}

fn key_file(dir: &Path, name: &str, key: &PrivateKey) -> String {
    let path = dir.join(name);
    write_private_key_file(&path, key).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn daemon_mode_is_configured_by_wg_set_and_wg_quick() {
    let link = Link::new();
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let ia = unique("q");

    // B, as the bench does: `kwg-wg IFNAME`, then one `wg set` with key, port and a peer.
    let daemon_b = Daemon::start(&link.b, "d");
    let ib = daemon_b.ifname.clone();
    let kb_file = key_file(dir.path(), "kb", &kb);
    let pa = ka.public_key().to_string();
    let set = [
        "wg",
        "set",
        &ib,
        "private-key",
        &kb_file,
        "listen-port",
        "51820",
        "peer",
        &pa,
        "endpoint",
        "192.168.77.1:51820",
        "allowed-ips",
        "10.91.0.1/32",
    ];
    link.b.exec(&set);
    link.b.addr_up(&ib, "10.91.0.2/24");
    let show = link.b.exec(&["wg", "show", &ib]);
    assert!(show.contains(&format!("peer: {pa}")), "{show}");

    // A, as a user does: wg-quick with kwg-wg as its userspace implementation.
    let conf = dir.path().join(format!("{ia}.conf"));
    let config = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 10.91.0.1/24\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = 192.168.77.2:51820\nAllowedIPs = 10.91.0.2/32\n",
        ka,
        kb.public_key()
    );
    std::fs::write(&conf, config).unwrap();
    let conf = conf.to_str().unwrap();
    link.a.exec(&[
        "env",
        &format!("WG_QUICK_USERSPACE_IMPLEMENTATION={KWG}"),
        "wg-quick",
        "up",
        conf,
    ]);
    let daemon_a = Daemon::find(&ia);

    // Traffic both ways over the tunnel.
    assert!(
        link.a.probe_until(&link.b, "10.91.0.2:7001", 5),
        "no echo over the tunnel"
    );
    assert!(tcp_transfer(
        &link.b,
        &link.a,
        "10.91.0.1:7002".parse().unwrap(),
        1 << 20
    ));

    // `wg-quick down` deletes the interface: the daemon stops and removes its socket.
    link.a.exec(&["wg-quick", "down", conf]);
    assert!(daemon_a.exits(), "kwg-wg kept running after wg-quick down");
    assert!(daemon_b.running());
}

/// Starts a daemon in a fresh namespace, does `end` to it, and asserts it exits (process gone,
/// socket removed) and leaves no interface behind.
fn exits_after(what: &str, end: impl FnOnce(Netns, &Daemon)) {
    let ns = Netns::new();
    let daemon = Daemon::start(&ns, "x");
    let show = ns.exec(&["wg", "show", &daemon.ifname]);
    assert!(
        show.contains(&format!("interface: {}", daemon.ifname)),
        "{show}"
    );
    let ns_name = ns.name.clone();
    end(ns, &daemon);
    assert!(daemon.exits(), "kwg-wg kept running after {what}");
    let links = Command::new("ip")
        .args(["-n", &ns_name, "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&daemon.ifname),
        "the interface outlived the daemon"
    );
}

#[test]
fn daemon_stops_with_its_interface() {
    // What `wg-quick down` does.
    exits_after("ip link del", |ns, d| {
        ns.ip(&["link", "del", &d.ifname]);
    });
}

#[test]
fn daemon_exits_when_its_namespace_is_deleted() {
    // The namespace (and the TUN in it) would otherwise live as long as the daemon.
    exits_after("ip netns del", |ns, _| drop(ns));
}

#[test]
fn daemon_exits_when_its_socket_is_removed() {
    // What wireguard-go does, and how scripts clean up after `ip netns del`.
    exits_after("its UAPI socket was removed", |_ns, d| {
        std::fs::remove_file(uapi_socket(&d.ifname)).unwrap();
    });
}
