//! Userspace mode (`kwg join --userspace`): WireGuard and a userspace TCP/IP stack inside the
//! daemon, no TUN, no routes, no DNS or firewall changes: nothing on the machine changes and
//! no privilege is needed. Applications reach the cluster through a SOCKS5/HTTP proxy on a
//! loopback port (names resolved by kwg's split DNS through the tunnel), `kwg forward`, or
//! `kwg exec` (which sets the proxy variables); everything else goes direct.

pub mod client;
pub mod http;
pub mod netstack;
mod owner;
pub mod proxy;
mod queues;
pub mod route;
pub mod socks;
pub mod target;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use kwg_contract::keys::PrivateKey;
use kwg_wg::device::{DEFAULT_MTU, Device, DeviceHandle, PeerConfig};

use crate::error::Error;
use kwg_session::machine::Event;
use netstack::{Connector, Netstack};
use route::Router;

/// Where the proxy listens by default (SOCKS5 and HTTP on one port).
pub const DEFAULT_PROXY: &str = "127.0.0.1:1080";

/// How the tunnel reaches the machine's applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A TUN interface with routes and DNS (needs root or CAP_NET_ADMIN).
    Tun,
    /// The proxy; nothing changes on the machine.
    Userspace,
}

/// What decides the mode.
#[derive(Debug, Clone, Copy)]
pub struct ModeFacts {
    pub root: bool,
    pub cap_net_admin: bool,
    pub tun_device: bool,
}

impl ModeFacts {
    /// This process and machine.
    pub fn probe() -> ModeFacts {
        ModeFacts {
            root: nix::unistd::geteuid().is_root(),
            cap_net_admin: crate::caps::has_cap_net_admin(),
            tun_device: Path::new("/dev/net/tun").exists(),
        }
    }
}

/// The mode for `--userspace`/`--tun` and the facts, with the sentence that says why
/// userspace mode was chosen without being asked for.
pub fn choose(
    userspace: bool,
    tun: bool,
    f: ModeFacts,
    proxy: SocketAddr,
) -> (Mode, Option<String>) {
    if userspace {
        return (Mode::Userspace, None);
    }
    if tun {
        return (Mode::Tun, None);
    }
    let why = if !f.root && !f.cap_net_admin {
        "this process is neither root nor has CAP_NET_ADMIN"
    } else if !f.tun_device {
        "there is no /dev/net/tun"
    } else {
        return (Mode::Tun, None);
    };
    let sentence = format!(
        "Userspace mode: {why}, so kwg creates no interface and changes nothing on this machine; cluster names are reachable through the SOCKS5/HTTP proxy on {proxy} (kwg exec -- CMD, kwg forward), or pass --tun to require the tunnel interface."
    );
    (Mode::Userspace, Some(sentence))
}

pub use kwg_session::userspace::Setup;

/// The running userspace stack and proxy (the device is the driver's, as on the TUN path).
pub struct Userspace {
    stack: Netstack,
    subnets: route::Subnets,
    proxy: tokio::task::JoinHandle<()>,
    pub listen: SocketAddr,
}

impl Userspace {
    /// Starts the device on a packet channel (with the gateway peer), the stack and the
    /// proxy.
    pub async fn start(
        key: PrivateKey,
        name: &str,
        setup: Setup,
    ) -> Result<(Device, Userspace), Error> {
        let listener = proxy::bind(setup.listen).await?;
        let listen = listener
            .local_addr()
            .map_err(|e| Error::io("read the proxy's address", e))?;
        let (device, channel) = Device::start_userspace(name.to_string(), key, 0).await?;
        device
            .handle()
            .upsert_peer(crate::peer::peer_config(&setup.gateway))
            .await?;
        let stack = Netstack::start(channel, setup.address, setup.gateway_ip, DEFAULT_MTU);
        let dns = setup.dns.as_ref().and_then(|d| match d.cluster {
            SocketAddr::V4(server) => Some((d.split.clone(), server)),
            SocketAddr::V6(_) => None,
        });
        let subnets = route::Subnets::new(std::sync::RwLock::new(setup.subnets));
        let router = Router {
            tunnel: stack.connector(),
            subnets: subnets.clone(),
            dns,
            dns_timeout: setup
                .dns
                .as_ref()
                .map_or(Duration::from_secs(4), |d| d.timeout),
        };
        let proxy = tokio::spawn(proxy::serve(listener, router));
        tracing::info!(%listen, address = %setup.address, "userspace tunnel and proxy started");
        Ok((
            device,
            Userspace {
                stack,
                subnets,
                proxy,
                listen,
            },
        ))
    }

    pub fn connector(&self) -> Connector {
        self.stack.connector()
    }

    /// Follows the gateway's subnets: the proxy sends addresses in `add` through the tunnel,
    /// those in `remove` no longer.
    pub fn set_routes(&self, add: &[IpNet], remove: &[IpNet]) {
        apply_routes(
            &mut self.subnets.write().unwrap_or_else(|e| e.into_inner()),
            add,
            remove,
        );
        tracing::info!(?add, ?remove, "userspace subnets changed");
    }

    /// Follows a new tunnel address.
    pub fn readdress(&self, new: IpNet) -> Result<(), Error> {
        match new {
            IpNet::V4(n) => self
                .stack
                .readdress(n.addr())
                .map_err(|e| Error::io("move the userspace stack to its new address", e)),
            IpNet::V6(_) => Err(Error::invalid(
                "tunnel address",
                "IPv6 is not supported in userspace mode",
            )),
        }
    }

    /// Stops the proxy and the stack (the caller stops the device).
    pub fn stop(self) {
        self.proxy.abort();
    }
}

/// `subnets` minus `remove`, plus `add` (each once).
fn apply_routes(subnets: &mut Vec<IpNet>, add: &[IpNet], remove: &[IpNet]) {
    subnets.retain(|n| !remove.contains(n));
    for n in add {
        if !subnets.contains(n) {
            subnets.push(*n);
        }
    }
}

/// Pokes the tunnel through the stack (a TCP SYN toward `poke` makes the device start the
/// handshake) until the gateway answered.
pub async fn await_handshake(
    handle: DeviceHandle,
    tunnel: Connector,
    gateway: PeerConfig,
    poke: SocketAddr,
) -> Event {
    let poke = match poke {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, poke.port()),
    };
    crate::peer::await_handshake(handle, gateway.public_key, || {
        let tunnel = tunnel.clone();
        async move {
            let _ = tunnel.connect(poke, Duration::from_millis(100)).await;
        }
    })
    .await;
    Event::Handshake
}

/// Asks the cluster DNS `server` through the stack until it resolves `name`.
pub async fn dns_answers(tunnel: Connector, server: SocketAddr, name: String) -> Event {
    let SocketAddr::V4(server) = server else {
        return Event::Failed(
            Error::invalid(
                "cluster DNS address",
                "IPv6 is not supported in userspace mode",
            )
            .into(),
        );
    };
    let router = Router {
        tunnel,
        subnets: Default::default(),
        dns: None,
        dns_timeout: Duration::from_millis(500),
    };
    while router.cluster_lookup_at(server, &name).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Event::DnsAnswered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_new_subnets_replace_the_old_ones() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let mut subnets = vec![n("10.96.0.0/12"), n("10.244.0.0/24")];
        apply_routes(
            &mut subnets,
            &[n("10.245.0.0/24"), n("10.96.0.0/12")],
            &[n("10.244.0.0/24")],
        );
        assert_eq!(subnets, [n("10.96.0.0/12"), n("10.245.0.0/24")]);
    }

    #[test]
    fn userspace_is_chosen_without_privilege_or_tun_and_says_why() {
        let proxy: SocketAddr = DEFAULT_PROXY.parse().unwrap();
        let f = |root, cap_net_admin, tun_device| ModeFacts {
            root,
            cap_net_admin,
            tun_device,
        };
        assert_eq!(
            choose(false, false, f(true, true, true), proxy),
            (Mode::Tun, None)
        );
        assert_eq!(
            choose(false, false, f(false, true, true), proxy),
            (Mode::Tun, None)
        );
        let (mode, why) = choose(false, false, f(false, false, true), proxy);
        assert_eq!(mode, Mode::Userspace);
        let why = why.unwrap();
        assert!(why.contains("neither root nor has CAP_NET_ADMIN"), "{why}");
        assert!(
            why.contains("127.0.0.1:1080") && why.contains("--tun"),
            "{why}"
        );
        let (mode, why) = choose(false, false, f(true, true, false), proxy);
        assert_eq!(mode, Mode::Userspace);
        assert!(why.unwrap().contains("no /dev/net/tun"));
        // Asked for: no sentence; --tun keeps the TUN path (and its privilege error).
        assert_eq!(
            choose(true, false, f(true, true, true), proxy),
            (Mode::Userspace, None)
        );
        assert_eq!(
            choose(false, true, f(false, false, false), proxy),
            (Mode::Tun, None)
        );
    }
}
