use super::*;
use crate::rules::tests::{TenOnly, facts, n};

const ALICE: Peer = Peer {
    uid: 1000,
    pid: Some(42),
};
const BOB: Peer = Peer {
    uid: 1001,
    pid: Some(43),
};
const ROOT: Peer = Peer {
    uid: 0,
    pid: Some(1),
};

fn open(r: &mut Registry, peer: Peer, name: &str) -> u64 {
    r.open(peer, VERSION, name.into(), None, vec![], vec![])
        .unwrap()
}

/// Plans and applies `op` as the server would.
fn apply(r: &mut Registry, id: u64, op: Op) -> Result<Vec<Change>, Refusal> {
    let changes = r.plan(id, &op, &facts(), &TenOnly)?;
    for c in &changes {
        r.journalled(id, c);
        r.applied(id, c, Some(7));
    }
    Ok(changes)
}

#[test]
fn a_session_creates_its_link_then_addresses_routes_and_firewall_and_undoes_them_in_reverse() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let id = open(&mut r, ALICE, "kwg0");
    let early = r.plan(id, &Op::Firewall, &facts(), &TenOnly).unwrap_err();
    assert_eq!(
        early.message,
        "the session has no link yet: send createTun first"
    );
    apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
    apply(
        &mut r,
        id,
        Op::SetAddress {
            address: n("10.77.0.2/32"),
        },
    )
    .unwrap();
    apply(
        &mut r,
        id,
        Op::Routes {
            add: vec![n("10.96.0.1/12"), n("10.244.0.0/16")],
            remove: vec![],
        },
    )
    .unwrap();
    apply(&mut r, id, Op::Firewall).unwrap();
    let s = r.get(id).unwrap();
    assert_eq!(s.routes, vec![n("10.96.0.0/12"), n("10.244.0.0/16")]);
    let undo = r.close(id);
    assert_eq!(
        undo,
        vec![
            Undo::DeleteRoute {
                name: "kwg0".into(),
                route: n("10.244.0.0/16")
            },
            Undo::DeleteRoute {
                name: "kwg0".into(),
                route: n("10.96.0.0/12")
            },
            Undo::DeleteAddress {
                name: "kwg0".into(),
                address: n("10.77.0.2/32")
            },
            Undo::RemoveFirewall {
                table: "kwg_kwg0".into()
            },
            Undo::DeleteLink {
                name: "kwg0".into(),
                ifindex: Some(7)
            },
        ]
    );
    assert!(r.get(id).is_none());
}

#[test]
fn a_removed_route_or_replaced_address_leaves_the_journal() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let id = open(&mut r, ALICE, "kwg0");
    apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
    apply(
        &mut r,
        id,
        Op::SetAddress {
            address: n("10.77.0.2/32"),
        },
    )
    .unwrap();
    let c = apply(
        &mut r,
        id,
        Op::SetAddress {
            address: n("10.77.0.3/32"),
        },
    )
    .unwrap();
    assert_eq!(
        c[1],
        Change::DeleteAddress {
            name: "kwg0".into(),
            address: n("10.77.0.2/32")
        }
    );
    apply(
        &mut r,
        id,
        Op::Routes {
            add: vec![n("10.96.0.0/12")],
            remove: vec![],
        },
    )
    .unwrap();
    apply(
        &mut r,
        id,
        Op::Routes {
            add: vec![],
            remove: vec![n("10.96.0.0/12"), n("10.0.0.0/8")],
        },
    )
    .unwrap();
    let s = r.get(id).unwrap();
    assert!(s.routes.is_empty());
    assert_eq!(s.addresses, vec![n("10.77.0.3/32")]);
    // The link, its firewall (loaded with it) and the address left.
    assert_eq!(s.undo.len(), 3, "{:?}", s.undo);
}

#[test]
fn a_dual_stack_session_has_one_address_per_family() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let id = open(&mut r, ALICE, "kwg0");
    apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
    // The helper's real rule (unique local IPv6 is private space), applied as the server does.
    let try_set = |r: &mut Registry, a: &str| {
        let op = Op::SetAddress { address: n(a) };
        let changes = r.plan(id, &op, &facts(), &crate::policy::TrustRules)?;
        for c in &changes {
            r.journalled(id, c);
            r.applied(id, c, Some(7));
        }
        Ok::<_, Refusal>(changes)
    };
    let set = |r: &mut Registry, a: &str| try_set(r, a).unwrap();
    set(&mut r, "10.77.0.2/32");
    // The IPv6 tunnel address joins the IPv4 one.
    let c = set(&mut r, "fd6b:7767::a4d:2/128");
    assert_eq!(c.len(), 1, "{c:?}");
    // A new IPv4 address replaces the IPv4 one only, and the IPv6 one likewise.
    let c = set(&mut r, "10.77.0.3/32");
    assert_eq!(
        c[1..],
        [Change::DeleteAddress {
            name: "kwg0".into(),
            address: n("10.77.0.2/32")
        }]
    );
    let c = set(&mut r, "fd6b:7767::a4d:3/128");
    assert_eq!(
        c[1..],
        [Change::DeleteAddress {
            name: "kwg0".into(),
            address: n("fd6b:7767::a4d:2/128")
        }]
    );
    let mut have = r.get(id).unwrap().addresses.clone();
    have.sort();
    assert_eq!(have, [n("10.77.0.3/32"), n("fd6b:7767::a4d:3/128")]);
    // The helper's rules hold for IPv6 as for IPv4: not public, one host.
    for bad in ["2001:db8::1/128", "fd6b:7767::/96"] {
        let e = try_set(&mut r, bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{bad}: {e:?}");
    }
}

/// The IPv6 tunnel address goes when the cluster withdraws `ipv6.json` (a root join removes
/// it; the helper had no request for it): only an address the session's link got from the
/// helper, journalled out with it.
#[test]
fn a_session_removes_only_an_address_the_helper_gave_its_link() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    let b = open(&mut r, BOB, "kwg1");
    let early = apply(
        &mut r,
        a,
        Op::RemoveAddress {
            address: n("10.77.0.2/32"),
        },
    )
    .unwrap_err();
    assert_eq!(early.kind, ErrorKind::BadRequest, "{early}");
    for (id, address) in [(a, "10.77.0.2/32"), (b, "10.78.0.2/32")] {
        apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
        apply(
            &mut r,
            id,
            Op::SetAddress {
                address: n(address),
            },
        )
        .unwrap();
    }
    let six = n("fd6b:7767::a4d:2/128");
    let changes = r
        .plan(
            a,
            &Op::SetAddress { address: six },
            &facts(),
            &crate::policy::TrustRules,
        )
        .unwrap();
    for c in &changes {
        r.journalled(a, c);
        r.applied(a, c, Some(7));
    }
    // Another session's address, the machine's own, one never given: refused, naming the link.
    for other in ["10.78.0.2/32", "192.168.1.10/24", "fd6b:7767::a4d:3/128"] {
        let e = apply(&mut r, a, Op::RemoveAddress { address: n(other) }).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{other}: {e}");
        assert!(
            e.message
                .starts_with(&format!("refused to remove address {other}"))
                && e.message.contains("this session's link kwg0"),
            "{e}"
        );
    }
    assert_eq!(r.get(b).unwrap().addresses, [n("10.78.0.2/32")]);
    let c = apply(&mut r, a, Op::RemoveAddress { address: six }).unwrap();
    assert_eq!(
        c,
        [Change::DeleteAddress {
            name: "kwg0".into(),
            address: six
        }]
    );
    let s = r.get(a).unwrap();
    assert_eq!(s.addresses, [n("10.77.0.2/32")]);
    let gone = Undo::DeleteAddress {
        name: "kwg0".into(),
        address: six,
    };
    assert!(!s.undo.contains(&gone), "{:?}", s.undo);
    // Gone already: a second removal is refused (nothing of the machine is touched).
    let e = apply(&mut r, a, Op::RemoveAddress { address: six }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[test]
fn sessions_never_share_an_interface_or_overlap_and_say_whose_it_is() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    apply(
        &mut r,
        a,
        Op::Routes {
            add: vec![n("10.96.0.0/12")],
            remove: vec![],
        },
    )
    .unwrap();
    let e = r
        .open(BOB, VERSION, "kwg0".into(), None, vec![], vec![])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        e.message
            .starts_with("interface kwg0 is in use by another kwg session (uid 1000)")
    );
    let b = open(&mut r, BOB, "kwg1");
    apply(&mut r, b, Op::CreateTun { mtu: 1420 }).unwrap();
    let e = apply(
        &mut r,
        b,
        Op::Routes {
            add: vec![n("10.96.5.0/24")],
            remove: vec![],
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(
        e.message,
        "refused route 10.96.5.0/24: it overlaps what the kwg session on kwg0 (uid 1000) holds; leave that session first or route another subnet"
    );
    // Removing a route it does not hold changes nothing, so bob cannot take alice's routes down.
    let c = apply(
        &mut r,
        b,
        Op::Routes {
            add: vec![],
            remove: vec![n("10.96.0.0/12")],
        },
    )
    .unwrap();
    assert!(c.is_empty());
    assert_eq!(r.get(a).unwrap().routes, vec![n("10.96.0.0/12")]);
}

#[test]
fn others_cannot_see_or_end_a_session_root_can() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    assert_eq!(r.visible(BOB), vec![]);
    assert_eq!(r.visible(ALICE).len(), 1);
    assert_eq!(r.visible(ROOT).len(), 1);
    let e = r.endable(BOB, "kwg0").unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(
        e.message,
        "no session of yours on kwg0 (kwg-helper list shows yours)"
    );
    assert_eq!(r.endable(ALICE, "kwg0"), Ok(a));
    assert_eq!(r.endable(ROOT, "kwg0"), Ok(a));
}

#[test]
fn public_routes_need_consent_that_counts_for_the_caller() {
    let mut r = Registry::new(Limits::default(), vec![n("203.0.113.0/24")]);
    let a = r
        .open(
            ALICE,
            VERSION,
            "kwg0".into(),
            None,
            vec![n("8.8.8.0/24"), n("203.0.113.0/25")],
            vec![],
        )
        .unwrap();
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    let route = |net: &str| Op::Routes {
        add: vec![n(net)],
        remove: vec![],
    };
    // Alice's say-so counts only inside the helper's --allow-route.
    let e = apply(&mut r, a, route("8.8.8.0/24")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused);
    assert_eq!(
        e.message,
        "refused route 8.8.8.0/24: it is public address space"
    );
    apply(&mut r, a, route("203.0.113.0/25")).unwrap();
    // Root's counts as given.
    let root = r
        .open(
            ROOT,
            VERSION,
            "kwg1".into(),
            None,
            vec![n("8.8.8.0/24")],
            vec![],
        )
        .unwrap();
    apply(&mut r, root, Op::CreateTun { mtu: 1420 }).unwrap();
    apply(&mut r, root, route("8.8.8.0/24")).unwrap();
    // The machine's own DNS server stays off any tunnel.
    let e = apply(&mut r, root, route("10.53.0.0/16")).unwrap_err();
    assert!(
        e.message.ends_with("this machine's DNS server 10.53.0.53"),
        "{}",
        e.message
    );
}

#[test]
fn bad_opens_are_refused_with_what_to_do() {
    let mut r = Registry::new(
        Limits {
            per_uid: 1,
            total: 2,
        },
        vec![],
    );
    let e = r
        .open(ALICE, VERSION + 1, "kwg0".into(), None, vec![], vec![])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Version);
    let e = r
        .open(ALICE, VERSION, "eth0".into(), None, vec![], vec![])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let e = r
        .open(
            ALICE,
            VERSION,
            "kwg0".into(),
            Some("/run/user/1000/../../etc".into()),
            vec![],
            vec![],
        )
        .unwrap_err();
    assert!(e.message.contains("without . or .."));
    open(&mut r, ALICE, "kwg0");
    let e = r
        .open(ALICE, VERSION, "kwg1".into(), None, vec![], vec![])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    open(&mut r, BOB, "kwg1");
    let e = r
        .open(ROOT, VERSION, "kwg2".into(), None, vec![], vec![])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    let id = r.endable(ALICE, "kwg0").unwrap();
    let e = r
        .plan(id, &Op::CreateTun { mtu: 65000 }, &facts(), &TenOnly)
        .unwrap_err();
    assert!(e.message.contains("MTU"));
    let e = r
        .plan(
            id,
            &Op::Routes {
                add: vec![n("10.0.0.0/24"); MAX_ROUTES + 1],
                remove: vec![],
            },
            &facts(),
            &TenOnly,
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest, "no link yet comes first");
}

#[test]
fn the_tunnel_address_is_never_a_host_on_the_machines_networks() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let id = open(&mut r, ALICE, "kwg0");
    apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
    // 10.1.2.10 is a LAN neighbour of this machine (10.1.2.0/24 dev eth0).
    let e = apply(
        &mut r,
        id,
        Op::SetAddress {
            address: n("10.1.2.10/32"),
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        e.message.starts_with(
            "refused address 10.1.2.10/32: it is inside the existing route 10.1.2.0/24"
        ),
        "{}",
        e.message
    );
    assert!(r.get(id).unwrap().addresses.is_empty());
}

#[test]
fn only_root_may_route_over_the_machines_networks() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let lan = n("10.1.2.0/24");
    let mut session = |peer: Peer, name: &str| {
        let id = r
            .open(
                peer,
                VERSION,
                name.into(),
                None,
                vec![],
                vec![n("10.1.0.0/16")],
            )
            .unwrap();
        apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
        apply(
            &mut r,
            id,
            Op::Routes {
                add: vec![n("10.1.2.128/25")],
                remove: vec![],
            },
        )
    };
    let e = session(ALICE, "kwg0").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(
        e.message,
        format!(
            "refused route 10.1.2.128/25: it overlaps the existing route {lan} dev eth0 (only root may route over it: join as root with --allow-conflicting-subnets 10.1.2.128/25)"
        )
    );
    assert!(session(ROOT, "kwg1").is_ok());
}

#[test]
fn the_firewall_is_loaded_with_the_link_before_its_descriptor_leaves() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let id = open(&mut r, ALICE, "kwg0");
    let c = apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
    assert_eq!(
        c,
        vec![
            Change::CreateTun {
                name: "kwg0".into(),
                mtu: 1420
            },
            Change::InstallFirewall {
                table: "kwg_kwg0".into(),
                name: "kwg0".into()
            },
        ]
    );
    assert!(r.get(id).unwrap().firewall);
    assert_eq!(apply(&mut r, id, Op::Firewall).unwrap(), vec![]);
}

#[test]
fn dns_points_the_resolver_file_only_at_the_sessions_own_forwarder_one_session_at_a_time() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    let b = open(&mut r, BOB, "kwg1");
    let listen: std::net::SocketAddr = "127.77.0.53:53".parse().unwrap();
    let fwd = listen.ip();
    let search = vec![
        "corp.example".to_string(),
        "emojivoto.svc.cluster.local".into(),
        "svc.cluster.local".into(),
        "cluster.local".into(),
    ];
    let resolv = |search: &[String]| Op::ResolvConf {
        forwarder: fwd,
        search: search.to_vec(),
    };
    for id in [a, b] {
        apply(&mut r, id, Op::CreateTun { mtu: 1420 }).unwrap();
    }
    // No forwarder bound by the helper: the file may not point anywhere.
    let e = apply(&mut r, a, resolv(&search)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    let e = apply(
        &mut r,
        a,
        Op::DnsSocket {
            listen: "127.0.0.53:53".parse().unwrap(),
            tcp: false,
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    apply(&mut r, a, Op::DnsSocket { listen, tcp: false }).unwrap();
    apply(&mut r, a, Op::DnsSocket { listen, tcp: true }).unwrap();
    let e = apply(&mut r, b, Op::DnsSocket { listen, tcp: false }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    // A public search domain (every single label would be asked under it) is refused.
    let mut bad = search.clone();
    bad.push("google.com".into());
    let e = apply(&mut r, a, resolv(&bad)).unwrap_err();
    assert!(
        e.message.contains("refused search domain \"google.com\""),
        "{e}"
    );
    let changes = apply(&mut r, a, resolv(&search)).unwrap();
    let Change::WriteResolvConf { original, contents } = &changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(original, &facts().resolv_conf);
    assert!(
        contents.contains("nameserver 127.77.0.53\nnameserver 10.53.0.53\n"),
        "{contents}"
    );
    assert!(
        contents.contains(
            "search corp.example emojivoto.svc.cluster.local svc.cluster.local cluster.local\n"
        ),
        "{contents}"
    );
    assert!(r.get(a).unwrap().info().dns);
    // Another session cannot take the file while this one holds it.
    apply(
        &mut r,
        b,
        Op::DnsSocket {
            listen: "127.77.0.54:53".parse().unwrap(),
            tcp: false,
        },
    )
    .unwrap();
    let e = r
        .plan(
            b,
            &Op::ResolvConf {
                forwarder: "127.77.0.54".parse().unwrap(),
                search: vec![],
            },
            &facts(),
            &TenOnly,
        )
        .unwrap_err();
    assert!(
        e.message.contains("the kwg session on kwg0 (uid 1000)"),
        "{e}"
    );
    // The undo is the original text, taken out first when the user side ends DNS.
    assert_eq!(
        r.take_dns_undo(a),
        vec![Undo::RestoreResolvConf {
            original: facts().resolv_conf
        }]
    );
    assert!(!r.get(a).unwrap().info().dns);
    assert!(
        !r.close(a)
            .iter()
            .any(|u| matches!(u, Undo::RestoreResolvConf { .. }))
    );
}

#[test]
fn a_resolver_file_another_kwg_rewrote_is_not_taken() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    let listen: std::net::SocketAddr = "127.77.0.53:53".parse().unwrap();
    apply(&mut r, a, Op::DnsSocket { listen, tcp: false }).unwrap();
    let mut f = facts();
    f.resolv_conf =
        kwg_session::dns::resolvconf::render(&f.resolv_conf, "127.0.0.9".parse().unwrap(), &[]);
    let op = Op::ResolvConf {
        forwarder: listen.ip(),
        search: vec![],
    };
    let e = r.plan(a, &op, &f, &TenOnly).unwrap_err();
    assert!(
        e.message.contains("already rewritten by another kwg join"),
        "{e}"
    );
}

#[test]
fn a_session_binds_one_forwarder_udp_and_tcp_never_a_machine_resolvers_address() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    let dns = |listen: &str, tcp| Op::DnsSocket {
        listen: listen.parse().unwrap(),
        tcp,
    };
    // NetworkManager's dnsmasq and dnscrypt-proxy listen there: refused, as is the machine's
    // own nameserver inside the range.
    for other in ["127.0.1.1:53", "127.0.2.1:53"] {
        let e = apply(&mut r, a, dns(other, false)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert!(e.message.contains("127.77.0.0/24"), "{e}");
    }
    let mut f = facts();
    f.dns_servers.push("127.77.0.53".parse().unwrap());
    let e = r
        .plan(a, &dns("127.77.0.53:53", false), &f, &TenOnly)
        .unwrap_err();
    assert!(e.message.contains("nameserver of this machine"), "{e}");
    // One UDP socket and one TCP listener; a second of either is refused, and so is
    // another address (a session cannot hoard the range's port 53s).
    apply(&mut r, a, dns("127.77.0.53:53", false)).unwrap();
    apply(&mut r, a, dns("127.77.0.53:53", true)).unwrap();
    for again in [
        dns("127.77.0.53:53", false),
        dns("127.77.0.53:53", true),
        dns("127.77.0.54:53", false),
    ] {
        let e = apply(&mut r, a, again).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{e}");
    }
}

#[test]
fn a_failed_resolver_file_revert_stays_the_sessions_to_undo() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    let listen: std::net::SocketAddr = "127.77.0.53:53".parse().unwrap();
    apply(&mut r, a, Op::DnsSocket { listen, tcp: false }).unwrap();
    let op = Op::ResolvConf {
        forwarder: listen.ip(),
        search: vec![],
    };
    apply(&mut r, a, op).unwrap();
    let undo = r.take_dns_undo(a);
    assert_eq!(undo.len(), 1);
    // The restore failed: given back, the session still holds the file and its end restores it.
    r.return_dns_undo(a, undo.clone());
    assert!(r.get(a).unwrap().info().dns);
    assert!(r.get(a).unwrap().undo.contains(&undo[0]));
    assert!(r.close(a).contains(&undo[0]));
}

#[test]
fn resolved_dns_goes_only_on_the_sessions_own_link_to_its_own_forwarder() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    let link = link_op;
    let planned = [
        "~cluster.local",
        "emojivoto.svc.cluster.local",
        "~emojivoto",
    ];
    let e = apply(&mut r, a, link(&planned)).unwrap_err();
    assert!(e.message.contains("send createTun first"), "{e}");
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    // No forwarder of this session's yet: nothing for the link to point at.
    let e = apply(&mut r, a, link(&planned)).unwrap_err();
    assert!(e.message.contains("send dnsSocket first"), "{e}");
    let listen: std::net::SocketAddr = "127.77.0.53:53".parse().unwrap();
    apply(&mut r, a, Op::DnsSocket { listen, tcp: false }).unwrap();
    // Every name (`~.`), a public suffix or a public reverse zone: refused, nothing planned.
    for bad in [
        &["~."][..],
        &["~cluster.local", "~com"],
        &["~8.8.8.in-addr.arpa"],
    ] {
        let e = apply(&mut r, a, link(bad)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{bad:?}: {e}");
        assert!(!r.get(a).unwrap().info().dns);
    }
    let changes = apply(&mut r, a, link(&planned)).unwrap();
    let [Change::ConfigureResolved { name, link: cfg }] = &changes[..] else {
        panic!("{changes:?}")
    };
    // The session's own link (the ifindex the helper made) and forwarder, whatever was asked.
    assert_eq!(
        (name.as_str(), cfg.ifindex, cfg.server),
        ("kwg0", 7, listen)
    );
    assert!(r.get(a).unwrap().info().dns);
    // Namespaces come and go: the domains are replaced, the undo stays the one RevertLink.
    let changes = apply(&mut r, a, link(&["~cluster.local", "~late"])).unwrap();
    assert!(
        matches!(
            &changes[..],
            [Change::SetResolvedDomains { ifindex: 7, .. }]
        ),
        "{changes:?}"
    );
    let revert = Undo::RevertLink {
        name: "kwg0".into(),
        ifindex: 7,
    };
    assert_eq!(
        r.get(a)
            .unwrap()
            .undo
            .iter()
            .filter(|u| **u == revert)
            .count(),
        1
    );
    // revertDns takes it out first; a failed revert is given back and done at the end.
    assert_eq!(r.take_dns_undo(a), vec![revert.clone()]);
    assert!(!r.get(a).unwrap().info().dns);
    r.return_dns_undo(a, vec![revert.clone()]);
    assert!(r.get(a).unwrap().info().dns);
    let undo = r.close(a);
    assert_eq!(
        undo.first(),
        Some(&revert),
        "reverted before the link goes: {undo:?}"
    );
}

#[test]
fn a_user_holds_at_most_eight_forwarder_addresses_while_their_sockets_live_root_any() {
    let mut r = Registry::new(
        Limits {
            per_uid: 32,
            total: 64,
        },
        vec![],
    );
    let addr = |i: u8| std::net::SocketAddr::from(([127, 77, 0, 53 + i], 53));
    let bind = |r: &mut Registry, peer: Peer, i: u8| {
        let id = open(r, peer, &format!("kwg{i}"));
        apply(r, id, Op::CreateTun { mtu: 1420 }).unwrap();
        (
            id,
            apply(
                r,
                id,
                Op::DnsSocket {
                    listen: addr(i),
                    tcp: false,
                },
            ),
        )
    };
    // Sessions that bound a forwarder and ended: their descriptors may live on with the user.
    for i in 0..8 {
        let (id, got) = bind(&mut r, ALICE, i);
        got.unwrap();
        r.close(id);
    }
    let (_, got) = bind(&mut r, ALICE, 8);
    let e = got.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    assert_eq!(
        e.message,
        "refused DNS listen address 127.77.0.61:53: uid 1000 holds the forwarder sockets of 8 addresses of 127.77.0.0/24 already (at most 8 per user): end one of your kwg sessions, or the process still holding a forwarder's sockets"
    );
    // Another user, and root, are not held back by Alice's.
    bind(&mut r, BOB, 9).1.unwrap();
    for i in 10..20 {
        bind(&mut r, ROOT, i).1.unwrap();
    }
    // The ended sessions' addresses are the ones to probe; one found free counts no more.
    let probe = r.dns_to_probe(ALICE.uid);
    assert_eq!(probe.len(), 8);
    r.forget_dns(ALICE.uid, &probe[..1]);
    let (_, got) = bind(&mut r, ALICE, 20);
    got.unwrap();
}

/// The domains `names` (`~` for routing-only) as a `resolvedLink` request.
fn link_op(names: &[&str]) -> Op {
    Op::ResolvedLink {
        domains: names
            .iter()
            .map(|d| LinkDomain {
                name: d.trim_start_matches('~').into(),
                routing_only: d.starts_with('~'),
            })
            .collect(),
    }
}

#[test]
fn a_session_never_takes_the_names_on_another_sessions_link() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let with_forwarder = |r: &mut Registry, peer, name: &str, listen: &str| {
        let id = open(r, peer, name);
        apply(r, id, Op::CreateTun { mtu: 1420 }).unwrap();
        let listen = listen.parse().unwrap();
        apply(r, id, Op::DnsSocket { listen, tcp: false }).unwrap();
        id
    };
    let a = with_forwarder(&mut r, ALICE, "kwg0", "127.77.0.53:53");
    let b = with_forwarder(&mut r, BOB, "kwg1", "127.77.0.54:53");
    apply(
        &mut r,
        a,
        link_op(&[
            "~cluster.local",
            "emojivoto.svc.cluster.local",
            "~emojivoto",
        ]),
    )
    .unwrap();
    // Equal, under (resolved's longest match would win), above: refused, naming Alice's link.
    for bad in [
        &["~cluster.local"][..],
        &["~emojivoto.svc.cluster.local"],
        &["~svc.cluster.local"],
        &["~other", "~cluster.local."],
        &["~EMOJIVOTO"],
    ] {
        let e = apply(&mut r, b, link_op(bad)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{bad:?}: {e}");
        assert!(
            e.message.contains("kwg session on kwg0 (uid 1000)")
                && e.message.contains("that session must leave first"),
            "{bad:?}: {e}"
        );
        assert!(!r.get(b).unwrap().info().dns);
    }
    // Names of its own (another alias, another namespace): accepted.
    apply(&mut r, b, link_op(&["~svc.staging", "~books"])).unwrap();
    // Alice's session replacing its own domains is no overlap with itself.
    apply(&mut r, a, link_op(&["~cluster.local", "~late"])).unwrap();
    // Once Alice's link is reverted, its names are free.
    r.take_dns_undo(a);
    apply(&mut r, b, link_op(&["~cluster.local", "~emojivoto"])).unwrap();
}

#[test]
fn a_session_never_takes_the_names_of_another_link_in_resolved() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    let listen = "127.77.0.53:53".parse().unwrap();
    apply(&mut r, a, Op::DnsSocket { listen, tcp: false }).unwrap();
    let domain = |name: &str, routing_only| LinkDomain {
        name: name.into(),
        routing_only,
    };
    let mut f = facts();
    f.resolved_domains = vec![
        (3, domain("eng.corp.internal", true)),
        (2, domain("lan", false)),
        (0, domain("corp.example", false)),
        (2, domain(".", true)),
        // The session's own link (ifindex 7): its current domains are no conflict.
        (7, domain("cluster.local", true)),
    ];
    let plan = |names: &[&str]| r.plan(a, &link_op(names), &f, &TenOnly);
    for (bad, whose) in [
        ("~eng.corp.internal", "link 3 in systemd-resolved"),
        ("~x.eng.corp.internal", "link 3 in systemd-resolved"),
        ("~corp.internal", "link 3 in systemd-resolved"),
        ("~router.lan", "link 2 in systemd-resolved"),
        ("~svc.corp.example", "systemd-resolved's global domains"),
    ] {
        let e = plan(&["~cluster.local", bad]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{bad}: {e}");
        assert!(
            e.message
                .starts_with(&format!("refused link domain {bad}: it overlaps"))
                && e.message.contains(whose),
            "{bad}: {e}"
        );
    }
    // A `~.` elsewhere (the default route) is no domain to overlap.
    plan(&[
        "~cluster.local",
        "emojivoto.svc.cluster.local",
        "~emojivoto",
    ])
    .unwrap();
}

/// A namespace named like the last label of another link's domain (`lan` next to the LAN's
/// `home.lan`, OpenWrt's; `box` of `fritz.box` is a public suffix, left out by the rules anyway) is left out with the rule's sentence and the rest of the link's domains are
/// set; before, the whole request was refused and the session got no DNS at all.
#[test]
fn a_namespace_named_like_another_links_label_is_left_out_not_every_domain() {
    let mut r = Registry::new(Limits::default(), vec![]);
    let a = open(&mut r, ALICE, "kwg0");
    apply(&mut r, a, Op::CreateTun { mtu: 1420 }).unwrap();
    let listen = "127.77.0.53:53".parse().unwrap();
    apply(&mut r, a, Op::DnsSocket { listen, tcp: false }).unwrap();
    let mut f = facts();
    f.resolved_domains = vec![(
        2,
        LinkDomain {
            name: "home.lan".into(),
            routing_only: false,
        },
    )];
    let domains = |names: &[&str]| match link_op(names) {
        Op::ResolvedLink { domains } => domains,
        _ => unreachable!(),
    };
    let asked = domains(&[
        "~cluster.local",
        "emojivoto.svc.cluster.local",
        "~emojivoto",
        "~lan",
        "~de",
    ]);
    let (keep, out) = r.leave_out_namespaces(a, asked, &f, &TenOnly);
    assert_eq!(
        keep,
        domains(&[
            "~cluster.local",
            "emojivoto.svc.cluster.local",
            "~emojivoto"
        ])
    );
    let out: Vec<(String, String)> = out
        .into_iter()
        .map(|(d, why)| (d.name, why.message))
        .collect();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, "lan");
    assert!(
        out[0]
            .1
            .starts_with("refused link domain ~lan: it overlaps home.lan of link 2"),
        "{out:?}"
    );
    assert_eq!(out[1].0, "de");
    r.plan(a, &Op::ResolvedLink { domains: keep }, &f, &TenOnly)
        .unwrap();
    // Only namespaces are left out: another domain refused still refuses the request, and so
    // does a request whose every domain would be left out.
    for asked in [&["~svc.home.lan", "~emojivoto"][..], &["~lan"]] {
        let (keep, out) = r.leave_out_namespaces(a, domains(asked), &f, &TenOnly);
        assert!(out.is_empty(), "{asked:?}: {out:?}");
        let e = r
            .plan(a, &Op::ResolvedLink { domains: keep }, &f, &TenOnly)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{asked:?}: {e}");
    }
}
