//! What the gateway publishes: its info ConfigMap and the `/peers` JSON of its admin port.

use super::error::truncate_for_message;
use super::{ContractError, PROTOCOL_VERSION, PeerName, TunnelIp};
use crate::keys::PublicKey;
use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The gateway info JSON (ConfigMap `kwg-gateway-info`, key `info.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfo {
    /// Contract version, [`PROTOCOL_VERSION`].
    pub version: u32,
    #[serde(with = "display_fromstr")]
    pub public_key: PublicKey,
    /// Where peers reach the gateway: LoadBalancer ingress first, then node addresses with
    /// the NodePort.
    pub endpoints: Vec<Endpoint>,
    pub tunnel_cidr: Ipv4Net,
    pub gateway_ip: TunnelIp,
    pub service_cidrs: Vec<IpNet>,
    pub pod_cidrs: Vec<IpNet>,
    /// The cluster DNS Service IP; `null` when the cluster has no kube-dns Service.
    pub dns_ip: Option<IpAddr>,
    pub cluster_domain: String,
    /// The admin HTTP port, reachable at `gatewayIp:adminPort` through the tunnel.
    pub admin_port: u16,
    /// The gateway's release (`0.1.0`, its Cargo package version); absent from gateways older
    /// than this field, which `kwg version` reports as unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_version: Option<String>,
    /// How the gateway's UDP socket last found datagrams arriving under load; absent until it
    /// has seen enough traffic to judge (and from gateways older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_receive: Option<UdpReceive>,
    /// The gateway's IPv6 side: not a field of `info.json` but its sibling document
    /// `ipv6.json` ([`crate::GatewayInfo6`]), which a client reads next to it and keeps here
    /// (`None`: the gateway carries IPv4 only). Never serialized into `info.json`.
    #[serde(skip)]
    pub ipv6: Option<crate::GatewayInfo6>,
}

/// The gateway's judgement of its UDP receive over a window under load (docs/performance.md):
/// whether the node coalesces the forwarded WireGuard datagrams (UDP GRO forwarding) before
/// the gateway pod receives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UdpReceive {
    /// About one datagram per received message: the node's interface does not coalesce
    /// forwarded UDP (`ethtool -K <nic> rx-udp-gro-forwarding on` is missing).
    pub one_per_frame: bool,
    /// Received messages in the window judged.
    pub messages: u64,
    /// Datagrams those messages held.
    pub datagrams: u64,
    /// When the window ended.
    pub observed_at: DateTime<Utc>,
}

impl UdpReceive {
    /// Datagrams per received message in the window.
    pub fn per_message(&self) -> f64 {
        self.datagrams as f64 / self.messages.max(1) as f64
    }
}

/// The two versions a gateway info document carries, read without validating the rest, so
/// `kwg version` can report a gateway whose contract this CLI does not speak.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedVersions {
    /// The contract version ([`GatewayInfo::version`]).
    pub version: u32,
    /// The gateway's release, when it publishes one ([`GatewayInfo::gateway_version`]).
    #[serde(default)]
    pub gateway_version: Option<String>,
}

impl PublishedVersions {
    /// The versions of an info document of any contract version.
    pub fn from_json(bytes: &[u8]) -> Result<PublishedVersions, ContractError> {
        serde_json::from_slice(bytes).map_err(|e| ContractError::InvalidGatewayInfo {
            reason: e.to_string(),
        })
    }
}

impl GatewayInfo {
    /// Parses and validates the JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<GatewayInfo, ContractError> {
        // Check the version first so a newer gateway gets the "upgrade" message, not a
        // complaint about a field it added.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let invalid = |e: serde_json::Error| ContractError::InvalidGatewayInfo {
            reason: e.to_string(),
        };
        let v: Version = serde_json::from_slice(bytes).map_err(invalid)?;
        if v.version != PROTOCOL_VERSION {
            return Err(ContractError::UnsupportedVersion {
                found: v.version,
                expected: PROTOCOL_VERSION,
            });
        }
        let info: GatewayInfo = serde_json::from_slice(bytes).map_err(invalid)?;
        info.validate()?;
        Ok(info)
    }

    /// The JSON document (validated first). `ipv6` is not part of it: the gateway writes it
    /// as `ipv6.json` next to it.
    pub fn to_json(&self) -> Result<String, ContractError> {
        self.validate()?;
        Ok(serde_json::to_string_pretty(self).expect("GatewayInfo serializes"))
    }

    /// Parses and validates `info.json` read together with the `ipv6.json` next to it
    /// (`None`: absent), which it keeps as [`GatewayInfo::ipv6`]. The only difference to
    /// [`GatewayInfo::from_json`]: an IPv6-only cluster's `info.json` lists no IPv4 Service or
    /// pod CIDR (its tunnel stays IPv4), valid only with an `ipv6.json` carrying IPv6 Service
    /// CIDRs. A client older than `ipv6.json` reads the same `info.json` with
    /// [`GatewayInfo::from_json`] and refuses it in one sentence (no service CIDR) instead of
    /// routing nothing.
    pub fn from_json_with6(
        bytes: &[u8],
        info6: Option<crate::GatewayInfo6>,
    ) -> Result<GatewayInfo, ContractError> {
        let mut info = match GatewayInfo::from_json(bytes) {
            Err(ContractError::InvalidGatewayInfo { .. }) if info6.is_some() => {
                serde_json::from_slice(bytes).map_err(|e| ContractError::InvalidGatewayInfo {
                    reason: e.to_string(),
                })?
            }
            other => other?,
        };
        info.ipv6 = info6;
        info.validate()?;
        Ok(info)
    }

    /// Whether the cluster has no IPv4 range for the tunnel to carry (an IPv6-only cluster:
    /// no IPv4 Service or pod CIDR, its ranges and DNS address all in `ipv6.json`).
    pub fn ipv6_only(&self) -> bool {
        self.service_cidrs.is_empty() && self.pod_cidrs.is_empty()
    }

    /// Checks the fields agree with each other (and with [`GatewayInfo::ipv6`]: an IPv6-only
    /// cluster, no IPv4 range and `dnsIp` `null`, is valid when it has IPv6 Service CIDRs).
    pub fn validate(&self) -> Result<(), ContractError> {
        let fail = |reason: String| Err(ContractError::InvalidGatewayInfo { reason });
        if self.version != PROTOCOL_VERSION {
            return Err(ContractError::UnsupportedVersion {
                found: self.version,
                expected: PROTOCOL_VERSION,
            });
        }
        if self.tunnel_cidr.prefix_len() > 30 {
            return fail(format!(
                "tunnel CIDR {} has no room for peers",
                self.tunnel_cidr
            ));
        }
        let gw = self.gateway_ip.addr();
        if !self.tunnel_cidr.contains(&gw)
            || gw == self.tunnel_cidr.network()
            || gw == self.tunnel_cidr.broadcast()
        {
            return fail(format!(
                "gateway IP {gw} is not a host address of the tunnel CIDR {}",
                self.tunnel_cidr
            ));
        }
        if self.endpoints.is_empty() {
            return fail("no endpoints: the gateway found neither a LoadBalancer ingress nor a node address; check the kwg-gateway Service".into());
        }
        let ipv6_services = self
            .ipv6
            .as_ref()
            .is_some_and(|i| !i.service_cidrs.is_empty());
        if self.service_cidrs.is_empty() && !(ipv6_services && self.ipv6_only()) {
            return fail("no service CIDR: start the gateway with --service-cidr".into());
        }
        if let Some(ip) = self.dns_ip.filter(|ip| ip.is_ipv6() && self.ipv6_only()) {
            return fail(format!(
                "dnsIp {ip} is IPv6 on an IPv6-only cluster: ipv6.json's dnsIp carries it"
            ));
        }
        if self.cluster_domain.is_empty() || self.cluster_domain.len() > 253 {
            return fail(format!(
                "cluster domain `{}` is invalid",
                truncate_for_message(&self.cluster_domain)
            ));
        }
        Ok(())
    }
}

/// One peer as the gateway's `/peers` endpoint reports it (a JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPeer {
    #[serde(with = "display_fromstr")]
    pub name: PeerName,
    #[serde(with = "display_fromstr")]
    pub public_key: PublicKey,
    pub tunnel_ip: Option<TunnelIp>,
    pub owner: String,
    /// Shown only to the peer itself and inside the gateway pod; absent for other peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub namespaces: Vec<String>,
    pub lease_expires: DateTime<Utc>,
    /// The peer's last seen UDP address; shown only to the peer itself and inside the
    /// gateway pod (`null` for other peers).
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<DateTime<Utc>>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// What the gateway forwards this peer to; shown only to the peer itself and inside the
    /// gateway pod, absent until the gateway has decided (and for other peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<super::ReachStatus>,
}

/// Where a peer sends WireGuard packets: `host:port` with an IP or a DNS name
/// (`[v6]:port` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// An endpoint from an IP address and a port.
    pub fn from_ip(ip: IpAddr, port: u16) -> Endpoint {
        Endpoint {
            host: ip.to_string(),
            port,
        }
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl FromStr for Endpoint {
    type Err = ContractError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ContractError::InvalidEndpoint {
            value: truncate_for_message(s),
        };
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::from_ip(sa.ip(), sa.port()));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        display_fromstr::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        display_fromstr::deserialize(d)
    }
}

/// Serde through `Display` / `FromStr` (keys, names, endpoints are strings on the wire).
mod display_fromstr {
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: serde::Deserializer<'de>,
    {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use proptest::prelude::*;

    fn example() -> GatewayInfo {
        GatewayInfo {
            version: 1,
            public_key: PrivateKey::generate().public_key(),
            endpoints: vec![
                "lb.example.com:51820".parse().unwrap(),
                "192.0.2.1:31820".parse().unwrap(),
            ],
            tunnel_cidr: "100.77.0.0/16".parse().unwrap(),
            gateway_ip: "100.77.0.1".parse().unwrap(),
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            pod_cidrs: vec!["10.244.0.0/24".parse().unwrap()],
            dns_ip: Some("10.96.0.10".parse().unwrap()),
            cluster_domain: "cluster.local".into(),
            admin_port: 8080,
            gateway_version: Some("0.1.0".into()),
            udp_receive: None,
            ipv6: None,
        }
    }

    #[test]
    fn gateway_version_is_additive() {
        // A gateway older than the field: parses, version unknown, and it is not written back.
        let mut old = example();
        old.gateway_version = None;
        let json = old.to_json().unwrap();
        assert!(!json.contains("gatewayVersion"), "{json}");
        assert_eq!(GatewayInfo::from_json(json.as_bytes()).unwrap(), old);
        let json = example().to_json().unwrap();
        assert!(json.contains("\"gatewayVersion\": \"0.1.0\""), "{json}");
        // Any contract version's versions are readable (a newer gateway's info is not).
        let newer = r#"{"version":2,"gatewayVersion":"0.3.0","somethingNew":true}"#;
        assert_eq!(
            PublishedVersions::from_json(newer.as_bytes()).unwrap(),
            PublishedVersions {
                version: 2,
                gateway_version: Some("0.3.0".into())
            }
        );
        assert!(PublishedVersions::from_json(b"{}").is_err());
    }

    #[test]
    fn udp_receive_is_additive() {
        let json = example().to_json().unwrap();
        assert!(!json.contains("udpReceive"), "{json}");
        let mut seen = example();
        seen.udp_receive = Some(UdpReceive {
            one_per_frame: true,
            messages: 20_000,
            datagrams: 20_400,
            observed_at: "2026-12-07T17:00:00Z".parse().unwrap(),
        });
        let json = seen.to_json().unwrap();
        assert!(
            json.contains(
                r#""udpReceive": {
    "onePerFrame": true,
    "messages": 20000,
    "datagrams": 20400,
    "observedAt": "2026-12-07T17:00:00Z"
  }"#
            ),
            "{json}"
        );
        assert_eq!(GatewayInfo::from_json(json.as_bytes()).unwrap(), seen);
        assert_eq!(seen.udp_receive.unwrap().per_message(), 1.02);
    }

    #[test]
    fn documented_json_parses() {
        let key = PrivateKey::generate().public_key();
        let json = format!(
            r#"{{"version":1,"publicKey":"{key}","endpoints":["192.0.2.1:31820"],
            "tunnelCidr":"100.77.0.0/16","gatewayIp":"100.77.0.1","serviceCidrs":["10.96.0.0/12"],
            "podCidrs":["10.244.0.0/24"],"dnsIp":"10.96.0.10","clusterDomain":"cluster.local",
            "adminPort":8080}}"#
        );
        let info = GatewayInfo::from_json(json.as_bytes()).unwrap();
        assert_eq!(info.public_key, key);
        assert_eq!(info.endpoints[0].to_string(), "192.0.2.1:31820");
        assert_eq!(info.gateway_ip.to_string(), "100.77.0.1");
    }

    #[test]
    fn roundtrip_and_camel_case() {
        let info = example();
        let json = info.to_json().unwrap();
        assert!(json.contains("\"gatewayIp\": \"100.77.0.1\""), "{json}");
        assert_eq!(GatewayInfo::from_json(json.as_bytes()).unwrap(), info);
    }

    #[test]
    fn newer_version_asks_for_upgrade() {
        let json = r#"{"version":2,"somethingNew":true}"#;
        let err = GatewayInfo::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            ContractError::UnsupportedVersion {
                found: 2,
                expected: 1
            }
        );
        assert!(err.to_string().contains("upgrade"));
    }

    #[test]
    fn validation() {
        let mut i = example();
        i.gateway_ip = "100.78.0.1".parse().unwrap();
        assert!(
            i.validate()
                .unwrap_err()
                .to_string()
                .contains("not a host address")
        );
        let mut i = example();
        i.endpoints.clear();
        assert!(i.to_json().is_err());
        let mut i = example();
        i.tunnel_cidr = "100.77.0.0/31".parse().unwrap();
        assert!(i.validate().is_err());
    }

    #[test]
    fn an_ipv6_only_cluster_needs_its_ipv6_json_and_older_clients_refuse_it() {
        // What the gateway publishes on an IPv6-only cluster: the tunnel stays IPv4, no IPv4
        // range, the DNS address only in ipv6.json.
        let info6 = crate::GatewayInfo6 {
            tunnel_cidr: crate::DEFAULT_TUNNEL_CIDR6.parse().unwrap(),
            service_cidrs: vec!["fd00:10:96::/112".parse().unwrap()],
            pod_cidrs: vec!["fd00:10:244::/64".parse().unwrap()],
            dns_ip: Some("fd00:10:96::a".parse().unwrap()),
        };
        let mut i = example();
        i.service_cidrs.clear();
        i.pod_cidrs.clear();
        i.dns_ip = None;
        i.ipv6 = Some(info6.clone());
        assert!(i.ipv6_only() && !example().ipv6_only());
        let json = i.to_json().unwrap();
        assert!(
            !json.contains("fd00"),
            "ipv6.json is a document of its own: {json}"
        );
        let read = GatewayInfo::from_json_with6(json.as_bytes(), Some(info6.clone())).unwrap();
        assert_eq!(read, i);
        // A client older than ipv6.json (or one that found none) refuses in one sentence
        // instead of routing nothing.
        for e in [
            GatewayInfo::from_json(json.as_bytes()).unwrap_err(),
            GatewayInfo::from_json_with6(json.as_bytes(), None).unwrap_err(),
        ] {
            assert_eq!(
                e.to_string(),
                "gateway info is invalid: no service CIDR: start the gateway with --service-cidr"
            );
        }
        // ipv6.json without Service CIDRs does not make an empty info.json valid.
        let pods_only = crate::GatewayInfo6 {
            service_cidrs: vec![],
            ..info6.clone()
        };
        assert!(GatewayInfo::from_json_with6(json.as_bytes(), Some(pods_only)).is_err());
        // The IPv6 DNS address belongs in ipv6.json, never in info.json of an IPv6-only cluster.
        let mut dns6 = i.clone();
        dns6.dns_ip = Some("fd00:10:96::a".parse().unwrap());
        let e = dns6.validate().unwrap_err().to_string();
        assert!(e.contains("ipv6.json's dnsIp"), "{e}");
        // A dual-stack info.json reads the same with ipv6.json; its other checks still apply.
        let dual = example();
        let read =
            GatewayInfo::from_json_with6(dual.to_json().unwrap().as_bytes(), Some(info6)).unwrap();
        assert_eq!(
            (&read.service_cidrs, read.ipv6.is_some()),
            (&dual.service_cidrs, true)
        );
        i.endpoints.clear();
        assert!(i.validate().is_err());
    }

    #[test]
    fn endpoints() {
        let e: Endpoint = "[fd00::1]:51820".parse().unwrap();
        assert_eq!(e.to_string(), "[fd00::1]:51820");
        assert_eq!(e.ip(), Some("fd00::1".parse().unwrap()));
        let e: Endpoint = "gw.example.com:443".parse().unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.ip()),
            ("gw.example.com", 443, None)
        );
        for bad in ["", "host", "host:", "host:99999", "-x:1", "a b:1", ":1"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_json() {
        let p = GatewayPeer {
            name: "mybox".parse().unwrap(),
            public_key: PrivateKey::generate().public_key(),
            tunnel_ip: Some("100.77.0.2".parse().unwrap()),
            owner: "me".into(),
            hostname: Some("mybox".into()),
            namespaces: vec![],
            lease_expires: super::super::parse_lease("2030-01-01T00:00:00Z").unwrap(),
            endpoint: Some("192.0.2.10:40000".parse().unwrap()),
            last_handshake: None,
            rx_bytes: 1,
            tx_bytes: 2,
            reach: Some(crate::ReachStatus {
                enforced: true,
                namespaces: vec!["emojivoto".into()],
                dropped_packets: 0,
                last_refused: None,
            }),
        };
        let json = serde_json::to_string(&vec![p.clone()]).unwrap();
        assert!(json.contains("\"tunnelIp\":\"100.77.0.2\""), "{json}");
        assert!(
            json.contains("\"leaseExpires\":\"2030-01-01T00:00:00Z\""),
            "{json}"
        );
        let back: Vec<GatewayPeer> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![p.clone()]);
        // Another peer's entry: no hostname, no endpoint.
        assert!(json.contains("\"reach\":{\"enforced\":true"), "{json}");
        let other = GatewayPeer {
            hostname: None,
            endpoint: None,
            reach: None,
            ..p
        };
        let json = serde_json::to_string(&other).unwrap();
        assert!(!json.contains("hostname"), "{json}");
        assert!(!json.contains("reach"), "{json}");
        assert!(json.contains("\"endpoint\":null"), "{json}");
        assert_eq!(serde_json::from_str::<GatewayPeer>(&json).unwrap(), other);
    }

    proptest! {
        #[test]
        fn garbage_json_never_panics(s in ".{0,300}") {
            let _ = GatewayInfo::from_json(s.as_bytes());
        }

        #[test]
        fn endpoint_roundtrip(host in "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}", port: u16) {
            let e = Endpoint { host, port };
            prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
        }
    }
}
