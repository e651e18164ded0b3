//! The addresses of one cluster: its LAN, Service and pod CIDRs and cluster domain (the options of
//! `kwg-sim up`), and everything derived from them.
//!
//! The defaults are the constants of [`crate::names`] (LAN 192.0.2.0/24, Services 10.96.0.0/12,
//! pods 10.244.0.0/16, `cluster.local`). `up` writes the chosen values to `<run dir>/net.json`;
//! the daemon and later commands read them back with [`ClusterNet::load`].

use crate::names::{self, Names};
use crate::{Error, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

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
}

impl Default for ClusterNet {
    fn default() -> ClusterNet {
        let net = |s: &str| s.parse().expect("a default CIDR parses");
        ClusterNet {
            lan: net(names::LAN_CIDR),
            service_cidr: net(names::SERVICE_CIDR),
            pod_cidr: net(names::POD_CIDR),
            domain: names::CLUSTER_DOMAIN.into(),
        }
    }
}

/// The `n`th address of `net` (`n` = 0 is the network address).
fn nth(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// Parses a CIDR option; `what` names it in the error (`--lan`).
pub fn parse_cidr(what: &str, value: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = value.parse().map_err(|e| {
        Error::Invalid(format!(
            "{what} {value:?} is not an IPv4 CIDR ({e}); write it like 10.96.0.0/12"
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
        check_domain(&self.domain)
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
    }
}
