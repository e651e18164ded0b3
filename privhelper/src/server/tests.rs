//! The helper over a real Unix socket with a recorded machine: sessions, refusals, peer
//! credentials of other uids (a thread that switched its own uid before connecting) and the
//! journal.

use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use super::*;
use crate::client::{Client, ClientError};
use crate::rules::Facts;
use crate::rules::tests::{TenOnly, facts, n};
use crate::system::SysError;

#[derive(Default)]
struct Recorded {
    log: StdMutex<Vec<String>>,
    /// Undoes fail while set (a resolver file that cannot be written back).
    fail_undo: std::sync::atomic::AtomicBool,
    /// Forwarder addresses something still holds.
    dns_held: StdMutex<Vec<std::net::SocketAddr>>,
}

struct FakeNet(Arc<Recorded>);

#[async_trait::async_trait]
impl Net for FakeNet {
    async fn facts(&self) -> Result<Facts, SysError> {
        Ok(facts())
    }
    async fn create_tun(&self, name: &str, _mtu: u16) -> Result<NewTun, SysError> {
        self.0.log.lock().unwrap().push(format!("create {name}"));
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        Ok(NewTun {
            fd,
            ifindex: 7,
            offload: true,
        })
    }
    async fn apply(&self, change: &Change) -> Result<(), SysError> {
        self.0.log.lock().unwrap().push(format!("{change:?}"));
        Ok(())
    }
    async fn undo(&self, undo: &Undo) -> Result<(), SysError> {
        self.0.log.lock().unwrap().push(format!("undo {undo:?}"));
        if self.0.fail_undo.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SysError::Io {
                what: "write /etc/resolv.conf".into(),
                source: std::io::Error::other("read-only file system"),
            });
        }
        Ok(())
    }
    async fn dns_in_use(&self, listen: std::net::SocketAddr) -> bool {
        self.0.dns_held.lock().unwrap().contains(&listen)
    }
    async fn bind_dns(
        &self,
        listen: std::net::SocketAddr,
        tcp: bool,
    ) -> Result<std::os::fd::OwnedFd, SysError> {
        self.0
            .log
            .lock()
            .unwrap()
            .push(format!("bind {listen} tcp={tcp}"));
        Ok(std::fs::File::open("/dev/null").unwrap().into())
    }
}

struct Rig {
    rec: Arc<Recorded>,
    socket: PathBuf,
    journal: Journal,
    _dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

const BOB: u32 = 64011;
const EVE: u32 = 64012;

async fn rig_with(dir: tempfile::TempDir) -> Rig {
    let rec = Arc::new(Recorded::default());
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    let cfg = Config {
        access: Access {
            group_name: "kwg".into(),
            gid: Some(64999),
        },
        allow_uids: vec![BOB],
        allow_routes: vec![],
        limits: Limits::default(),
    };
    let helper = Helper::start(
        cfg,
        journal.clone(),
        Box::new(FakeNet(rec.clone())),
        Box::new(TenOnly),
    )
    .await
    .unwrap();
    let socket = dir.path().join("helper.sock");
    let l = listener(&socket, None).unwrap();
    // Others may connect (the test's other uids).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let task = tokio::spawn(async move {
        let _ = helper.serve(l).await;
    });
    Rig {
        rec,
        socket,
        journal,
        _dir: dir,
        _task: task,
    }
}

async fn rig() -> Rig {
    rig_with(tempfile::tempdir().unwrap()).await
}

impl Rig {
    fn log(&self) -> Vec<String> {
        self.rec.log.lock().unwrap().clone()
    }

    /// Waits up to 1 s for the log to contain `what`.
    async fn wait_log(&self, what: &str) -> Duration {
        let t = Instant::now();
        while !self.log().iter().any(|l| l.contains(what)) {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{what} not in {:?}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        t.elapsed()
    }

    /// A client connected from a thread running as `uid` (the kernel records the connecting
    /// thread's credentials; the raw syscall changes only that thread's).
    async fn client_as(&self, uid: u32) -> Client {
        let std = crate::testing::connect_as(&self.socket, uid);
        std.set_nonblocking(true).unwrap();
        Client::from_stream(UnixStream::from_std(std).unwrap())
    }
}

fn refused(e: ClientError) -> (ErrorKind, String) {
    match e {
        ClientError::Refused { kind, message } => (kind, message),
        other => panic!("not a refusal: {other}"),
    }
}

#[tokio::test]
async fn a_session_is_made_over_the_socket_and_reverted_when_its_client_goes() {
    let rig = rig().await;
    let mut c = Client::connect(&rig.socket).await.unwrap();
    c.open("kwg0", Some(Path::new("/run/user/0/kwg")), &[], &[])
        .await
        .unwrap();
    let tun = c.create_tun(1420).await.unwrap();
    assert_eq!(
        (tun.name.as_str(), tun.ifindex, tun.offload),
        ("kwg0", 7, true)
    );
    // The descriptor arrived: it is /dev/null, as the fake made it.
    let target = std::fs::read_link(format!("/proc/self/fd/{}", tun.fd.as_raw_fd())).unwrap();
    assert_eq!(target, Path::new("/dev/null"));
    c.set_address(n("10.77.0.2/32")).await.unwrap();
    c.routes(&[n("10.96.0.0/12")], &[]).await.unwrap();
    c.firewall().await.unwrap();
    let journal = rig.journal.entries().unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].undo.len(), 4, "{:?}", journal[0].undo);
    // The user daemon dies (its socket closes): reverted, newest first, within 1 s.
    drop(c);
    let took = rig.wait_log("undo DeleteLink").await;
    assert!(took < Duration::from_secs(1));
    let undos: Vec<String> = rig
        .log()
        .into_iter()
        .filter(|l| l.starts_with("undo"))
        .collect();
    assert_eq!(
        undos,
        [
            "undo DeleteRoute { name: \"kwg0\", route: 10.96.0.0/12 }",
            "undo DeleteAddress { name: \"kwg0\", address: 10.77.0.2/32 }",
            "undo RemoveFirewall { table: \"kwg_kwg0\" }",
            "undo DeleteLink { name: \"kwg0\", ifindex: Some(7) }",
        ]
    );
    assert_eq!(rig.journal.entries().unwrap(), vec![]);
}

#[tokio::test]
async fn a_hand_written_client_is_refused_unsafe_routes_and_garbage() {
    let rig = rig().await;
    // Not root: the --also-proxy it sends counts only inside the helper's --allow-route.
    let mut c = rig.client_as(BOB).await;
    let (kind, msg) = refused(c.create_tun(1420).await.unwrap_err());
    assert_eq!(
        (kind, msg.as_str()),
        (ErrorKind::BadRequest, "no session: send open first")
    );
    let (kind, _) = refused(c.open("eth0", None, &[], &[]).await.unwrap_err());
    assert_eq!(kind, ErrorKind::BadRequest);
    c.open("kwg3", None, &[n("8.8.8.0/24")], &[]).await.unwrap();
    c.create_tun(1420).await.unwrap();
    for (route, why) in [
        (
            "8.8.8.0/24",
            "refused route 8.8.8.0/24: it is public address space",
        ),
        (
            "0.0.0.0/0",
            "refused route 0.0.0.0/0: it is public address space",
        ),
        (
            "10.53.0.0/16",
            "refused route 10.53.0.0/16: it covers this machine's DNS server 10.53.0.53",
        ),
        (
            "10.1.2.0/25",
            "refused route 10.1.2.0/25: it covers this machine's address 10.1.2.3",
        ),
    ] {
        let (kind, msg) = refused(c.routes(&[n(route)], &[]).await.unwrap_err());
        assert_eq!(kind, ErrorKind::Refused, "{route}");
        assert_eq!(msg, why);
    }
    assert!(
        !rig.log().iter().any(|l| l.contains("AddRoute")),
        "{:?}",
        rig.log()
    );
    // Not a request: refused, and the connection (with its session) ends.
    use tokio::io::AsyncReadExt;
    let mut raw = UnixStream::connect(&rig.socket).await.unwrap();
    raw.write_all(b"{\"request\":\"shell\",\"cmd\":\"id\"}\n")
        .await
        .unwrap();
    let mut out = String::new();
    raw.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("{\"reply\":\"error\",\"kind\":\"badRequest\""),
        "{out}"
    );
    let mut raw = UnixStream::connect(&rig.socket).await.unwrap();
    raw.write_all(&vec![b'x'; proto::MAX_LINE]).await.unwrap();
    let mut out = String::new();
    raw.read_to_string(&mut out).await.unwrap();
    assert!(out.contains("longer than"), "{out}");
}

#[tokio::test]
async fn other_uids_cannot_see_or_end_a_session_and_strangers_are_not_served() {
    let rig = rig().await;
    let mut alice = Client::connect(&rig.socket).await.unwrap();
    alice.open("kwg0", None, &[], &[]).await.unwrap();
    alice.create_tun(1420).await.unwrap();
    let mut bob = rig.client_as(BOB).await;
    assert_eq!(bob.list().await.unwrap(), vec![]);
    let (kind, msg) = refused(bob.end("kwg0").await.unwrap_err());
    assert_eq!(kind, ErrorKind::NotFound);
    assert_eq!(
        msg,
        "no session of yours on kwg0 (kwg-helper list shows yours)"
    );
    // Nor take its interface or overlap it.
    let (kind, msg) = refused(bob.open("kwg0", None, &[], &[]).await.unwrap_err());
    assert_eq!(kind, ErrorKind::Conflict);
    assert!(msg.contains("(uid 0)"), "{msg}");
    assert!(!rig.log().iter().any(|l| l.starts_with("undo")));
    let mut eve = rig.client_as(EVE).await;
    let (kind, msg) = refused(eve.list().await.unwrap_err());
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(
        msg.starts_with(&format!("uid {EVE} is not in group kwg")),
        "{msg}"
    );
    // Root sees and may end it.
    let mut root = Client::connect(&rig.socket).await.unwrap();
    assert_eq!(root.list().await.unwrap().len(), 1);
    root.end("kwg0").await.unwrap();
    rig.wait_log("undo DeleteLink").await;
    let (kind, _) = refused(alice.routes(&[n("10.96.0.0/12")], &[]).await.unwrap_err());
    assert_eq!(kind, ErrorKind::BadRequest);
}

#[tokio::test]
async fn a_new_helper_reverts_what_the_journal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    journal.write(&crate::journal::tests::entry(3)).unwrap();
    let rig = rig_with(dir).await;
    assert_eq!(
        rig.log(),
        [
            "undo DeleteRoute { name: \"kwg0\", route: 10.96.0.0/12 }",
            "undo DeleteLink { name: \"kwg0\", ifindex: Some(9) }"
        ]
    );
    assert_eq!(rig.journal.entries().unwrap(), vec![]);
    // New sessions are numbered after the journal's, never reusing its files.
    let mut c = Client::connect(&rig.socket).await.unwrap();
    assert_eq!(c.open("kwg0", None, &[], &[]).await.unwrap(), 4);
}

#[tokio::test]
async fn forwarder_addresses_handed_out_count_against_the_cap_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    // A previous helper handed Bob the sockets of 8 addresses; he still holds them.
    let earlier: Vec<std::net::SocketAddr> =
        (60..68).map(|i| ([127, 77, 0, i], 53).into()).collect();
    let bound = [(BOB, earlier.iter().copied().collect())].into();
    journal.write_dns_bound(&bound).unwrap();
    let rig = rig_with(dir).await;
    rig.rec.dns_held.lock().unwrap().extend(&earlier);
    let mut bob = rig.client_as(BOB).await;
    bob.open("kwg0", None, &[], &[]).await.unwrap();
    bob.create_tun(1420).await.unwrap();
    let listen: std::net::SocketAddr = "127.77.0.53:53".parse().unwrap();
    let (kind, msg) = refused(bob.dns_socket(listen, true).await.unwrap_err());
    assert_eq!(kind, ErrorKind::Limit);
    assert!(
        msg.contains("holds the forwarder sockets of 8 addresses"),
        "{msg}"
    );
    // Once they are closed, the probe frees them and the new one is recorded alone.
    rig.rec.dns_held.lock().unwrap().clear();
    bob.dns_socket(listen, true).await.unwrap();
    assert_eq!(rig.journal.dns_bound(), [(BOB, [listen].into())].into());
}

#[tokio::test]
async fn a_second_helper_leaves_the_running_ones_sessions_and_socket_alone() {
    let rig = rig().await;
    let mut alice = Client::connect(&rig.socket).await.unwrap();
    alice.open("kwg0", None, &[], &[]).await.unwrap();
    alice.create_tun(1420).await.unwrap();
    let dir = rig.socket.parent().unwrap();
    // A second helper on the same journal stops before reading it...
    let cfg = Config {
        access: Access {
            group_name: "kwg".into(),
            gid: Some(64999),
        },
        allow_uids: vec![],
        allow_routes: vec![],
        limits: Limits::default(),
    };
    let second = Helper::start(
        cfg,
        Journal::open(&dir.join("journal")).unwrap(),
        Box::new(FakeNet(rig.rec.clone())),
        Box::new(TenOnly),
    )
    .await;
    let e = second.err().expect("the second helper must not start");
    assert!(
        e.to_string()
            .starts_with("another kwg-helper is serving with the journal"),
        "{e}"
    );
    // ...and does not take the live socket over.
    let e = listener(&rig.socket, None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("a kwg-helper is already serving on"),
        "{e}"
    );
    assert!(
        !rig.log().iter().any(|l| l.starts_with("undo")),
        "{:?}",
        rig.log()
    );
    let mut root = Client::connect(&rig.socket).await.unwrap();
    assert_eq!(root.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_user_gets_at_most_eight_connections_and_root_is_never_refused() {
    let rig = rig().await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut bob = rig.client_as(BOB).await;
        bob.list().await.unwrap();
        held.push(bob);
    }
    let mut ninth = rig.client_as(BOB).await;
    let (kind, msg) = refused(ninth.list().await.unwrap_err());
    assert_eq!(kind, ErrorKind::Limit);
    assert!(
        msg.starts_with("kwg-helper serves at most 8 connections of one user at once"),
        "{msg}"
    );
    let mut root = Client::connect(&rig.socket).await.unwrap();
    assert_eq!(root.list().await.unwrap().len(), 0);
    // A connection that ends gives its slot back.
    drop(held.pop());
    let t = Instant::now();
    while rig.client_as(BOB).await.list().await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_socket_directory_another_user_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let euid = nix::unistd::geteuid().as_raw();
    check_socket_dir(dir.path(), euid).unwrap();
    // Group or others may write it: they could swap the socket for a symlink.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = check_socket_dir(dir.path(), euid).unwrap_err().to_string();
    assert!(e.contains("group or others may write it (mode 777)"), "{e}");
    let e = listener(&dir.path().join("helper.sock"), None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("refused socket directory"), "{e}");
    // Owned by another user.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if euid == 0 {
        std::os::unix::fs::chown(dir.path(), Some(1000), None).unwrap();
        let e = check_socket_dir(dir.path(), euid).unwrap_err().to_string();
        assert!(e.contains("owned by uid 1000"), "{e}");
        // A directory under a user's one is refused too (the user may rename it away).
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = check_socket_dir(&sub, euid).unwrap_err().to_string();
        assert!(e.contains("above it (it is owned by uid 1000)"), "{e}");
    }
}

#[test]
fn a_socket_directory_reached_through_a_writable_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().unwrap();
    let euid = nix::unistd::geteuid().as_raw();
    let safe = top.path().join("safe");
    let open = top.path().join("open");
    std::fs::create_dir(&safe).unwrap();
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A link to a safe directory, placed where anyone may replace it.
    std::os::unix::fs::symlink(&safe, open.join("link")).unwrap();
    check_socket_dir(&safe, euid).unwrap();
    let e = check_socket_dir(&open.join("link"), euid)
        .unwrap_err()
        .to_string();
    assert!(e.contains("above it (group or others may write it"), "{e}");
}

#[test]
fn a_socket_directory_through_another_users_symlink_is_refused_and_the_socket_is_never_followed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let top = tempfile::tempdir().unwrap();
    let euid = nix::unistd::geteuid().as_raw();
    let safe = top.path().join("safe");
    std::fs::create_dir(&safe).unwrap();
    let link = top.path().join("link");
    std::os::unix::fs::symlink(&safe, &link).unwrap();
    // The helper's own symlink to a safe directory is fine.
    check_socket_dir(&link, euid).unwrap();
    if euid == 0 {
        // A user's symlink (as in sticky /tmp): they may repoint it between check and bind.
        std::os::unix::fs::lchown(&link, Some(1000), None).unwrap();
        let e = check_socket_dir(&link, euid).unwrap_err().to_string();
        assert!(
            e.contains("(it is a symlink owned by uid 1000, who may repoint it)"),
            "{e}"
        );
    }
    // The bound socket gets its mode itself; a path swapped for a symlink since the bind is
    // refused, and what it points at is left as it was.
    let sock = safe.join("helper.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    restrict_socket(&sock, None).unwrap();
    assert_eq!(
        std::fs::symlink_metadata(&sock).unwrap().mode() & 0o7777,
        0o660
    );
    drop(l);
    let victim = top.path().join("victim");
    std::fs::write(&victim, "x").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&sock).unwrap();
    std::os::unix::fs::symlink(&victim, &sock).unwrap();
    assert!(restrict_socket(&sock, None).is_err());
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o600);
}

#[tokio::test]
async fn a_resolver_file_that_cannot_be_put_back_is_restored_when_the_session_ends() {
    use std::sync::atomic::Ordering;
    let rig = rig().await;
    let mut c = Client::connect(&rig.socket).await.unwrap();
    c.open("kwg0", None, &[], &[]).await.unwrap();
    c.create_tun(1420).await.unwrap();
    let listen: std::net::SocketAddr = "127.77.0.53:53".parse().unwrap();
    c.dns_socket(listen, false).await.unwrap();
    c.resolv_conf(listen.ip(), &[]).await.unwrap();
    rig.rec.fail_undo.store(true, Ordering::SeqCst);
    let e = c.revert_dns().await.unwrap_err();
    assert!(
        e.to_string().contains("cannot put the resolver file back"),
        "{e}"
    );
    rig.rec.fail_undo.store(false, Ordering::SeqCst);
    // A later change rewrites the journal entry: the file's undo is still in it...
    c.set_address(n("10.77.0.2/32")).await.unwrap();
    let journal = rig.journal.entries().unwrap();
    assert!(
        journal[0]
            .undo
            .iter()
            .any(|u| matches!(u, Undo::RestoreResolvConf { .. })),
        "{:?}",
        journal[0].undo
    );
    // ...and the session's end puts the file back.
    drop(c);
    rig.wait_log("undo DeleteLink").await;
    let restores = rig
        .log()
        .iter()
        .filter(|l| l.starts_with("undo RestoreResolvConf"))
        .count();
    assert_eq!(restores, 2, "{:?}", rig.log());
}

/// `udpBuffers` takes the socket passed with the request line (SCM_RIGHTS) through the real
/// socket: it needs a session and a descriptor, refuses what is not a UDP socket of the
/// caller's uid (SO_PEERCRED), and forces a good one to a root join's size.
#[tokio::test]
async fn udp_buffers_force_only_a_passed_udp_socket_of_the_callers_uid() {
    use std::os::fd::AsFd;
    let rig = rig().await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = Client::connect(&rig.socket).await.unwrap();
    let (kind, m) = refused(c.udp_buffers(udp.as_fd()).await.unwrap_err());
    assert_eq!(
        (kind, m.as_str()),
        (ErrorKind::BadRequest, "no session: send open first")
    );
    c.open("kwg0", None, &[], &[]).await.unwrap();
    let (kind, m) = refused(c.call(&Request::UdpBuffers {}).await.unwrap_err());
    assert!(
        kind == ErrorKind::BadRequest && m.contains("none came with it"),
        "{m}"
    );
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    for (fd, why) in [
        (tcp.as_fd(), "is a TCP socket, not a UDP socket"),
        (null.as_fd(), "is not a socket"),
    ] {
        let (kind, m) = refused(c.udp_buffers(fd).await.unwrap_err());
        assert!(kind == ErrorKind::Refused && m.contains(why), "{m}");
    }
    let want = 2 * kwg_host::sockbuf::UDP_SOCKET_BUFFER as u64;
    assert_eq!(c.udp_buffers(udp.as_fd()).await.unwrap(), (want, want));
    assert_eq!(
        kwg_host::sockbuf::sizes(udp.as_fd()).unwrap(),
        (want as usize, want as usize)
    );
    // One forced socket per session: a second one (a rebind) takes the force from the first...
    let next = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(c.udp_buffers(next.as_fd()).await.unwrap(), (want, want));
    let (rb, sb) = kwg_host::sockbuf::sizes(udp.as_fd()).unwrap();
    assert!(
        rb < want as usize && sb < want as usize,
        "the first keeps {rb}/{sb}"
    );
    // ...and the session's end takes it from the second, over a new connection each time.
    c.close().await.unwrap();
    let (rb, _) = kwg_host::sockbuf::sizes(next.as_fd()).unwrap();
    assert!(
        rb < want as usize,
        "the socket of an ended session keeps {rb}"
    );
    let mut c = Client::connect(&rig.socket).await.unwrap();
    c.open("kwg0", None, &[], &[]).await.unwrap();
    assert_eq!(c.udp_buffers(next.as_fd()).await.unwrap(), (want, want));
    drop(c);
    let t = Instant::now();
    while kwg_host::sockbuf::sizes(next.as_fd()).unwrap().0 >= want as usize {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still forced after the client went"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A session ended from elsewhere (`kwg-helper end`) has no socket forced any more.
    let mut c = Client::connect(&rig.socket).await.unwrap();
    c.open("kwg0", None, &[], &[]).await.unwrap();
    let mut root = Client::connect(&rig.socket).await.unwrap();
    root.end("kwg0").await.unwrap();
    let (kind, m) = refused(c.udp_buffers(udp.as_fd()).await.unwrap_err());
    assert_eq!(
        (kind, m.as_str()),
        (ErrorKind::BadRequest, "no session: send open first")
    );
    // Another uid's session passing root's socket: refused by the socket's owner.
    let mut bob = rig.client_as(BOB).await;
    bob.open("kwg1", None, &[], &[]).await.unwrap();
    let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (kind, m) = refused(bob.udp_buffers(other.as_fd()).await.unwrap_err());
    assert!(
        kind == ErrorKind::Refused && m.contains(&format!("not by this session's uid {BOB}")),
        "{m}"
    );
}

/// A client passing more descriptors than the one a request takes (8 here: more than an old
/// 4-slot control buffer held; 253: the most one message carries) is refused and its
/// connection closed, with every descriptor closed in the helper: the copies of a pipe's write
/// end it was sent are all gone when the read end sees end-of-file.
#[tokio::test]
async fn a_request_with_many_descriptors_is_refused_and_none_stays_open() {
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd};
    let rig = rig().await;
    for count in [2, 8, 253] {
        let (mut r, w) = std::io::pipe().unwrap();
        let std = std::os::unix::net::UnixStream::connect(&rig.socket).unwrap();
        let copies: Vec<std::os::fd::OwnedFd> = (0..count)
            .map(|_| w.as_fd().try_clone_to_owned().unwrap())
            .collect();
        drop(w);
        let raw: Vec<RawFd> = copies.iter().map(|f| f.as_raw_fd()).collect();
        let line = proto::encode(&Request::List {});
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
        let iov = [std::io::IoSlice::new(&line)];
        nix::sys::socket::sendmsg::<()>(
            std.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(copies);
        std.set_nonblocking(true).unwrap();
        let mut stream = UnixStream::from_std(std).unwrap();
        let mut reply = String::new();
        let read = tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut reply);
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the connection is closed")
            .unwrap();
        let reply: Reply = proto::decode(reply.trim_end().as_bytes()).unwrap();
        match reply {
            Reply::Error { kind, message } => assert!(
                kind == ErrorKind::BadRequest
                    && message.contains(&format!(
                        "{count} descriptors came with one request: kwg-helper takes one at most"
                    )),
                "{message}"
            ),
            other => panic!("not refused: {other:?}"),
        }
        // End-of-file: no copy of the write end is left open in the helper.
        nix::fcntl::fcntl(
            r.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let t = Instant::now();
        let mut byte = [0u8; 1];
        let eof = loop {
            match r.read(&mut byte) {
                Ok(0) => break true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("{other:?}"),
            }
            if t.elapsed() > Duration::from_secs(5) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(eof, "{count} descriptors: the helper still holds one");
    }
}

/// Socket activation takes only a listening Unix stream socket, and makes it close-on-exec
/// (systemd passes it without: every `nft` child would inherit the listener).
#[tokio::test]
async fn an_activated_descriptor_must_be_a_listening_unix_socket_and_is_not_inherited() {
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (pair, _) = std::os::unix::net::UnixStream::pair().unwrap();
    for fd in [OwnedFd::from(udp), OwnedFd::from(pair)] {
        let e = take_listener(fd).unwrap_err().to_string();
        assert!(
            e.contains("is not a listening Unix stream socket")
                && e.contains("ListenStream=/run/kwg-helper/helper.sock"),
            "{e}"
        );
    }
    let l = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
    let fd = OwnedFd::from(l);
    let flags = |fd: std::os::fd::BorrowedFd<'_>| {
        nix::fcntl::FdFlag::from_bits_truncate(
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap(),
        )
    };
    // As systemd passes it: inheritable.
    nix::fcntl::fcntl(
        fd.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    assert!(!flags(fd.as_fd()).contains(nix::fcntl::FdFlag::FD_CLOEXEC));
    let taken = take_listener(fd).unwrap();
    assert!(flags(taken.as_fd()).contains(nix::fcntl::FdFlag::FD_CLOEXEC));
}
