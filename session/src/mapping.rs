//! Virtual subnets (issue 27): a cluster's Service or pod CIDR (or an `--also-proxy` range) that
//! overlaps this machine's routes (its LAN, another VPN, an earlier kwg session) is reached
//! through a free range of the same size instead, taken from a pool (`--map-pool`) or named by
//! the user (`--map CLUSTER=MAPPED`). So is the gateway's tunnel CIDR when it overlaps them or
//! holds one of the machine's addresses (two installs with the same one): the interface then
//! holds the mapped tunnel address ([`local_address`]). The laptop routes the mapped range; its data plane translates addresses
//! 1:1 between the two (`kwg_wg::translate`), and the split DNS forwarder rewrites the cluster
//! DNS's A records into the mapped range. The planned route carries both (`PlannedRoute::cluster`).
//!
//! The default pool, [`DEFAULT_POOL`] = `10.224.0.0/11`, is the top of 10/8: home routers and
//! most office LANs number from the bottom of their private range, and the usual cluster
//! defaults lie below it (kubeadm and kind 10.96.0.0/12 and 10.244.0.0/16, k3s 10.42/10.43,
//! AKS 10.0.0.0/16, EKS 10.100.0.0/16, OpenShift 10.128.0.0/14, Podman 10.88.0.0/16). It stays
//! in private space, which kwg-helper's rules require of every route (docs/laptop-trust.md),
//! and away from 100.64.0.0/10, where Tailscale and the gateways' tunnel CIDRs live. It holds
//! one /12 plus the /16s of pod CIDRs; a larger pool is one flag away.
//!
//! Pure: the machine's routes and addresses come in, the routes to set up go out.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use kwg_contract::{PlannedRoute, RouteSource};

use crate::routes::{Route, conflicting};
use crate::trust;

/// `--map-pool`'s default (see the module's documentation for the choice).
pub const DEFAULT_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 224, 0, 0), 11) {
    Ok(n) => n,
    Err(_) => panic!("a valid prefix"),
};

/// `--map CLUSTER=MAPPED`: the user's own choice of the mapped range of one cluster range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForcedMap {
    pub cluster: Ipv4Net,
    pub mapped: Ipv4Net,
}

impl FromStr for ForcedMap {
    type Err = String;

    fn from_str(s: &str) -> Result<ForcedMap, String> {
        let usage = || {
            format!(
                "{s:?} is not CLUSTER=MAPPED: give a Service, pod or tunnel CIDR of the cluster (or an --also-proxy range) and a free \
                 range of the same size, e.g. 10.96.0.0/12=10.224.0.0/12"
            )
        };
        let (c, m) = s.split_once('=').ok_or_else(usage)?;
        let cluster: Ipv4Net = c.trim().parse().map_err(|_| usage())?;
        let mapped: Ipv4Net = m.trim().parse().map_err(|_| usage())?;
        if cluster.prefix_len() != mapped.prefix_len() {
            return Err(format!(
                "{s:?}: the mapped range must be the same size as {cluster}: give it the prefix \
                 length /{}",
                cluster.prefix_len()
            ));
        }
        Ok(ForcedMap {
            cluster: cluster.trunc(),
            mapped: mapped.trunc(),
        })
    }
}

impl fmt::Display for ForcedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.cluster, self.mapped)
    }
}

/// One mapping in force: the cluster's range, where this machine sees it, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub cluster: Ipv4Net,
    pub mapped: Ipv4Net,
    pub source: RouteSource,
}

impl Mapping {
    /// Where this machine sees the cluster's address `ip`, if this mapping covers it.
    pub fn to_mapped(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        let mask = u32::from(self.cluster.netmask());
        self.cluster
            .contains(&ip)
            .then(|| Ipv4Addr::from(u32::from(self.mapped.network()) | (u32::from(ip) & !mask)))
    }
}

/// Where this machine sees the cluster's address `ip` (itself when no mapping covers it).
pub fn to_mapped(maps: &[Mapping], ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => maps
            .iter()
            .find_map(|m| m.to_mapped(v4))
            .map_or(ip, IpAddr::V4),
        IpAddr::V6(_) => ip,
    }
}

/// The mappings among planned routes.
pub fn mappings(routes: &[PlannedRoute]) -> Vec<Mapping> {
    routes
        .iter()
        .filter_map(|r| match (r.cluster, r.subnet) {
            (Some(IpNet::V4(cluster)), IpNet::V4(mapped)) => Some(Mapping {
                cluster,
                mapped,
                source: r.source,
            }),
            _ => None,
        })
        .collect()
}

/// What mapping needs to know of the machine and the user's flags.
#[derive(Debug, Clone, Copy)]
pub struct MapInputs<'a> {
    /// Every route of the machine (an earlier session's included).
    pub existing: &'a [Route],
    /// The machine's own addresses, default gateways, DNS servers and the API server's
    /// addresses: a mapped range covers none of them, or their traffic would go into the tunnel
    /// (the checks `trust::check_info` makes of the cluster's own ranges).
    pub machine: &'a trust::Machine,
    /// This session's interface: its own routes never conflict.
    pub own_interface: &'a str,
    /// `--allow-conflicting-subnets`: routed over the machine's routes as they are.
    pub allowed: &'a [IpNet],
    /// `--map`.
    pub forced: &'a [ForcedMap],
    /// `--map-pool` (default [`DEFAULT_POOL`]).
    pub pool: &'a [Ipv4Net],
    /// The gateway's tunnel CIDR: mapped as a whole (its `Gateway` route replaced by a `Tunnel`
    /// route of the mapped range) when it overlaps the machine's routes or holds one of its
    /// addresses, e.g. an earlier session's gateway of the same CIDR.
    pub tunnel: Option<Ipv4Net>,
}

/// Why the cluster's ranges cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(
        "--map {forced}: {} is not a Service, pod or tunnel CIDR of this cluster nor an --also-proxy range (they are {have}): name one of those",
        .forced.cluster
    )]
    NotClusterRange { forced: ForcedMap, have: String },
    #[error(
        "--map {forced}: {} overlaps {existing}: choose a free range",
        .forced.mapped
    )]
    ForcedConflict { forced: ForcedMap, existing: String },
    #[error(
        "--map {forced}: {} covers {whose} {ip}, whose traffic would then go into the tunnel: choose a range that does not cover it",
        .forced.mapped
    )]
    ForcedCoversMachine {
        forced: ForcedMap,
        whose: &'static str,
        ip: IpAddr,
    },
    #[error(
        "route {subnet} ({what}) conflicts with the existing route {existing}, and --map-pool {pool} has no free /{len} left to map it onto: pass a larger --map-pool, --map {subnet}=<a free /{len}>, or --allow-conflicting-subnets {subnet} to route it over the existing one",
        len = .subnet.prefix_len()
    )]
    PoolExhausted {
        subnet: Ipv4Net,
        what: RouteSource,
        existing: String,
        pool: String,
    },
    #[error(
        "{flag} {net}: {why}; choose a range in private address space (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
    )]
    Space {
        flag: &'static str,
        net: Ipv4Net,
        why: String,
    },
}

/// The routes with every Service and pod CIDR that overlaps the machine's routes (and is not in
/// `--allow-conflicting-subnets`) moved onto a free range of the same size, and every `--map`
/// applied. Other routes are returned as they are: a conflict of theirs is still the route
/// check's to refuse. Deterministic: the same machine and cluster give the same mappings, so
/// a re-plan while serving keeps them.
pub fn apply(
    routes: Vec<PlannedRoute>,
    inputs: &MapInputs<'_>,
) -> Result<Vec<PlannedRoute>, MapError> {
    for (flag, net) in inputs
        .pool
        .iter()
        .map(|n| ("--map-pool", *n))
        .chain(inputs.forced.iter().map(|f| ("--map", f.mapped)))
    {
        trust::address_space(&IpNet::V4(net)).map_err(|why| MapError::Space { flag, net, why })?;
    }
    // An --also-proxy range too: the user asked for it through this session, and another
    // session (or the LAN) routes it already.
    let mappable = |r: &PlannedRoute| {
        matches!(
            r.source,
            RouteSource::Service | RouteSource::Pod | RouteSource::AlsoProxy
        )
    };
    for forced in inputs.forced {
        if inputs.tunnel != Some(forced.cluster)
            && !routes
                .iter()
                .any(|r| mappable(r) && r.subnet == IpNet::V4(forced.cluster))
        {
            let have: Vec<String> = routes
                .iter()
                .filter(|r| mappable(r))
                .map(|r| r.subnet.to_string())
                .chain(inputs.tunnel.map(|t| t.to_string()))
                .collect();
            return Err(MapError::NotClusterRange {
                forced: *forced,
                have: have.join(", "),
            });
        }
        if let Some(e) = conflicting(
            &IpNet::V4(forced.mapped),
            inputs.existing,
            inputs.own_interface,
        ) {
            return Err(MapError::ForcedConflict {
                forced: *forced,
                existing: format!("the existing route {e}"),
            });
        }
        if let Some((whose, ip)) = covered(inputs.machine, forced.mapped) {
            return Err(MapError::ForcedCoversMachine {
                forced: *forced,
                whose,
                ip,
            });
        }
        // Nor one of the cluster's own ranges or another --map's.
        let overlaps = |n: &IpNet| {
            n.contains(&IpNet::V4(forced.mapped)) || IpNet::V4(forced.mapped).contains(n)
        };
        let other = routes
            .iter()
            .map(|r| (r.subnet, "the cluster's range"))
            .chain(
                inputs
                    .forced
                    .iter()
                    .filter(|f| *f != forced)
                    .map(|f| (IpNet::V4(f.mapped), "the --map of")),
            )
            .find(|(n, _)| overlaps(n));
        if let Some((n, whose)) = other {
            return Err(MapError::ForcedConflict {
                forced: *forced,
                existing: format!("{whose} {n}"),
            });
        }
    }
    // What a mapped range must stay clear of besides the machine: every range of this cluster
    // (a mapped range inside one would make its answers ambiguous) and the ranges already
    // taken.
    let mut taken: Vec<Ipv4Net> = routes
        .iter()
        .filter_map(|r| match r.subnet {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .chain(inputs.forced.iter().map(|f| f.mapped))
        .chain(inputs.tunnel)
        .collect();
    let mut out = Vec::with_capacity(routes.len());
    for r in routes {
        let IpNet::V4(subnet) = r.subnet else {
            out.push(r);
            continue;
        };
        if !mappable(&r) {
            out.push(r);
            continue;
        }
        let forced = inputs.forced.iter().find(|f| f.cluster == subnet);
        let mapped = if let Some(f) = forced {
            f.mapped
        } else if inputs.allowed.iter().any(|a| a.contains(&r.subnet)) {
            out.push(r);
            continue;
        } else if let Some(existing) = conflicting(&r.subnet, inputs.existing, inputs.own_interface)
        {
            let free = free_range(subnet.prefix_len(), inputs, &taken).ok_or_else(|| {
                MapError::PoolExhausted {
                    subnet,
                    what: r.source,
                    existing: existing.to_string(),
                    pool: join(inputs.pool),
                }
            })?;
            taken.push(free);
            free
        } else {
            out.push(r);
            continue;
        };
        out.push(PlannedRoute {
            subnet: IpNet::V4(mapped),
            source: r.source,
            cluster: Some(r.subnet),
            forced: forced.is_some(),
        });
    }
    match inputs.tunnel {
        Some(tunnel) => map_tunnel(out, tunnel, inputs, &taken),
        None => Ok(out),
    }
}

/// The routes with the gateway's address replaced by the whole tunnel CIDR mapped, when the
/// CIDR overlaps a route of the machine (an earlier session's gateway of the same CIDR, a VPN
/// such as Tailscale's 100.64.0.0/10) or holds one of its addresses (an earlier session's own
/// tunnel address, which the gateway may well assign again): the interface then holds the
/// mapped tunnel address and routes the mapped gateway address, and the data plane translates
/// both to what the gateway assigned and has (docs/architecture.md, "Virtual subnets").
fn map_tunnel(
    mut routes: Vec<PlannedRoute>,
    tunnel: Ipv4Net,
    inputs: &MapInputs<'_>,
    taken: &[Ipv4Net],
) -> Result<Vec<PlannedRoute>, MapError> {
    let net = IpNet::V4(tunnel);
    let forced = inputs.forced.iter().find(|f| f.cluster == tunnel);
    let clash = || {
        if inputs.allowed.iter().any(|a| a.contains(&net)) {
            return None;
        }
        if let Some(e) = conflicting(&net, inputs.existing, inputs.own_interface) {
            return Some(e.to_string());
        }
        inputs
            .machine
            .addresses
            .iter()
            .find(|ip| net.contains(*ip))
            .map(|ip| format!("{ip}, an address of this machine"))
    };
    let mapped = match (forced, clash()) {
        (Some(f), _) => f.mapped,
        (None, None) => return Ok(routes),
        (None, Some(existing)) => {
            free_range(tunnel.prefix_len(), inputs, taken).ok_or_else(|| {
                MapError::PoolExhausted {
                    subnet: tunnel,
                    what: RouteSource::Tunnel,
                    existing,
                    pool: join(inputs.pool),
                }
            })?
        }
    };
    routes.retain(|r| !(r.source == RouteSource::Gateway && net.contains(&r.subnet)));
    routes.push(PlannedRoute {
        subnet: IpNet::V4(mapped),
        source: RouteSource::Tunnel,
        cluster: Some(net),
        forced: forced.is_some(),
    });
    routes.sort_by_key(|r| r.subnet);
    Ok(routes)
}

/// [`apply`] with a join's flags (`--map`, `--map-pool`, `--allow-conflicting-subnets`, the
/// interface): userspace mode routes nothing on the machine, so nothing is mapped there.
pub fn for_session(
    config: &crate::SessionConfig,
    routes: Vec<PlannedRoute>,
    existing: &[Route],
    machine: &trust::Machine,
) -> Result<Vec<PlannedRoute>, crate::Error> {
    for_session_tunnel(config, None, routes, existing, machine)
}

/// [`for_session`] that also maps the gateway's tunnel CIDR `tunnel` when it overlaps the
/// machine (see [`MapInputs::tunnel`]).
pub fn for_session_in(
    config: &crate::SessionConfig,
    tunnel: Ipv4Net,
    routes: Vec<PlannedRoute>,
    existing: &[Route],
    machine: &trust::Machine,
) -> Result<Vec<PlannedRoute>, crate::Error> {
    for_session_tunnel(config, Some(tunnel.trunc()), routes, existing, machine)
}

fn for_session_tunnel(
    config: &crate::SessionConfig,
    tunnel: Option<Ipv4Net>,
    routes: Vec<PlannedRoute>,
    existing: &[Route],
    machine: &trust::Machine,
) -> Result<Vec<PlannedRoute>, crate::Error> {
    if config.userspace {
        return Ok(routes);
    }
    let mapped = apply(
        routes,
        &MapInputs {
            existing,
            machine,
            own_interface: &config.interface,
            allowed: &config.allow_conflicting_subnets,
            forced: &config.map,
            pool: &config.map_pool,
            tunnel,
        },
    )?;
    Ok(mapped)
}

/// The address this machine gives the tunnel IP `ip` the gateway assigned: the mapped one
/// when the session's `routes` map the tunnel CIDR; the data plane translates it to `ip` on
/// the wire.
pub fn local_address(routes: &[PlannedRoute], ip: Ipv4Addr) -> IpNet {
    match to_mapped(&mappings(routes), IpAddr::V4(ip)) {
        IpAddr::V4(local) => IpNet::V4(Ipv4Net::from(local)),
        IpAddr::V6(_) => IpNet::V4(Ipv4Net::from(ip)),
    }
}

/// The trust checks of an assigned tunnel IP ([`trust::check_tunnel_ip`]). A mapped tunnel
/// address comes from a range that covers none of the machine's addresses, gateways, DNS
/// servers or API server ([`free_range`]; a `--map` covering one is refused): only the tunnel
/// CIDR's rules are left then for the IPv4 address, and the assignment may equal an earlier
/// session's own address. Its IPv6 twin (the cluster's /96 and the IPv4 tunnel IP) is never
/// mapped: it always meets the machine's rules, else a cluster could choose both to put the
/// machine's DNS server or the API server's IPv6 address on the interface.
pub fn check_tunnel_ip(
    routes: &[PlannedRoute],
    ip: Ipv4Addr,
    info: &kwg_contract::GatewayInfo,
    machine: &trust::Machine,
) -> Result<(), crate::Error> {
    let mapped = local_address(routes, ip) != IpNet::V4(Ipv4Net::from(ip));
    if !mapped {
        return trust::check_tunnel_ip(ip, info, machine);
    }
    trust::check_tunnel_ip(ip, info, &trust::Machine::default())?;
    match &info.ipv6 {
        Some(six) => trust::check_clear_of_machine(
            IpAddr::V6(six.tunnel_ip6(kwg_contract::TunnelIp::new(ip))),
            machine,
        ),
        None => Ok(()),
    }
}

/// The first range of prefix length `len` in the pool that overlaps none of the machine's
/// routes, covers none of its addresses, gateways, DNS servers or API server, and overlaps
/// nothing `taken`.
fn free_range(len: u8, inputs: &MapInputs<'_>, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(b) || b.contains(a);
    inputs
        .pool
        .iter()
        .filter(|p| p.prefix_len() <= len)
        .flat_map(|p| p.subnets(len).into_iter().flatten())
        .find(|c| {
            conflicting(&IpNet::V4(*c), inputs.existing, inputs.own_interface).is_none()
                && !taken.iter().any(|t| overlaps(t, c))
                && covered(inputs.machine, *c).is_none()
        })
}

/// The first address of the machine's that `net` covers, and whose it is.
fn covered(machine: &trust::Machine, net: Ipv4Net) -> Option<(&'static str, IpAddr)> {
    machine
        .kept_out()
        .find(|(_, ip)| IpNet::V4(net).contains(ip))
}

fn join(nets: &[Ipv4Net]) -> String {
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::MAIN_TABLE;

    /// A machine with no addresses, gateways, DNS servers or API server to keep clear of.
    static NO_MACHINE: trust::Machine = trust::Machine {
        addresses: Vec::new(),
        gateways: Vec::new(),
        dns_servers: Vec::new(),
        api_server: Vec::new(),
    };

    fn n4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn route(dst: &str, dev: &str) -> Route {
        Route {
            destination: dst.parse().unwrap(),
            interface: Some(dev.to_string()),
            gateway: None,
            table: MAIN_TABLE,
        }
    }
    fn cluster() -> Vec<PlannedRoute> {
        vec![
            PlannedRoute::new("10.96.0.0/12".parse().unwrap(), RouteSource::Service),
            PlannedRoute::new("10.244.0.0/16".parse().unwrap(), RouteSource::Pod),
            PlannedRoute::new("100.77.0.1/32".parse().unwrap(), RouteSource::Gateway),
        ]
    }
    fn inputs<'a>(existing: &'a [Route], pool: &'a [Ipv4Net]) -> MapInputs<'a> {
        MapInputs {
            existing,
            machine: &NO_MACHINE,
            own_interface: "kwg1",
            allowed: &[],
            forced: &[],
            pool,
            tunnel: None,
        }
    }
    fn shown(routes: &[PlannedRoute]) -> Vec<String> {
        routes
            .iter()
            .map(|r| match r.cluster {
                Some(c) if r.forced => format!("{} <- {c} (--map)", r.subnet),
                Some(c) => format!("{} <- {c}", r.subnet),
                None => r.subnet.to_string(),
            })
            .collect()
    }

    /// Two installs with the same tunnel CIDR: the earlier session routes the gateway's
    /// address and holds the tunnel address the gateway will likely assign again.
    #[test]
    fn a_tunnel_cidr_of_an_earlier_session_is_mapped_whole() {
        let existing = [
            route("10.96.0.0/12", "kwg0"),
            route("10.244.0.0/16", "kwg0"),
            route("100.77.0.1/32", "kwg0"),
        ];
        let machine = trust::Machine {
            addresses: vec!["100.77.0.2".parse().unwrap()],
            ..Default::default()
        };
        let pool = [DEFAULT_POOL];
        let tunnel = n4("100.77.0.0/16");
        let with = |existing: &[Route], machine| {
            apply(
                cluster(),
                &MapInputs {
                    machine,
                    tunnel: Some(tunnel),
                    ..inputs(existing, &pool)
                },
            )
            .unwrap()
        };
        let out = with(&existing, &machine);
        assert_eq!(
            shown(&out),
            [
                "10.224.0.0/12 <- 10.96.0.0/12",
                "10.240.0.0/16 <- 10.244.0.0/16",
                "10.241.0.0/16 <- 100.77.0.0/16"
            ]
        );
        assert_eq!(out[2].source, RouteSource::Tunnel);
        // The interface holds the mapped tunnel address; the gateway's assignment equal to the
        // earlier session's own address is fine then, and the admin address is mapped too.
        let ip = "100.77.0.2".parse().unwrap();
        assert_eq!(local_address(&out, ip).to_string(), "10.241.0.2/32");
        let key = kwg_contract::keys::PrivateKey::generate().public_key();
        let info = kwg_contract::GatewayInfo::from_json(
            format!(
                r#"{{"version":1,"publicKey":"{key}","endpoints":["192.0.2.1:31820"],"tunnelCidr":"100.77.0.0/16",
"gatewayIp":"100.77.0.1","serviceCidrs":["10.96.0.0/12"],"podCidrs":["10.244.0.0/16"],"dnsIp":"10.96.0.10",
"clusterDomain":"cluster.local","adminPort":8080}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        check_tunnel_ip(&out, ip, &info, &machine).unwrap();
        assert_eq!(
            to_mapped(&mappings(&out), "100.77.0.1".parse().unwrap()).to_string(),
            "10.241.0.1"
        );
        // Only the held address (no route): mapped as well; unmapped, that address is refused.
        let out = with(&existing[..2], &machine);
        assert_eq!(shown(&out)[2], "10.241.0.0/16 <- 100.77.0.0/16");
        let unmapped = with(&[], &NO_MACHINE);
        assert_eq!(shown(&unmapped)[2], "100.77.0.1/32");
        assert_eq!(local_address(&unmapped, ip).to_string(), "100.77.0.2/32");
        let err = check_tunnel_ip(&unmapped, ip, &info, &machine).unwrap_err();
        assert!(
            err.to_string().contains("already has that address"),
            "{err}"
        );
        // A full pool names the tunnel CIDR and why.
        let small = [n4("10.224.0.0/17")];
        let err = apply(
            cluster(),
            &MapInputs {
                machine: &machine,
                tunnel: Some(tunnel),
                ..inputs(&existing[2..], &small)
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "route 100.77.0.0/16 (tunnel CIDR) conflicts with the existing route 100.77.0.1/32"
            ),
            "{err}"
        );
    }

    /// An --also-proxy range another session routes already is mapped like the cluster's
    /// own ranges (the user reaches it at the mapped range), or where --map says.
    #[test]
    fn an_also_proxy_range_of_an_earlier_session_is_mapped() {
        let existing = [route("172.30.0.0/16", "kwg0")];
        let mut routes = cluster();
        routes.push(PlannedRoute::new(
            "172.30.0.0/16".parse().unwrap(),
            RouteSource::AlsoProxy,
        ));
        let pool = [DEFAULT_POOL];
        let out = apply(routes.clone(), &inputs(&existing, &pool)).unwrap();
        assert_eq!(
            shown(&out),
            [
                "10.96.0.0/12",
                "10.244.0.0/16",
                "100.77.0.1/32",
                "10.224.0.0/16 <- 172.30.0.0/16"
            ]
        );
        assert_eq!(out[3].source, RouteSource::AlsoProxy);
        let forced = ["172.30.0.0/16=192.168.0.0/16".parse::<ForcedMap>().unwrap()];
        let out = apply(
            routes,
            &MapInputs {
                forced: &forced,
                ..inputs(&existing, &pool)
            },
        )
        .unwrap();
        assert_eq!(shown(&out)[3], "192.168.0.0/16 <- 172.30.0.0/16 (--map)");
    }

    #[test]
    fn an_earlier_sessions_ranges_are_mapped_from_the_pool_the_rest_stays() {
        // Another session on kwg0 routes the same Service and pod CIDRs.
        let existing = [
            route("10.96.0.0/12", "kwg0"),
            route("10.244.0.0/16", "kwg0"),
            route("192.0.2.0/24", "eth0"),
        ];
        let out = apply(cluster(), &inputs(&existing, &[DEFAULT_POOL])).unwrap();
        assert_eq!(
            shown(&out),
            [
                "10.224.0.0/12 <- 10.96.0.0/12",
                "10.240.0.0/16 <- 10.244.0.0/16",
                "100.77.0.1/32"
            ]
        );
        let maps = mappings(&out);
        assert_eq!(maps.len(), 2);
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(to_mapped(&maps, a("10.96.0.10")), a("10.224.0.10"));
        assert_eq!(to_mapped(&maps, a("10.244.0.7")), a("10.240.0.7"));
        assert_eq!(to_mapped(&maps, a("192.0.2.1")), a("192.0.2.1"));
        // Its own routes (a re-plan while serving) conflict with nothing: the same plan.
        let mine = [route("10.224.0.0/12", "kwg1")];
        let again = apply(
            cluster(),
            &inputs(&[existing.as_slice(), &mine].concat(), &[DEFAULT_POOL]),
        );
        assert_eq!(again.unwrap(), out);
    }

    #[test]
    fn nothing_is_mapped_without_a_conflict_or_when_conflicts_are_allowed() {
        let existing = [route("192.0.2.0/24", "eth0"), route("10.96.0.0/12", "kwg0")];
        let pool = [DEFAULT_POOL];
        let out = apply(cluster()[1..].to_vec(), &inputs(&existing, &pool)).unwrap();
        assert_eq!(shown(&out), ["10.244.0.0/16", "100.77.0.1/32"]);
        let allowed = ["10.0.0.0/8".parse().unwrap()];
        let out = apply(
            cluster(),
            &MapInputs {
                allowed: &allowed,
                ..inputs(&existing, &pool)
            },
        );
        assert_eq!(shown(&out.unwrap())[0], "10.96.0.0/12");
    }

    #[test]
    fn the_pool_skips_the_machines_routes_addresses_and_the_clusters_own_ranges() {
        // A VPN holds the pool's first /12 and the cluster its own 10.209.0.0/16: the /12
        // goes to the third; the /16 skips the VPN, the machine's address and the cluster's.
        let existing = [
            route("10.96.0.0/12", "kwg0"),
            route("10.244.0.0/16", "kwg0"),
            route("10.192.0.0/12", "tun0"),
        ];
        let machine = trust::Machine {
            addresses: vec!["10.208.0.5".parse().unwrap()],
            ..Default::default()
        };
        let mut routes = cluster();
        routes.push(PlannedRoute::new(
            "10.209.0.0/16".parse().unwrap(),
            RouteSource::Pod,
        ));
        let pool = [n4("10.192.0.0/10")];
        let out = apply(
            routes,
            &MapInputs {
                machine: &machine,
                ..inputs(&existing, &pool)
            },
        );
        assert_eq!(
            shown(&out.unwrap()),
            [
                "10.224.0.0/12 <- 10.96.0.0/12",
                "10.210.0.0/16 <- 10.244.0.0/16",
                "100.77.0.1/32",
                "10.209.0.0/16"
            ],
        );
    }

    #[test]
    fn a_mapped_range_never_covers_the_machines_dns_gateway_or_api_server() {
        // The corporate DNS server, the default gateway and a private API server sit in the
        // pool, reached over the LAN's default route: a range covering one would route its
        // traffic into the tunnel (no DNS, no lease renewal, no API server).
        let existing = [
            route("10.96.0.0/12", "kwg0"),
            route("10.244.0.0/16", "kwg0"),
            route("192.0.2.0/24", "eth0"),
        ];
        let machine = trust::Machine {
            dns_servers: vec!["10.192.0.53".parse().unwrap()],
            gateways: vec!["10.193.0.1".parse().unwrap()],
            api_server: vec!["10.194.9.9".parse().unwrap()],
            ..Default::default()
        };
        let pool = [n4("10.192.0.0/10")];
        let with = |forced: &'static [ForcedMap]| {
            apply(
                cluster(),
                &MapInputs {
                    machine: &machine,
                    forced,
                    ..inputs(&existing, &pool)
                },
            )
        };
        assert_eq!(
            shown(&with(&[]).unwrap()),
            [
                "10.208.0.0/12 <- 10.96.0.0/12",
                "10.195.0.0/16 <- 10.244.0.0/16",
                "100.77.0.1/32"
            ]
        );
        let forced = |s: &str| -> &'static [ForcedMap] {
            Box::leak(Box::new([s.parse::<ForcedMap>().unwrap()]))
        };
        for (map, says) in [
            (
                "10.244.0.0/16=10.192.0.0/16",
                "--map 10.244.0.0/16=10.192.0.0/16: 10.192.0.0/16 covers this machine's DNS \
                 server 10.192.0.53, whose traffic would then go into the tunnel: choose a range \
                 that does not cover it",
            ),
            (
                "10.244.0.0/16=10.193.0.0/16",
                "--map 10.244.0.0/16=10.193.0.0/16: 10.193.0.0/16 covers this machine's default \
                 gateway 10.193.0.1, whose traffic would then go into the tunnel: choose a range \
                 that does not cover it",
            ),
            (
                "10.244.0.0/16=10.194.0.0/16",
                "--map 10.244.0.0/16=10.194.0.0/16: 10.194.0.0/16 covers the API server's \
                 address 10.194.9.9, whose traffic would then go into the tunnel: choose a range \
                 that does not cover it",
            ),
        ] {
            assert_eq!(with(forced(map)).unwrap_err().to_string(), says);
        }
    }

    #[test]
    fn a_forced_mapping_wins_and_bad_ones_name_the_fix() {
        let existing = [
            route("10.96.0.0/12", "kwg0"),
            route("172.20.0.0/16", "docker0"),
        ];
        let pool = [DEFAULT_POOL];
        let forced = ["10.96.0.0/12=172.16.0.0/12".parse::<ForcedMap>().unwrap()];
        let err = apply(
            cluster(),
            &MapInputs {
                forced: &forced,
                ..inputs(&existing, &pool)
            },
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "--map 10.96.0.0/12=172.16.0.0/12: 172.16.0.0/12 overlaps the existing route \
             172.20.0.0/16 dev docker0: choose a free range"
        );
        let forced = ["10.244.0.0/16=192.168.77.0/16"
            .parse::<ForcedMap>()
            .unwrap()];
        let out = apply(
            cluster(),
            &MapInputs {
                forced: &forced,
                ..inputs(&existing, &pool)
            },
        );
        assert_eq!(
            shown(&out.unwrap()),
            [
                "10.224.0.0/12 <- 10.96.0.0/12",
                "192.168.0.0/16 <- 10.244.0.0/16 (--map)",
                "100.77.0.1/32"
            ]
        );
        let forced = ["10.97.0.0/16=10.230.0.0/16".parse::<ForcedMap>().unwrap()];
        let err = apply(
            cluster(),
            &MapInputs {
                forced: &forced,
                ..inputs(&existing, &pool)
            },
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "--map 10.97.0.0/16=10.230.0.0/16: 10.97.0.0/16 is not a Service, pod or tunnel CIDR \
             of this cluster nor an --also-proxy range (they are 10.96.0.0/12, 10.244.0.0/16): \
             name one of those"
        );
        assert_eq!(
            "10.96.0.0/12=10.224.0.0/16"
                .parse::<ForcedMap>()
                .unwrap_err(),
            "\"10.96.0.0/12=10.224.0.0/16\": the mapped range must be the same size as \
             10.96.0.0/12: give it the prefix length /12"
        );
        assert!(
            "10.96.0.0/12"
                .parse::<ForcedMap>()
                .unwrap_err()
                .contains("CLUSTER=MAPPED")
        );
    }

    #[test]
    fn a_full_or_public_pool_is_refused_in_one_sentence() {
        let existing = [route("10.96.0.0/12", "kwg0")];
        let pool = [n4("10.250.0.0/16")];
        let err = apply(cluster(), &inputs(&existing, &pool)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "route 10.96.0.0/12 (service CIDR) conflicts with the existing route 10.96.0.0/12 dev \
             kwg0, and --map-pool 10.250.0.0/16 has no free /12 left to map it onto: pass a \
             larger --map-pool, --map 10.96.0.0/12=<a free /12>, or --allow-conflicting-subnets \
             10.96.0.0/12 to route it over the existing one"
        );
        let pool = [n4("8.8.0.0/12")];
        let err = apply(cluster(), &inputs(&existing, &pool)).unwrap_err();
        assert!(
            err.to_string().starts_with("--map-pool 8.8.0.0/12: "),
            "{err}"
        );
    }
}
