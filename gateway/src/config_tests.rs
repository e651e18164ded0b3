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
