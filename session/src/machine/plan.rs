//! Pure planning: from the join flags and what the driver found out (the cluster, the
//! machine), what the session will set up. No I/O.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kwg_contract::PlannedRoute;
use kwg_contract::keys::PublicKey;
use kwg_contract::{GatewayInfo, GatewayInfo6, PeerName, PeerSpec, TunnelIp};

use crate::dns::ForwarderConfig;
use crate::dns::domains::{self, LinkDomain};
use crate::dns::resolvconf;
use crate::dns::split::{DEFAULT_EXCLUDE_SUFFIXES, SplitDns, machine_search};
use crate::error::Error;
use crate::gateway::{GatewayPeer, KEEPALIVE};
use crate::routes::{self, Route, RouteInputs};
use crate::trust;
use crate::{DnsMode, SessionConfig};

/// systemd-resolved's stub listener (`127.0.0.53`, resolved.conf(5) `DNSStubListener`): a
/// probe through resolved asks it, as applications do.
pub const STUB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);

/// What the driver found out before anything is changed (event `Inspected`).
#[derive(Debug, Clone)]
pub struct Facts {
    /// The wall clock when inspected: the peer spec's lease end until the driver writes the
    /// Secret, which sets the real one (`lease::lease_end` from the driver's clock then).
    pub now_wall: chrono::DateTime<chrono::Utc>,
    pub server: String,
    pub user: String,
    pub context: Option<String>,
    /// The kubeconfig context's namespace.
    pub default_namespace: String,
    pub info: GatewayInfo,
    /// The first gateway endpoint that resolved.
    pub endpoint: SocketAddr,
    /// The cluster's namespaces; `None` when the user may not list them.
    pub namespaces: Option<BTreeSet<String>>,
    /// Every route of the machine.
    pub machine_routes: Vec<Route>,
    /// The addresses of the machine's interfaces.
    pub machine_addresses: Vec<IpAddr>,
    /// The API server's addresses.
    pub api_server: Vec<IpAddr>,
    /// Whether an interface of the requested name already exists.
    pub interface_exists: bool,
    pub public_key: PublicKey,
    pub hostname: String,
    /// A short stable tag of this machine (see `driver::inspect::machine_tag`), for the default
    /// peer name.
    pub machine_tag: String,
    /// The resolver file's content (its upstream servers), unless DNS is off.
    pub resolv_conf: Option<Vec<u8>>,
    /// systemd-resolved's uplink servers (resolv.conf format), when it manages DNS: the
    /// forwarder's upstreams then (the stub would route names under the link's domains back
    /// to kwg, a loop).
    pub uplink: Option<Vec<u8>>,
    /// Whether systemd-resolved manages the machine's DNS (checked in modes auto and resolved).
    pub resolved: Resolved,
    /// Whether the machine can take IPv6 routes and addresses (`false`: no
    /// `/proc/net/if_inet6`, or `net.ipv6.conf.all.disable_ipv6=1`).
    pub ipv6_usable: bool,
}

/// What the driver found out about systemd-resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    NotChecked,
    Managed,
    /// Not usable here, and why.
    NotManaged(String),
}

/// How the machine's resolver is pointed at kwg's forwarder.
#[derive(Debug, Clone)]
pub enum DnsTarget {
    /// Rewrite the resolver file in place (its byte-for-byte original kept in `backup`).
    ResolvConf {
        path: PathBuf,
        backup: PathBuf,
        original: Vec<u8>,
    },
    /// Per-link DNS of the tunnel interface in systemd-resolved, with these domains.
    Resolved { domains: Vec<LinkDomain> },
}

/// The split-DNS part of a plan.
#[derive(Debug, Clone)]
pub struct DnsPlan {
    pub listen: SocketAddr,
    pub forwarder: ForwarderConfig,
    pub search: Vec<String>,
    pub target: DnsTarget,
    /// In mode auto with resolved: the resolver file, used when queries do not arrive
    /// through resolved.
    pub fallback: Option<DnsTarget>,
}

impl DnsPlan {
    /// The resolver file pointing at the forwarder bound at `addr`.
    pub fn rendered(original: &[u8], addr: SocketAddr, search: &[String]) -> Vec<u8> {
        let text = String::from_utf8_lossy(original);
        resolvconf::render(&text, addr.ip(), search).into_bytes()
    }
}

/// Everything the session sets up.
#[derive(Debug, Clone)]
pub struct Plan {
    pub peer: PeerSpec,
    pub namespace: String,
    pub routes: Vec<PlannedRoute>,
    pub gateway: GatewayPeer,
    pub gateway_admin: SocketAddr,
    pub dns: Option<DnsPlan>,
    /// `kubernetes.default.svc.<cluster domain>.`: resolved through the tunnel to verify.
    pub probe_name: String,
    pub cluster_dns: Option<SocketAddr>,
    /// Where the verification asks `probe_name`.
    pub probe_dns: Option<SocketAddr>,
    /// The gateway info and the machine's facts, to check a tunnel IP or new info with.
    pub info: GatewayInfo,
    pub machine: trust::Machine,
    /// The machine's routes at join: a changed gateway info must not conflict with them either.
    pub machine_routes: Vec<Route>,
    /// The last changed gateway info refused while serving (when, and the sentence why); cleared
    /// when a later one is accepted.
    pub refused: Option<(std::time::Instant, String)>,
}

impl Plan {
    pub fn secret(&self) -> String {
        self.peer.secret_name()
    }
}

/// The peer name: `--name`, or the hostname and this machine's tag.
pub fn peer_name(name: Option<&str>, hostname: &str, tag: &str) -> Result<PeerName, Error> {
    match name {
        Some(n) => n
            .parse()
            .map_err(|e: kwg_contract::ContractError| Error::PeerName {
                what: "--name",
                reason: e.to_string(),
            }),
        None => default_peer_name(hostname, tag).ok_or_else(|| Error::PeerName {
            what: "the hostname",
            reason: "it gives no usable peer name: pass --name".into(),
        }),
    }
}

/// `<hostname>-<tag>`, the hostname cut so the whole stays a DNS label: two machines of one
/// hostname (cloned images, CI runners) get names of their own.
pub fn default_peer_name(hostname: &str, tag: &str) -> Option<PeerName> {
    let host = PeerName::sanitize(hostname);
    if tag.is_empty() {
        return host;
    }
    let host = host.map(String::from).unwrap_or_default();
    // A DNS label is at most 63 characters (RFC 1123).
    let room = 63usize.saturating_sub(tag.len() + 1);
    let host = host[..host.len().min(room)].trim_end_matches('-');
    match host.is_empty() {
        true => PeerName::sanitize(tag),
        false => format!("{host}-{tag}").parse().ok(),
    }
}

/// Plans routes, the gateway peer and DNS; fails on a route conflict or a taken interface.
pub fn plan(config: &SessionConfig, facts: &Facts, backup: PathBuf) -> Result<Plan, Error> {
    // Userspace mode creates no interface and adds no routes: neither can conflict.
    if facts.interface_exists && !config.userspace {
        return Err(Error::InterfaceExists {
            name: config.interface.clone(),
        });
    }
    let info = &carried(config, &facts.info);
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| facts.default_namespace.clone());
    check_namespaces(config, &namespace, facts.namespaces.as_ref())?;
    let machine = machine(facts);
    let routes = check_cluster(config, info, &machine, &facts.machine_routes)?;
    let peer = PeerSpec {
        name: peer_name(config.name.as_deref(), &facts.hostname, &facts.machine_tag)?,
        public_key: facts.public_key,
        owner: facts.user.clone(),
        hostname: facts.hostname.clone(),
        // What the gateway lets the peer reach (with the owner's RBAC): the mapped
        // namespaces, or every namespace (empty) without --mapped-namespaces.
        namespaces: config.mapped_namespaces.clone().unwrap_or_default(),
        // The driver sets the lease's end when it writes the Secret.
        lease_expires: facts.now_wall,
    };
    let maps = crate::mapping::mappings(&routes);
    // An IPv6-only cluster's DNS address is in ipv6.json (info.json's dnsIp is null).
    let cluster_dns = info
        .dns_ip
        .or(info.ipv6.as_ref().and_then(|i| i.dns_ip).map(IpAddr::V6))
        .map(|ip| SocketAddr::new(crate::mapping::to_mapped(&maps, ip), 53));
    let dns = match (cluster_dns, &facts.resolv_conf) {
        (Some(cluster), Some(original)) if sets_up_dns(config.dns_mode) => Some(plan_dns(
            config, facts, &namespace, &routes, cluster, original, backup,
        )?),
        _ => None,
    };
    // Through resolved, the probe takes the path applications take: its stub.
    let probe_dns = match dns.as_ref().map(|d| &d.target) {
        Some(DnsTarget::Resolved { .. }) => Some(SocketAddr::new(IpAddr::V4(STUB), 53)),
        _ => cluster_dns,
    };
    Ok(Plan {
        gateway: gateway_peer(info, facts.endpoint, &routes),
        gateway_admin: gateway_admin(info, &routes),
        probe_name: format!(
            "kubernetes.default.svc.{}.",
            info.cluster_domain.trim_end_matches('.')
        ),
        peer,
        namespace,
        routes,
        dns,
        cluster_dns,
        probe_dns,
        info: info.clone(),
        machine,
        machine_routes: facts.machine_routes.clone(),
        refused: None,
    })
}

/// What the trust checks need to know about the machine: its addresses, default gateways, DNS
/// servers (the resolver file's, and systemd-resolved's uplink servers) and the API server.
pub fn machine(facts: &Facts) -> trust::Machine {
    let mut dns_servers: Vec<IpAddr> = Vec::new();
    for file in [&facts.resolv_conf, &facts.uplink].into_iter().flatten() {
        for ip in resolvconf::nameservers(&String::from_utf8_lossy(file)) {
            if !dns_servers.contains(&ip) {
                dns_servers.push(ip);
            }
        }
    }
    trust::Machine {
        addresses: facts.machine_addresses.clone(),
        gateways: facts
            .machine_routes
            .iter()
            .filter(|r| r.destination.prefix_len() == 0)
            .filter_map(|r| r.gateway)
            .collect(),
        dns_servers,
        api_server: facts.api_server.clone(),
    }
}

/// What the user's flags accept from the cluster (`exclude` is [`exclude_suffixes`]).
pub fn consent<'a>(config: &'a SessionConfig, exclude: &'a [String]) -> trust::Consent<'a> {
    trust::Consent {
        also_proxy: &config.also_proxy,
        never_proxy: &config.never_proxy,
        cluster_domain: config.cluster_domain.as_deref(),
        exclude,
        include: &config.include_suffixes,
    }
}

/// The checks a gateway info passes before its routes touch the machine, at join and for
/// every change while serving: the trust rules (`trust::check_info`), then no conflict with
/// the machine's routes (the LAN's, another VPN's). The routes it gives.
pub fn check_cluster(
    config: &SessionConfig,
    info: &GatewayInfo,
    machine: &trust::Machine,
    machine_routes: &[Route],
) -> Result<Vec<PlannedRoute>, Error> {
    let exclude = exclude_suffixes(config);
    let ipv4_only = match &info.ipv6 {
        _ if config.ipv4_only.is_some() => config.ipv4_only,
        Some(_) => None,
        None => Some(trust::GATEWAY_IPV4_ONLY),
    };
    trust::check_families(&config.also_proxy, ipv4_only)?;
    if let Some(why) = config.ipv4_only.filter(|_| info.ipv6_only()) {
        return Err(Error::Ipv6OnlyCluster { why });
    }
    let info = &carried(config, info);
    trust::check_info(info, machine, &consent(config, &exclude))?;
    // Virtual subnets: a Service or pod CIDR overlapping the machine's routes is mapped.
    let routes = crate::mapping::for_session_in(
        config,
        info.tunnel_cidr,
        plan_routes(config, info),
        machine_routes,
        machine,
    )?;
    // Userspace mode creates no interface and adds no routes: neither can conflict.
    if !config.userspace {
        routes::check_conflicts(
            &routes,
            machine_routes,
            &config.interface,
            &config.allow_conflicting_subnets,
        )?;
    }
    Ok(routes)
}

/// `--dns-exclude-suffix`, or Telepresence's defaults.
pub fn exclude_suffixes(config: &SessionConfig) -> Vec<String> {
    if config.exclude_suffixes.is_empty() {
        DEFAULT_EXCLUDE_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        config.exclude_suffixes.clone()
    }
}

/// The connected and the mapped namespaces must exist (when the user may list them: else
/// the driver says it could not check).
pub fn check_namespaces(
    config: &SessionConfig,
    namespace: &str,
    existing: Option<&BTreeSet<String>>,
) -> Result<(), Error> {
    let Some(existing) = existing else {
        return Ok(());
    };
    let missing = |n: &str| !existing.contains(n);
    if missing(namespace) {
        return Err(Error::NamespaceNotFound {
            name: namespace.to_string(),
            flag: "--namespace",
        });
    }
    for m in config.mapped_namespaces.iter().flatten() {
        if missing(m) {
            return Err(Error::NamespaceNotFound {
                name: m.clone(),
                flag: "--mapped-namespaces",
            });
        }
    }
    Ok(())
}

/// Why this join carries IPv4 only although the gateway publishes `ipv6.json`, from the
/// machine's facts (`None`: nothing stops IPv6): IPv6 disabled here, or the cluster's IPv6
/// ranges or tunnel /96 overlapping a route of the machine (another kwg session's, the
/// LAN's). IPv4 ranges are mapped instead (virtual subnets); IPv6 ones are not.
pub fn machine_ipv4_only(config: &SessionConfig, facts: &Facts) -> Option<&'static str> {
    let i = facts.info.ipv6.as_ref()?;
    if config.ipv4_only.is_some() {
        return None;
    }
    if !facts.ipv6_usable {
        return Some(crate::config::IPV6_DISABLED_IPV4_ONLY);
    }
    let ranges: Vec<IpNet> = [&i.service_cidrs[..], &i.pod_cidrs, &[i.tunnel_cidr]]
        .concat()
        .into_iter()
        .map(IpNet::V6)
        .collect();
    // Another session's tunnel address comes with its kernel prefix route (the /96 on kwgN):
    // a lone address equal to ours meets the machine's rules instead (refused).
    let overlaps = ranges.iter().any(|n| {
        routes::conflicting(n, &facts.machine_routes, &config.interface).is_some()
            && !config
                .allow_conflicting_subnets
                .iter()
                .any(|a| a.contains(n))
    });
    overlaps.then_some(crate::config::IPV6_OVERLAP_IPV4_ONLY)
}

/// What of `info` this join carries: all of it, or its IPv4 side only
/// ([`SessionConfig::ipv4_only`]: the IPv6 side, `info.ipv6`, dropped).
pub fn carried(config: &SessionConfig, info: &GatewayInfo) -> GatewayInfo {
    let mut info = info.clone();
    if config.ipv4_only.is_some() {
        info.ipv6 = None;
    }
    info
}

/// The routes for `info`: the cluster's subnets of both families (adjacent ones merged:
/// per-node pod CIDRs become their cluster range), `--also-proxy`, minus `--never-proxy`, plus
/// the gateway's own tunnel addresses.
pub fn plan_routes(config: &SessionConfig, info: &GatewayInfo) -> Vec<PlannedRoute> {
    let v6 = |f: fn(&GatewayInfo6) -> &Vec<Ipv6Net>| -> Vec<IpNet> {
        info.ipv6
            .as_ref()
            .map(|i| f(i).iter().map(|n| IpNet::V6(*n)).collect())
            .unwrap_or_default()
    };
    let both = |v4: &[IpNet], v6: Vec<IpNet>| IpNet::aggregate(&[v4, &v6].concat());
    let mut gateway = vec![IpNet::V4(Ipv4Net::from(info.gateway_ip.addr()))];
    gateway.extend(tunnel_address6(info, info.gateway_ip.addr()));
    routes::plan(&RouteInputs {
        service: both(&info.service_cidrs, v6(|i| &i.service_cidrs)),
        pod: both(&info.pod_cidrs, v6(|i| &i.pod_cidrs)),
        also_proxy: config.also_proxy.clone(),
        never_proxy: config.never_proxy.clone(),
        gateway,
    })
}

/// The gateway's admin address (`kwg status`, the DNS follower), through the tunnel: its
/// tunnel IP, mapped when the tunnel CIDR is a virtual subnet.
pub(super) fn gateway_admin(info: &GatewayInfo, routes: &[PlannedRoute]) -> SocketAddr {
    let maps = crate::mapping::mappings(routes);
    SocketAddr::new(
        crate::mapping::to_mapped(&maps, IpAddr::V4(info.gateway_ip.addr())),
        info.admin_port,
    )
}

/// The gateway as this machine's one WireGuard peer.
pub fn gateway_peer(
    info: &GatewayInfo,
    endpoint: SocketAddr,
    routes: &[PlannedRoute],
) -> GatewayPeer {
    GatewayPeer {
        public_key: info.public_key,
        endpoint: Some(endpoint),
        allowed_ips: routes.iter().map(|r| r.cluster_subnet()).collect(),
        persistent_keepalive: Some(KEEPALIVE),
        mappings: crate::mapping::mappings(routes),
    }
}

fn plan_dns(
    config: &SessionConfig,
    facts: &Facts,
    namespace: &str,
    routes: &[PlannedRoute],
    cluster: SocketAddr,
    original: &[u8],
    backup: PathBuf,
) -> Result<DnsPlan, Error> {
    let exclude = exclude_suffixes(config);
    let split = SplitDns {
        cluster_domain: facts.info.cluster_domain.clone(),
        namespace: namespace.to_string(),
        cluster_namespaces: facts.namespaces.clone().unwrap_or_default(),
        mapped: config
            .mapped_namespaces
            .as_ref()
            .map(|m| m.iter().cloned().collect()),
        include_suffixes: config.include_suffixes.clone(),
        exclude_suffixes: exclude,
        reverse_subnets: routes.iter().map(|r| r.subnet).collect(),
        // The machine's own search domains (before join): names under them stay the LAN's.
        machine_search: machine_search(
            &String::from_utf8_lossy(original),
            &facts.info.cluster_domain,
        ),
        reachable: None,
        naming: config.naming.clone(),
    };
    let search = split.search_domains();
    let use_resolved = match (&facts.resolved, config.dns_mode) {
        // Userspace mode changes no resolver: the proxy asks the forwarder's sources itself.
        _ if config.userspace => false,
        (Resolved::Managed, DnsMode::Auto | DnsMode::Resolved) => true,
        (Resolved::NotManaged(reason), DnsMode::Resolved) => {
            return Err(Error::ResolvedUnavailable {
                reason: reason.clone(),
            });
        }
        _ => false,
    };
    // The original resolvers, read BEFORE rewriting, or the forwarder would forward to itself.
    let servers = match (&facts.uplink, use_resolved) {
        (Some(uplink), true) => uplink.as_slice(),
        _ => original,
    };
    let upstreams =
        resolvconf::upstreams(&String::from_utf8_lossy(servers), config.dns_listen.ip());
    let file = DnsTarget::ResolvConf {
        path: config.resolv_conf.clone(),
        backup,
        original: original.to_vec(),
    };
    let mut fallback = None;
    let target = if use_resolved {
        // `~<ns>` for every namespace whose `<svc>.<ns>` goes to the cluster: resolved
        // searches no domain for a two-label name, it routes it by its last label (the
        // daemon keeps these in step with namespaces created and deleted while joined).
        let domains = domains::split_domains(&split)?;
        if config.dns_mode == DnsMode::Auto {
            fallback = Some(file);
        }
        DnsTarget::Resolved { domains }
    } else {
        file
    };
    Ok(DnsPlan {
        listen: config.dns_listen,
        forwarder: ForwarderConfig {
            split,
            cluster,
            upstreams,
            timeout: config.dns_timeout,
            mappings: crate::mapping::mappings(routes),
        },
        search,
        target,
        fallback,
    })
}

/// Whether `mode` sets up DNS (and needs the resolver file's upstream servers).
pub fn sets_up_dns(mode: DnsMode) -> bool {
    mode != DnsMode::Off
}

/// The routes to add and to remove to go from `old` to `new`.
pub fn diff_routes(old: &[PlannedRoute], new: &[PlannedRoute]) -> (Vec<IpNet>, Vec<IpNet>) {
    let old: BTreeSet<IpNet> = old.iter().map(|r| r.subnet).collect();
    let new: BTreeSet<IpNet> = new.iter().map(|r| r.subnet).collect();
    (
        new.difference(&old).copied().collect(),
        old.difference(&new).copied().collect(),
    )
}

/// The tunnel IP as the address of the interface.
pub fn tunnel_address(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

/// The IPv6 tunnel address of tunnel IP `ip` (a /128), when `info` carries IPv6: `ip` in the
/// last 32 bits of `ipv6.json`'s /96 tunnel prefix, as the gateway computes it.
pub fn tunnel_address6(info: &GatewayInfo, ip: Ipv4Addr) -> Option<IpNet> {
    let i = info.ipv6.as_ref()?;
    Some(IpNet::V6(Ipv6Net::from(i.tunnel_ip6(TunnelIp::new(ip)))))
}
