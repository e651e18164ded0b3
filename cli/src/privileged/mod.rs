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
pub fn socket() -> PathBuf {
    std::env::var_os("KWG_HELPER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(kwg_privhelper::server::default_socket)
}

/// Whether this process needs the helper for a TUN-mode join (neither root nor CAP_NET_ADMIN).
pub fn needed() -> bool {
    !crate::caps::privileged()
}

fn helper_error(what: &str, e: ClientError) -> Error {
    Error::io(what.to_string(), std::io::Error::other(e.to_string()))
}

/// Whether a helper answers on `socket`.
pub async fn answers(socket: &Path) -> bool {
    match Client::connect(socket).await {
        Ok(mut c) => c.list().await.is_ok(),
        Err(_) => false,
    }
}

/// The `kwg-helper` binary: next to this `kwg`, else on `PATH` (absolute either way: sudo's
/// `secure_path` would not find it by name).
pub fn helper_binary() -> Option<PathBuf> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("kwg-helper")));
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kwg-helper"))
            .find(|c| c.is_file())
    });
    sibling.filter(|s| s.is_file()).or(on_path)
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
    let Some(binary) = helper_binary() else {
        return Err(not_running(
            "kwg-helper is not installed next to kwg or on PATH",
        ));
    };
    let uid = uid.to_string();
    let mut serve = std::process::Command::new(&binary);
    serve
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(["--allow-uid", &uid])
        .stdout(std::process::Stdio::null());
    if nix::unistd::geteuid().is_root() {
        serve.stderr(std::process::Stdio::null());
        kwg_host::process::spawn_detached(&mut serve)
            .map_err(|e| not_running(&format!("it cannot be started ({e})")))?;
    } else {
        let mut sudo = std::process::Command::new("sudo");
        sudo.arg("-b")
            .arg(serve.get_program())
            .args(serve.get_args())
            .stdout(std::process::Stdio::null());
        match sudo.status() {
            Ok(s) if s.success() => {}
            Ok(_) => return Err(not_running("sudo did not start it")),
            Err(e) => return Err(not_running(&format!("sudo cannot run ({e})"))),
        }
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
/// helper rewrites the resolver file for it (resolv-conf mode); systemd-resolved's per-link DNS
/// does not go through the helper yet, so where resolved manages DNS the join's DNS mode is
/// `off` and the user is told.
pub async fn prepare(
    args: &mut crate::args::JoinArgs,
    reporter: &crate::progress::Reporter,
) -> Result<bool, Error> {
    use crate::args::DnsMode;
    if args.userspace || !needed() {
        return Ok(false);
    }
    let socket = socket();
    if !answers(&socket).await {
        if !args.tun {
            // Userspace mode, as before there was a helper.
            return Ok(false);
        }
        ensure(&socket).await?;
    }
    args.tun = true;
    let stub = resolved_stub(&args.resolv_conf);
    match args.dns_mode {
        DnsMode::Auto | DnsMode::Resolved if stub => {
            args.dns_mode = DnsMode::Off;
            reporter.step(&format!(
                "Tunnel interface through kwg-helper ({}): kwg runs as you; systemd-resolved manages DNS here and its per-link DNS does not go through the helper yet, so cluster names do not resolve on this machine (Service and pod addresses do; sudo kwg join joins as root here and sets them in resolved)",
                socket.display()
            ));
        }
        DnsMode::Auto => args.dns_mode = DnsMode::ResolvConf,
        _ => {}
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

/// The daemon's session with the helper: the connection is the session's lifeline.
pub struct Helper {
    client: Client,
    interface: String,
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
                client,
                interface: interface.to_string(),
            },
            tun,
        ))
    }

    /// Gives the link `address` (replacing the previous one) and sets it up.
    pub async fn set_address(&mut self, address: IpNet) -> Result<(), Error> {
        self.client
            .set_address(address)
            .await
            .map_err(|e| helper_error(&format!("have kwg-helper set address {address}"), e))
    }

    /// Removes, then adds routes through the link.
    pub async fn routes(&mut self, add: &[IpNet], remove: &[IpNet]) -> Result<(), Error> {
        self.client
            .routes(add, remove)
            .await
            .map_err(|e| helper_error("have kwg-helper change the routes", e))
    }

    /// Loads the session's firewall table.
    pub async fn firewall(&mut self) -> Result<(), Error> {
        self.client
            .firewall()
            .await
            .map_err(|e| helper_error("have kwg-helper load the firewall table", e))
    }

    /// The DNS forwarder's sockets on `listen` (port 53), bound by the helper: UDP, then TCP.
    pub async fn dns_sockets(
        &mut self,
        listen: SocketAddr,
    ) -> Result<(std::net::UdpSocket, std::net::TcpListener), Error> {
        let what = format!("have kwg-helper bind the DNS forwarder on {listen}");
        let udp = self.client.dns_socket(listen, false).await;
        let udp = udp.map_err(|e| helper_error(&what, e))?;
        let tcp = self.client.dns_socket(listen, true).await;
        let tcp = tcp.map_err(|e| helper_error(&what, e))?;
        Ok((udp.into(), tcp.into()))
    }

    /// Points the resolver file at `forwarder` (this session's), `search` first.
    pub async fn resolv_conf(&mut self, forwarder: IpAddr, search: &[String]) -> Result<(), Error> {
        self.client
            .resolv_conf(forwarder, search)
            .await
            .map_err(|e| {
                helper_error(
                    "have kwg-helper point the resolver file at kwg's forwarder",
                    e,
                )
            })
    }

    /// Puts the resolver file back now.
    pub async fn revert_dns(&mut self) -> Result<(), Error> {
        if let Some(why) = self.gone() {
            // A helper that starts again puts the file back from its journal.
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            return match kwg_session::dns::resolvconf::is_ours(&text) {
                true => Err(Error::NoHelper(why)),
                false => Ok(()),
            };
        }
        self.client
            .revert_dns()
            .await
            .map_err(|e| helper_error("have kwg-helper put the resolver file back", e))
    }

    /// Ends the session: the helper removes the table, routes, address and link.
    pub async fn close(mut self) -> Result<(), Error> {
        if let Some(why) = self.gone() {
            // Nobody is left to ask: the link is gone already, or a helper that starts again
            // removes it from its journal.
            if nix::net::if_::if_nametoindex(self.interface.as_str()).is_err() {
                return Ok(());
            }
            return Err(Error::NoHelper(why));
        }
        self.client
            .close()
            .await
            .map_err(|e| helper_error("have kwg-helper end the session", e))
    }

    /// Why the session's helper is gone (its connection closed: it exited or was killed), with
    /// what became of the interface; `None` while it serves the session.
    pub fn gone(&self) -> Option<String> {
        if !self.client.is_closed() {
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
