//! What the user asked `kwg join` for, as the session core needs it (the CLI maps its flags,
//! `kwg::args::JoinArgs`, onto it at the edge).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// How the machine's resolver is pointed at kwg's forwarder (`--dns-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// systemd-resolved when it manages the machine's DNS, else the resolver file.
    Auto,
    Resolved,
    ResolvConf,
    Off,
}

/// One join's settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `--name`; `None`: the hostname and this machine's tag.
    pub name: Option<String>,
    /// The connected namespace (`--namespace`); `None`: the kubeconfig context's.
    pub namespace: Option<String>,
    /// `--mapped-namespaces`; `None`: every namespace.
    pub mapped_namespaces: Option<Vec<String>>,
    /// Where peer Secrets and the gateway info live (`kwg-system`).
    pub kwg_namespace: String,
    /// The tunnel interface's name.
    pub interface: String,
    /// Userspace mode: no interface, routes, DNS or firewall changes.
    pub userspace: bool,
    /// Userspace mode's SOCKS5/HTTP proxy address.
    pub proxy_listen: SocketAddr,
    /// The whole join's deadline.
    pub timeout: Duration,
    /// The peer Secret's lease.
    pub ttl: Duration,
    pub also_proxy: Vec<IpNet>,
    pub never_proxy: Vec<IpNet>,
    pub allow_conflicting_subnets: Vec<IpNet>,
    /// `--map`: cluster ranges the user maps onto ranges of their choice (virtual subnets).
    pub map: Vec<crate::mapping::ForcedMap>,
    /// `--map-pool`: where overlapping cluster ranges are mapped from.
    pub map_pool: Vec<ipnet::Ipv4Net>,
    /// `--cluster-domain`: this cluster domain is accepted even when public.
    pub cluster_domain: Option<String>,
    /// `--dns-exclude-suffix` (empty: Telepresence's defaults).
    pub exclude_suffixes: Vec<String>,
    pub include_suffixes: Vec<String>,
    pub dns_mode: DnsMode,
    /// The DNS forwarder's address.
    pub dns_listen: SocketAddr,
    /// How long the forwarder waits for an upstream.
    pub dns_timeout: Duration,
    /// The resolver file rewritten in resolv-conf mode.
    pub resolv_conf: PathBuf,
    /// This session's alias and whether another session answers the short names (issue 27).
    pub naming: crate::dns::split::Naming,
    /// Why this join carries IPv4 only, whatever the gateway publishes (userspace mode: its
    /// stack is IPv4), as the end of a sentence; `None`: IPv6 too when the gateway publishes
    /// `ipv6.json`.
    pub ipv4_only: Option<&'static str>,
}

/// [`SessionConfig::ipv4_only`] in userspace mode.
pub const USERSPACE_IPV4_ONLY: &str = "userspace mode carries only IPv4";

/// [`SessionConfig::ipv4_only`] when the machine has IPv6 turned off.
pub const IPV6_DISABLED_IPV4_ONLY: &str =
    "IPv6 is disabled on this machine (enable it: sysctl -w net.ipv6.conf.all.disable_ipv6=0)";

/// [`SessionConfig::ipv4_only`] when the cluster's IPv6 ranges overlap the machine's routes
/// (another kwg session's, the LAN's): IPv6 ranges are never mapped.
pub const IPV6_OVERLAP_IPV4_ONLY: &str =
    "the cluster's IPv6 ranges overlap a route of this machine (another kwg session's?)";
