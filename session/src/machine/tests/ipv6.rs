//! A dual-stack cluster (issue 28): the gateway publishes `ipv6.json` next to `info.json`, and
//! the session gives the interface its IPv6 tunnel address, routes the IPv6 ranges into the
//! tunnel, lets the gateway peer carry them, and moves the IPv6 address with the IPv4 one. A
//! join that carries IPv4 only (userspace mode) leaves the IPv6 side alone and
//! refuses an IPv6 `--also-proxy` in one sentence, as does a cluster without `ipv6.json`.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::*;
use crate::config::USERSPACE_IPV4_ONLY;

fn info6() -> kwg_contract::GatewayInfo6 {
    kwg_contract::GatewayInfo6 {
        tunnel_cidr: kwg_contract::DEFAULT_TUNNEL_CIDR6.parse().unwrap(),
        service_cidrs: vec!["fd00:10:96::/112".parse().unwrap()],
        pod_cidrs: vec!["fd00:10:244::/64".parse().unwrap()],
        dns_ip: Some("fd00:10:96::a".parse().unwrap()),
    }
}

fn dual_info(key: &PrivateKey) -> GatewayInfo {
    let mut i = info(key);
    i.ipv6 = Some(info6());
    i
}

fn n(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// What the session asked of the interface: its addresses, routes and the gateway peer.
type Network = (
    IpNet,
    Option<IpNet>,
    Vec<IpNet>,
    crate::gateway::GatewayPeer,
);

/// Runs a join of `change` against the dual-stack cluster; what `ConfigureNetwork` asked.
fn dual_join(change: impl FnOnce(&mut SessionConfig)) -> (Run, Vec<Network>) {
    let (r, kept, _) = dual_join_with(change, |_| ());
    (r, kept)
}

/// [`dual_join`] on a machine `machine` changes; also the progress lines said.
fn dual_join_with(
    change: impl FnOnce(&mut SessionConfig),
    machine: impl FnOnce(&mut Facts),
) -> (Run, Vec<Network>, Vec<String>) {
    let mut r = Run::new(change);
    let mut kept = Vec::new();
    let mut said = Vec::new();
    let mut f = facts(&r.gateway);
    f.info = dual_info(&r.gateway);
    machine(&mut f);
    let mut f = Some(f);
    r.pump(|a| match a {
        Action::Inspect => f.take().map(|f| Some(Event::Inspected(Box::new(f)))),
        Action::Progress(line) => {
            said.push(line.clone());
            None
        }
        Action::ConfigureNetwork {
            address: a,
            address6: a6,
            routes: nets,
            gateway: peer,
            ..
        } => {
            kept.push((*a, *a6, nets.clone(), peer.clone()));
            None
        }
        _ => None,
    });
    (r, kept, said)
}

/// Review finding: a machine with IPv6 turned off joins a dual-stack cluster IPv4 only and
/// says so (the IPv6 routes failed in netlink before: "IPv6 is disabled on nexthop device");
/// an IPv6-only cluster is refused in one sentence naming the fix.
#[test]
fn a_machine_with_ipv6_disabled_joins_ipv4_only_and_refuses_an_ipv6_only_cluster() {
    let (r, kept, said) = dual_join_with(|_| (), |f| f.ipv6_usable = false);
    assert_eq!(r.s.phase(), Phase::Serving);
    let (_, address6, routes, _) = kept.first().expect("no ConfigureNetwork");
    assert_eq!(*address6, None);
    assert!(routes.iter().all(|r| r.addr().is_ipv4()), "{routes:?}");
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
    assert!(
        said.iter()
            .any(|l| l.starts_with("IPv6 is disabled on this machine")
                && l.ends_with(": joining IPv4 only")),
        "{said:?}"
    );

    let (mut r, kept, _) = dual_join_with(
        |_| (),
        |f| {
            f.ipv6_usable = false;
            f.info.service_cidrs.clear();
            f.info.pod_cidrs.clear();
            f.info.dns_ip = None;
        },
    );
    assert!(kept.is_empty());
    let e = r.s.outcome().unwrap_err().to_string();
    assert!(
        e.contains("IPv6-only") && e.contains("sysctl -w net.ipv6.conf.all.disable_ipv6=0"),
        "{e}"
    );
}

/// Review finding: a second dual-stack cluster with the same IPv6 ranges as a joined one
/// (kwg0 routes fd00:10:96::/112 and holds the same IPv6 tunnel address) joins IPv4 only,
/// with a warning, instead of being refused (IPv6 ranges are never mapped).
#[test]
fn a_second_cluster_with_the_same_ipv6_ranges_joins_ipv4_only() {
    let kwg0 = |d: &str| crate::routes::Route {
        destination: n(d),
        interface: Some("kwg0".into()),
        gateway: None,
        table: 254,
    };
    let (mut r, kept, said) = dual_join_with(
        |c| c.interface = "kwg1".into(),
        |f| {
            f.machine_routes = vec![kwg0("fd00:10:96::/112"), kwg0("fd00:10:244::/64")];
        },
    );
    assert_eq!(r.s.phase(), Phase::Serving, "{:?}", r.s.outcome());
    let (_, address6, routes, _) = kept.first().expect("no ConfigureNetwork");
    assert_eq!(*address6, None);
    assert!(routes.iter().all(|r| r.addr().is_ipv4()), "{routes:?}");
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
    assert!(
        said.iter()
            .any(|l| l.contains("IPv6 ranges overlap") && l.ends_with(": joining IPv4 only")),
        "{said:?}"
    );

    // Only the tunnel /96 taken: kwg0's identical IPv6 tunnel address and its kernel route.
    let (mut r, kept, _) = dual_join_with(
        |c| c.interface = "kwg1".into(),
        |f| {
            let t = f.info.ipv6.as_ref().unwrap().tunnel_cidr;
            f.machine_addresses = vec![IpAddr::V6(t.hosts().nth(5).unwrap())];
            f.machine_routes = vec![kwg0(&t.to_string())];
        },
    );
    assert_eq!(r.s.phase(), Phase::Serving, "{:?}", r.s.outcome());
    assert_eq!(kept.first().expect("no ConfigureNetwork").1, None);
}

#[test]
fn a_dual_stack_join_gives_the_interface_both_addresses_and_routes_both_families() {
    let (r, kept) = dual_join(defaults);
    assert_eq!(r.s.phase(), Phase::Serving);
    let Some((address, address6, routes, gateway)) = kept.first() else {
        panic!("no ConfigureNetwork");
    };
    assert_eq!(*address, n("100.77.0.2/32"));
    // 100.77.0.2 in the last 32 bits of the /96, as the gateway computes it.
    assert_eq!(*address6, Some(n("fd6b:7767::644d:2/128")));
    for net in [
        "10.96.0.0/12",
        "10.244.0.0/16",
        "100.77.0.1/32",
        "fd00:10:96::/112",
        "fd00:10:244::/64",
        "fd6b:7767::644d:1/128",
    ] {
        assert!(routes.contains(&n(net)), "{net} not routed: {routes:?}");
        assert!(
            gateway.allowed_ips.contains(&n(net)),
            "{net} not in the gateway's AllowedIPs: {:?}",
            gateway.allowed_ips
        );
    }
    // `kwg status` reads the IPv6 address from the journal.
    let state = r.s.state().unwrap();
    assert_eq!(
        state.tunnel_ip6(),
        Some("fd6b:7767::644d:2".parse().unwrap())
    );
    // The cluster DNS stays the IPv4 one of a dual-stack cluster.
    assert_eq!(
        r.s.plan().unwrap().cluster_dns,
        Some("10.96.0.10:53".parse().unwrap())
    );
}

#[test]
fn a_join_carrying_ipv4_only_leaves_the_ipv6_side_alone() {
    let (r, kept) = dual_join(|c| c.ipv4_only = Some(USERSPACE_IPV4_ONLY));
    assert_eq!(r.s.phase(), Phase::Serving);
    let Some((_, address6, routes, _)) = kept.first() else {
        panic!("no ConfigureNetwork");
    };
    assert_eq!(*address6, None);
    assert!(routes.iter().all(|r| r.addr().is_ipv4()), "{routes:?}");
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
}

#[test]
fn an_ipv6_also_proxy_is_carried_by_a_dual_stack_join_and_refused_otherwise() {
    let also = |c: &mut SessionConfig| c.also_proxy = vec![n("fd00:99::/64")];
    let (r, kept) = dual_join(also);
    assert_eq!(r.s.phase(), Phase::Serving);
    let Some((_, _, routes, _)) = kept.first() else {
        panic!("no ConfigureNetwork");
    };
    assert!(routes.contains(&n("fd00:99::/64")), "{routes:?}");

    // Refused before anything changes: in userspace mode, or by a gateway without ipv6.json.
    let (mut r, kept) = dual_join(|c| {
        also(c);
        c.ipv4_only = Some(USERSPACE_IPV4_ONLY);
    });
    assert!(kept.is_empty());
    assert_eq!(
        r.s.outcome().unwrap_err().to_string(),
        format!("--also-proxy fd00:99::/64 is an IPv6 range, and {USERSPACE_IPV4_ONLY}: remove it")
    );
    let mut r = Run::new(also);
    r.pump(|_| None);
    assert!(!r.take_log().contains(&"ConfigureNetwork".to_string()));
    let e = r.s.outcome().unwrap_err().to_string();
    assert!(
        e.starts_with("--also-proxy fd00:99::/64 is an IPv6 range, and this cluster's gateway carries only IPv4 (kwg-gateway-info has no ipv6.json"),
        "{e}"
    );
}

#[test]
fn an_ipv6_only_cluster_is_refused_by_a_join_carrying_ipv4_only() {
    let mut r = Run::new(|c| c.ipv4_only = Some(crate::config::USERSPACE_IPV4_ONLY));
    let gateway = r.gateway.clone();
    r.pump(|a| match a {
        Action::Inspect => {
            let mut f = facts(&gateway);
            f.info = dual_info(&gateway);
            f.info.service_cidrs.clear();
            f.info.pod_cidrs.clear();
            f.info.dns_ip = None;
            Some(Some(Event::Inspected(Box::new(f))))
        }
        _ => None,
    });
    let e = r.s.outcome().unwrap_err().to_string();
    assert_eq!(
        e,
        "this cluster is IPv6-only (its gateway info lists no IPv4 Service or pod CIDR), and userspace mode carries only IPv4: nothing of it could be reached"
    );
}

/// The gateway assigned another tunnel IP (its Secret registered again): the IPv6 address,
/// which embeds the IPv4 one, moves with it.
#[test]
fn the_ipv6_tunnel_address_moves_with_the_ipv4_one() {
    let (mut r, _) = dual_join(defaults);
    r.take_log();
    // The Secret vanished: the renewal's 404 registers again, and the gateway assigns .9.
    r.advance(Duration::from_secs(30));
    r.pump(|a| match a {
        Action::RenewLease { .. } => Some(Some(Event::LeaseFailed(LeaseFailure::NotFound))),
        Action::WaitTunnelIp { .. } => Some(Some(Event::TunnelIp("100.77.0.9".parse().unwrap()))),
        _ => None,
    });
    let log = r.take_log();
    assert_eq!(
        log.iter().filter(|a| *a == "ChangeAddress").count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        r.s.state().unwrap().tunnel_ip6(),
        Some("fd6b:7767::644d:9".parse().unwrap())
    );
}

#[test]
fn kwg_join_names_both_tunnel_addresses() {
    let mut r = Run::new(defaults);
    let gateway = r.gateway.clone();
    let mut said = Vec::new();
    r.pump(|a| match a {
        Action::Inspect => {
            let mut f = facts(&gateway);
            f.info = dual_info(&gateway);
            Some(Some(Event::Inspected(Box::new(f))))
        }
        Action::Progress(m) => {
            said.push(m.clone());
            None
        }
        _ => None,
    });
    assert!(
        said.iter()
            .any(|m| m.starts_with("Tunnel kwg0 up as 100.77.0.2, fd6b:7767::644d:2 to gateway ")),
        "{said:?}"
    );
}

/// The gateway moved to another IPv6 prefix (`--tunnel-cidr6`) while joined: the IPv6 tunnel
/// address moves under it, the IPv4 one stays; without ipv6.json any more its routes go.
#[test]
fn a_new_ipv6_prefix_moves_the_ipv6_address_and_a_withdrawn_ipv6_side_its_routes() {
    let (mut r, _) = dual_join(defaults);
    r.take_log();
    let mut changed = dual_info(&r.gateway);
    changed.ipv6.as_mut().unwrap().tunnel_cidr = "fd6b:9999::/96".parse().unwrap();
    r.s.handle(Event::GatewayInfo(Box::new(changed.clone())), r.now);
    let mut actions = Vec::new();
    while let Some(a) = r.s.poll_action() {
        actions.push(a);
    }
    let moved: Vec<(IpNet, IpNet)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ChangeAddress { old, new, .. } => Some((*old, *new)),
            _ => None,
        })
        .collect();
    assert_eq!(
        moved,
        [(n("fd6b:7767::644d:2/128"), n("fd6b:9999::644d:2/128"))]
    );
    let routes = actions.iter().find_map(|a| match a {
        Action::SetRoutes { add, remove, .. } => Some((add.clone(), remove.clone())),
        _ => None,
    });
    assert_eq!(
        routes,
        Some((
            vec![n("fd6b:9999::644d:1/128")],
            vec![n("fd6b:7767::644d:1/128")]
        ))
    );
    assert_eq!(
        r.s.state().unwrap().tunnel_ip6(),
        Some("fd6b:9999::644d:2".parse().unwrap())
    );
    // ipv6.json withdrawn: the IPv6 routes go, the IPv4 ones stay.
    let mut v4 = changed;
    v4.ipv6 = None;
    r.s.handle(Event::GatewayInfo(Box::new(v4)), r.now);
    let mut removed = Vec::new();
    while let Some(a) = r.s.poll_action() {
        if let Action::SetRoutes { remove, .. } = a {
            removed.extend(remove);
        }
    }
    removed.sort();
    assert_eq!(
        removed,
        [
            n("fd00:10:96::/112"),
            n("fd00:10:244::/64"),
            n("fd6b:9999::644d:1/128")
        ]
    );
}

/// A reinstall moves the tunnel CIDR off a virtual subnet (the old one overlapped a LAN
/// route): the interface ends with exactly the new addresses of both families, the old mapped
/// IPv4 one gone (issue 27).
#[test]
fn a_new_tunnel_cidr_off_a_mapped_range_leaves_exactly_the_new_addresses() {
    let mut r = Run::new(|c| c.map_pool = vec![crate::mapping::DEFAULT_POOL]);
    let gateway = r.gateway.clone();
    let mut on_link = std::collections::BTreeSet::<IpNet>::new();
    r.pump(|a| match a {
        Action::Inspect => Some(Some(Event::Inspected(Box::new(mapped_dual_facts(
            &gateway,
        ))))),
        Action::ConfigureNetwork {
            address, address6, ..
        } => {
            on_link.extend(std::iter::once(*address).chain(*address6));
            None
        }
        _ => None,
    });
    assert_eq!(r.s.phase(), Phase::Serving);
    let mapped = on_link.first().copied().unwrap();
    assert!(
        !n("100.77.0.0/16").contains(&mapped),
        "not mapped: {on_link:?}"
    );
    let mut changed = dual_info(&PrivateKey::generate());
    changed.tunnel_cidr = "100.64.48.0/20".parse().unwrap();
    changed.gateway_ip = "100.64.48.1".parse().unwrap();
    r.s.handle(Event::GatewayInfo(Box::new(changed)), r.now);
    r.pump(|a| {
        if let Action::ChangeAddress { old, new, .. } = a {
            assert!(on_link.remove(old), "{old} is not on the interface");
            on_link.insert(*new);
        }
        match a {
            Action::WaitTunnelIp { .. } => {
                Some(Some(Event::TunnelIp("100.64.48.7".parse().unwrap())))
            }
            _ => None,
        }
    });
    assert_eq!(r.s.plan().unwrap().refused, None);
    assert_eq!(
        on_link.into_iter().collect::<Vec<_>>(),
        [n("100.64.48.7/32"), n("fd6b:7767::6440:3007/128")]
    );
}

/// What the serving session asked of the interface after `info` arrived: its address
/// changes, its route changes and the gateway peer's AllowedIPs.
fn follow(r: &mut Run, info: GatewayInfo) -> (Vec<String>, Vec<IpNet>, Vec<IpNet>, Vec<IpNet>) {
    r.s.handle(Event::GatewayInfo(Box::new(info)), r.now);
    let (mut addresses, mut add, mut remove, mut allowed) = (vec![], vec![], vec![], vec![]);
    while let Some(a) = r.s.poll_action() {
        match a {
            Action::AddAddress { address, .. } => addresses.push(format!("+{address}")),
            Action::RemoveAddress { address, .. } => addresses.push(format!("-{address}")),
            Action::ChangeAddress { old, new, .. } => addresses.push(format!("{old}>{new}")),
            Action::SetRoutes {
                add: a, remove: d, ..
            } => {
                add.extend(a);
                remove.extend(d);
            }
            Action::UpdateGateway { peer, .. } => allowed = peer.allowed_ips,
            _ => {}
        }
    }
    (addresses, add, remove, allowed)
}

/// A gateway that starts publishing ipv6.json while a laptop is joined: the session adds the
/// IPv6 address, routes and AllowedIPs (after the same trust checks as at join), and removes
/// all of them when ipv6.json is withdrawn; `kwg status` follows (issue 28).
#[test]
fn ipv6_published_while_joined_is_added_and_withdrawn_ipv6_removed() {
    let mut r = Run::new(defaults);
    r.pump(|_| None);
    assert_eq!(r.s.phase(), Phase::Serving);
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
    let v4 = info(&r.gateway);
    // An ipv6.json that fails the trust rules (the whole IPv6 Internet) is refused.
    let mut bad = dual_info(&r.gateway);
    bad.ipv6.as_mut().unwrap().service_cidrs = vec!["::/0".parse().unwrap()];
    let (addresses, add, ..) = follow(&mut r, bad);
    assert!(
        addresses.is_empty() && add.is_empty(),
        "{addresses:?} {add:?}"
    );
    assert!(r.s.plan().unwrap().refused.is_some());
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
    // A good one: the IPv6 side comes up.
    let dual = dual_info(&r.gateway);
    let (addresses, add, remove, allowed) = follow(&mut r, dual);
    assert_eq!(addresses, ["+fd6b:7767::644d:2/128"]);
    let six = [
        n("fd00:10:96::/112"),
        n("fd00:10:244::/64"),
        n("fd6b:7767::644d:1/128"),
    ];
    for net in six {
        assert!(add.contains(&net), "{net} not routed: {add:?}");
        assert!(
            allowed.contains(&net),
            "{net} not in AllowedIPs: {allowed:?}"
        );
    }
    assert!(remove.is_empty(), "{remove:?}");
    assert_eq!(
        r.s.state().unwrap().tunnel_ip6(),
        Some("fd6b:7767::644d:2".parse().unwrap())
    );
    // Withdrawn: all of it goes, the IPv4 side staying.
    let (addresses, add, remove, allowed) = follow(&mut r, v4);
    assert_eq!(addresses, ["-fd6b:7767::644d:2/128"]);
    assert!(add.is_empty(), "{add:?}");
    for net in six {
        assert!(remove.contains(&net), "{net} still routed");
        assert!(!allowed.contains(&net), "{net} still in AllowedIPs");
    }
    assert!(allowed.contains(&n("10.96.0.0/12")), "{allowed:?}");
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
}

/// `ipv4_only` (userspace mode) never takes the IPv6 side, even when it appears while joined.
#[test]
fn an_ipv4_only_session_ignores_ipv6_published_while_joined() {
    let mut r = Run::new(|c| c.ipv4_only = Some(USERSPACE_IPV4_ONLY));
    r.pump(|_| None);
    ipv6_appears_and_nothing_is_added(&mut r);
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
}

/// ipv6.json appearing while joined whose IPv6 tunnel address is one of the machine's own
/// addresses is refused, as at join: nothing of the IPv6 side is added.
#[test]
fn ipv6_published_while_joined_meets_the_tunnel_address_rules_of_a_join() {
    let mut r = Run::new(defaults);
    let gateway = r.gateway.clone();
    r.pump(|a| match a {
        Action::Inspect => {
            let mut f = facts(&gateway);
            f.machine_addresses
                .push("fd6b:7767::644d:2".parse().unwrap());
            Some(Some(Event::Inspected(Box::new(f))))
        }
        _ => None,
    });
    ipv6_appears_and_nothing_is_added(&mut r);
    let refused = &r.s.plan().unwrap().refused.as_ref().expect("refused").1;
    assert!(refused.contains("fd6b:7767::644d:2"), "{refused}");
    assert_eq!(r.s.state().unwrap().tunnel_ip6(), None);
}

/// Serving, the gateway starts publishing ipv6.json: neither an address nor a route is added.
fn ipv6_appears_and_nothing_is_added(r: &mut Run) {
    assert_eq!(r.s.phase(), Phase::Serving);
    let dual = dual_info(&r.gateway);
    let (addresses, add, ..) = follow(r, dual);
    assert!(
        addresses.is_empty() && add.is_empty(),
        "{addresses:?} {add:?}"
    );
}

/// The dual-stack cluster seen from a machine with a LAN route over its tunnel CIDR
/// (100.77.0.0/16 on eth0): a root join maps the IPv4 tunnel address into the pool.
fn mapped_dual_facts(gateway: &PrivateKey) -> Facts {
    let mut f = facts(gateway);
    f.info = dual_info(gateway);
    f.machine_routes = vec![crate::routes::Route {
        destination: n("100.77.0.0/16"),
        interface: Some("eth0".into()),
        gateway: None,
        table: 254,
    }];
    f
}

/// A root join whose tunnel CIDR overlaps a LAN route (100.77.0.0/16 on eth0), so the IPv4
/// tunnel address is mapped into the pool, against the dual-stack cluster; `machine` changes
/// what the join finds on the machine.
fn mapped_dual_join(machine: impl FnOnce(&mut Facts)) -> Run {
    let mut r = Run::new(|c| c.map_pool = vec![crate::mapping::DEFAULT_POOL]);
    let mut f = mapped_dual_facts(&r.gateway);
    machine(&mut f);
    let mut f = Some(f);
    r.pump(|a| match a {
        Action::Inspect => f.take().map(|f| Some(Event::Inspected(Box::new(f)))),
        _ => None,
    });
    r
}

/// Security review: the IPv6 twin of a mapped IPv4 tunnel address is never mapped, so it
/// meets the machine's rules at join: a cluster whose /96 and tunnel IP make it the
/// machine's own unique-local address is refused before anything changes.
#[test]
fn a_mapped_join_refuses_an_ipv6_tunnel_address_that_is_the_machines_own() {
    let mut r = mapped_dual_join(|f| {
        f.machine_addresses
            .push("fd6b:7767::644d:2".parse().unwrap())
    });
    assert!(!r.take_log().contains(&"ConfigureNetwork".to_string()));
    let e = r.s.outcome().unwrap_err().to_string();
    assert!(
        e.contains("fd6b:7767::644d:2") && e.contains("this machine already has that address"),
        "{e}"
    );
}

/// Security review: a new /96 in ipv6.json while a mapped session is joined moves the IPv6
/// tunnel address only after the machine's rules: a /96 whose address would be the API
/// server's IPv6 address is refused, the old address stays and `kwg status` says why.
#[test]
fn a_new_ipv6_prefix_of_a_mapped_session_may_not_make_the_api_servers_address_local() {
    let mut r = mapped_dual_join(|f| f.api_server.push("fd12:3456::644d:2".parse().unwrap()));
    assert_eq!(r.s.phase(), Phase::Serving);
    assert_eq!(
        r.s.state().unwrap().tunnel_ip6(),
        Some("fd6b:7767::644d:2".parse().unwrap())
    );
    let mut hostile = dual_info(&r.gateway);
    hostile.ipv6.as_mut().unwrap().tunnel_cidr = "fd12:3456::/96".parse().unwrap();
    let (addresses, add, ..) = follow(&mut r, hostile);
    assert!(
        addresses.is_empty() && add.is_empty(),
        "{addresses:?} {add:?}"
    );
    let refused = &r.s.plan().unwrap().refused.as_ref().expect("refused").1;
    assert!(
        refused.contains("fd12:3456::644d:2") && refused.contains("the API server's address"),
        "{refused}"
    );
    assert_eq!(
        r.s.state().unwrap().tunnel_ip6(),
        Some("fd6b:7767::644d:2".parse().unwrap())
    );
}

/// Security review: a new IPv4 tunnel IP read while a mapped session is joined (another
/// gateway key) moves its IPv6 twin too, so the twin meets the machine's rules: one that would
/// be the machine's IPv6 DNS server is refused and both old addresses stay.
#[test]
fn a_new_tunnel_ip_of_a_mapped_session_may_not_make_the_dns_servers_address_local() {
    let mut r = mapped_dual_join(|f| {
        f.resolv_conf = Some(b"nameserver 192.0.2.53\nnameserver fd6b:7767::644d:9\n".to_vec())
    });
    assert_eq!(r.s.phase(), Phase::Serving);
    let mut moved = Vec::new();
    r.s.handle(
        Event::GatewayInfo(Box::new(dual_info(&PrivateKey::generate()))),
        r.now,
    );
    r.pump(|a| match a {
        Action::ChangeAddress { old, new, .. } => {
            moved.push((*old, *new));
            None
        }
        Action::WaitTunnelIp { .. } => Some(Some(Event::TunnelIp("100.77.0.9".parse().unwrap()))),
        _ => None,
    });
    assert!(moved.is_empty(), "{moved:?}");
    let refused = &r.s.plan().unwrap().refused.as_ref().expect("refused").1;
    assert!(
        refused.contains("fd6b:7767::644d:9") && refused.contains("this machine's DNS server"),
        "{refused}"
    );
    assert_eq!(
        r.s.state().unwrap().tunnel_ip6(),
        Some("fd6b:7767::644d:2".parse().unwrap())
    );
}
