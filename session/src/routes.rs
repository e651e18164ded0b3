//! Route planning: which subnets go through the tunnel, and conflicts with the machine's routes.
//!
//! Pure: the caller lists the existing routes (netlink, as [`Route`]s) and applies the plan.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Error;

/// The kernel's table of local and broadcast addresses (`ip route show table local`).
const LOCAL_TABLE: u32 = 255;
/// The main table (`ip route`'s default view).
pub const MAIN_TABLE: u32 = 254;

/// One route of the machine's routing tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` for a default route).
    pub destination: IpNet,
    /// Output interface name, when the route has one.
    pub interface: Option<String>,
    /// Gateway (`via`), when the route has one.
    pub gateway: Option<IpAddr>,
    /// Routing table id.
    pub table: u32,
}

impl std::fmt::Display for Route {
    /// As `ip route` shows it: `10.0.0.0/8 via 192.0.2.1 dev eth0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let via = self
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let dev = self.interface.as_ref().map(|d| format!(" dev {d}"));
        let table = (self.table != MAIN_TABLE).then(|| format!(" table {}", self.table));
        let (dev, table) = (dev.unwrap_or_default(), table.unwrap_or_default());
        write!(f, "{}{via}{dev}{table}", self.destination)
    }
}

pub use kwg_contract::{PlannedRoute, RouteSource};

/// What to route: the cluster's subnets plus `--also-proxy`, minus `--never-proxy`.
#[derive(Debug, Clone, Default)]
pub struct RouteInputs {
    pub service: Vec<IpNet>,
    pub pod: Vec<IpNet>,
    pub also_proxy: Vec<IpNet>,
    pub never_proxy: Vec<IpNet>,
    /// Always routed (the gateway's tunnel address, for its admin port), never subtracted.
    pub gateway: Vec<IpNet>,
}

/// Plans the routes. The most specific subnet wins: a `--never-proxy` subnet cuts a hole into a
/// larger routed subnet, and a routed subnet more specific than a `--never-proxy` one stays.
/// On equal prefixes `--never-proxy` wins. The result is sorted and free of duplicates and of
/// subnets contained in another planned subnet.
pub fn plan(inputs: &RouteInputs) -> Vec<PlannedRoute> {
    let mut candidates: Vec<PlannedRoute> = Vec::new();
    let tagged = [
        (&inputs.service, RouteSource::Service),
        (&inputs.pod, RouteSource::Pod),
        (&inputs.also_proxy, RouteSource::AlsoProxy),
    ];
    for (nets, source) in tagged {
        for net in nets {
            candidates.push(PlannedRoute::new(net.trunc(), source));
        }
    }
    for never in &inputs.never_proxy {
        let never = never.trunc();
        candidates = candidates
            .into_iter()
            .flat_map(|r| {
                if r.subnet.prefix_len() <= never.prefix_len() && r.subnet.contains(&never) {
                    subtract(r.subnet, never)
                        .into_iter()
                        .map(|subnet| PlannedRoute::new(subnet, r.source))
                        .collect()
                } else {
                    vec![r]
                }
            })
            .collect();
    }
    for net in &inputs.gateway {
        candidates.push(PlannedRoute::new(net.trunc(), RouteSource::Gateway));
    }
    candidates.sort_by_key(|r| (r.subnet.prefix_len(), r.subnet));
    let mut out: Vec<PlannedRoute> = Vec::new();
    for r in candidates {
        if !out.iter().any(|o| o.subnet.contains(&r.subnet)) {
            out.push(r);
        }
    }
    out.sort_by_key(|r| r.subnet);
    out
}

/// `outer` without `inner` (which it contains), as the fewest prefixes.
fn subtract(outer: IpNet, inner: IpNet) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut current = outer;
    while current.prefix_len() < inner.prefix_len() {
        let halves: Vec<IpNet> = current
            .subnets(current.prefix_len() + 1)
            .expect("a longer prefix is valid")
            .collect();
        for half in halves {
            if half.contains(&inner) {
                current = half;
            } else {
                out.push(half);
            }
        }
    }
    out
}

/// Checks the plan against the machine's routes in every table but `local` (another VPN's
/// routes, e.g. Tailscale's 100.64.0.0/10 in table 52, count too), other than `own_interface`'s
/// and default routes: an overlap is an error naming the existing route, unless the planned
/// subnet lies inside one of `allowed` (`--allow-conflicting-subnets`).
pub fn check_conflicts(
    plan: &[PlannedRoute],
    existing: &[Route],
    own_interface: &str,
    allowed: &[IpNet],
) -> Result<(), Error> {
    for route in plan {
        if allowed.iter().any(|a| a.contains(&route.subnet)) {
            continue;
        }
        if let Some(existing) = conflicting(&route.subnet, existing, own_interface) {
            return Err(Error::RouteConflict {
                subnet: route.subnet,
                source_name: route.source.to_string(),
                existing: existing.to_string(),
            });
        }
    }
    Ok(())
}

/// The machine's route that `subnet` overlaps, as [`check_conflicts`] judges it: any table but
/// `local`, no default route, none of `own_interface`'s.
pub fn conflicting<'a>(
    subnet: &IpNet,
    existing: &'a [Route],
    own_interface: &str,
) -> Option<&'a Route> {
    existing.iter().find(|e| {
        e.table != LOCAL_TABLE
            && e.destination.prefix_len() > 0
            && e.interface.as_deref() != Some(own_interface)
            && (e.destination.contains(subnet) || subnet.contains(&e.destination))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn subnets(p: &[PlannedRoute]) -> Vec<String> {
        p.iter().map(|r| r.subnet.to_string()).collect()
    }

    #[test]
    fn cluster_subnets_plus_also_proxy() {
        let p = plan(&RouteInputs {
            service: vec![n("10.96.0.0/12")],
            pod: vec![n("10.244.0.0/24")],
            also_proxy: vec![n("172.16.5.0/24"), n("10.96.1.0/24")],
            gateway: vec![n("100.77.0.1/32")],
            ..Default::default()
        });
        assert_eq!(
            subnets(&p),
            [
                "10.96.0.0/12",
                "10.244.0.0/24",
                "100.77.0.1/32",
                "172.16.5.0/24"
            ]
        );
        assert_eq!(p[3].source, RouteSource::AlsoProxy);
    }

    #[test]
    fn never_proxy_cuts_a_hole_most_specific_wins() {
        let p = plan(&RouteInputs {
            pod: vec![n("10.244.0.0/24")],
            never_proxy: vec![n("10.244.0.128/26")],
            ..Default::default()
        });
        assert_eq!(subnets(&p), ["10.244.0.0/25", "10.244.0.192/26"]);

        // An also-proxy subnet inside a never-proxy one is more specific: it stays.
        let p = plan(&RouteInputs {
            pod: vec![n("10.244.0.0/24")],
            also_proxy: vec![n("10.244.0.130/32")],
            never_proxy: vec![n("10.244.0.128/26")],
            ..Default::default()
        });
        assert_eq!(
            subnets(&p),
            ["10.244.0.0/25", "10.244.0.130/32", "10.244.0.192/26"]
        );

        // Equal prefixes: never-proxy wins; a larger never-proxy does not remove smaller routes.
        let p = plan(&RouteInputs {
            service: vec![n("10.96.0.0/12")],
            pod: vec![n("10.244.0.0/24")],
            never_proxy: vec![n("10.244.0.0/24"), n("10.0.0.0/8")],
            ..Default::default()
        });
        assert_eq!(subnets(&p), ["10.96.0.0/12"]);
    }

    fn existing(dest: &str, dev: &str) -> Route {
        Route {
            destination: n(dest),
            interface: Some(dev.into()),
            gateway: None,
            table: MAIN_TABLE,
        }
    }

    #[test]
    fn conflicts_name_the_existing_route_unless_allowed() {
        let p = plan(&RouteInputs {
            service: vec![n("10.96.0.0/12")],
            ..Default::default()
        });
        let routes = vec![
            existing("0.0.0.0/0", "eth0"),
            existing("192.0.2.0/24", "eth0"),
            existing("10.100.0.0/16", "vpn0"),
            existing("10.96.0.0/12", "kwg0"),
        ];
        let err = check_conflicts(&p, &routes, "kwg0", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "route 10.96.0.0/12 (service CIDR) conflicts with the existing route \
             10.100.0.0/16 dev vpn0; pass --allow-conflicting-subnets 10.96.0.0/12 to route it \
             through kwg anyway, or --never-proxy the overlap"
        );
        check_conflicts(&p, &routes, "kwg0", &[n("10.0.0.0/8")]).unwrap();
        check_conflicts(&p, &routes[..2], "kwg0", &[]).unwrap();
        // Another VPN's routes in its own table count (Tailscale uses table 52).
        let p = plan(&RouteInputs {
            pod: vec![n("100.64.0.0/16")],
            ..Default::default()
        });
        let tailscale = Route {
            table: 52,
            ..existing("100.64.0.0/10", "tailscale0")
        };
        let err = check_conflicts(&p, std::slice::from_ref(&tailscale), "kwg0", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("existing route 100.64.0.0/10 dev tailscale0 table 52;"),
            "{err}"
        );
        let local = Route {
            table: LOCAL_TABLE,
            ..tailscale
        };
        check_conflicts(&p, &[local], "kwg0", &[]).unwrap();
    }
}
