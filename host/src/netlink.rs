//! rtnetlink helpers: bring a link up with an MTU, add an address, add/replace/delete routes
//! through an interface, and list routes (for conflict detection).
//!
//! A netlink socket lives in the network namespace of the thread that opened it: call
//! [`Netlink::open`] on a thread that is already in the namespace to configure (the connection
//! task may then run on any runtime thread). Needs a tokio runtime.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// The main routing table (`RT_TABLE_MAIN` in `linux/rtnetlink.h`).
pub const MAIN_TABLE: u32 = 254;

// errno values the kernel reports (negated) in netlink error messages.
const ENOENT: i32 = libc::ENOENT;
const ESRCH: i32 = libc::ESRCH;
const ENODEV: i32 = libc::ENODEV;
const EPERM: i32 = libc::EPERM;

/// What went wrong talking to the kernel's routing netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("network interface {0} does not exist (was the device stopped?)")]
    NoSuchLink(String),
    #[error("not permitted to {action}: run as root or grant CAP_NET_ADMIN")]
    NotPermitted { action: String },
    #[error("cannot {action}: {source}")]
    Kernel {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// One route of the kernel's routing tables, as listed by [`Netlink::routes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (`0.0.0.0/0` for a default route).
    pub destination: IpNet,
    /// Output interface name, when the route has one.
    pub interface: Option<String>,
    /// Gateway (`via`), when the route has one.
    pub gateway: Option<IpAddr>,
    /// Routing table id ([`MAIN_TABLE`] for `ip route`'s default view).
    pub table: u32,
}

impl std::fmt::Display for RouteEntry {
    /// Formats like `ip route`: `10.0.0.0/8 via 192.0.2.1 dev eth0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.interface {
            write!(f, " dev {dev}")?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// What [`Netlink::link`] reports about an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mtu: u32,
    /// The administrative up flag (`IFF_UP`).
    pub up: bool,
}

/// A routing-netlink connection bound to the network namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace and spawns its driver task
    /// on the current tokio runtime.
    pub fn open() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The interface index of `name`.
    pub async fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.link(name).await?.index)
    }

    /// Index, MTU and up flag of `name`.
    pub async fn link(&self, name: &str) -> Result<LinkState, NetlinkError> {
        use rtnetlink::packet_route::link::LinkFlags;
        let mut links = self.handle.link().get().match_name(name).execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(NetlinkError::NoSuchLink(name.to_string())),
            Err(e) if errno(&e) == Some(ENODEV) => {
                return Err(NetlinkError::NoSuchLink(name.to_string()));
            }
            Err(e) => return Err(kernel(format!("look up interface {name}"), e)),
        };
        let mtu = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(0);
        Ok(LinkState {
            index: msg.header.index,
            mtu,
            up: msg.header.flags.contains(LinkFlags::Up),
        })
    }

    /// Whether an interface named `name` exists.
    pub async fn link_exists(&self, name: &str) -> Result<bool, NetlinkError> {
        match self.link_index(name).await {
            Ok(_) => Ok(true),
            Err(NetlinkError::NoSuchLink(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets `name` up, with `mtu` when given (`ip link set NAME up mtu MTU`).
    pub async fn link_up(&self, name: &str, mtu: Option<u32>) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        let mut msg = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(|e| kernel(format!("set interface {name} up"), e))
    }

    /// Deletes the interface `name`; `Ok(false)` when it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let index = match self.link_index(name).await {
            Ok(i) => i,
            Err(NetlinkError::NoSuchLink(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(kernel(format!("delete interface {name}"), e)),
        }
    }

    /// Adds `addr` (address with prefix, e.g. `100.77.0.2/32`) to `name`; replaces an existing
    /// identical address, so it is idempotent (`ip addr replace`).
    pub async fn add_address(&self, name: &str, addr: IpNet) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        self.handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(|e| kernel(format!("add address {addr} to {name}"), e))
    }

    /// Removes `addr` from `name`; `Ok(false)` when it was not there.
    pub async fn delete_address(&self, name: &str, addr: IpNet) -> Result<bool, NetlinkError> {
        let found = self
            .address_messages(name)
            .await?
            .into_iter()
            .find(|(net, _)| *net == addr);
        let Some((_, msg)) = found else {
            return Ok(false);
        };
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| kernel(format!("delete address {addr} of {name}"), e))?;
        Ok(true)
    }

    /// The addresses configured on `name`.
    pub async fn addresses(&self, name: &str) -> Result<Vec<IpNet>, NetlinkError> {
        Ok(self
            .address_messages(name)
            .await?
            .into_iter()
            .map(|(net, _)| net)
            .collect())
    }

    /// Each address of `name` with the kernel's message for it.
    async fn address_messages(
        &self,
        name: &str,
    ) -> Result<Vec<(IpNet, rtnetlink::packet_route::address::AddressMessage)>, NetlinkError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let index = self.link_index(name).await?;
        let mut out = Vec::new();
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = msgs
            .try_next()
            .await
            .map_err(|e| kernel(format!("list addresses of {name}"), e))?
        {
            let net = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => IpNet::new(*ip, msg.header.prefix_len).ok(),
                _ => None,
            });
            if let Some(net) = net {
                out.push((net, msg));
            }
        }
        Ok(out)
    }

    /// Adds or replaces the main-table route to `dest` through interface `name`
    /// (`ip route replace DEST dev NAME`).
    pub async fn replace_route(&self, dest: IpNet, name: &str) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        self.handle
            .route()
            .add(dev_route(dest, index))
            .replace()
            .execute()
            .await
            .map_err(|e| kernel(format!("add route {dest} dev {name}"), e))
    }

    /// Deletes the main-table route to `dest` through `name`; `Ok(false)` when there was none
    /// (or the interface is gone, which takes its routes with it).
    pub async fn delete_route(&self, dest: IpNet, name: &str) -> Result<bool, NetlinkError> {
        let index = match self.link_index(name).await {
            Ok(i) => i,
            Err(NetlinkError::NoSuchLink(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self
            .handle
            .route()
            .del(dev_route(dest, index))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if matches!(errno(&e), Some(ESRCH | ENOENT)) => Ok(false),
            Err(e) => Err(kernel(format!("delete route {dest} dev {name}"), e)),
        }
    }

    /// Every unicast IPv4 and IPv6 route of every table (filter on [`RouteEntry::table`]).
    pub async fn routes(&self) -> Result<Vec<RouteEntry>, NetlinkError> {
        let names = self.link_names().await?;
        let mut out = Vec::new();
        let requests = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for req in requests {
            let mut msgs = self.handle.route().get(req).execute();
            while let Some(msg) = msgs
                .try_next()
                .await
                .map_err(|e| kernel("list routes".to_string(), e))?
            {
                if let Some(entry) = route_entry(&msg, &names) {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    async fn link_names(&self) -> Result<Vec<(u32, String)>, NetlinkError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links
            .try_next()
            .await
            .map_err(|e| kernel("list interfaces".to_string(), e))?
        {
            for attr in &msg.attributes {
                if let LinkAttribute::IfName(n) = attr {
                    out.push((msg.header.index, n.clone()));
                }
            }
        }
        Ok(out)
    }
}

fn dev_route(dest: IpNet, index: u32) -> RouteMessage {
    // `trunc` so that `10.96.0.1/12` is accepted as `10.96.0.0/12`, like `ip route`.
    let dest = dest.trunc();
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dest.addr(), dest.prefix_len())
        .expect("address family and prefix length come from a valid IpNet")
        .output_interface(index)
        .table_id(MAIN_TABLE);
    // `ip route add X dev Y` without a gateway makes an on-link route.
    match dest {
        IpNet::V4(_) => builder.scope(RouteScope::Link).build(),
        IpNet::V6(_) => builder.build(),
    }
}

fn route_entry(msg: &RouteMessage, names: &[(u32, String)]) -> Option<RouteEntry> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dest: Option<IpAddr> = None;
    let mut gateway = None;
    let mut oif = None;
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dest = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let dest = dest.unwrap_or(match msg.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    let destination = IpNet::new(dest, msg.header.destination_prefix_length).ok()?;
    let interface = oif.and_then(|i| {
        names
            .iter()
            .find(|(idx, _)| *idx == i)
            .map(|(_, n)| n.clone())
    });
    Some(RouteEntry {
        destination,
        interface,
        gateway,
        table,
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The positive errno of a kernel error reply.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn kernel(action: String, source: rtnetlink::Error) -> NetlinkError {
    if errno(&source) == Some(EPERM) {
        NetlinkError::NotPermitted { action }
    } else {
        NetlinkError::Kernel { action, source }
    }
}

#[cfg(test)]
mod tests;
