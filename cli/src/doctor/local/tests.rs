use super::*;
use crate::doctor::check::Outcome;
use kwg_contract::LeaseStatus;
use kwg_host::netlink::MAIN_TABLE;

fn route(dest: &str, dev: &str, table: u32) -> RouteEntry {
    RouteEntry {
        destination: dest.parse().unwrap(),
        interface: Some(dev.into()),
        gateway: None,
        table,
    }
}

fn cluster() -> Vec<(IpNet, &'static str)> {
    vec![
        ("10.96.0.0/12".parse().unwrap(), "service CIDR"),
        ("10.244.0.0/16".parse().unwrap(), "pod CIDR"),
    ]
}

#[test]
fn a_route_of_another_vpn_over_a_cluster_subnet_names_both_ways_out() {
    let interfaces = ["lo", "eth0", "kwg0", "tailscale0", "wg0"].map(String::from);
    let existing = [
        route("0.0.0.0/0", "eth0", MAIN_TABLE),
        route("192.168.1.0/24", "eth0", MAIN_TABLE),
        route("10.96.0.1/32", "kwg0", MAIN_TABLE),
        route("10.96.0.0/32", "eth0", 255),
        route("10.0.0.0/8", "tailscale0", 52),
    ];
    let c = routes(&cluster(), &existing, "kwg0", &interfaces);
    // Service and pod CIDRs are mapped at join (virtual subnets): a warning that says so.
    assert_eq!(c.outcome, Outcome::Warn);
    assert_eq!(c.code, None);
    assert_eq!(
        c.detail,
        "10.96.0.0/12 (service CIDR) overlaps the route 10.0.0.0/8 dev tailscale0 table 52 (another VPN: tailscale0); \
         10.244.0.0/16 (pod CIDR) overlaps the route 10.0.0.0/8 dev tailscale0 table 52 (another VPN: tailscale0); \
         other VPN interfaces: tailscale0, wg0"
    );
    let fix = c.fix.unwrap();
    assert!(
        fix.contains("--allow-conflicting-subnets 10.96.0.0/12"),
        "{fix}"
    );
    assert!(fix.contains("--never-proxy 10.96.0.0/12"), "{fix}");
    assert!(
        fix.starts_with("kwg join maps 10.96.0.0/12, 10.244.0.0/16 onto a free range of the same size from --map-pool (default 10.224.0.0/11)"),
        "{fix}"
    );
    // An --also-proxy subnet is not mapped: its overlap still fails the join.
    let mut more = cluster();
    more.push(("10.1.0.0/16".parse().unwrap(), "--also-proxy"));
    let c = routes(&more, &existing, "kwg0", &interfaces);
    assert_eq!(c.outcome, Outcome::Fail);
    assert_eq!(c.code, Some(ExitCode::LocalConflict));
    assert!(
        c.fix
            .unwrap()
            .starts_with("kwg join --allow-conflicting-subnets 10.96.0.0/12")
    );
    // Without the overlapping route: a pass that still lists the other VPNs.
    let ok = routes(&cluster(), &existing[..4], "kwg0", &interfaces);
    assert_eq!(ok.outcome, Outcome::Pass);
    assert_eq!(
        ok.detail,
        "10.96.0.0/12, 10.244.0.0/16 overlap no route of this machine; other VPN interfaces: tailscale0, wg0"
    );
    assert!(is_vpn("utun3") && is_vpn("tun0") && !is_vpn("eth0") && !is_vpn("veth12"));
}

#[test]
fn udp_through_the_tunnel_passes_or_names_the_blocked_endpoint() {
    let now: DateTime<Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
    let probe = |answered| UdpProbe::Tunnel {
        endpoint: "192.0.2.1:31820".into(),
        answered,
        last_handshake: Some("2026-01-01T00:00:20Z".parse().unwrap()),
        fallback: None,
    };
    let ok = udp(&probe(true), now, Duration::from_secs(3));
    assert_eq!(ok.outcome, Outcome::Pass);
    assert!(
        ok.detail.contains("last handshake 40s ago"),
        "{}",
        ok.detail
    );
    let blocked = udp(&probe(false), now, Duration::from_secs(3));
    assert_eq!(blocked.code, Some(ExitCode::GatewayUnreachable));
    assert!(
        blocked
            .detail
            .starts_with("no answer from the gateway through the tunnel within 3 s")
    );
    assert!(
        blocked
            .fix
            .unwrap()
            .starts_with("allow outgoing UDP to 192.0.2.1:31820")
    );
    // Working over the TCP fallback: a warning that says why UDP is not used.
    let tcp = UdpProbe::Tunnel {
        endpoint: "tcp 192.0.2.1:31821".into(),
        answered: true,
        last_handshake: None,
        fallback: Some((
            "tcp".into(),
            "no answer to a handshake over UDP within 3 s".into(),
        )),
    };
    let w = udp(&tcp, now, Duration::from_secs(3));
    assert_eq!(w.outcome, Outcome::Warn);
    assert!(
        w.detail.contains("over tcp (tcp 192.0.2.1:31821"),
        "{}",
        w.detail
    );
    assert!(
        w.detail
            .ends_with("not UDP: no answer to a handshake over UDP within 3 s")
    );
}

#[test]
fn udp_while_not_joined_is_honest_about_silence() {
    let now = Utc::now();
    let w = Duration::from_secs(1);
    let silent = udp(
        &UdpProbe::Initiations(vec![("192.0.2.1:31820".into(), Initiation::NoReply)]),
        now,
        w,
    );
    assert_eq!(silent.outcome, Outcome::Skip);
    assert!(silent.detail.starts_with("not tested: not joined"));
    let refused = udp(
        &UdpProbe::Initiations(vec![
            ("192.0.2.1:31820".into(), Initiation::NoReply),
            (
                "192.0.2.2:31820".into(),
                Initiation::Refused("connection refused".into()),
            ),
        ]),
        now,
        w,
    );
    assert_eq!(refused.code, Some(ExitCode::GatewayUnreachable));
    assert!(refused.detail.starts_with("192.0.2.2:31820 refuses UDP"));
    let cookie = UdpProbe::Initiations(vec![("192.0.2.1:31820".into(), Initiation::Answered)]);
    assert_eq!(udp(&cookie, now, w).outcome, Outcome::Pass);
}

#[test]
fn dns_passes_only_when_kwg_answered_and_names_the_fix_per_mode() {
    let probe = |mode: &str, answer| DnsProbe::Joined {
        mode: mode.into(),
        forwarder: "127.77.0.53:53".into(),
        name: "kubernetes.default.svc.cluster.local".into(),
        answer,
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        points_at_kwg: None,
    };
    let ok = dns(
        &probe("resolv-conf", Ok(vec!["10.96.0.1".parse().unwrap()])),
        "kwg0",
    );
    assert_eq!(ok.outcome, Outcome::Pass);
    let other = dns(
        &probe("resolv-conf", Ok(vec!["203.0.113.9".parse().unwrap()])),
        "kwg0",
    );
    assert_eq!(other.code, Some(ExitCode::DnsVerification));
    assert!(other.detail.contains("another resolver answered"));
    assert!(
        other
            .fix
            .unwrap()
            .contains("/etc/resolv.conf should name kwg's forwarder 127.77.0.53:53")
    );
    let lost = dns(&probe("resolved", Err("NXDOMAIN".into())), "kwg0");
    assert!(lost.fix.unwrap().starts_with("`resolvectl status kwg0`"));
    // resolv.conf still names kwg: the tunnel lost the answer, nothing rewrote the file.
    let mut behind = probe("resolv-conf", Err("no answer within 5 s".into()));
    if let DnsProbe::Joined { points_at_kwg, .. } = &mut behind {
        *points_at_kwg = Some(true);
    }
    let behind = dns(&behind, "kwg0");
    assert!(
        behind
            .detail
            .contains("got no answer from the cluster DNS through the tunnel"),
        "{}",
        behind.detail
    );
    assert!(!behind.fix.unwrap().contains("rewrote"));
    assert_eq!(dns(&DnsProbe::Off, "kwg0").outcome, Outcome::Skip);
}

#[test]
fn the_daemon_line_carries_the_lease_and_warns_while_renewal_fails() {
    let now: DateTime<Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
    let mut s = Status::example();
    s.lease = Some(LeaseStatus {
        ttl_secs: 900,
        renewed: Some("2026-01-01T00:00:00Z".parse().unwrap()),
        expires: Some("2026-01-01T00:15:00Z".parse().unwrap()),
        failing_since: None,
        error: None,
        failures: 0,
        next_attempt: None,
        reregistering: false,
    });
    let ok = daemon(&DaemonProbe::Running(Box::new(s.clone())), now);
    assert_eq!(ok.outcome, Outcome::Pass);
    assert_eq!(
        ok.detail,
        "pid 4242, laptop as 100.77.0.2 on kwg0; renewed 1m ago, lease ends in 14m"
    );
    let l = s.lease.as_mut().unwrap();
    l.failing_since = Some("2026-01-01T00:00:20Z".parse().unwrap());
    l.error = Some("connection refused".into());
    l.next_attempt = Some("2026-01-01T00:01:08Z".parse().unwrap());
    let failing = daemon(&DaemonProbe::Running(Box::new(s)), now);
    assert_eq!(failing.outcome, Outcome::Warn);
    assert!(
        failing.detail.ends_with(
            "renewal failing since 40s (connection refused), retrying in 8s; lease ends in 14m"
        ),
        "{}",
        failing.detail
    );
    let unknown = daemon(&DaemonProbe::Unreadable("/var/lib/kwg".into()), now);
    assert_eq!(unknown.outcome, Outcome::Warn);
    assert!(unknown.fix.unwrap().contains("as root"));
    let stopped = daemon(&DaemonProbe::NoAnswer("pid 7: timed out".into()), now);
    assert_eq!(stopped.outcome, Outcome::Fail);
    assert!(stopped.fix.unwrap().contains("kill -CONT"));
    let dead = daemon(&DaemonProbe::Dead, now);
    assert_eq!(dead.outcome, Outcome::Fail);
    assert_eq!(dead.fix.unwrap(), "run kwg leave, then kwg join");
}

#[test]
fn a_degraded_daemon_fails_with_each_health_line() {
    let now: DateTime<Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
    let mut s = Status::example();
    s.state = Some(kwg_contract::ConnectionState::Degraded);
    s.health = vec![kwg_contract::HealthIssue {
        kind: kwg_contract::HealthKind::RoutesMissing,
        message: "routes missing from kwg0: 10.96.0.0/12".into(),
        fix: "run kwg leave, then kwg join".into(),
    }];
    let c = daemon(&DaemonProbe::Running(Box::new(s)), now);
    assert_eq!(c.outcome, Outcome::Fail);
    assert_eq!(
        c.detail,
        "pid 4242, laptop as 100.77.0.2 on kwg0; Degraded: routes missing from kwg0: 10.96.0.0/12"
    );
    assert_eq!(c.fix.unwrap(), "run kwg leave, then kwg join");
}
