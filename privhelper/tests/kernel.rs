//! The real `kwg-helper serve` in a throwaway network namespace (root only): a client of another
//! uid gets a working TUN descriptor, addresses, routes and the nftables table; when the client
//! goes everything is reverted within 1 s; a helper killed with -9 and started again reverts what
//! its journal holds.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kwg_privhelper::client::{Client, ClientError};
use kwg_privhelper::proto::ErrorKind;

const USER: u32 = 64021;

struct Ns(String);

impl Ns {
    fn new() -> Ns {
        let name = format!("kwgph{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }
    fn sh(&self, args: &[&str]) -> String {
        let mut argv = vec!["netns", "exec", &self.0];
        argv.extend_from_slice(args);
        let out = Command::new("ip").args(&argv).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}");
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(ns: &Ns, dir: &Path) -> Served {
    let binary = Path::new(env!("CARGO_BIN_EXE_kwg-helper"));
    Served(kwg_privhelper::testing::serve_in(
        &ns.0,
        binary,
        dir,
        &[USER],
        Stdio::null(),
    ))
}

/// A client connected from a thread running as `uid` only.
async fn client_as(socket: PathBuf, uid: u32) -> Client {
    let std = kwg_privhelper::testing::connect_as(&socket, uid);
    std.set_nonblocking(true).unwrap();
    Client::from_stream(tokio::net::UnixStream::from_std(std).unwrap())
}

fn wait_until(what: &str, f: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "not within 1 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

fn n(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_users_session_gets_a_working_tun_and_is_reverted_when_the_user_goes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let ns = Ns::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("helper.sock");
    let mut helper = serve(&ns, dir.path());

    let mut c = client_as(socket.clone(), USER).await;
    c.open("kwg0", None, &[], &[]).await.unwrap();
    let tun = c.create_tun(1420).await.unwrap();
    assert_eq!(tun.name, "kwg0");
    assert!(tun.offload, "this kernel has IFF_VNET_HDR offloads");
    c.set_address(n("10.77.0.2/32")).await.unwrap();
    c.routes(&[n("10.96.0.0/12")], &[]).await.unwrap();
    c.firewall().await.unwrap();
    assert!(ns.sh(&["ip", "route"]).contains("10.96.0.0/12 dev kwg0"));
    assert!(
        ns.sh(&["nft", "list", "table", "inet", "kwg_kwg0"])
            .contains("chain input")
    );
    assert_eq!(
        ns.sh(&["cat", "/proc/sys/net/ipv4/conf/kwg0/forwarding"])
            .trim(),
        "0"
    );
    // The unsafe and the foreign are refused by the helper itself.
    for (route, kind) in [
        ("8.8.8.0/24", ErrorKind::Refused),
        ("0.0.0.0/1", ErrorKind::Refused),
    ] {
        match c.routes(&[n(route)], &[]).await {
            Err(ClientError::Refused { kind: k, .. }) => assert_eq!(k, kind, "{route}"),
            other => panic!("{route}: {other:?}"),
        }
    }
    // The descriptor is the TUN: a packet routed into kwg0 is read from it, behind the
    // virtio-net header.
    let fd = tun.fd.as_raw_fd();
    let mut pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "10.96.0.1",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 2048];
    // Skip IPv6 router solicitations and the like until the ping.
    let ping = (0..20).find_map(|_| {
        // SAFETY: reads into a buffer of the given length from an open descriptor.
        let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let ip = buf.get(10..usize::try_from(got).ok()?)?;
        (ip.len() >= 20 && ip[0] >> 4 == 4 && ip[16..20] == [10, 96, 0, 1]).then_some(got)
    });
    let _ = pinger.kill();
    let _ = pinger.wait();
    assert!(
        ping.is_some(),
        "no ping to 10.96.0.1 read from the TUN descriptor"
    );

    // The user daemon dies: link, routes and table are gone within 1 s.
    drop(c);
    drop(tun);
    let took = wait_until("kwg0 and its table gone", || {
        !ns.sh(&["ip", "link"]).contains("kwg0")
            && !ns.sh(&["nft", "list", "tables"]).contains("kwg_kwg0")
    });
    eprintln!("reverted in {took:?}");

    // kill -9 of the helper while a session holds its link: the next helper reverts it.
    let mut c = client_as(socket.clone(), USER).await;
    c.open("kwg1", None, &[], &[]).await.unwrap();
    let tun = c.create_tun(1420).await.unwrap();
    c.set_address(n("10.77.0.3/32")).await.unwrap();
    c.routes(&[n("10.96.0.0/12")], &[]).await.unwrap();
    c.firewall().await.unwrap();
    helper.0.kill().unwrap();
    helper.0.wait().unwrap();
    assert!(
        ns.sh(&["ip", "link"]).contains("kwg1"),
        "the user still holds it"
    );
    let _helper = serve(&ns, dir.path());
    wait_until("the journal reverted", || {
        !ns.sh(&["ip", "link"]).contains("kwg1")
            && !ns.sh(&["nft", "list", "tables"]).contains("kwg_kwg1")
    });
    drop(tun);
    // Only the helpers' lock file is left.
    let journal: Vec<_> = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(journal, ["lock"]);
}
