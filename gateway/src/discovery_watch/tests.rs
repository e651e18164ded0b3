use super::*;
use kwg_contract::Endpoint;

fn found(endpoints: &[&str], pod_cidr: &str) -> Discovered {
    Discovered {
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        pod_cidrs: vec![pod_cidr.parse().unwrap()],
        dns_ip: Some("10.96.0.10".parse().unwrap()),
        dns_ip6: None,
        endpoints: endpoints
            .iter()
            .map(|e| e.parse::<Endpoint>().unwrap())
            .collect(),
    }
}

fn base() -> InfoBase {
    InfoBase {
        public_key: "SJVgt8LxpiwJj5UUKIQmLqi738ku6cBLqWGPL0OdXko="
            .parse()
            .unwrap(),
        gateway_ip: "100.77.0.1".parse().unwrap(),
    }
}

/// The policy and info a discovery result gives.
fn plan(d: &Discovered) -> (nft::Policy, GatewayInfo) {
    let (cfg, base) = (Config::defaults(), base());
    (
        policy(&cfg, base.gateway_ip, d),
        gateway_info(&cfg, base, d),
    )
}

fn redo(firewall: bool, info: bool) -> Changes {
    Changes { firewall, info }
}

#[test]
fn only_what_differs_is_redone() {
    let (p0, i0) = plan(&found(&["192.0.2.1:31820"], "10.244.0.0/24"));
    assert_eq!(changes(None, None, &p0, &i0), redo(true, true));
    let (p0b, i0b) = plan(&found(&["192.0.2.1:31820"], "10.244.0.0/24"));
    assert_eq!(
        changes(Some(&p0), Some(&i0), &p0b, &i0b),
        redo(false, false)
    );
    // A new NodePort: the same firewall, new info.
    let (p1, i1) = plan(&found(&["192.0.2.1:31821"], "10.244.0.0/24"));
    assert_eq!(changes(Some(&p0), Some(&i0), &p1, &i1), redo(false, true));
    // A new Node's pod CIDR: both.
    let (p2, i2) = plan(&found(&["192.0.2.1:31820"], "10.244.1.0/24"));
    assert_eq!(changes(Some(&p0), Some(&i0), &p2, &i2), redo(true, true));
}

#[test]
fn the_info_announces_only_the_ipv4_ranges_its_tunnel_carries() {
    let mut d = found(&["192.0.2.1:31820"], "10.244.0.0/24");
    d.service_cidrs.push("fd00:10:96::/112".parse().unwrap());
    d.pod_cidrs.push("fd00:10:244::/64".parse().unwrap());
    let (_, info) = plan(&d);
    assert_eq!(info.service_cidrs, ["10.96.0.0/12".parse().unwrap()]);
    assert_eq!(info.pod_cidrs, ["10.244.0.0/24".parse().unwrap()]);
    // An IPv6-only cluster's DNS address is not announced on an IPv4 tunnel.
    d.dns_ip = Some("fd00:10:96::10".parse().unwrap());
    assert_eq!(plan(&d).1.dns_ip, None);
}

#[test]
fn an_ipv6_only_cluster_announces_its_ranges_and_dns_in_ipv6_json_only() {
    let d = Discovered {
        service_cidrs: vec!["fd00:10:96::/112".parse().unwrap()],
        pod_cidrs: vec!["fd00:10:244::/64".parse().unwrap()],
        dns_ip: None,
        dns_ip6: Some("fd00:10:96::a".parse().unwrap()),
        endpoints: vec!["192.0.2.1:31820".parse().unwrap()],
    };
    let (policy, info) = plan(&d);
    // The tunnel stays IPv4 (and carries the /96); info.json lists no IPv4 range.
    assert!(info.ipv6_only() && info.dns_ip.is_none());
    let info6 = info.ipv6.clone().expect("ipv6.json");
    assert_eq!(info6.service_cidrs, ["fd00:10:96::/112".parse().unwrap()]);
    assert_eq!(info6.pod_cidrs, ["fd00:10:244::/64".parse().unwrap()]);
    assert_eq!(info6.dns_ip, Some("fd00:10:96::a".parse().unwrap()));
    assert!(policy.ipv6.is_some());
    // What the ConfigMap gets reads back with its ipv6.json, and an older client refuses it.
    let json = info.to_json().unwrap();
    assert_eq!(
        GatewayInfo::from_json_with6(json.as_bytes(), Some(info6)).unwrap(),
        info
    );
    let old = GatewayInfo::from_json(json.as_bytes()).unwrap_err();
    assert!(old.to_string().contains("no service CIDR"), "{old}");
}

#[test]
fn info_without_endpoints_is_not_published() {
    let (p, i) = plan(&found(&[], "10.244.0.0/24"));
    assert_eq!(changes(None, None, &p, &i), redo(true, false));
}

#[test]
fn trimmed_nodes_keep_what_discovery_reads() {
    let mut n: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1", "labels": {"a": "b"}},
        "spec": {"podCIDR": "10.244.0.0/24", "providerID": "x"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
            "images": [{"names": ["busybox"], "sizeBytes": 1}]
        }
    }))
    .unwrap();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "spec": {"ports": [{"port": 51820, "protocol": "UDP", "nodePort": 31820}]}
    }))
    .unwrap();
    let before = (
        discovery::pod_cidrs_from_nodes(&[n.clone()]),
        discovery::endpoints(&svc, &[n.clone()]),
    );
    trim_node(&mut n);
    assert!(n.status.as_ref().unwrap().images.is_none());
    assert!(n.metadata.labels.is_none());
    let after = (
        discovery::pod_cidrs_from_nodes(&[n.clone()]),
        discovery::endpoints(&svc, &[n]),
    );
    assert_eq!(before, after);
    assert_eq!(after.1.len(), 1);
}
