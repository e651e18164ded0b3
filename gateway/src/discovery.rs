//! What the gateway learns about the cluster: service and pod CIDRs, the DNS IP and the
//! endpoints peers use. Pure parsers first, the API reads at the bottom.
//!
//! Service CIDRs: ServiceCIDR objects (Kubernetes >= 1.33), otherwise the range named in the
//! API's error for a dry-run Service with an invalid ClusterIP, otherwise `--service-cidr`.
//! Pod CIDRs: Nodes' `podCIDRs`/`podCIDR`, otherwise `--pod-cidr`. DNS: Service
//! `kube-system/kube-dns`, otherwise `--dns-ip`.

use crate::{Config, GatewayError};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kwg_wg::contract::Endpoint;
use std::net::IpAddr;

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discovered {
    pub service_cidrs: Vec<IpNet>,
    pub pod_cidrs: Vec<IpNet>,
    pub dns_ip: Option<IpAddr>,
    pub endpoints: Vec<Endpoint>,
}

/// The ClusterIP the dry-run asks for; outside every sane service range.
pub const PROBE_CLUSTER_IP: &str = "1.1.1.1";

/// The CIDRs in the API's "The range of valid IPs is X" error (dual-stack lists two).
pub fn parse_valid_range(message: &str) -> Vec<IpNet> {
    const MARKER: &str = "The range of valid IPs is ";
    let Some(at) = message.find(MARKER) else {
        return Vec::new();
    };
    message[at + MARKER.len()..]
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .map(|w| w.trim_end_matches(['.', '"', '\'', ')', ']']))
        .take_while(|w| w.is_empty() || *w == "and" || w.parse::<IpNet>().is_ok())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// CIDRs from ServiceCIDR objects.
pub fn service_cidrs_from_objects(objs: &[ServiceCIDR]) -> Vec<IpNet> {
    let all = objs
        .iter()
        .filter_map(|o| o.spec.as_ref()?.cidrs.as_ref())
        .flatten()
        .filter_map(|c| c.parse().ok());
    dedup(all)
}

/// Pod CIDRs of every Node.
pub fn pod_cidrs_from_nodes(nodes: &[Node]) -> Vec<IpNet> {
    let all = nodes.iter().filter_map(|n| n.spec.as_ref()).flat_map(|s| {
        let many = s.pod_cidrs.clone().unwrap_or_default();
        let list = if many.is_empty() {
            s.pod_cidr.clone().into_iter().collect()
        } else {
            many
        };
        list.into_iter().filter_map(|c| c.parse().ok())
    });
    dedup(all)
}

/// Endpoints of the gateway Service: LoadBalancer ingress (IP or hostname, Service port)
/// first, then every node's ExternalIP and InternalIP with the NodePort.
pub fn endpoints(service: &Service, nodes: &[Node]) -> Vec<Endpoint> {
    let Some(port) = wireguard_port(service.spec.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref());
    for ing in ingress.into_iter().flatten() {
        let host = ing.ip.clone().or_else(|| ing.hostname.clone());
        if let Some(ep) = host.and_then(|h| format_host_port(&h, port.port as u16)) {
            out.push(ep);
        }
    }
    if let Some(node_port) = port.node_port {
        for kind in ["ExternalIP", "InternalIP"] {
            let addrs = nodes
                .iter()
                .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
                .flatten();
            for a in addrs.filter(|a| a.type_ == kind) {
                if let Ok(ip) = a.address.parse::<IpAddr>() {
                    out.push(Endpoint::from_ip(ip, node_port as u16));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert(e.clone()));
    out
}

fn wireguard_port(spec: Option<&ServiceSpec>) -> Option<&ServicePort> {
    let ports = spec?.ports.as_ref()?;
    ports
        .iter()
        .find(|p| p.protocol.as_deref() == Some("UDP"))
        .or_else(|| ports.first())
}

fn format_host_port(host: &str, port: u16) -> Option<Endpoint> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Some(Endpoint::from_ip(ip, port)),
        Err(_) => format!("{host}:{port}").parse().ok(),
    }
}

fn dedup(it: impl Iterator<Item = IpNet>) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for n in it.map(|n| n.trunc()) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Reads everything from the API, falling back to the flags.
pub async fn discover(client: &kube::Client, cfg: &Config) -> Result<Discovered, GatewayError> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(GatewayError::kube("list Nodes"))?
        .items;
    let mut service_cidrs = service_cidrs(client).await;
    if service_cidrs.is_empty() {
        service_cidrs = cfg.service_cidr.clone();
    }
    if service_cidrs.is_empty() {
        return Err(GatewayError::NoServiceCidr);
    }
    let mut pod_cidrs = pod_cidrs_from_nodes(&nodes);
    if pod_cidrs.is_empty() {
        pod_cidrs = cfg.pod_cidr.clone();
    }
    let dns = Api::<Service>::namespaced(client.clone(), "kube-system");
    let dns_ip = match dns
        .get_opt("kube-dns")
        .await
        .map_err(GatewayError::kube("get Service kube-system/kube-dns"))?
    {
        Some(svc) => svc
            .spec
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse().ok()),
        None => None,
    }
    .or(cfg.dns_ip);
    let svc = Api::<Service>::namespaced(client.clone(), &cfg.kwg_namespace)
        .get_opt(&cfg.service_name)
        .await
        .map_err(GatewayError::kube(format!(
            "get Service {}/{}",
            cfg.kwg_namespace, cfg.service_name
        )))?;
    let endpoints = svc.map(|s| endpoints(&s, &nodes)).unwrap_or_default();
    Ok(Discovered {
        service_cidrs,
        pod_cidrs,
        dns_ip,
        endpoints,
    })
}

/// ServiceCIDR objects, else the dry-run error; empty when neither tells.
async fn service_cidrs(client: &kube::Client) -> Vec<IpNet> {
    match Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) if !list.items.is_empty() => return service_cidrs_from_objects(&list.items),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "no ServiceCIDR objects; trying a dry-run Service"),
    }
    let probe = Service {
        metadata: ObjectMeta {
            name: Some("kwg-service-cidr-probe".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(PROBE_CLUSTER_IP.into()),
            ports: Some(vec![ServicePort {
                port: 443,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<Service>::namespaced(client.clone(), "default")
        .create(&pp, &probe)
        .await
    {
        Err(kube::Error::Api(status)) => parse_valid_range(&status.message),
        Err(e) => {
            tracing::warn!(error = %e, "dry-run Service for service CIDR discovery failed");
            Vec::new()
        }
        Ok(_) => {
            tracing::warn!(
                "the API accepted ClusterIP {PROBE_CLUSTER_IP}: cannot learn the service CIDR this way"
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
