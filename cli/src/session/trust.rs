//! What the laptop accepts from the cluster. The gateway info and the tunnel-IP annotation are
//! written by whoever may write them in the cluster; before anything of them touches the
//! machine (a root daemon), each is checked, and a refusal names what and why. The user's own
//! `--also-proxy` and `--allow-conflicting-subnets` stay the explicit way to widen.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use kwg_wg::contract::GatewayInfo;

use crate::error::Error;

/// No cluster subnet shorter than this is routed (a /1 would take half the Internet).
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 32;

/// Ranges never routed into a tunnel: loopback, link-local, multicast, "this network".
const RESERVED: &[&str] = &[
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "255.255.255.255/32",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

/// The machine facts the checks need.
pub struct Machine<'a> {
    /// Addresses of the machine's own interfaces.
    pub addresses: &'a [IpAddr],
    /// Next hops of the machine's default routes (any table).
    pub gateways: &'a [IpAddr],
    /// The API server's addresses.
    pub api_server: &'a [IpAddr],
}

fn refused(what: impl Into<String>, why: impl Into<String>) -> Error {
    Error::UntrustedInfo {
        what: what.into(),
        why: why.into(),
    }
}

/// Checks the gateway info's subnets, cluster domain and DNS IP.
pub fn check_info(
    info: &GatewayInfo,
    machine: &Machine<'_>,
    exclude: &[String],
    include: &[String],
) -> Result<(), Error> {
    for net in info.service_cidrs.iter().chain(&info.pod_cidrs) {
        check_subnet(net, machine)?;
    }
    check_cluster_domain(&info.cluster_domain, exclude, include)?;
    if let Some(dns) = info.dns_ip
        && !info
            .service_cidrs
            .iter()
            .chain(&info.pod_cidrs)
            .any(|n| n.contains(&dns))
    {
        return Err(refused(
            format!("dnsIp {dns}"),
            "it is not inside the cluster's service or pod CIDRs, so queries for cluster names would leave the tunnel",
        ));
    }
    Ok(())
}

/// A cluster subnet: not too wide, not a reserved range, covering none of the machine's own
/// addresses, default gateways or the API server.
pub fn check_subnet(net: &IpNet, machine: &Machine<'_>) -> Result<(), Error> {
    let what = || format!("cluster subnet {net}");
    let min = match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if net.prefix_len() < min {
        return Err(refused(
            what(),
            format!(
                "a prefix shorter than /{min} would route far more than a cluster through the tunnel"
            ),
        ));
    }
    for r in RESERVED {
        let r: IpNet = r.parse().expect("a valid range");
        if r.contains(net) || net.contains(&r) || r.contains(&net.network()) {
            return Err(refused(
                what(),
                format!("it overlaps the reserved range {r}"),
            ));
        }
    }
    let covered = |ips: &[IpAddr], whose: &str| match ips.iter().find(|ip| net.contains(*ip)) {
        Some(ip) => Err(refused(what(), format!("it covers {whose} {ip}"))),
        None => Ok(()),
    };
    covered(machine.addresses, "this machine's address")?;
    covered(machine.gateways, "this machine's default gateway")?;
    covered(machine.api_server, "the API server's address")
}

/// The cluster domain: a DNS name of at least two labels (a public suffix such as `com`
/// would send every such name to the cluster), not under an exclude suffix unless an
/// include suffix covers it.
pub fn check_cluster_domain(
    domain: &str,
    exclude: &[String],
    include: &[String],
) -> Result<(), Error> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let what = || format!("clusterDomain {:?}", crate::output::sanitize(domain));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.len() > 253 || !d.split('.').all(label_ok) {
        return Err(refused(what(), "it is not a DNS name"));
    }
    if !d.contains('.') {
        return Err(refused(
            what(),
            "a single label is a top-level domain: every name under it would go to the cluster",
        ));
    }
    let under = |suffixes: &[String]| {
        suffixes.iter().any(|s| {
            let s = s.trim_matches('.').to_ascii_lowercase();
            d == s || d.ends_with(&format!(".{s}"))
        })
    };
    if under(exclude) && !under(include) {
        return Err(refused(
            what(),
            "it is under an excluded suffix (pass --dns-include-suffix to allow it)",
        ));
    }
    Ok(())
}

/// The tunnel IP the gateway annotated: inside the tunnel CIDR, not the gateway's own, not an
/// address the machine already has.
pub fn check_tunnel_ip(
    ip: Ipv4Addr,
    info: &GatewayInfo,
    addresses: &[IpAddr],
) -> Result<(), Error> {
    let what = || format!("tunnel IP {ip}");
    if !info.tunnel_cidr.contains(&ip) {
        return Err(refused(
            what(),
            format!("it is outside the tunnel CIDR {}", info.tunnel_cidr),
        ));
    }
    if ip == info.gateway_ip.addr()
        || ip == info.tunnel_cidr.network()
        || ip == info.tunnel_cidr.broadcast()
    {
        return Err(refused(
            what(),
            "it is the gateway's or the CIDR's own address",
        ));
    }
    if addresses.contains(&IpAddr::V4(ip)) {
        return Err(refused(what(), "this machine already has that address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> GatewayInfo {
        let key = kwg_wg::keys::PrivateKey::generate().public_key();
        GatewayInfo::from_json(
            format!(
                r#"{{"version":1,"publicKey":"{key}","endpoints":["192.0.2.1:31820"],"tunnelCidr":"100.77.0.0/16",
"gatewayIp":"100.77.0.1","serviceCidrs":["10.96.0.0/12"],"podCidrs":["10.244.0.0/16"],"dnsIp":"10.96.0.10",
"clusterDomain":"cluster.local","adminPort":8080}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const ADDRS: &[IpAddr] = &[
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)),
    ];
    const GW: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254))];
    const API: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))];

    fn machine() -> Machine<'static> {
        Machine {
            addresses: ADDRS,
            gateways: GW,
            api_server: API,
        }
    }

    fn exclude() -> Vec<String> {
        crate::dns::split::DEFAULT_EXCLUDE_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn a_normal_cluster_is_accepted() {
        check_info(&info(), &machine(), &exclude(), &[]).unwrap();
        check_tunnel_ip("100.77.0.2".parse().unwrap(), &info(), ADDRS).unwrap();
    }

    #[test]
    fn hostile_subnets_are_refused_with_the_reason() {
        for (cidr, why) in [
            ("0.0.0.0/1", "a prefix shorter than /8"),
            ("0.0.0.0/0", "a prefix shorter than /8"),
            ("127.0.0.0/16", "reserved range 127.0.0.0/8"),
            ("169.254.169.254/32", "reserved range 169.254.0.0/16"),
            ("224.0.0.0/8", "reserved range 224.0.0.0/4"),
            ("192.0.2.0/24", "covers this machine's address 192.0.2.10"),
            (
                "192.0.2.254/32",
                "covers this machine's default gateway 192.0.2.254",
            ),
            ("192.0.2.0/31", "covers the API server's address 192.0.2.1"),
        ] {
            let mut i = info();
            i.pod_cidrs.push(cidr.parse().unwrap());
            let err = check_info(&i, &machine(), &exclude(), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "cluster subnet {}",
                    cidr.parse::<IpNet>().unwrap()
                )) && err.contains(why),
                "{cidr}: {err}"
            );
        }
    }

    #[test]
    fn a_cluster_domain_that_captures_public_names_is_refused() {
        for (domain, why) in [
            ("com", "single label"),
            ("example.com", "excluded suffix"),
            ("bad_name.local", "not a DNS name"),
            ("\u{1b}[31mred.local", "not a DNS name"),
        ] {
            let mut i = info();
            i.cluster_domain = domain.into();
            let err = check_info(&i, &machine(), &exclude(), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{domain}: {err}");
            assert!(!err.contains('\u{1b}'), "{err}");
        }
        // An include suffix is the user's explicit way to allow it.
        check_cluster_domain("k8s.example.com", &exclude(), &[".example.com".into()]).unwrap();
    }

    #[test]
    fn a_dns_ip_outside_the_cluster_and_forged_tunnel_ips_are_refused() {
        let mut i = info();
        i.dns_ip = Some("192.0.2.53".parse().unwrap());
        let err = check_info(&i, &machine(), &exclude(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("dnsIp 192.0.2.53"), "{err}");
        for (ip, why) in [
            ("192.0.2.53", "outside the tunnel CIDR"),
            ("100.77.0.1", "gateway's"),
            ("100.77.0.0", "CIDR's own"),
        ] {
            let err = check_tunnel_ip(ip.parse().unwrap(), &info(), ADDRS)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{ip}: {err}");
        }
        let mine = [IpAddr::V4("100.77.0.9".parse().unwrap())];
        let err = check_tunnel_ip("100.77.0.9".parse().unwrap(), &info(), &mine)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already has that address"), "{err}");
    }
}
