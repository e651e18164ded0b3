//! The kube-proxy core: Services + EndpointSlices -> an nftables ruleset (pure).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The packet mark asking postrouting to masquerade (kube-proxy uses the same bit).
const MASQ_MARK: &str = "0x4000";

/// One Service port as kube-proxy programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// `namespace/name:port/proto`, for comments and logs.
    pub key: String,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// One of the Service's ClusterIPs (a dual-stack Service has a rule per family).
    pub cluster_ip: IpAddr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Ready endpoints of the ClusterIP's family (address, target port), sorted.
    pub endpoints: Vec<(IpAddr, u16)>,
}

fn proto(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        _ => None,
    }
}

/// The rules for every ClusterIP/NodePort Service port, sorted by key.
pub fn plan(services: &[Service], slices: &[EndpointSlice]) -> Vec<PortRule> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        // Headless or not allocated: no IPs.
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.as_slice())
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .fold(Vec::new(), |mut v, ip| {
                if !v.contains(&ip) {
                    v.push(ip);
                }
                v
            });
        let own_slices: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(name)
            })
            .collect();
        for (cluster_ip, sp) in cluster_ips
            .iter()
            .flat_map(|ip| spec.ports.iter().flatten().map(move |sp| (*ip, sp)))
        {
            let Some(proto) = proto(sp.protocol.as_deref()) else {
                continue;
            };
            let port_name = sp.name.clone().unwrap_or_default();
            let mut endpoints = BTreeSet::new();
            for slice in &own_slices {
                let Some(target) = slice.ports.iter().flatten().find(|p| {
                    p.name.clone().unwrap_or_default() == port_name
                        && proto_matches(p.protocol.as_deref(), proto)
                }) else {
                    continue;
                };
                let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse::<IpAddr>()
                            && ip.is_ipv4() == cluster_ip.is_ipv4()
                        {
                            endpoints.insert((ip, target));
                        }
                    }
                }
            }
            out.push(PortRule {
                key: format!("{ns}/{name}:{}/{proto}", sp.port),
                proto,
                cluster_ip,
                port: u16::try_from(sp.port).unwrap_or(0),
                node_port: sp.node_port.and_then(|p| u16::try_from(p).ok()),
                endpoints: endpoints.into_iter().collect(),
            });
        }
    }
    out.sort_by(|a, b| (&a.key, a.cluster_ip.is_ipv6()).cmp(&(&b.key, b.cluster_ip.is_ipv6())));
    out
}

fn proto_matches(p: Option<&str>, want: &str) -> bool {
    proto(p) == Some(want)
}

/// The whole `table ip <table>` (`ip6` when `node_ip` is IPv6: the rules of that family's
/// ClusterIPs) for `nft -f -`, replacing any previous one atomically.
/// Pods' traffic (from `pods`, the cluster's pod CIDR) leaving the node towards the LAN (`eth0`)
/// is masqueraded like a node's egress.
pub fn render(
    table: &str,
    node_ip: impl Into<IpAddr>,
    pods: impl Into<ipnet::IpNet>,
    rules: &[PortRule],
) -> String {
    let (node_ip, pods) = (node_ip.into(), pods.into());
    let v6 = node_ip.is_ipv6();
    let fam = if v6 { "ip6" } else { "ip" };
    let rules: Vec<&PortRule> = rules
        .iter()
        .filter(|r| r.cluster_ip.is_ipv6() == v6)
        .collect();
    let mut s = String::new();
    // Create-then-delete makes the replacement work whether or not the table exists.
    let _ = writeln!(
        s,
        "table {fam} {table} {{}}\ndelete table {fam} {table}\ntable {fam} {table} {{"
    );
    // Numeric priorities: `dstnat` is not accepted for the output hook by nft 1.0.6.
    for (hook, prio) in [("prerouting", "-100"), ("output", "-100")] {
        let _ = writeln!(
            s,
            "  chain {hook} {{\n    type nat hook {hook} priority {prio}; policy accept;\n    jump services\n  }}"
        );
    }
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    meta mark & {MASQ_MARK} == {MASQ_MARK} masquerade\n    {fam} saddr {pods} {fam} daddr != {pods} oifname \"eth0\" masquerade\n  }}"
    );
    // Services without endpoints are rejected like kube-proxy does (ICMP port unreachable), in
    // filter hooks that see packets after any DNAT.
    for hook in ["input", "forward", "output"] {
        let _ = writeln!(
            s,
            "  chain filter_{hook} {{\n    type filter hook {hook} priority -10; policy accept;\n    jump no_endpoints\n  }}"
        );
    }
    let _ = writeln!(s, "  chain no_endpoints {{");
    for r in rules.iter().filter(|r| r.endpoints.is_empty()) {
        let (p, key) = (r.proto, &r.key);
        let _ = writeln!(
            s,
            "    {fam} daddr {} {p} dport {} reject comment \"{key} has no endpoints\"",
            r.cluster_ip, r.port
        );
        if let Some(np) = r.node_port {
            let _ = writeln!(
                s,
                "    {fam} daddr {node_ip} {p} dport {np} reject comment \"{key} has no endpoints\""
            );
        }
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain services {{");
    for (i, r) in rules
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.endpoints.is_empty())
    {
        let (p, key) = (r.proto, &r.key);
        let _ = writeln!(
            s,
            "    {fam} daddr {} {p} dport {} goto svc_{i} comment \"{key}\"",
            r.cluster_ip, r.port
        );
        if let Some(np) = r.node_port {
            let _ = writeln!(
                s,
                "    {fam} daddr {node_ip} {p} dport {np} goto svc_{i} comment \"{key} nodePort\""
            );
        }
    }
    let _ = writeln!(s, "  }}");
    for (i, r) in rules
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.endpoints.is_empty())
    {
        let n = r.endpoints.len();
        let targets: Vec<String> = (0..n).map(|j| format!("{j} : goto ep_{i}_{j}")).collect();
        let _ = writeln!(
            s,
            "  chain svc_{i} {{\n    numgen random mod {n} vmap {{ {} }}\n  }}",
            targets.join(", ")
        );
        for (j, (ip, port)) in r.endpoints.iter().enumerate() {
            let to = match ip {
                IpAddr::V4(ip) => format!("{ip}:{port}"),
                IpAddr::V6(ip) => format!("[{ip}]:{port}"),
            };
            let _ = writeln!(
                s,
                "  chain ep_{i}_{j} {{\n    {fam} saddr {ip} meta mark set meta mark | {MASQ_MARK}\n    meta l4proto {} dnat to {to}\n  }}",
                r.proto
            );
        }
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }
    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn fixture() -> (Vec<Service>, Vec<EndpointSlice>) {
        let services = vec![
            svc(json!({"metadata": {"name": "echo", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "udp", "port": 7, "protocol": "UDP", "nodePort": 30007}]}})),
            svc(
                json!({"metadata": {"name": "headless", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
            svc(
                json!({"metadata": {"name": "empty", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}}),
            ),
        ];
        let slices = vec![slice(json!({
            "metadata": {"name": "echo-abc", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "udp", "port": 7007, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.244.0.3"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.9"], "conditions": {"ready": false}}]}))];
        (services, slices)
    }

    #[test]
    fn plan_joins_named_ports_with_ready_endpoints_and_skips_headless() {
        let (services, slices) = fixture();
        let rules = plan(&services, &slices);
        let keys: Vec<&str> = rules.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "default/echo:7/udp",
                "default/echo:80/tcp",
                "default/empty:80/tcp"
            ]
        );
        assert_eq!(rules[0].node_port, Some(30007));
        assert_eq!(
            rules[0].endpoints,
            [
                (IpAddr::from([10, 244, 0, 2]), 7007),
                (IpAddr::from([10, 244, 0, 3]), 7007)
            ]
        );
        assert_eq!(rules[1].endpoints.len(), 2);
        assert!(rules[2].endpoints.is_empty());
    }

    #[test]
    fn render_balances_dnats_and_marks_hairpin() {
        let (services, slices) = fixture();
        let text = render(
            "kube-proxy",
            IpAddr::from([192, 0, 2, 1]),
            "10.244.0.0/16".parse::<ipnet::IpNet>().unwrap(),
            &plan(&services, &slices),
        );
        assert!(text.contains("ip daddr 10.96.0.20 udp dport 7 goto svc_0"));
        assert!(text.contains("ip daddr 192.0.2.1 udp dport 30007 goto svc_0"));
        assert!(text.contains("numgen random mod 2 vmap { 0 : goto ep_0_0, 1 : goto ep_0_1 }"));
        assert!(text.contains("ip saddr 10.244.0.2 meta mark set meta mark | 0x4000"));
        assert!(text.contains("meta l4proto udp dnat to 10.244.0.2:7007"));
        assert!(text.contains("meta l4proto tcp dnat to 10.244.0.3:8080"));
        assert!(
            !text.contains("dport 80 goto svc_2"),
            "a Service without endpoints gets no DNAT"
        );
        assert!(
            text.contains("ip daddr 10.96.0.30 tcp dport 80 reject"),
            "but a reject"
        );
        assert!(text.starts_with("table ip kube-proxy {}\ndelete table ip kube-proxy\n"));
    }

    #[test]
    fn a_dual_stack_service_gets_a_rule_per_family_in_its_family_table() {
        let services = vec![svc(json!({"metadata": {"name": "web", "namespace": "app"},
            "spec": {"clusterIP": "10.96.0.40", "clusterIPs": ["10.96.0.40", "fd00:10:96::40"],
                "ipFamilies": ["IPv4", "IPv6"], "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))];
        let slices = vec![
            slice(
                json!({"metadata": {"name": "web", "namespace": "app", "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}]}),
            ),
            slice(
                json!({"metadata": {"name": "web-ipv6", "namespace": "app", "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv6", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["fd00:10:244::5"], "conditions": {"ready": true}}]}),
            ),
        ];
        let rules = plan(&services, &slices);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[1].endpoints,
            [("fd00:10:244::5".parse().unwrap(), 8080)]
        );
        let v6 = render(
            "kube-proxy",
            "fd00:c0:2::1".parse::<IpAddr>().unwrap(),
            "fd00:10:244::/56".parse::<ipnet::IpNet>().unwrap(),
            &rules,
        );
        assert!(v6.starts_with("table ip6 kube-proxy {}\n"), "{v6}");
        assert!(
            v6.contains("ip6 daddr fd00:10:96::40 tcp dport 80 goto svc_0"),
            "{v6}"
        );
        assert!(v6.contains("dnat to [fd00:10:244::5]:8080"), "{v6}");
        assert!(v6.contains("ip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56"));
        assert!(!v6.contains("10.96.0.40"), "only its family: {v6}");
        let v4 = render(
            "kube-proxy",
            IpAddr::from([192, 0, 2, 1]),
            "10.244.0.0/16".parse::<ipnet::IpNet>().unwrap(),
            &rules,
        );
        assert!(v4.contains("dnat to 10.244.0.5:8080") && !v4.contains("fd00"));
    }
}
