use super::*;

#[test]
fn defaults_match_the_contract() {
    let c = Config::defaults();
    assert_eq!(
        (c.kwg_namespace.as_str(), c.gateway_namespace.as_str()),
        ("kwg-system", "kwg-gateway")
    );
    assert_eq!(c.tunnel_cidr.to_string(), "100.77.0.0/16");
    assert_eq!(c.tunnel_cidr_flag, None, "unset: the key Secret's");
    let set = Config::parse_from(["kwg-gateway", "--tunnel-cidr", "100.99.0.0/16"]);
    assert_eq!(set.tunnel_cidr_flag, Some("100.99.0.0/16".parse().unwrap()));
    assert_eq!(c.admin_addr.port(), kwg_contract::ADMIN_PORT);
    assert_eq!(c.listen_port, 51820);
    assert_eq!(c.tcp_pending_per_source, 64);
    assert_eq!((c.max_peers_per_owner, c.max_secret_bytes), (20, 16_384));
    assert_eq!(c.max_lease, Duration::from_secs(24 * 3600));
    assert!(Config::try_parse_from(["kwg-gateway", "--max-lease", "0s"]).is_err());
    assert_eq!(
        (c.reach, c.reach_refresh),
        (Reach::Rbac, Duration::from_secs(60))
    );
    assert_eq!(
        c.trust_peer_groups, None,
        "peer groups count where the admission policy makes them the owner's"
    );
    let on = Config::parse_from(["kwg-gateway", "--trust-peer-groups"]);
    assert_eq!(on.trust_peer_groups, Some(true));
    let off = Config::parse_from(["kwg-gateway", "--trust-peer-groups=false"]);
    assert_eq!(off.trust_peer_groups, Some(false));
}

#[test]
fn lists_split_on_commas() {
    let c = Config::parse_from([
        "kwg-gateway",
        "--allow-cidr",
        "192.0.2.0/24,198.51.100.7/32",
    ]);
    assert_eq!(c.allow_cidr.len(), 2);
}

#[test]
fn random_tunnel_cidrs_are_the_20s_of_the_shared_space() {
    assert_eq!(random_tunnel_cidr(0).to_string(), "100.64.0.0/20");
    assert_eq!(random_tunnel_cidr(1).to_string(), "100.64.16.0/20");
    assert_eq!(random_tunnel_cidr(1023).to_string(), "100.127.240.0/20");
    assert_eq!(random_tunnel_cidr(1024), random_tunnel_cidr(0));
    let shared: ipnet::Ipv4Net = "100.64.0.0/10".parse().unwrap();
    for n in [7, 500, 999] {
        assert!(shared.contains(&random_tunnel_cidr(n)));
    }
}

#[test]
fn tunnel_cidrs_are_private_or_shared_space_of_8_to_30_outside_the_cluster_ranges() {
    let net = |s: &str| -> Ipv4Net { s.parse().unwrap() };
    let cluster: Vec<IpNet> = ["10.96.0.0/12", "10.244.0.0/16", "fd00::/108"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let check = |s: &str| check_tunnel_cidr(net(s), "--tunnel-cidr", "pick another", &cluster);
    for good in [
        "100.77.0.0/16",
        "100.64.0.0/10",
        "10.0.0.0/12",
        "172.16.0.0/12",
        "192.168.100.0/30",
    ] {
        assert_eq!(check(good), Ok(()), "{good}");
    }
    assert_eq!(check(&random_tunnel_cidr(77).to_string()), Ok(()));
    assert_eq!(check(&legacy_tunnel_cidr().to_string()), Ok(()));
    assert_eq!(
        check("0.0.0.0/0").unwrap_err(),
        "tunnel CIDR 0.0.0.0/0 from --tunnel-cidr is not a /8 to /30: pick another"
    );
    for bad in [
        "8.8.8.0/24",
        "100.128.0.0/16",
        "172.32.0.0/16",
        "169.254.0.0/16",
    ] {
        let e = check(bad).unwrap_err();
        assert!(e.contains("is not inside private"), "{bad}: {e}");
    }
    for short_or_long in ["10.0.0.0/7", "10.0.0.0/31", "10.0.0.1/32"] {
        assert!(check(short_or_long).unwrap_err().contains("/8 to /30"));
    }
    // Overlapping a Service or pod range either way round.
    assert_eq!(
        check("10.244.8.0/24").unwrap_err(),
        "tunnel CIDR 10.244.8.0/24 from --tunnel-cidr overlaps the cluster range 10.244.0.0/16: pick another"
    );
    assert!(check("10.0.0.0/8").unwrap_err().contains("10.96.0.0/12"));
}
