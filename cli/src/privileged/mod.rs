//! `kwg join` as a normal user in TUN mode (issue 26): the daemon runs as the user (kubeconfig,
//! exec plugins, WireGuard, transports) and asks kwg-helper, the only privileged part, for the
//! TUN (its descriptor comes over the socket), the address, the routes and the firewall table.
//! The helper enforces the trust rules itself and reverts the session when the daemon's
//! connection ends, so the daemon's own undo of those steps is closing the session.
//!
//! `kwg join` finds the helper before it starts the daemon: the installed one
//! (`kwg-helper install`), or one it starts through `sudo -b` with the user's uid allowed (one
//! password prompt), or it fails with one sentence naming `kwg-helper install`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kwg_privhelper::client::{Client, ClientError, HelperTun};

pub mod sudo;

use crate::error::Error;

/// Where the daemon finds the helper: `$KWG_HELPER_SOCKET`, else the installed helper's socket.
/// As root (a root login, or sudo where sudoers keeps `KWG_*`: Debian's `env_reset` drops it) the variable counts only where no other user could
/// have put or replaced a socket: its directory (or, before the helper makes it, the nearest
/// one that exists) and each above it owned by root and writable by nobody else; otherwise
/// root would start a helper on, or talk to, a socket of a user's choosing. Ignored with one
/// line on stderr.
pub fn socket() -> PathBuf {
    let root = nix::unistd::geteuid().is_root();
    match socket_from(std::env::var_os("KWG_HELPER_SOCKET"), root, |dir| {
        kwg_privhelper::server::check_socket_dir(dir, 0)
    }) {
        Ok(path) => path,
        Err(why) => {
            eprintln!("kwg: {why}");
            kwg_privhelper::server::default_socket()
        }
    }
}

/// [`socket`] from the variable's value, whether the caller is root and the directory rule
/// (`check_dir`); `Err` says why a root caller ignores the variable.
pub fn socket_from(
    var: Option<std::ffi::OsString>,
    root: bool,
    check_dir: impl Fn(&Path) -> std::io::Result<()>,
) -> Result<PathBuf, String> {
    let default = kwg_privhelper::server::default_socket();
    let Some(path) = var.filter(|v| !v.is_empty()).map(PathBuf::from) else {
        return Ok(default);
    };
    if !root {
        return Ok(path);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let existing = dir.and_then(|d| d.ancestors().find(|a| a.exists()));
    let checked = match existing {
        Some(d) if path.is_absolute() => check_dir(d).map_err(|e| e.to_string()),
        _ => Err("not an absolute path".to_string()),
    };
    checked.map(|()| path.clone()).map_err(|why| {
        format!(
            "ignoring KWG_HELPER_SOCKET={} as root ({why}); using {}",
            path.display(),
            default.display()
        )
    })
}

/// Whether this process needs the helper for a TUN-mode join (neither root nor CAP_NET_ADMIN).
pub fn needed() -> bool {
    !crate::caps::privileged()
}

fn helper_error(what: &str, e: ClientError) -> Error {
    Error::io(what.to_string(), std::io::Error::other(e.to_string()))
}

/// Whether a helper answers on `socket` and serves this process.
pub async fn answers(socket: &Path) -> bool {
    answer(socket).await.is_ok()
}

/// `Ok` when a helper answers on `socket` and serves this process; `Err(Some(why))` when one
/// is there but refuses it (a helper started through sudo for another user: its socket is that
/// user's, 0660), `Err(None)` when none answers.
async fn answer(socket: &Path) -> Result<(), Option<String>> {
    let Ok(mut c) = Client::connect(socket).await else {
        let denied = std::os::unix::net::UnixStream::connect(socket)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        return Err(denied.then(|| "its socket refuses you: permission denied".to_string()));
    };
    match c.list().await {
        Ok(_) => Ok(()),
        Err(ClientError::Refused { message, .. }) => Err(Some(message)),
        Err(_) => Err(None),
    }
}

/// The `kwg-helper` binary: next to this `kwg`, else (not as root) on `PATH` (absolute either
/// way: sudo's `secure_path` would not find it by name). As root only the one next to kwg: the
/// PATH may be a user's (sudo without `secure_path` keeps it) and root would run their binary.
pub fn helper_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    helper_binary_in(
        exe.as_deref().and_then(Path::parent),
        std::env::var_os("PATH").as_deref(),
        nix::unistd::geteuid().is_root(),
    )
}

/// [`helper_binary`] for kwg in `exe_dir` with `path`, as root or not.
fn helper_binary_in(
    exe_dir: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
    root: bool,
) -> Option<PathBuf> {
    let sibling = exe_dir.map(|d| d.join("kwg-helper"));
    if let Some(s) = sibling.filter(|s| s.is_file()) {
        return Some(s);
    }
    if root {
        return None;
    }
    std::env::split_paths(path?)
        .map(|d| d.join("kwg-helper"))
        .find(|c| c.is_file())
}

/// Makes sure a helper answers on `socket`: the running one, or one started through
/// `sudo -b` (the password asked once on the terminal) serving this user's uid.
pub async fn ensure(socket: &Path) -> Result<(), Error> {
    ensure_for(socket, nix::unistd::getuid().as_raw()).await
}

/// [`ensure`] for `uid`: as root (`sudo kwg join`) the helper is started directly, otherwise
/// through `sudo -b`.
pub async fn ensure_for(socket: &Path, uid: u32) -> Result<(), Error> {
    if answers(socket).await {
        return Ok(());
    }
    let not_running = |why: &str| {
        Error::NoHelper(format!(
            "no helper answers on {} and {why}",
            socket.display()
        ))
    };
    let root = nix::unistd::geteuid().is_root();
    let Some(binary) = helper_binary() else {
        return Err(not_running(if root {
            "kwg-helper is not installed next to kwg (as root kwg runs only that one, never one found on PATH)"
        } else {
            "kwg-helper is not installed next to kwg or on PATH"
        }));
    };
    let uid = uid.to_string();
    let mut serve = std::process::Command::new(&binary);
    serve
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(["--allow-uid", &uid])
        .stdout(std::process::Stdio::null());
    if root {
        // Root's environment may be the user's (sudo keeping PATH, LD_*): the helper gets
        // only what it keeps itself, with the fixed PATH.
        serve
            .env_clear()
            .envs(kwg_privhelper::server::kept_environment(std::env::vars_os()))
            .stderr(std::process::Stdio::null());
        kwg_host::process::spawn_detached(&mut serve)
            .map_err(|e| not_running(&format!("it cannot be started ({e})")))?;
    } else {
        sudo::start_in_background(&serve).map_err(|why| not_running(&why))?;
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if answers(socket).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(not_running("the one started did not answer within 5 s"))
}

/// Decides, for `kwg join` before it starts the daemon, whether this join goes through the
/// helper: neither root nor CAP_NET_ADMIN, no `--userspace`, and a helper answering (or,
/// with `--tun`, one started through sudo). Such a join is a TUN-mode join (`args.tun`). The
/// helper does its DNS as a root join's: systemd-resolved's per-link DNS where resolved manages
/// DNS (auto mode finds it), else it rewrites the resolver file (resolv-conf mode).
pub async fn prepare(
    args: &mut crate::args::JoinArgs,
    reporter: &crate::progress::Reporter,
) -> Result<bool, Error> {
    use crate::args::DnsMode;
    if args.userspace || !needed() {
        return Ok(false);
    }
    let socket = socket();
    match answer(&socket).await {
        Ok(()) => {}
        // Userspace mode, as before there was a helper.
        Err(_) if !args.tun => return Ok(false),
        Err(Some(why)) => {
            return Err(Error::NoHelper(format!(
                "the kwg-helper on {} does not serve you ({why}; one started through sudo serves the user it was started for, an installed one its group)",
                socket.display()
            )));
        }
        Err(None) => ensure(&socket).await?,
    }
    args.tun = true;
    let stub = resolved_stub(&args.resolv_conf);
    if args.dns_mode == DnsMode::Auto && !stub {
        args.dns_mode = DnsMode::ResolvConf;
    }
    if stub && matches!(args.dns_mode, DnsMode::Auto | DnsMode::Resolved) {
        reporter.step(&format!(
            "Tunnel interface through kwg-helper ({}): kwg runs as you; the helper sets the tunnel's DNS in systemd-resolved",
            socket.display()
        ));
    }
    Ok(true)
}

/// Whether `resolv_conf` sends queries to systemd-resolved's stub (resolved manages DNS).
pub fn resolved_stub(resolv_conf: &Path) -> bool {
    use crate::dns::resolved::ResolvConf;
    let target = std::fs::read_link(resolv_conf).ok();
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    ResolvConf::classify(target.as_deref(), &text) == ResolvConf::Stub
}

/// The daemon's session with the helper: the connection is the session's lifeline. Clones
/// share it (the DNS follower replaces the link's domains in systemd-resolved through it).
#[derive(Clone)]
pub struct Helper {
    client: std::sync::Arc<tokio::sync::Mutex<Client>>,
    interface: String,
    /// The namespaces the helper left out of the link's domains that were said already.
    left_out: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Helper {
    /// Opens the session for `interface` and has the helper create its TUN.
    pub async fn open(
        interface: &str,
        state_dir: &Path,
        also_proxy: &[IpNet],
        allow_conflicting: &[IpNet],
        mtu: u16,
    ) -> Result<(Helper, HelperTun), Error> {
        let socket = socket();
        let mut client = Client::connect(&socket)
            .await
            .map_err(|e| helper_error("reach kwg-helper", e))?;
        client
            .open(interface, Some(state_dir), also_proxy, allow_conflicting)
            .await
            .map_err(|e| helper_error(&format!("open a kwg-helper session for {interface}"), e))?;
        let tun = client
            .create_tun(mtu)
            .await
            .map_err(|e| helper_error(&format!("have kwg-helper create {interface}"), e))?;
        Ok((
            Helper {
                client: std::sync::Arc::new(tokio::sync::Mutex::new(client)),
                interface: interface.to_string(),
                left_out: Default::default(),
            },
            tun,
        ))
    }

    /// Gives the link `address` (replacing the previous one) and sets it up.
    pub async fn set_address(&self, address: IpNet) -> Result<(), Error> {
        self.client
            .lock()
            .await
            .set_address(address)
            .await
            .map_err(|e| helper_error(&format!("have kwg-helper set address {address}"), e))
    }

    /// Removes `address` from the link (one the helper gave it).
    pub async fn remove_address(&self, address: IpNet) -> Result<(), Error> {
        self.client
            .lock()
            .await
            .remove_address(address)
            .await
            .map_err(|e| helper_error(&format!("have kwg-helper remove address {address}"), e))
    }

    /// Removes, then adds routes through the link.
    pub async fn routes(&self, add: &[IpNet], remove: &[IpNet]) -> Result<(), Error> {
        self.client
            .lock()
            .await
            .routes(add, remove)
            .await
            .map_err(|e| helper_error("have kwg-helper change the routes", e))
    }

    /// Forces the buffers of `sock` (the device's UDP socket) to a root join's size; the
    /// sizes the kernel reports (receive, send).
    pub async fn udp_buffers(
        &self,
        sock: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(u64, u64), Error> {
        self.client
            .lock()
            .await
            .udp_buffers(sock)
            .await
            .map_err(|e| helper_error("have kwg-helper force the UDP socket's buffers", e))
    }

    /// Loads the session's firewall table.
    pub async fn firewall(&self) -> Result<(), Error> {
        self.client
            .lock()
            .await
            .firewall()
            .await
            .map_err(|e| helper_error("have kwg-helper load the firewall table", e))
    }

    /// The DNS forwarder's sockets on `listen` (port 53), bound by the helper: UDP, then TCP.
    pub async fn dns_sockets(
        &self,
        listen: SocketAddr,
    ) -> Result<(std::net::UdpSocket, std::net::TcpListener), Error> {
        let what = format!("have kwg-helper bind the DNS forwarder on {listen}");
        let mut client = self.client.lock().await;
        let udp = client.dns_socket(listen, false).await;
        let udp = udp.map_err(|e| helper_error(&what, e))?;
        let tcp = client.dns_socket(listen, true).await;
        let tcp = tcp.map_err(|e| helper_error(&what, e))?;
        Ok((udp.into(), tcp.into()))
    }

    /// Points the resolver file at `forwarder` (this session's), `search` first.
    pub async fn resolv_conf(&self, forwarder: IpAddr, search: &[String]) -> Result<(), Error> {
        self.client
            .lock()
            .await
            .resolv_conf(forwarder, search)
            .await
            .map_err(|e| {
                helper_error(
                    "have kwg-helper point the resolver file at kwg's forwarder",
                    e,
                )
            })
    }

    /// Has systemd-resolved send `domains` to this session's forwarder on its link (the
    /// session's own: the helper knows which), or replaces them. The helper leaves out a
    /// namespace its rules refuse (named like another link's domain: `box` next to the LAN's
    /// `fritz.box`) and sets the rest: each such namespace is said once, in the sentences
    /// returned (and the daemon's log).
    pub async fn resolved_link(
        &self,
        domains: &[kwg_session::dns::domains::LinkDomain],
    ) -> Result<Vec<String>, Error> {
        let left_out = self
            .client
            .lock()
            .await
            .resolved_link(domains)
            .await
            .map_err(|e| {
                helper_error(
                    &format!(
                        "have kwg-helper set {}'s DNS in systemd-resolved",
                        self.interface
                    ),
                    e,
                )
            })?;
        let mut said = self.left_out.lock().unwrap_or_else(|p| p.into_inner());
        let mut news = Vec::new();
        for l in left_out {
            let ns = l.domain.name.trim_end_matches('.').to_string();
            if said.insert(ns.clone()) {
                let line = left_out_sentence(&ns, &l.message);
                tracing::warn!("{line}");
                news.push(line);
            }
        }
        Ok(news)
    }

    /// Puts the resolver file back (and reverts the link in systemd-resolved) now.
    pub async fn revert_dns(&self) -> Result<(), Error> {
        if let Some(why) = self.gone() {
            // Nobody is left to ask: a helper that starts again puts the file back and reverts
            // the link from its journal.
            tracing::warn!(why, "DNS is left to kwg-helper's journal");
            return Ok(());
        }
        self.client
            .lock()
            .await
            .revert_dns()
            .await
            .map_err(|e| helper_error("have kwg-helper put the resolver file back", e))
    }

    /// Ends the session: the helper removes the table, routes, address and link.
    pub async fn close(self) -> Result<(), Error> {
        if let Some(why) = self.gone() {
            // Nobody is left to ask: the link went with the device's descriptor, and a helper
            // that starts again removes the rest (firewall, DNS) from its journal.
            tracing::warn!(
                why,
                "the session's machine side is left to kwg-helper's journal"
            );
            return Ok(());
        }
        self.client
            .lock()
            .await
            .close()
            .await
            .map_err(|e| helper_error("have kwg-helper end the session", e))
    }

    /// Why the session's helper is gone (its connection closed: it exited or was killed), with
    /// what became of the interface; `None` while it serves the session.
    pub fn gone(&self) -> Option<String> {
        // A request in flight holds the connection: the helper answers it, or it fails.
        let closed = self.client.try_lock().is_ok_and(|c| c.is_closed());
        if !closed {
            return None;
        }
        let name = &self.interface;
        let link = match nix::net::if_::if_nametoindex(name.as_str()) {
            Ok(_) => format!(
                "interface {name} and its routes stay until a helper starts again and reverts them"
            ),
            Err(_) => format!("interface {name} is gone with its routes and DNS"),
        };
        Some(format!(
            "kwg-helper, which holds this session's interface, routes and DNS, is gone (exited or killed): {link}; the tunnel does not carry traffic"
        ))
    }
}

/// What `kwg join` says of namespace `ns`, which kwg-helper left out of the link's domains in
/// systemd-resolved for `why` (its sentence names the domain it conflicts with).
fn left_out_sentence(ns: &str, why: &str) -> String {
    format!(
        "Warning: namespace {} is left out of this session's domains in systemd-resolved, so <service>.{0} does not resolve through kwg (<service>.{0}.svc.<cluster domain> does): kwg-helper {why}",
        kwg_privhelper::rules::printable(ns)
    )
}

/// Why a session ended on its own, as `kwg status` says it after: the daemon whose helper went
/// away ended the session (peer deregistered, transports and forwarder stopped) and left this.
pub const HELPER_WENT_AWAY: &str = "the helper went away (was it killed?) and ended this session: its peer is deregistered, and a kwg-helper that starts again reverts the interface, routes, firewall and DNS it held; run kwg join again";

/// The file in a session's state directory holding why it ended on its own; removed by the
/// next join.
pub fn ended_path(dir: &Path) -> PathBuf {
    dir.join("ended")
}

/// The state directory `base` and each session directory under it (`sessions/<alias>`).
fn session_dirs(base: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![base.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(base.join("sessions")) {
        dirs.extend(entries.flatten().map(|e| e.path()));
    }
    dirs
}

/// Why a session under the state directory `base` ended on its own, if one did: with
/// `context`, only the note of that context's (or alias's) session, as its record names it.
pub fn ended_note(base: &Path, context: Option<&str>) -> Option<String> {
    let ours = |d: &Path| {
        let Some(c) = context else { return true };
        crate::state::SessionInfo::load(&crate::state::StateDir(d.to_path_buf()))
            .is_some_and(|i| i.alias == c || i.context.as_deref() == Some(c))
    };
    session_dirs(base).iter().filter(|d| ours(d)).find_map(|d| {
        let bytes = crate::state::read_no_follow(&ended_path(d)).ok()?;
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        (!text.is_empty()).then_some(text)
    })
}

/// At a join in the session directory `dir`: every session's note of how it ended (under the
/// state directory `dir` is in, or is) is older than this join, no longer news; a note left
/// would make `kwg status` say "the helper went away" after this session leaves normally.
pub fn clear_ended_notes(dir: &Path) {
    let base = match dir.parent() {
        Some(p) if p.file_name().is_some_and(|n| n == "sessions") => p.parent().unwrap_or(dir),
        _ => dir,
    };
    for d in session_dirs(base) {
        let _ = std::fs::remove_file(ended_path(&d));
    }
}

#[cfg(test)]
mod ended_tests {
    use super::*;

    fn note(dir: &Path, context: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let info = crate::state::SessionInfo {
            context: Some(context.into()),
            alias: context.into(),
            primary: false,
            interface: "kwg1".into(),
            dns_listen: "127.77.0.54:53".parse().unwrap(),
            server: None,
        };
        info.save(&crate::state::StateDir(dir.to_path_buf()))
            .unwrap();
        std::fs::write(ended_path(dir), HELPER_WENT_AWAY).unwrap();
    }

    /// Review finding: session B ended as its helper went away; A joining (and leaving
    /// normally) made `kwg status` say "not joined: the helper went away" until B joined again.
    #[test]
    fn a_join_clears_every_sessions_ended_note_and_a_context_sees_only_its_own() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path().join("sessions").join("staging");
        note(&b, "staging");
        assert_eq!(
            ended_note(base.path(), None).as_deref(),
            Some(HELPER_WENT_AWAY)
        );
        assert_eq!(
            ended_note(base.path(), Some("staging")).as_deref(),
            Some(HELPER_WENT_AWAY)
        );
        assert_eq!(ended_note(base.path(), Some("kind-dev")), None);

        // A (the first session, in the base directory) joins: B's note is old news.
        clear_ended_notes(base.path());
        assert_eq!(ended_note(base.path(), None), None);

        // A join of a later session clears the base directory's note too.
        note(base.path(), "kind-dev");
        clear_ended_notes(&b);
        assert_eq!(ended_note(base.path(), None), None);
    }
}

/// Returns once the helper holding `helper`'s session is gone (its connection closed: it
/// exited or was killed); never without a helper.
pub async fn lost(helper: Option<Helper>) {
    let Some(h) = helper else {
        return std::future::pending().await;
    };
    while h.gone().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Who replaces the link's domains in systemd-resolved as namespaces come and go: the daemon
/// itself over the system bus (a root join), or kwg-helper (a normal user's session, which
/// systemd-resolved would refuse such calls).
#[derive(Clone)]
pub enum LinkDns {
    Bus(crate::dns::resolved::Resolved),
    Helper(Helper),
}

impl LinkDns {
    /// `SetLinkDomains` of `ifindex` (through the helper: the session's own link).
    pub async fn set_domains(
        &self,
        ifindex: u32,
        domains: &[kwg_session::dns::domains::LinkDomain],
    ) -> Result<(), Error> {
        match self {
            LinkDns::Bus(r) => Ok(r.set_domains(ifindex, domains).await?),
            LinkDns::Helper(h) => h.resolved_link(domains).await.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn root_runs_only_the_helper_next_to_kwg_never_one_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, user) = (dir.path().join("bin"), dir.path().join("x"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("kwg-helper"), "").unwrap();
        let path = std::env::join_paths([&user]).unwrap();
        // Only on the (user's) PATH: root refuses it, a user (through sudo) may use it.
        assert_eq!(helper_binary_in(Some(&bin), Some(&path), true), None);
        assert_eq!(
            helper_binary_in(Some(&bin), Some(&path), false),
            Some(user.join("kwg-helper"))
        );
        // Next to kwg: that one, for both.
        std::fs::write(bin.join("kwg-helper"), "").unwrap();
        for root in [true, false] {
            assert_eq!(
                helper_binary_in(Some(&bin), Some(&path), root),
                Some(bin.join("kwg-helper"))
            );
        }
    }
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn root_honours_kwg_helper_socket_only_in_a_directory_no_other_user_can_change() {
        let check = |d: &Path| kwg_privhelper::server::check_socket_dir(d, 0);
        let default = kwg_privhelper::server::default_socket();
        assert_eq!(socket_from(None, true, check), Ok(default.clone()));
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = open.join("helper.sock");
        // A normal user's own choice is the user's business (the helper decides what it serves).
        assert_eq!(
            socket_from(Some(sock.clone().into()), false, check),
            Ok(sock.clone())
        );
        // Root: a directory others may write (a socket there may be anyone's) is ignored, also
        // one not made yet under it, and a relative path.
        for (p, why) in [
            (sock.clone(), "group or others may write it"),
            (open.join("new/helper.sock"), "group or others may write it"),
            (PathBuf::from("helper.sock"), "not an absolute path"),
        ] {
            let e = socket_from(Some(p.clone().into()), true, check).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "ignoring KWG_HELPER_SOCKET={} as root",
                    p.display()
                )) && e.contains(why)
                    && e.ends_with(&format!("using {}", default.display())),
                "{e}"
            );
        }
        // Only root may write it (when the test runs as root): honoured.
        if nix::unistd::geteuid().is_root() {
            let safe = tmp.path().join("safe");
            std::fs::create_dir(&safe).unwrap();
            std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let sock = safe.join("helper.sock");
            assert_eq!(
                socket_from(Some(sock.clone().into()), true, check),
                Ok(sock)
            );
        }
    }
}
