use super::*;
use clap::Parser;

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn parses_the_api_error() {
    let msg = "Service \"x\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12";
    assert_eq!(parse_valid_range(msg), nets(&["10.96.0.0/12"]));
    let dual = "... The range of valid IPs is 10.96.0.0/12 and fd00:10:96::/112.";
    assert_eq!(
        parse_valid_range(dual),
        nets(&["10.96.0.0/12", "fd00:10:96::/112"])
    );
    assert!(parse_valid_range("forbidden").is_empty());
    assert!(parse_valid_range("The range of valid IPs is garbage 10.0.0.0/8").is_empty());
}

fn node(json: serde_json::Value) -> Node {
    serde_json::from_value(json).unwrap()
}

#[test]
fn pod_cidrs_prefer_the_list() {
    let nodes = [
        node(
            serde_json::json!({"spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00::/64"]}}),
        ),
        node(serde_json::json!({"spec": {"podCIDR": "10.244.1.0/24"}})),
        node(serde_json::json!({"spec": {}})),
    ];
    assert_eq!(
        pod_cidrs_from_nodes(&nodes),
        nets(&["10.244.0.0/24", "fd00::/64", "10.244.1.0/24"])
    );
}

#[test]
fn endpoints_load_balancer_first() {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "spec": {"type": "LoadBalancer", "ports": [{"port": 51820, "protocol": "UDP", "nodePort": 31820}]},
        "status": {"loadBalancer": {"ingress": [{"hostname": "gw.example.com"}, {"ip": "203.0.113.5"}]}}
    }))
    .unwrap();
    let nodes = [node(serde_json::json!({"status": {"addresses": [
        {"type": "Hostname", "address": "node1"},
        {"type": "InternalIP", "address": "192.0.2.1"},
        {"type": "ExternalIP", "address": "198.51.100.1"}
    ]}}))];
    let eps: Vec<String> = endpoints(&svc, &nodes)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        eps,
        [
            "gw.example.com:51820",
            "203.0.113.5:51820",
            "198.51.100.1:31820",
            "192.0.2.1:31820"
        ]
    );
}

#[test]
fn node_port_service() {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "spec": {"type": "NodePort", "ports": [{"port": 51820, "protocol": "UDP", "nodePort": 31820}]}
    }))
    .unwrap();
    let nodes = [node(
        serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}),
    )];
    let eps: Vec<String> = endpoints(&svc, &nodes)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(eps, ["192.0.2.1:31820"]);
}

#[test]
fn assemble_prefers_objects_then_probe_then_flags() {
    let cfg = Config::parse_from([
        "kwg-gateway",
        "--service-cidr",
        "10.0.0.0/16",
        "--pod-cidr",
        "10.1.0.0/16",
        "--dns-ip",
        "10.0.0.10",
    ]);
    let flags = assemble(&cfg, &Objects::default()).unwrap();
    assert_eq!(flags.service_cidrs, nets(&["10.0.0.0/16"]));
    assert_eq!(flags.pod_cidrs, nets(&["10.1.0.0/16"]));
    assert_eq!(flags.dns_ip, Some("10.0.0.10".parse().unwrap()));
    assert!(flags.endpoints.is_empty());

    let cidr: ServiceCIDR =
        serde_json::from_value(serde_json::json!({"spec": {"cidrs": ["10.96.0.0/12"]}})).unwrap();
    let dns: Service =
        serde_json::from_value(serde_json::json!({"spec": {"clusterIP": "10.96.0.10"}})).unwrap();
    let gw: Service = serde_json::from_value(serde_json::json!({
        "spec": {"ports": [{"port": 51820, "protocol": "UDP", "nodePort": 31820}]}
    }))
    .unwrap();
    let mut objs = Objects {
        nodes: vec![Arc::new(node(serde_json::json!({
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}
        })))],
        service_cidrs: vec![Arc::new(cidr)],
        probed_service_cidrs: nets(&["10.97.0.0/16"]),
        dns: Some(Arc::new(dns)),
        gateway: Some(Arc::new(gw)),
    };
    let d = assemble(&cfg, &objs).unwrap();
    assert_eq!(d.service_cidrs, nets(&["10.96.0.0/12"]));
    assert_eq!(d.pod_cidrs, nets(&["10.244.0.0/24"]));
    assert_eq!(d.dns_ip, Some("10.96.0.10".parse().unwrap()));
    assert_eq!(d.endpoints[0].to_string(), "192.0.2.1:31820");
    // An IPv6-primary dual-stack cluster: clusterIP is the IPv6 address, the IPv4 one is in
    // clusterIPs only.
    let dual: Service = serde_json::from_value(serde_json::json!({"spec": {
        "clusterIP": "fd00:10:96::a",
        "clusterIPs": ["fd00:10:96::a", "10.96.0.10"]
    }}))
    .unwrap();
    objs.dns = Some(Arc::new(dual));
    assert_eq!(
        assemble(&cfg, &objs).unwrap().dns_ip,
        Some("10.96.0.10".parse().unwrap())
    );
    // IPv6 only: the flag's address, as when there is no such Service.
    let v6: Service = serde_json::from_value(serde_json::json!({"spec": {
        "clusterIP": "fd00:10:96::a", "clusterIPs": ["fd00:10:96::a"]
    }}))
    .unwrap();
    objs.dns = Some(Arc::new(v6));
    let d = assemble(&cfg, &objs).unwrap();
    assert_eq!(d.dns_ip, Some("10.0.0.10".parse().unwrap()));
    // ... and its IPv6 address for ipv6.json.
    assert_eq!(d.dns_ip6, Some("fd00:10:96::a".parse().unwrap()));
    objs.service_cidrs.clear();
    assert_eq!(
        assemble(&cfg, &objs).unwrap().service_cidrs,
        nets(&["10.97.0.0/16"])
    );
    objs.probed_service_cidrs.clear();
    let bare = Config::defaults();
    assert!(matches!(
        assemble(&bare, &objs),
        Err(GatewayError::NoServiceCidr)
    ));
}
