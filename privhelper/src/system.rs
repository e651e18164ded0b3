//! The helper's I/O on the machine: the facts its rules need, the TUN, addresses, routes and the
//! firewall. Behind [`Net`] so that the server's logic runs in tests without root.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use kwg_host::netlink::{Netlink, NetlinkError};
use kwg_session::dns::domains::LinkDomain;
use kwg_session::dns::resolvconf::nameservers;

use crate::firewall;
use crate::registry::{Change, Undo};
use crate::resolved::Resolved;
use crate::rules::Facts;

/// What the kernel (or nft) said, as one clause.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Resolved(#[from] crate::resolved::ResolvedError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SysError {
    let what = what.into();
    move |source| SysError::Io { what, source }
}

/// A new TUN: its descriptor, index and whether it has the virtio-net header (offloads).
#[derive(Debug)]
pub struct NewTun {
    pub fd: OwnedFd,
    pub ifindex: u32,
    pub offload: bool,
}

/// The machine, as the helper changes it.
#[async_trait::async_trait]
pub trait Net: Send + Sync {
    async fn facts(&self) -> Result<Facts, SysError>;
    async fn create_tun(&self, name: &str, mtu: u16) -> Result<NewTun, SysError>;
    async fn apply(&self, change: &Change) -> Result<(), SysError>;
    /// A DNS forwarder socket bound on `listen`: UDP, or a listening TCP socket.
    async fn bind_dns(&self, listen: SocketAddr, tcp: bool) -> Result<OwnedFd, SysError>;
    /// Undoes one step; `Ok` also when there was nothing left to undo.
    async fn undo(&self, undo: &Undo) -> Result<(), SysError>;
    /// Whether something still holds the forwarder address `listen` (a UDP or a TCP bind there fails).
    async fn dns_in_use(&self, listen: SocketAddr) -> bool;
    /// systemd-resolved's domains by link index (0: global), none when it does not answer.
    async fn resolved_domains(&self) -> Vec<(u32, LinkDomain)> {
        Vec::new()
    }
}

/// The real machine: rtnetlink, /dev/net/tun, nft, in the helper's network namespace.
pub struct Kernel;

impl Kernel {
    fn nl() -> Result<Netlink, SysError> {
        Ok(Netlink::open()?)
    }
}

/// The resolver file the helper reads and, for a session's DNS, rewrites in place (in the
/// helper's mount namespace: `ip netns exec` binds `/etc/netns/<ns>/resolv.conf` over it).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

#[async_trait::async_trait]
impl Net for Kernel {
    async fn facts(&self) -> Result<Facts, SysError> {
        let routes = Self::nl()?.routes().await?;
        let gateways = routes
            .iter()
            .filter(|r| r.destination.prefix_len() == 0)
            .filter_map(|r| r.gateway)
            .collect();
        let addresses = nix::ifaddrs::getifaddrs()
            .map_err(|e| io("list the machine's addresses")(e.into()))?
            .filter_map(|a| {
                let s = a.address?;
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect();
        let resolv_conf = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
        Ok(Facts {
            addresses,
            gateways,
            dns_servers: nameservers(&resolv_conf),
            routes,
            resolv_conf,
            resolved_domains: Vec::new(),
        })
    }

    async fn resolved_domains(&self) -> Vec<(u32, LinkDomain)> {
        let domains = match crate::resolved::Resolved::connect().await {
            Ok(r) => r.all_domains().await,
            Err(e) => Err(e),
        };
        domains.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read systemd-resolved's domains of other links");
            Vec::new()
        })
    }

    async fn create_tun(&self, name: &str, mtu: u16) -> Result<NewTun, SysError> {
        let nl = Self::nl()?;
        if nl.link_exists(name).await? {
            return Err(io(format!("create interface {name}"))(
                std::io::Error::other(
                    "it exists already (another VPN or a one-process kwg join uses it): pass --interface with another name",
                ),
            ));
        }
        // Today's offloads (TSO/USO through IFF_VNET_HDR) where the kernel has them, as
        // `kwg_wg::io::tun::Tun::create` sets them up.
        let build = |offload: bool| {
            tun_rs::DeviceBuilder::new()
                .name(name)
                .mtu(mtu)
                .offload(offload)
                .build_sync()
        };
        let dev = match build(true) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "TUN offloads unavailable");
                build(false).map_err(io(format!("create TUN {name}")))?
            }
        };
        let offload = dev.tcp_gso();
        // SAFETY: into_raw_fd hands over the device's own open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(dev.into_raw_fd()) };
        // Before any address, route or peer: nothing the cluster sends is forwarded
        // (docs/laptop-trust.md). The link goes with the descriptor, and with it this setting.
        for family in ["ipv4", "ipv6"] {
            let path = format!("/proc/sys/net/{family}/conf/{name}/forwarding");
            if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "0") {
                std::fs::write(&path, "0").map_err(io(format!("write 0 to {path}")))?;
            }
        }
        let ifindex = nl.link_index(name).await?;
        Ok(NewTun {
            fd,
            ifindex,
            offload,
        })
    }

    async fn apply(&self, change: &Change) -> Result<(), SysError> {
        let nl = Self::nl()?;
        match change {
            Change::CreateTun { .. } => unreachable!("create_tun makes links"),
            Change::AddAddress { name, address } => {
                let mtu = nl.link(name).await?.mtu;
                nl.link_up(name, Some(mtu)).await?;
                nl.add_address(name, *address).await?;
            }
            Change::DeleteAddress { name, address } => {
                nl.delete_address(name, *address).await?;
            }
            Change::AddRoute { name, route } => nl.replace_route(*route, name).await?,
            Change::DeleteRoute { name, route } => {
                nl.delete_route(*route, name).await?;
            }
            Change::BindDns { .. } => unreachable!("bind_dns binds sockets"),
            Change::WriteResolvConf { contents, .. } => {
                write_in_place(Path::new(RESOLV_CONF), contents.as_bytes())?
            }
            // The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else /run/dbus/system_bus_socket);
            // `configure` reverts the link itself when a call fails part way.
            Change::ConfigureResolved { link, .. } => Resolved::connect().await?.configure(link).await?,
            Change::SetResolvedDomains { ifindex, domains } => {
                Resolved::connect().await?.set_domains(*ifindex, domains).await?
            }
            Change::InstallFirewall { table, name } => {
                if !firewall::install_new(table, name)
                    .await
                    .map_err(io(format!(
                        "load the nftables table {table} (refused if it exists already: another kwg owns it, or `nft delete table inet {table}` removes a stale one)"
                    )))?
                {
                    tracing::warn!(
                        table,
                        "nft is not installed: the tunnel's new connections are not filtered"
                    );
                }
            }
        }
        Ok(())
    }

    async fn undo(&self, undo: &Undo) -> Result<(), SysError> {
        let nl = Self::nl()?;
        match undo {
            Undo::DeleteLink { name, ifindex } => {
                // A link whose index we never learned was never handed out: it went with the
                // helper's descriptor.
                if ifindex.is_some() && nl.link_index(name).await.ok() == *ifindex {
                    nl.delete_link(name).await?;
                }
            }
            Undo::DeleteAddress { name, address } => {
                match nl.delete_address(name, *address).await {
                    Ok(_) | Err(NetlinkError::NoSuchLink(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Undo::DeleteRoute { name, route } => {
                nl.delete_route(*route, name).await?;
            }
            Undo::RemoveFirewall { table } => {
                firewall::remove(table)
                    .await
                    .map_err(io(format!("delete the nftables table {table}")))?;
            }
            Undo::RevertLink { name, ifindex } => {
                // A link that is gone (or another of that name) took its settings with it.
                if nl.link_index(name).await.ok() == Some(*ifindex) {
                    Resolved::connect().await?.revert(*ifindex).await?;
                }
            }
            Undo::RestoreResolvConf { original } => {
                let path = Path::new(RESOLV_CONF);
                let current = std::fs::read_to_string(path).unwrap_or_default();
                if kwg_session::dns::resolvconf::is_ours(&current) || current.is_empty() {
                    write_in_place(path, original.as_bytes())?;
                } else {
                    tracing::warn!(
                        path = RESOLV_CONF,
                        "the resolver file was changed by someone else since the join: left as it is"
                    );
                }
            }
        }
        Ok(())
    }

    async fn dns_in_use(&self, listen: SocketAddr) -> bool {
        address_in_use(listen)
    }

    async fn bind_dns(&self, listen: SocketAddr, tcp: bool) -> Result<OwnedFd, SysError> {
        let what = format!(
            "bind the DNS forwarder's {} socket on {listen} (is another DNS server using it? pass --dns-listen with another loopback address)",
            if tcp { "TCP" } else { "UDP" }
        );
        let fd = match tcp {
            true => std::net::TcpListener::bind(listen).map(OwnedFd::from),
            false => std::net::UdpSocket::bind(listen).map(OwnedFd::from),
        };
        fd.map_err(io(what))
    }
}

/// Whether something holds `listen` (a forwarder's UDP socket or TCP listener): free only
/// when both a UDP and a TCP bind succeed, so sessions binding only the TCP listener count
/// against the cap too. Any failure but "free" counts as held: the cap errs on the side of
/// refusing.
pub fn address_in_use(listen: SocketAddr) -> bool {
    std::net::UdpSocket::bind(listen).is_err() || std::net::TcpListener::bind(listen).is_err()
}

/// Overwrites `path` in place (truncate, write, fsync; no rename: it may be a bind mount,
/// where a rename fails with EBUSY).
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<(), SysError> {
    use std::io::Write;
    let what = format!("rewrite {}", path.display());
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(io(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_held_by_a_tcp_listener_alone_is_in_use() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = tcp.local_addr().unwrap();
        assert!(address_in_use(held), "{held} has a TCP listener");
        drop(tcp);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let held = udp.local_addr().unwrap();
        assert!(address_in_use(held), "{held} has a UDP socket");
    }
}
