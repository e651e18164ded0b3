//! The driver's network steps when the daemon runs as a normal user (`crate::privileged`):
//! kwg-helper creates the TUN and passes its descriptor, and sets the address, routes and
//! firewall; as root the daemon does them itself (`exec`, `firewall`).

use kwg_wg::device::{DEFAULT_MTU, Device, DeviceConfig};

use super::{Driver, exec};
use crate::dns::forwarder::{Forwarder, ForwarderConfig};
use crate::error::Error;
use crate::privileged::Helper;

impl Driver {
    /// The device on a TUN the helper made; its ifindex.
    pub(super) async fn create_device_via_helper(&mut self, name: &str) -> Result<u32, Error> {
        let key = self.key.clone().expect("key loaded");
        let (helper, tun) = Helper::open(
            name,
            &self.dir.0,
            &self.args.also_proxy,
            &self.args.allow_conflicting_subnets,
            DEFAULT_MTU,
        )
        .await?;
        // The session lives as long as this connection: kept before anything can fail.
        self.helper = Some(helper);
        let cfg = DeviceConfig {
            name: name.to_string(),
            private_key: key,
            listen_port: 0,
            mtu: DEFAULT_MTU,
            uapi_dir: Some(self.dir.uapi_dir()),
        };
        self.device = Some(Device::start_on_fd(cfg, tun.fd, tun.offload).await?);
        self.force_udp_buffers().await;
        Ok(tun.ifindex)
    }

    /// Has the helper force the buffers of the device's UDP socket to a root join's size (a
    /// normal user gets at most `net.core.rmem_max`): once it is bound, and again for each new
    /// socket (a rebind, by the transport ladder too; the stats read every 100 ms notices),
    /// told apart by the socket's identity, not its port (a rebind may get the same port). A
    /// failure costs throughput only: logged.
    pub(super) async fn force_udp_buffers(&mut self) {
        let (Some(h), Some(d)) = (self.helper.as_ref(), self.device.as_ref()) else {
            return;
        };
        let handle = d.handle();
        let port = handle.listen_port();
        if port == 0 {
            return;
        }
        let sock = match handle.udp_socket() {
            Ok(sock) => sock,
            Err(e) => {
                tracing::warn!(port, error = %e, "cannot read the UDP socket: its buffers are not forced");
                return;
            }
        };
        // fstat never fails on a descriptor we hold; were it to, nothing is forced.
        let Some(id) = socket_identity(std::os::fd::AsFd::as_fd(&sock)) else {
            return;
        };
        if self.udp_forced == Some(id) {
            return;
        }
        self.udp_forced = Some(id);
        match h.udp_buffers(std::os::fd::AsFd::as_fd(&sock)).await {
            Ok((receive, send)) => {
                tracing::info!(
                    port,
                    receive,
                    send,
                    "kwg-helper forced the UDP socket's buffers"
                )
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "the UDP socket keeps the buffers net.core.rmem_max allows: throughput may suffer")
            }
        }
    }

    /// Brings `name` up with `address` (when given) and reconciles its routes.
    pub(super) async fn set_routes(
        &mut self,
        name: &str,
        address: Option<ipnet::IpNet>,
        add: &[ipnet::IpNet],
        remove: &[ipnet::IpNet],
    ) -> Result<(), Error> {
        let Some(h) = self.helper.as_mut() else {
            return exec::set_routes(name, address, add, remove).await;
        };
        if let Some(a) = address {
            h.set_address(a).await?;
        }
        h.routes(add, remove).await
    }

    /// Removes an address of the interface (the IPv6 tunnel address once ipv6.json is
    /// withdrawn).
    pub(super) async fn remove_address(
        &mut self,
        name: &str,
        address: ipnet::IpNet,
    ) -> Result<(), Error> {
        match self.helper.as_mut() {
            Some(h) => h.remove_address(address).await,
            None => exec::delete_address(name, address).await,
        }
    }

    /// Adds the interface's IPv6 tunnel address (next to the IPv4 one: kwg-helper keeps one
    /// address per family).
    pub(super) async fn add_address6(
        &mut self,
        name: &str,
        address: ipnet::IpNet,
    ) -> Result<(), Error> {
        match self.helper.as_mut() {
            Some(h) => h.set_address(address).await,
            None => exec::add_address6(name, address).await,
        }
    }

    /// Replaces the interface's address `old` by `new` (of the same family).
    pub(super) async fn change_address(
        &mut self,
        name: &str,
        old: ipnet::IpNet,
        new: ipnet::IpNet,
    ) -> Result<(), Error> {
        match self.helper.as_mut() {
            Some(h) => h.set_address(new).await,
            None => exec::change_address(name, old, new).await,
        }
    }
}

/// A socket's identity (its device and inode), the same for every descriptor of it.
fn socket_identity(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    nix::sys::stat::fstat(fd)
        .ok()
        .map(|s| (s.st_dev as u64, s.st_ino as u64))
}

impl Driver {
    /// The DNS forwarder on sockets the helper bound (port 53 is privileged); its address.
    pub(super) async fn start_forwarder_via_helper(
        &mut self,
        listen: std::net::SocketAddr,
        config: ForwarderConfig,
    ) -> Result<std::net::SocketAddr, Error> {
        let h = self.helper.as_mut().expect("a helper session");
        let (udp, tcp) = h.dns_sockets(listen).await?;
        let f = Forwarder::start_on(udp, tcp, config)?;
        let addr = f.addr;
        self.forwarder = Some(f);
        Ok(addr)
    }

    /// Has the helper point the resolver file at the forwarder: the first `nameserver` and the
    /// `search` line of `contents` (what the session rendered); the helper renders and checks
    /// its own version from them.
    pub(super) async fn resolv_conf_via_helper(&mut self, contents: &[u8]) -> Result<(), Error> {
        let text = String::from_utf8_lossy(contents);
        let forwarder = kwg_session::dns::resolvconf::nameservers(&text)
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::io(
                    "render the resolver file".to_string(),
                    std::io::Error::other("no nameserver"),
                )
            })?;
        let search: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("search "))
            .flat_map(|l| l.split_whitespace().map(str::to_string))
            .collect();
        let h = self.helper.as_mut().expect("a helper session");
        h.resolv_conf(forwarder, &search).await
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd};

    use super::socket_identity;

    /// A rebind that gets the same port is another socket (forced again); another descriptor
    /// of the same socket is not. Both sockets live at once on one port (SO_REUSEADDR), so
    /// neither a free port nor a reused inode decides the result.
    #[test]
    fn a_socket_is_known_by_its_identity_not_its_port() {
        use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
        let bind = |port: u16| {
            let fd = socket::socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
            socket::bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
            let port = socket::getsockname::<SockaddrIn>(fd.as_raw_fd())
                .unwrap()
                .port();
            (fd, port)
        };
        let (first, port) = bind(0);
        let id = socket_identity(first.as_fd()).unwrap();
        let dup = first.try_clone().unwrap();
        assert_eq!(socket_identity(dup.as_fd()), Some(id));
        let (again, same) = bind(port);
        assert_eq!(same, port);
        assert_ne!(socket_identity(again.as_fd()), Some(id));
    }
}
