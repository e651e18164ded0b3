//! systemd-resolved over D-Bus (`org.freedesktop.resolve1`): per-link DNS for the tunnel
//! interface; shared by a root `kwg join` (`kwg::dns::resolved` re-exports it) and kwg-helper,
//! which makes the same calls for a normal user's session. The way NetworkManager and VPN clients do it, instead of rewriting resolv.conf.
//!
//! The pure parts decide (is resolv.conf the stub, which domains the link gets, which call
//! carries the server); [`Resolved`] makes the calls. Root callers need no polkit rule.
//!
//! What kwg sets on its link:
//! - the DNS server: the forwarder (`SetLinkDNS`, or `SetLinkDNSEx` when it is not on port 53);
//! - routing-only domains `~<cluster domain>` and `~<namespace>` for each visible namespace (so
//!   `web-app.emojivoto` goes to kwg), and the connected namespace's `<ns>.svc.<cluster domain>`
//!   as a search domain (so single-label `web-app` works); `~<zone>.in-addr.arpa` for the
//!   cluster's CIDRs (PTR lookups) when the caller adds [`reverse_domains`];
//! - not the default route, and DNSSEC, DNS-over-TLS, LLMNR and mDNS off on the link (cluster
//!   DNS signs nothing and speaks plain DNS).
//!
//! `RevertLink` undoes it all; when the link goes away (a crashed daemon's TUN), resolved forgets it.

pub use kwg_session::dns::domains::{
    LinkConfig, LinkDomain, LinkDomains, link_domains, reverse_domains, split_domains,
};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zbus::{Connection, DBusError};

/// The address of resolved's stub listener.
pub const STUB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);
/// Where resolv.conf links to when resolved manages it in stub mode.
pub const STUB_RESOLV_CONF: &str = "/run/systemd/resolve/stub-resolv.conf";
/// resolved's list of its uplink servers (what it forwards to), in resolv.conf format.
pub const UPLINK_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
const BUS_NAME: &str = "org.freedesktop.resolve1";
const OBJECT: &str = "/org/freedesktop/resolve1";
const MANAGER: &str = "org.freedesktop.resolve1.Manager";
/// A D-Bus call to resolved answers in milliseconds; past this it is hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Why kwg cannot use systemd-resolved; each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ResolvedError {
    #[error(
        "/etc/resolv.conf points at systemd-resolved's stub 127.0.0.53 but nothing owns {BUS_NAME} on the system bus: start it (systemctl start systemd-resolved) or pass --dns-mode resolv-conf"
    )]
    NotRunning,
    #[error(
        "cannot reach the D-Bus system bus ({reason}): start dbus (systemctl start dbus) or pass --dns-mode resolv-conf"
    )]
    Bus { reason: String },
    #[error(
        "systemd-resolved refused {call} on link {ifindex}: permission denied ({message}): run kwg join as root (sudo)"
    )]
    Denied {
        call: &'static str,
        ifindex: u32,
        message: String,
    },
    #[error(
        "systemd-resolved does not know link {ifindex} ({call}): the tunnel interface is gone; run kwg join again"
    )]
    NoSuchLink { call: &'static str, ifindex: u32 },
    #[error(
        "systemd-resolved refused {call} on link {ifindex}: the link is managed by systemd-networkd ({message}): add a .network file with Unmanaged=yes for kwg's interface, or pass --dns-mode resolv-conf"
    )]
    LinkBusy {
        call: &'static str,
        ifindex: u32,
        message: String,
    },
    #[error(
        "systemd-resolved failed {call} on link {ifindex}: {name}: {message}: pass --dns-mode resolv-conf"
    )]
    Call {
        call: &'static str,
        ifindex: u32,
        name: String,
        message: String,
    },
    #[error("invalid DNS configuration for systemd-resolved: {0}")]
    Invalid(String),
}

/// How `/etc/resolv.conf` is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvConf {
    /// Queries go to resolved's stub, which routes them per link: kwg can use resolved.
    Stub,
    /// Anything else (static servers, resolved's uplink `resolv.conf`, NetworkManager's own).
    Other { first_nameserver: Option<IpAddr> },
}

impl ResolvConf {
    /// Classifies from where the file links to (if it is a symlink) and its text.
    pub fn classify(link_target: Option<&Path>, text: &str) -> ResolvConf {
        if link_target.is_some_and(|t| t.ends_with("stub-resolv.conf")) {
            return ResolvConf::Stub;
        }
        let first = kwg_session::dns::resolvconf::nameservers(text)
            .into_iter()
            .next();
        if first == Some(IpAddr::V4(STUB)) {
            ResolvConf::Stub
        } else {
            ResolvConf::Other {
                first_nameserver: first,
            }
        }
    }
}

/// What [`detect`] found.
#[derive(Debug)]
pub enum Detection {
    /// resolved manages DNS here: configure the tunnel link through this connection.
    Managed(Resolved),
    /// resolved does not manage DNS here (why, for `kwg status` and `kwg doctor`).
    NotManaged { reason: String },
}

/// Whether systemd-resolved manages this machine's DNS: `/etc/resolv.conf` is its stub and
/// `org.freedesktop.resolve1` has an owner on the system bus.
pub async fn detect() -> Result<Detection, ResolvedError> {
    detect_with(Path::new("/etc/resolv.conf"), None).await
}

/// [`detect`] with another resolv.conf and (tests) another bus address than the system bus.
#[tracing::instrument(skip_all, fields(resolv_conf = %resolv_conf.display()))]
pub async fn detect_with(
    resolv_conf: &Path,
    bus: Option<&str>,
) -> Result<Detection, ResolvedError> {
    let target: Option<PathBuf> = std::fs::read_link(resolv_conf).ok();
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    match ResolvConf::classify(target.as_deref(), &text) {
        ResolvConf::Other { first_nameserver } => {
            let first = first_nameserver.map_or("no nameserver".to_string(), |ip| ip.to_string());
            Ok(Detection::NotManaged {
                reason: format!(
                    "{} is not systemd-resolved's stub ({first})",
                    resolv_conf.display()
                ),
            })
        }
        ResolvConf::Stub => {
            let resolved = match bus {
                Some(address) => Resolved::connect_to(address).await?,
                None => Resolved::connect().await?,
            };
            if resolved.is_running().await? {
                Ok(Detection::Managed(resolved))
            } else {
                Err(ResolvedError::NotRunning)
            }
        }
    }
}

/// The body of the call that sets the link's server: `SetLinkDNS` takes `a(iay)` (port 53),
/// `SetLinkDNSEx` takes `a(iayqs)` (any port, no server name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsCall {
    Plain(Vec<(i32, Vec<u8>)>),
    Ex(Vec<(i32, Vec<u8>, u16, String)>),
}

impl DnsCall {
    pub fn for_server(server: SocketAddr) -> DnsCall {
        let (family, bytes) = match server.ip() {
            IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec()),
        };
        if server.port() == 53 {
            DnsCall::Plain(vec![(family, bytes)])
        } else {
            DnsCall::Ex(vec![(family, bytes, server.port(), String::new())])
        }
    }
}

/// A client of systemd-resolved on one bus connection.
#[derive(Debug, Clone)]
pub struct Resolved {
    conn: Connection,
}

impl Resolved {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else
    /// `/run/dbus/system_bus_socket`).
    pub async fn connect() -> Result<Resolved, ResolvedError> {
        Self::build(zbus::connection::Builder::system()).await
    }

    /// Connects to the bus at a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`.
    pub async fn connect_to(address: &str) -> Result<Resolved, ResolvedError> {
        Self::build(zbus::connection::Builder::address(address)).await
    }

    async fn build(b: zbus::connection::Builder<'_>) -> Result<Resolved, ResolvedError> {
        let conn =
            b.method_timeout(CALL_TIMEOUT)
                .build()
                .await
                .map_err(|e| ResolvedError::Bus {
                    reason: e.to_string(),
                })?;
        Ok(Resolved { conn })
    }

    /// Whether `org.freedesktop.resolve1` has an owner on this bus.
    pub async fn is_running(&self) -> Result<bool, ResolvedError> {
        let reply = self
            .conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &(BUS_NAME,),
            )
            .await
            .map_err(|e| ResolvedError::Bus {
                reason: e.to_string(),
            })?;
        reply
            .body()
            .deserialize::<bool>()
            .map_err(|e| ResolvedError::Bus {
                reason: format!("NameHasOwner answered oddly: {e}"),
            })
    }

    /// Sets kwg's DNS on the link. On a failure part way, reverts the link before returning
    /// the error, so the link is either fully configured or untouched.
    #[tracing::instrument(skip_all, fields(ifindex = cfg.ifindex, server = %cfg.server))]
    pub async fn configure(&self, cfg: &LinkConfig) -> Result<(), ResolvedError> {
        let ifindex = link_index(cfg.ifindex)?;
        if cfg.domains.is_empty() {
            return Err(ResolvedError::Invalid(
                "no domains for the link: without them resolved would send no query to kwg".into(),
            ));
        }
        let result = self.configure_steps(ifindex, cfg).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "configuring systemd-resolved failed; reverting the link");
            if let Err(undo) = self.revert(cfg.ifindex).await {
                tracing::warn!(error = %undo, "reverting the link failed too");
            }
        } else {
            let domains: Vec<String> = cfg.domains.iter().map(ToString::to_string).collect();
            tracing::info!(domains = %domains.join(" "), "systemd-resolved sends the cluster's names to kwg");
        }
        result
    }

    async fn configure_steps(&self, ifindex: i32, cfg: &LinkConfig) -> Result<(), ResolvedError> {
        match DnsCall::for_server(cfg.server) {
            DnsCall::Plain(servers) => {
                self.call("SetLinkDNS", ifindex, &(ifindex, servers))
                    .await?
            }
            DnsCall::Ex(servers) => {
                self.call("SetLinkDNSEx", ifindex, &(ifindex, servers))
                    .await?
            }
        }
        let domains: Vec<(&str, bool)> = cfg
            .domains
            .iter()
            .map(|d| (d.name.as_str(), d.routing_only))
            .collect();
        self.call("SetLinkDomains", ifindex, &(ifindex, domains))
            .await?;
        self.call("SetLinkDefaultRoute", ifindex, &(ifindex, false))
            .await?;
        for call in [
            "SetLinkDNSSEC",
            "SetLinkDNSOverTLS",
            "SetLinkLLMNR",
            "SetLinkMulticastDNS",
        ] {
            self.call(call, ifindex, &(ifindex, "no")).await?;
        }
        Ok(())
    }

    /// The DNS servers systemd-resolved has for the link (its `DNS` property), to tell
    /// whether kwg's forwarder is still there (something may have reverted the link).
    pub async fn link_servers(&self, ifindex: u32) -> Result<Vec<std::net::IpAddr>, ResolvedError> {
        let index = link_index(ifindex)?;
        let bus = |e: zbus::Error| ResolvedError::Bus {
            reason: e.to_string(),
        };
        let reply = self
            .conn
            .call_method(Some(BUS_NAME), OBJECT, Some(MANAGER), "GetLink", &(index,))
            .await
            .map_err(|e| call_error("GetLink", ifindex, e))?;
        let path: zbus::OwnedObjectPath = reply.body().deserialize().map_err(bus)?;
        let servers: Vec<(i32, Vec<u8>)> = self
            .property(path.as_str(), "org.freedesktop.resolve1.Link", "DNS")
            .await?;
        Ok(servers
            .into_iter()
            .filter_map(|(_, a)| match a.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(a).ok()?)),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(a).ok()?)),
                _ => None,
            })
            .collect())
    }

    /// Every link's domains (the manager's `Domains` property: link index, 0 for the global
    /// ones, name, routing-only).
    pub async fn all_domains(&self) -> Result<Vec<(u32, LinkDomain)>, ResolvedError> {
        let domains: Vec<(i32, String, bool)> = self.property(OBJECT, MANAGER, "Domains").await?;
        Ok(domains
            .into_iter()
            .filter_map(|(i, name, routing_only)| {
                Some((u32::try_from(i).ok()?, LinkDomain { name, routing_only }))
            })
            .collect())
    }

    /// The property `name` of `interface` on the object `path`.
    async fn property<T>(&self, path: &str, interface: &str, name: &str) -> Result<T, ResolvedError>
    where
        T: TryFrom<zbus::OwnedVariant, Error = zbus::Error>,
    {
        let bus = |e: zbus::Error| ResolvedError::Bus {
            reason: e.to_string(),
        };
        let reply = self
            .conn
            .call_method(
                Some(BUS_NAME),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(interface, name),
            )
            .await
            .map_err(bus)?;
        let value: zbus::OwnedVariant = reply.body().deserialize().map_err(bus)?;
        value
            .try_into()
            .map_err(|e: zbus::Error| ResolvedError::Bus {
                reason: format!("the property {name} of {interface}: {e}"),
            })
    }

    /// Replaces the link's domains (`SetLinkDomains`), e.g. when namespaces come and go.
    pub async fn set_domains(
        &self,
        ifindex: u32,
        domains: &[LinkDomain],
    ) -> Result<(), ResolvedError> {
        let index = link_index(ifindex)?;
        let domains: Vec<(&str, bool)> = domains
            .iter()
            .map(|d| (d.name.as_str(), d.routing_only))
            .collect();
        self.call("SetLinkDomains", index, &(index, domains)).await
    }

    /// Drops everything set on the link (`RevertLink`). A link that is already gone is fine.
    #[tracing::instrument(skip(self))]
    pub async fn revert(&self, ifindex: u32) -> Result<(), ResolvedError> {
        let index = link_index(ifindex)?;
        match self.call("RevertLink", index, &(index,)).await {
            Ok(()) | Err(ResolvedError::NoSuchLink { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn call<B>(&self, call: &'static str, ifindex: i32, body: &B) -> Result<(), ResolvedError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        tracing::debug!(call, "calling systemd-resolved");
        self.conn
            .call_method(Some(BUS_NAME), OBJECT, Some(MANAGER), call, body)
            .await
            .map(drop)
            .map_err(|e| call_error(call, ifindex.unsigned_abs(), e))
    }
}

fn link_index(ifindex: u32) -> Result<i32, ResolvedError> {
    i32::try_from(ifindex)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ResolvedError::Invalid(format!("interface index {ifindex} is not a link")))
}

/// Maps a failed call to the error naming its fix, by the D-Bus error name.
fn call_error(call: &'static str, ifindex: u32, e: zbus::Error) -> ResolvedError {
    let (name, message) = match &e {
        zbus::Error::MethodError(name, message, _) => {
            (name.to_string(), message.clone().unwrap_or_default())
        }
        zbus::Error::FDO(fdo) => (
            fdo.name().to_string(),
            fdo.description().unwrap_or_default().to_string(),
        ),
        other => {
            return ResolvedError::Bus {
                reason: other.to_string(),
            };
        }
    };
    classify_call_error(call, ifindex, &name, message)
}

/// The error for a D-Bus error `name` (pure, for tests).
pub fn classify_call_error(
    call: &'static str,
    ifindex: u32,
    name: &str,
    message: String,
) -> ResolvedError {
    match name {
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => ResolvedError::NotRunning,
        "org.freedesktop.DBus.Error.AccessDenied"
        | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => ResolvedError::Denied {
            call,
            ifindex,
            message,
        },
        "org.freedesktop.resolve1.NoSuchLink" => ResolvedError::NoSuchLink { call, ifindex },
        "org.freedesktop.resolve1.LinkBusy" => ResolvedError::LinkBusy {
            call,
            ifindex,
            message,
        },
        _ => ResolvedError::Call {
            call,
            ifindex,
            name: name.to_string(),
            message,
        },
    }
}

#[cfg(test)]
mod tests;
