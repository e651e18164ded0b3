//! What a gateway carries in IPv6 (ConfigMap `kwg-gateway-info`, key `ipv6.json`, next to
//! `info.json`).
//!
//! A document of its own rather than fields of [`crate::GatewayInfo`], so the contract version
//! stays 1: a client older than IPv6 never reads it (and keeps its IPv4 tunnel), a gateway older
//! than IPv6 never writes it (and a newer client then carries IPv4 only). A peer's IPv6 tunnel
//! address needs no allocation and no annotation: it is its IPv4 tunnel address embedded in the
//! last 32 bits of the /96 tunnel prefix (as in RFC 6052's /96 format), so
//! `100.77.0.2` is `fd6b:7767::644d:2` with the default prefix, and both ends compute it.

use crate::{ContractError, TunnelIp};
use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;

/// Key of the IPv6 document inside [`crate::GATEWAY_INFO_CONFIGMAP`].
pub const GATEWAY_INFO6_KEY: &str = "ipv6.json";
/// Default IPv6 tunnel prefix (a unique local /96, RFC 4193, with "kwg" in hex-ish digits:
/// `6b77 67`).
pub const DEFAULT_TUNNEL_CIDR6: &str = "fd6b:7767::/96";
/// The prefix length of an IPv6 tunnel prefix: the IPv4 tunnel address fills the rest.
pub const TUNNEL_PREFIX6_LEN: u8 = 96;

/// The IPv6 side of a gateway (`ipv6.json`), published only when the cluster has IPv6 Service
/// or pod CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfo6 {
    /// The IPv6 tunnel prefix, a /96; a peer's IPv6 tunnel address is
    /// [`GatewayInfo6::tunnel_ip6`] of its IPv4 one.
    pub tunnel_cidr: Ipv6Net,
    /// The cluster's IPv6 Service CIDRs.
    pub service_cidrs: Vec<Ipv6Net>,
    /// The cluster's IPv6 pod CIDRs.
    pub pod_cidrs: Vec<Ipv6Net>,
    /// The cluster DNS Service's (`kube-system/kube-dns`) IPv6 ClusterIP; absent when it has
    /// none (and from gateways older than this field). On an IPv6-only cluster it is the only
    /// DNS address: `info.json`'s `dnsIp` is then `null` (it holds only an IPv4 address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_ip: Option<Ipv6Addr>,
}

impl GatewayInfo6 {
    /// The IPv6 tunnel address of the peer (or gateway) whose IPv4 tunnel address is `ip`.
    pub fn tunnel_ip6(&self, ip: TunnelIp) -> Ipv6Addr {
        tunnel_ip6_of(self.tunnel_cidr, ip)
    }

    /// The cluster's IPv6 destinations a peer routes into the tunnel: Service and pod CIDRs.
    pub fn cluster_cidrs(&self) -> Vec<IpNet> {
        self.service_cidrs
            .iter()
            .chain(&self.pod_cidrs)
            .map(|n| IpNet::V6(*n))
            .collect()
    }

    /// Parses and validates the JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<GatewayInfo6, ContractError> {
        let info: GatewayInfo6 =
            serde_json::from_slice(bytes).map_err(|e| ContractError::InvalidGatewayInfo {
                reason: format!("{GATEWAY_INFO6_KEY}: {e}"),
            })?;
        info.validate()?;
        Ok(info)
    }

    /// The JSON document (validated first).
    pub fn to_json(&self) -> Result<String, ContractError> {
        self.validate()?;
        Ok(serde_json::to_string_pretty(self).expect("GatewayInfo6 serializes"))
    }

    /// Checks the prefix is a /96 without host bits and that some IPv6 CIDR is carried.
    pub fn validate(&self) -> Result<(), ContractError> {
        check_tunnel_cidr6(self.tunnel_cidr).map_err(|reason| {
            ContractError::InvalidGatewayInfo {
                reason: format!("{GATEWAY_INFO6_KEY}: {reason}"),
            }
        })?;
        if self.service_cidrs.is_empty() && self.pod_cidrs.is_empty() {
            return Err(ContractError::InvalidGatewayInfo {
                reason: format!("{GATEWAY_INFO6_KEY}: no IPv6 Service or pod CIDR"),
            });
        }
        Ok(())
    }
}

/// The IPv6 tunnel address of IPv4 tunnel address `ip` under `prefix`: `ip` in its last 32
/// bits.
pub fn tunnel_ip6_of(prefix: Ipv6Net, ip: TunnelIp) -> Ipv6Addr {
    let base = u128::from(prefix.network()) & !u128::from(u32::MAX);
    Ipv6Addr::from(base | u128::from(u32::from(ip.addr())))
}

/// Why `cidr` cannot be an IPv6 tunnel prefix: it must be a /96 without host bits.
pub fn check_tunnel_cidr6(cidr: Ipv6Net) -> Result<(), String> {
    if cidr.prefix_len() != TUNNEL_PREFIX6_LEN {
        return Err(format!(
            "IPv6 tunnel prefix {cidr} must be a /96 (the IPv4 tunnel address fills the last 32 bits), like {DEFAULT_TUNNEL_CIDR6}"
        ));
    }
    if cidr.trunc() != cidr {
        return Err(format!(
            "IPv6 tunnel prefix {cidr} has host bits set; did you mean {}?",
            cidr.trunc()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn info() -> GatewayInfo6 {
        GatewayInfo6 {
            tunnel_cidr: DEFAULT_TUNNEL_CIDR6.parse().unwrap(),
            service_cidrs: vec!["fd00:10:96::/112".parse().unwrap()],
            pod_cidrs: vec!["fd00:10:244::/64".parse().unwrap()],
            dns_ip: None,
        }
    }

    #[test]
    fn the_ipv6_address_embeds_the_ipv4_one() {
        let ip = TunnelIp::new(Ipv4Addr::new(100, 77, 0, 2));
        assert_eq!(info().tunnel_ip6(ip).to_string(), "fd6b:7767::644d:2");
        let gw = TunnelIp::new(Ipv4Addr::new(100, 77, 0, 1));
        assert_eq!(info().tunnel_ip6(gw).to_string(), "fd6b:7767::644d:1");
    }

    #[test]
    fn the_document_round_trips_and_is_checked() {
        let json = info().to_json().unwrap();
        assert!(
            json.contains("\"tunnelCidr\": \"fd6b:7767::/96\""),
            "{json}"
        );
        assert_eq!(GatewayInfo6::from_json(json.as_bytes()).unwrap(), info());
        let bad = json.replace("fd6b:7767::/96", "fd6b:7767::/64");
        let e = GatewayInfo6::from_json(bad.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a /96"), "{e}");
        let empty = GatewayInfo6 {
            service_cidrs: vec![],
            pod_cidrs: vec![],
            ..info()
        };
        assert!(
            empty
                .validate()
                .unwrap_err()
                .to_string()
                .contains("no IPv6")
        );
        // dnsIp is additive: absent when unknown, read when given.
        assert!(!json.contains("dnsIp"), "{json}");
        let with_dns = GatewayInfo6 {
            dns_ip: Some("fd00:10:96::a".parse().unwrap()),
            ..info()
        };
        let json_dns = with_dns.to_json().unwrap();
        assert!(
            json_dns.contains("\"dnsIp\": \"fd00:10:96::a\""),
            "{json_dns}"
        );
        assert_eq!(
            GatewayInfo6::from_json(json_dns.as_bytes()).unwrap(),
            with_dns
        );
        // A newer gateway's extra fields are ignored, as in info.json.
        let newer = json.replace("{", "{\"later\": 1,");
        assert!(GatewayInfo6::from_json(newer.as_bytes()).is_ok());
    }
}
