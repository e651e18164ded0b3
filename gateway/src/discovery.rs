//! What the gateway learns about the cluster: service and pod CIDRs, the DNS IP and the
//! endpoints peers use. Pure parsers and [`assemble`] first, the dry-run probe at the bottom;
//! `discovery_watch` keeps the objects current.
//!
//! Service CIDRs: ServiceCIDR objects (Kubernetes >= 1.33), otherwise the range named in the
//! API's error for a dry-run Service with an invalid ClusterIP, otherwise `--service-cidr`.
//! Pod CIDRs: Nodes' `podCIDRs`/`podCIDR`, otherwise `--pod-cidr`. DNS: Service
//! `kube-system/kube-dns`, otherwise `--dns-ip`.

use crate::{Config, GatewayError};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, ObjectMeta, PostParams};
use kwg_contract::Endpoint;
use std::borrow::Borrow;
use std::net::IpAddr;
use std::sync::Arc;

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discovered {
    pub service_cidrs: Vec<IpNet>,
    pub pod_cidrs: Vec<IpNet>,
    /// The cluster DNS Service's IPv4 address (what `info.json` announces).
    pub dns_ip: Option<IpAddr>,
    /// Its IPv6 address (what `ipv6.json` announces; the only one on an IPv6-only cluster).
    pub dns_ip6: Option<std::net::Ipv6Addr>,
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
pub fn service_cidrs_from_objects(objs: &[impl Borrow<ServiceCIDR>]) -> Vec<IpNet> {
    let all = objs
        .iter()
        .filter_map(|o| o.borrow().spec.as_ref()?.cidrs.as_ref())
        .flatten()
        .filter_map(|c| c.parse().ok());
    dedup(all)
}

/// Pod CIDRs of every Node.
pub fn pod_cidrs_from_nodes(nodes: &[impl Borrow<Node>]) -> Vec<IpNet> {
    let all = nodes
        .iter()
        .filter_map(|n| n.borrow().spec.as_ref())
        .flat_map(|s| {
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
pub fn endpoints(service: &Service, nodes: &[impl Borrow<Node>]) -> Vec<Endpoint> {
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
                .filter_map(|n| n.borrow().status.as_ref()?.addresses.as_ref())
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

/// The cluster objects discovery reads (kept current by watchers).
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Every Node, in name order.
    pub nodes: Vec<Arc<Node>>,
    /// Every ServiceCIDR object (none where the API lacks the kind).
    pub service_cidrs: Vec<Arc<ServiceCIDR>>,
    /// The range from the dry-run Service's error (asked only without ServiceCIDR objects).
    pub probed_service_cidrs: Vec<IpNet>,
    /// Service `kube-system/kube-dns`.
    pub dns: Option<Arc<Service>>,
    /// The gateway's Service.
    pub gateway: Option<Arc<Service>>,
}

/// What the objects say, falling back to the flags.
pub fn assemble(cfg: &Config, objs: &Objects) -> Result<Discovered, GatewayError> {
    let service_cidrs = [
        service_cidrs_from_objects(&objs.service_cidrs),
        objs.probed_service_cidrs.clone(),
        cfg.service_cidr.clone(),
    ]
    .into_iter()
    .find(|v| !v.is_empty())
    .ok_or(GatewayError::NoServiceCidr)?;
    let mut pod_cidrs = pod_cidrs_from_nodes(&objs.nodes);
    if pod_cidrs.is_empty() {
        pod_cidrs = cfg.pod_cidr.clone();
    }
    let dns = |ipv6: bool| {
        let flag = cfg.dns_ip.filter(|ip| ip.is_ipv6() == ipv6);
        objs.dns.as_ref().and_then(|s| dns_ip_of(s, ipv6)).or(flag)
    };
    let dns_ip = dns(false);
    let dns_ip6 = dns(true).and_then(|ip| match ip {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    });
    let endpoints = objs
        .gateway
        .as_ref()
        .map(|s| endpoints(s, &objs.nodes))
        .unwrap_or_default();
    Ok(Discovered {
        service_cidrs,
        pod_cidrs,
        dns_ip,
        dns_ip6,
        endpoints,
    })
}

/// The cluster DNS Service's address of one family: the first of `spec.clusterIPs` of it (on
/// an IPv6-primary dual-stack cluster `spec.clusterIP` is the IPv6 one, which an IPv4 tunnel
/// cannot carry), else `spec.clusterIP` when it is of that family (objects written before
/// `clusterIPs` existed).
fn dns_ip_of(service: &Service, ipv6: bool) -> Option<IpAddr> {
    let spec = service.spec.as_ref()?;
    let of_family = |s: &String| s.parse::<IpAddr>().ok().filter(|ip| ip.is_ipv6() == ipv6);
    spec.cluster_ips
        .iter()
        .flatten()
        .find_map(of_family)
        .or_else(|| spec.cluster_ip.as_ref().and_then(of_family))
}

/// The service range named in the error for a dry-run Service with an invalid ClusterIP;
/// empty when the error does not tell.
pub async fn probe_service_cidrs(client: &kube::Client) -> Vec<IpNet> {
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
mod tests;
