//! The addresses of one cluster: its LAN, Service and pod CIDRs and cluster domain (the options of
//! `kwg-sim up`), and everything derived from them.
//!
//! The defaults are the constants of [`crate::names`] (LAN 192.0.2.0/24, Services 10.96.0.0/12,
//! pods 10.244.0.0/16, `cluster.local`). `up` writes the chosen values to `<run dir>/net.json`;
//! the daemon and later commands read them back with [`ClusterNet::load`].

use crate::names::{self, Names};
use crate::{Error, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IP families of a cluster (`kwg-sim up --ip-family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// IPv4 only (Services, pods and the LAN).
    #[default]
    Ipv4,
    /// IPv4 and IPv6: the LAN, Services (IPv4 the primary family) and pods carry both.
    Dual,
    /// IPv6 only inside the cluster, as a cluster made with `--service-cluster-ip-range=<v6>`
    /// and one IPv6 pod CIDR: Services get one IPv6 ClusterIP, pods only IPv6 addresses,
    /// kube-proxy and cluster DNS (AAAA) IPv6 only, the Node's podCIDR and InternalIP IPv6.
    /// The LAN stays dual-stack: the API server listens on the node's IPv4 and IPv6 addresses
    /// (kubeconfigs name the IPv4 one), the gateway's NodePort is reached at the node's IPv6
    /// address.
    Ipv6,
}

/// The IPv6 defaults of a dual-stack cluster: a ULA LAN, and kind's Service and pod ranges.
pub const LAN6_CIDR: &str = "fd00:c0:2::/64";
pub const SERVICE6_CIDR: &str = "fd00:10:96::/112";
pub const POD6_CIDR: &str = "fd00:10:244::/56";

fn default_lan6() -> Ipv6Net {
    LAN6_CIDR.parse().expect("a default CIDR parses")
}
fn default_service6() -> Ipv6Net {
    SERVICE6_CIDR.parse().expect("a default CIDR parses")
}
fn default_pod6() -> Ipv6Net {
    POD6_CIDR.parse().expect("a default CIDR parses")
}

/// A cluster's network choices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNet {
    /// The LAN the node, the resolver, the intranet and the laptops sit on.
    pub lan: Ipv4Net,
    /// Where ClusterIPs come from; `.1` is `kubernetes`, `.10` kube-dns.
    pub service_cidr: Ipv4Net,
    /// The cluster's pod CIDR; the node's podCIDR is its first /24.
    pub pod_cidr: Ipv4Net,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// IPv4 only, or dual-stack with the IPv6 ranges below.
    #[serde(default)]
    pub ip_family: IpFamily,
    /// The LAN's IPv6 prefix (dual-stack): the same host numbers as IPv4, written in hex
    /// digits (node `::1`, laptop `::10`, resolver `::53`, intranet `::80`).
    #[serde(default = "default_lan6")]
    pub lan6: Ipv6Net,
    /// The IPv6 Service CIDR (dual-stack): `kubernetes` is `::1`, kube-dns `::10`.
    #[serde(default = "default_service6")]
    pub service_cidr6: Ipv6Net,
    /// The IPv6 pod CIDR (dual-stack); the node's IPv6 podCIDR is its first /64.
    #[serde(default = "default_pod6")]
    pub pod_cidr6: Ipv6Net,
}

impl Default for ClusterNet {
    fn default() -> ClusterNet {
        let net = |s: &str| s.parse().expect("a default CIDR parses");
        ClusterNet {
            lan: net(names::LAN_CIDR),
            service_cidr: net(names::SERVICE_CIDR),
            pod_cidr: net(names::POD_CIDR),
            domain: names::CLUSTER_DOMAIN.into(),
            ip_family: IpFamily::Ipv4,
            lan6: default_lan6(),
            service_cidr6: default_service6(),
            pod_cidr6: default_pod6(),
        }
    }
}

/// The host `n` of `net`, `n`'s decimal digits read as hex digits (`53` is `::53`), so the
/// IPv6 addresses read like their IPv4 twins.
fn nth6(net: &Ipv6Net, n: u32) -> Ipv6Addr {
    let hex = u128::from_str_radix(&n.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::from(u128::from(net.network()) + hex)
}

/// The `n`th address of `net` (`n` = 0 is the network address).
fn nth(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// Parses an IPv4 CIDR option; `what` names it in the error (`--lan`).
pub fn parse_cidr(what: &str, value: &str) -> Result<Ipv4Net> {
    match parse_net(what, value, "IPv4", "10.96.0.0/12")? {
        IpNet::V4(net) => Ok(net),
        IpNet::V6(_) => Err(not_family(what, value, "IPv4", "10.96.0.0/12")),
    }
}

/// Parses an IPv6 CIDR option; `what` names it in the error (`--lan6`).
pub fn parse_cidr6(what: &str, value: &str) -> Result<Ipv6Net> {
    match parse_net(what, value, "IPv6", "fd00:10:96::/112")? {
        IpNet::V6(net) => Ok(net),
        IpNet::V4(_) => Err(not_family(what, value, "IPv6", "fd00:10:96::/112")),
    }
}

/// A CIDR of either family, without host bits.
fn parse_net(what: &str, value: &str, family: &str, example: &str) -> Result<IpNet> {
    let net: IpNet = value.parse().map_err(|e| {
        Error::Invalid(format!(
            "{what} {value:?} is not an {family} CIDR ({e}); write it like {example}"
        ))
    })?;
    if net.network() != net.addr() {
        return Err(Error::Invalid(format!(
            "{what} {value} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

fn not_family(what: &str, value: &str, family: &str, example: &str) -> Error {
    Error::Invalid(format!(
        "{what} {value:?} is not an {family} CIDR; write it like {example}"
    ))
}

/// A cluster domain: lowercase DNS labels (a-z, 0-9, '-'), like `cluster.local`.
fn check_domain(domain: &str) -> Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if domain.len() > 200 || !domain.split('.').all(label_ok) {
        return Err(Error::Invalid(format!(
            "--domain {domain:?} is not a cluster domain: use lowercase dot-separated labels of a-z, 0-9 and '-', like cluster.local"
        )));
    }
    Ok(())
}

impl ClusterNet {
    /// Checks sizes, overlaps and the domain; every error names the option to change.
    pub fn validate(&self) -> Result<()> {
        let size = |what: &str, net: &Ipv4Net, max: u8, why: &str| {
            if net.prefix_len() > max {
                Err(Error::Invalid(format!(
                    "{what} {net} is too small: use a /{max} or larger ({why})"
                )))
            } else {
                Ok(())
            }
        };
        size(
            "--lan",
            &self.lan,
            24,
            "the node is .1, laptops .10-.50, the resolver .53, the intranet .80",
        )?;
        size(
            "--service-cidr",
            &self.service_cidr,
            24,
            "kubernetes is .1, kube-dns .10, and Services are allocated above",
        )?;
        size(
            "--pod-cidr",
            &self.pod_cidr,
            24,
            "the node's podCIDR is its first /24",
        )?;
        let all = [
            ("--lan", self.lan),
            ("--service-cidr", self.service_cidr),
            ("--pod-cidr", self.pod_cidr),
        ];
        for (i, (a, x)) in all.iter().enumerate() {
            for (b, y) in &all[i + 1..] {
                if x.contains(&y.network()) || y.contains(&x.network()) {
                    return Err(Error::Invalid(format!(
                        "{a} {x} overlaps {b} {y}: pick ranges that do not overlap"
                    )));
                }
            }
        }
        let pods_gw: Ipv4Net = Ipv4Net::new(names::POD_GATEWAY, 16).expect("/16").trunc();
        for (what, net) in all {
            if net.contains(&pods_gw.network()) || pods_gw.contains(&net.network()) {
                return Err(Error::Invalid(format!(
                    "{what} {net} overlaps {pods_gw}, which the node uses to route pods"
                )));
            }
        }
        if self.has_ipv6() {
            self.validate6()?;
        }
        check_domain(&self.domain)
    }

    /// The IPv6 ranges of a dual-stack cluster: sizes (the API server takes a Service range of
    /// at most 2^20 addresses, /108) and overlaps.
    fn validate6(&self) -> Result<()> {
        let size = |what: &str, net: &Ipv6Net, range: std::ops::RangeInclusive<u8>, why: &str| {
            if range.contains(&net.prefix_len()) {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "{what} {net} does not fit: use a prefix length from /{} to /{} ({why})",
                    range.start(),
                    range.end()
                )))
            }
        };
        size("--lan6", &self.lan6, 48..=120, "hosts ::1 to ::80")?;
        size(
            "--service-cidr6",
            &self.service_cidr6,
            108..=120,
            "the API server allocates from at most 2^20 addresses",
        )?;
        size(
            "--pod-cidr6",
            &self.pod_cidr6,
            48..=64,
            "the node's IPv6 podCIDR is its first /64",
        )?;
        let all = [
            ("--lan6", self.lan6),
            ("--service-cidr6", self.service_cidr6),
            ("--pod-cidr6", self.pod_cidr6),
        ];
        for (i, (a, x)) in all.iter().enumerate() {
            for (b, y) in &all[i + 1..] {
                if x.contains(&y.network()) || y.contains(&x.network()) {
                    return Err(Error::Invalid(format!(
                        "{a} {x} overlaps {b} {y}: pick ranges that do not overlap"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether the cluster is dual-stack.
    pub fn dual(&self) -> bool {
        self.ip_family == IpFamily::Dual
    }
    /// Whether the cluster is IPv6 only (its LAN still carries both families).
    pub fn ipv6_only(&self) -> bool {
        self.ip_family == IpFamily::Ipv6
    }
    /// Whether the cluster has IPv6 (dual-stack or IPv6 only): the LAN, the node and the pods
    /// carry IPv6.
    pub fn has_ipv6(&self) -> bool {
        self.ip_family != IpFamily::Ipv4
    }
    /// The node's IPv6 address on the LAN (`::1`), with IPv6 only.
    pub fn node_ip6(&self) -> Option<Ipv6Addr> {
        self.has_ipv6().then(|| nth6(&self.lan6, 1))
    }
    /// The default laptop's IPv6 address (`::10`), with IPv6 only.
    pub fn laptop_ip6(&self) -> Option<Ipv6Addr> {
        self.has_ipv6().then(|| nth6(&self.lan6, 10))
    }
    /// The IPv6 twin of an IPv4 address on the LAN (same host number), with IPv6 only.
    pub fn lan_ip6_of(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        let n = u32::from(v4) - u32::from(self.lan.network());
        self.has_ipv6().then(|| nth6(&self.lan6, n))
    }
    /// The LAN resolver's IPv6 address (`::53`), dual-stack only.
    pub fn lan_dns_ip6(&self) -> Option<Ipv6Addr> {
        self.lan_ip6_of(self.lan_dns_ip())
    }
    /// The intranet's IPv6 address (`::80`), dual-stack only.
    pub fn intranet_ip6(&self) -> Option<Ipv6Addr> {
        self.lan_ip6_of(self.intranet_ip())
    }
    /// kube-dns's IPv6 ClusterIP (`::10` of the IPv6 Service CIDR), with IPv6 only.
    pub fn dns_svc_ip6(&self) -> Option<Ipv6Addr> {
        self.has_ipv6().then(|| nth6(&self.service_cidr6, 10))
    }
    /// The `kubernetes` Service's IPv6 ClusterIP (`::1`), with IPv6 only.
    pub fn kubernetes_svc_ip6(&self) -> Option<Ipv6Addr> {
        self.has_ipv6().then(|| nth6(&self.service_cidr6, 1))
    }
    /// The Service CIDRs the API server allocates from (`--service-cluster-ip-range`), the
    /// primary first: IPv4 (and IPv6 when dual-stack), or IPv6 alone.
    pub fn api_service_cidrs(&self) -> (IpNet, Option<IpNet>) {
        match self.ip_family {
            IpFamily::Ipv4 => (self.service_cidr.into(), None),
            IpFamily::Dual => (self.service_cidr.into(), Some(self.service_cidr6.into())),
            IpFamily::Ipv6 => (self.service_cidr6.into(), None),
        }
    }
    /// The cluster's Service CIDRs (what the node routes to kube-proxy).
    pub fn service_cidrs(&self) -> Vec<IpNet> {
        let (a, b) = self.api_service_cidrs();
        std::iter::once(a).chain(b).collect()
    }
    /// The second Service CIDR the API server allocates from (dual-stack).
    pub fn secondary_service_cidr(&self) -> Option<Ipv6Net> {
        self.dual().then_some(self.service_cidr6)
    }
    /// The node's IPv6 podCIDR: the first /64 of the IPv6 pod CIDR, with IPv6 only.
    pub fn node_pod_cidr6(&self) -> Option<Ipv6Net> {
        self.has_ipv6()
            .then(|| Ipv6Net::new(self.pod_cidr6.network(), 64).expect("a /64"))
    }
    /// The node's podCIDRs as the Node publishes them, IPv4 first (IPv6 alone when IPv6
    /// only).
    pub fn node_pod_cidrs(&self) -> Vec<String> {
        let v4 = (!self.ipv6_only()).then(|| self.node_pod_cidr().to_string());
        v4.into_iter()
            .chain(self.node_pod_cidr6().map(|n| n.to_string()))
            .collect()
    }
    /// `v6` in an IPv6-only cluster, else `v4`: an address in the cluster's primary family.
    fn primary(&self, v4: Ipv4Addr, v6: Option<Ipv6Addr>) -> IpAddr {
        match v6.filter(|_| self.ipv6_only()) {
            Some(ip) => ip.into(),
            None => v4.into(),
        }
    }
    /// The `kubernetes` Service's address in the cluster's primary family (what pods get as
    /// `KUBERNETES_SERVICE_HOST`).
    pub fn kubernetes_svc_addr(&self) -> IpAddr {
        self.primary(self.kubernetes_svc_ip(), self.kubernetes_svc_ip6())
    }
    /// kube-dns's address in the primary family (pods' nameserver).
    pub fn dns_svc_addr(&self) -> IpAddr {
        self.primary(self.dns_svc_ip(), self.dns_svc_ip6())
    }
    /// The node's address in the primary family (its InternalIP, pods' hostIP).
    pub fn node_addr(&self) -> IpAddr {
        self.primary(self.node_ip(), self.node_ip6())
    }
    /// The LAN resolver's address in the primary family (cluster DNS's upstream).
    pub fn lan_dns_addr(&self) -> IpAddr {
        self.primary(self.lan_dns_ip(), self.lan_dns_ip6())
    }
    /// The IPv6 address of the pod at IPv4 `v4` (same host number in the node's IPv6 podCIDR),
    /// with IPv6 only. (An IPv6-only cluster's pods have only this one: `v4` is then just the
    /// kubelet's allocation index.)
    pub fn pod_ip6_of(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        let n = u32::from(v4) - u32::from(self.node_pod_cidr().network());
        self.node_pod_cidr6().map(|net| nth6(&net, n))
    }

    /// The node's address on the LAN (`.1`); the API server listens here.
    pub fn node_ip(&self) -> Ipv4Addr {
        nth(&self.lan, 1)
    }
    /// The default laptop's address (`.10`).
    pub fn laptop_ip(&self) -> Ipv4Addr {
        nth(&self.lan, 10)
    }
    /// Addresses for extra laptops, `.11` to `.50`.
    pub fn extra_laptop_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (11..=50).map(|i| nth(&self.lan, i))
    }
    /// The LAN resolver (`.53`, zone `corp.example`).
    pub fn lan_dns_ip(&self) -> Ipv4Addr {
        nth(&self.lan, 53)
    }
    /// The intranet HTTP server (`.80`).
    pub fn intranet_ip(&self) -> Ipv4Addr {
        nth(&self.lan, 80)
    }
    /// The `kubernetes` Service (`.1` of the Service CIDR).
    pub fn kubernetes_svc_ip(&self) -> Ipv4Addr {
        nth(&self.service_cidr, 1)
    }
    /// kube-dns (`.10` of the Service CIDR).
    pub fn dns_svc_ip(&self) -> Ipv4Addr {
        nth(&self.service_cidr, 10)
    }
    /// The node's podCIDR: the first /24 of the pod CIDR.
    pub fn node_pod_cidr(&self) -> Ipv4Net {
        Ipv4Net::new(self.pod_cidr.network(), 24).expect("a /24")
    }
    /// Pod addresses the kubelet hands out, `.2` to `.254` of the node's podCIDR (`.1` is kept
    /// for a gateway).
    pub fn pod_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let base = self.node_pod_cidr();
        (2..=254).map(move |i| nth(&base, i))
    }
    /// `https://<node>:6443`.
    pub fn api_server(&self) -> String {
        format!("https://{}:{}", self.node_ip(), names::API_PORT)
    }

    /// `<run dir>/net.json`.
    fn file(n: &Names) -> std::path::PathBuf {
        n.run_dir().join("net.json")
    }

    /// Writes the choices for the daemon and later commands.
    pub fn save(&self, n: &Names) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serializable");
        crate::sh::write_file(&Self::file(n), &text)
    }

    /// The choices `up` made for cluster `n` (the defaults when it wrote none).
    pub fn load(n: &Names) -> Result<ClusterNet> {
        let path = Self::file(n);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::Invalid(format!(
                    "{} is damaged ({e}); run `kwg-sim up --prefix {}` again",
                    path.display(),
                    n.prefix()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterNet::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_addresses() {
        let d = ClusterNet::default();
        d.validate().unwrap();
        assert_eq!(d.node_ip(), names::NODE_IP);
        assert_eq!(d.laptop_ip(), names::LAPTOP_IP);
        assert_eq!(d.lan_dns_ip(), names::LAN_DNS_IP);
        assert_eq!(d.intranet_ip(), names::INTRANET_IP);
        assert_eq!(d.kubernetes_svc_ip(), names::KUBERNETES_SVC_IP);
        assert_eq!(d.dns_svc_ip(), names::DNS_SVC_IP);
        assert_eq!(d.node_pod_cidr().to_string(), names::NODE_POD_CIDR);
        assert_eq!(d.pod_ips().next(), Some(Ipv4Addr::new(10, 244, 0, 2)));
        assert_eq!(d.api_server(), "https://192.0.2.1:6443");
    }

    #[test]
    fn other_ranges_move_every_derived_address() {
        let n = ClusterNet {
            lan: parse_cidr("--lan", "198.51.100.0/24").unwrap(),
            service_cidr: parse_cidr("--service-cidr", "10.43.0.0/16").unwrap(),
            pod_cidr: parse_cidr("--pod-cidr", "10.42.0.0/16").unwrap(),
            domain: "corp.internal".into(),
            ..ClusterNet::default()
        };
        n.validate().unwrap();
        assert_eq!(n.node_ip().to_string(), "198.51.100.1");
        assert_eq!(n.lan_dns_ip().to_string(), "198.51.100.53");
        assert_eq!(n.dns_svc_ip().to_string(), "10.43.0.10");
        assert_eq!(n.kubernetes_svc_ip().to_string(), "10.43.0.1");
        assert_eq!(n.node_pod_cidr().to_string(), "10.42.0.0/24");
        assert_eq!(n.pod_ips().last().unwrap().to_string(), "10.42.0.254");
        assert_eq!(
            n.extra_laptop_ips().next().unwrap().to_string(),
            "198.51.100.11"
        );
    }

    #[test]
    fn dual_stack_addresses_are_the_ipv4_host_numbers_in_hex_digits() {
        let mut n = ClusterNet::default();
        assert_eq!(n.node_ip6(), None);
        assert_eq!(n.node_pod_cidrs(), ["10.244.0.0/24"]);
        n.ip_family = IpFamily::Dual;
        n.validate().unwrap();
        assert_eq!(n.node_ip6().unwrap().to_string(), "fd00:c0:2::1");
        assert_eq!(n.laptop_ip6().unwrap().to_string(), "fd00:c0:2::10");
        assert_eq!(n.lan_dns_ip6().unwrap().to_string(), "fd00:c0:2::53");
        assert_eq!(n.dns_svc_ip6().unwrap().to_string(), "fd00:10:96::10");
        assert_eq!(n.kubernetes_svc_ip6().unwrap().to_string(), "fd00:10:96::1");
        assert_eq!(n.node_pod_cidrs(), ["10.244.0.0/24", "fd00:10:244::/64"]);
        assert_eq!(
            n.pod_ip6_of(Ipv4Addr::new(10, 244, 0, 27))
                .unwrap()
                .to_string(),
            "fd00:10:244::27"
        );
        n.service_cidr6 = "fd00:10:96::/64".parse().unwrap();
        assert!(
            n.validate()
                .unwrap_err()
                .to_string()
                .contains("--service-cidr6")
        );
        n.service_cidr6 = "fd00:10:244::/112".parse().unwrap();
        assert!(
            n.validate()
                .unwrap_err()
                .to_string()
                .contains("--service-cidr6 fd00:10:244::/112 overlaps --pod-cidr6")
        );
        // A net.json written before dual-stack reads as IPv4 only.
        let old = r#"{"lan":"192.0.2.0/24","service_cidr":"10.96.0.0/12","pod_cidr":"10.244.0.0/16","domain":"cluster.local"}"#;
        let old: ClusterNet = serde_json::from_str(old).unwrap();
        assert_eq!(old, ClusterNet::default());
    }

    #[test]
    fn an_ipv6_only_cluster_has_ipv6_inside_and_both_families_on_its_lan() {
        let n = ClusterNet {
            ip_family: IpFamily::Ipv6,
            ..ClusterNet::default()
        };
        n.validate().unwrap();
        let (primary, secondary) = n.api_service_cidrs();
        assert_eq!(
            (primary.to_string(), secondary),
            ("fd00:10:96::/112".into(), None)
        );
        assert_eq!(n.node_pod_cidrs(), ["fd00:10:244::/64"]);
        assert_eq!(n.kubernetes_svc_addr().to_string(), "fd00:10:96::1");
        assert_eq!(n.dns_svc_addr().to_string(), "fd00:10:96::10");
        assert_eq!(n.node_addr().to_string(), "fd00:c0:2::1");
        assert_eq!(n.lan_dns_addr().to_string(), "fd00:c0:2::53");
        // The LAN keeps IPv4: the API server's address in kubeconfigs, the laptop's.
        assert_eq!(n.api_server(), "https://192.0.2.1:6443");
        assert_eq!(n.laptop_ip6().unwrap().to_string(), "fd00:c0:2::10");
        // IPv4 and dual-stack clusters keep their IPv4 primary addresses.
        let d = ClusterNet::default();
        assert_eq!(d.kubernetes_svc_addr().to_string(), "10.96.0.1");
        assert_eq!(d.node_addr().to_string(), "192.0.2.1");
    }

    #[test]
    fn bad_choices_name_the_option_to_change() {
        let err = |f: fn(&mut ClusterNet)| {
            let mut n = ClusterNet::default();
            f(&mut n);
            n.validate().unwrap_err().to_string()
        };
        assert!(
            err(|n| n.lan = "192.0.2.0/25".parse().unwrap())
                .contains("--lan 192.0.2.0/25 is too small")
        );
        assert!(
            err(|n| n.pod_cidr = "10.96.0.0/16".parse().unwrap())
                .contains("--service-cidr 10.96.0.0/12 overlaps --pod-cidr 10.96.0.0/16")
        );
        assert!(err(|n| n.domain = "bad domain".into()).contains("--domain"));
        let host_bits = parse_cidr("--lan", "192.0.2.7/24").unwrap_err().to_string();
        assert!(
            host_bits.contains("did you mean 192.0.2.0/24?"),
            "{host_bits}"
        );
        assert!(
            parse_cidr("--lan", "nope")
                .unwrap_err()
                .to_string()
                .contains("--lan")
        );
        assert!(
            parse_cidr("--lan", "fd00::/64")
                .unwrap_err()
                .to_string()
                .contains("is not an IPv4 CIDR")
        );
        assert!(
            parse_cidr6("--lan6", "10.0.0.0/8")
                .unwrap_err()
                .to_string()
                .contains("is not an IPv6 CIDR; write it like fd00:10:96::/112")
        );
        assert_eq!(
            parse_cidr6("--lan6", "fd00:c0:2::/64").unwrap().to_string(),
            "fd00:c0:2::/64"
        );
    }
}
