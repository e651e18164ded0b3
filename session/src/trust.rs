//! What the laptop accepts from the cluster. The gateway info and the tunnel-IP annotation are
//! written by whoever may write them in the cluster; before anything of them touches the
//! machine (a root daemon), each is checked, and a refusal names what, why and the user's flag
//! that would accept it. The user's own `--also-proxy`, `--never-proxy`, `--cluster-domain`
//! and `--allow-conflicting-subnets` stay the explicit ways to widen. The rules and their
//! reasons: docs/laptop-trust.md.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use kwg_contract::{GatewayInfo, TunnelIp};

use crate::error::Error;

/// No cluster subnet shorter than this is routed (a /1 would take half the Internet).
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 32;

/// The address space a cluster may announce without the user's say-so: private (RFC 1918),
/// shared (RFC 6598, where CGNAT and overlay networks live) and unique local IPv6 (RFC 4193).
/// Every real cluster's service and pod ranges lie there; anything else is someone's public
/// address space, which only the user may route into the cluster (`--also-proxy`).
pub const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// At most this many separate cluster prefixes (service and pod CIDRs after merging adjacent
/// and nested ones, which is also how they are routed). A cluster needs one service and one pod
/// range per address family, a few more with several ServiceCIDRs or node pools; per-node pod
/// CIDRs merge into their cluster range. 32 leaves room for that while bounding what a cluster
/// can make the laptop install (each prefix is a route, an AllowedIP and a reverse DNS zone).
pub const MAX_CLUSTER_PREFIXES: usize = 32;

/// Ranges never routed into a tunnel: "this network", loopback, link-local (the cloud metadata
/// address), multicast, the old class E and broadcast.
const RESERVED: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

/// Domains for private use only, never delegated in public DNS: a cluster domain under them
/// captures no public name. `local` (RFC 6762), `home.arpa` (RFC 8375), `internal` (reserved
/// by ICANN for private use in 2024), `lan` (common on home routers, not a TLD).
pub const PRIVATE_DOMAINS: &[&str] = &["local", "internal", "lan", "home.arpa"];

/// What the checks need to know about the machine (read once at join).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// Addresses of the machine's own interfaces.
    pub addresses: Vec<IpAddr>,
    /// Next hops of the machine's default routes (any table).
    pub gateways: Vec<IpAddr>,
    /// The machine's DNS servers (resolv.conf, or systemd-resolved's uplink servers).
    pub dns_servers: Vec<IpAddr>,
    /// The API server's addresses.
    pub api_server: Vec<IpAddr>,
}

impl Machine {
    /// Every address whose traffic must keep its own way (never into the tunnel), and whose it
    /// is, in the order the checks name them.
    pub fn kept_out(&self) -> impl Iterator<Item = (&'static str, IpAddr)> + '_ {
        [
            (&self.addresses, "this machine's address"),
            (&self.gateways, "this machine's default gateway"),
            (&self.dns_servers, "this machine's DNS server"),
            (&self.api_server, "the API server's address"),
        ]
        .into_iter()
        .flat_map(|(ips, whose)| ips.iter().map(move |ip| (whose, *ip)))
    }
}

/// What the user allowed on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Consent<'a> {
    /// `--also-proxy`: a cluster subnet inside one is the user's own route anyway.
    pub also_proxy: &'a [IpNet],
    /// `--never-proxy`: an address inside one is never routed, so a cluster subnet may cover it.
    pub never_proxy: &'a [IpNet],
    /// `--cluster-domain`: this very cluster domain is accepted even when public.
    pub cluster_domain: Option<&'a str>,
    pub exclude: &'a [String],
    pub include: &'a [String],
}

/// A refusal before it becomes the error: what, why, and the flag that would accept it.
struct Refusal {
    what: String,
    why: String,
    allow: Option<String>,
}

impl Refusal {
    fn new(what: impl Into<String>, why: impl Into<String>) -> Refusal {
        Refusal {
            what: what.into(),
            why: why.into(),
            allow: None,
        }
    }
    fn allow(mut self, flag: impl Into<String>) -> Refusal {
        self.allow = Some(flag.into());
        self
    }
    fn error(self) -> Error {
        Error::UntrustedInfo {
            what: self.what,
            why: self.why,
            allow: self.allow,
        }
    }
}

fn refused(what: impl Into<String>, why: impl Into<String>) -> Error {
    Refusal::new(what, why).error()
}

/// The cluster's Service and pod ranges of both families (IPv6 ones from `info.ipv6`).
fn cluster_ranges(info: &GatewayInfo) -> Vec<IpNet> {
    info.service_cidrs
        .iter()
        .chain(&info.pod_cidrs)
        .copied()
        .chain(
            info.ipv6
                .as_ref()
                .map(|i| i.cluster_cidrs())
                .unwrap_or_default(),
        )
        .collect()
}

/// Checks the gateway info: its subnets, gateway IP, tunnel CIDR, cluster domain and DNS IP;
/// in a dual-stack cluster (`info.ipv6`, its `ipv6.json`) the IPv6 ones by the same rules
/// (unique local `fc00::/7` without the user's say-so).
pub fn check_info(
    info: &GatewayInfo,
    machine: &Machine,
    consent: &Consent<'_>,
) -> Result<(), Error> {
    let users = |net: &IpNet| consent.also_proxy.iter().any(|a| a.contains(net));
    let info6 = info.ipv6.as_ref();
    // Subnets inside the user's own --also-proxy are routed anyway: nothing to accept.
    let cluster: Vec<IpNet> = cluster_ranges(info)
        .into_iter()
        .map(|n| n.trunc())
        .filter(|n| !users(n))
        .collect();
    let mut refusals = cluster
        .iter()
        .filter_map(|net| check_subnet(net, machine, consent).err());
    if let Some(mut first) = refusals.next() {
        let more = refusals.count();
        if more > 0 {
            first.what = format!("{} (and {more} more)", first.what);
        }
        return Err(first.error());
    }
    let merged = IpNet::aggregate(&cluster);
    if merged.len() > MAX_CLUSTER_PREFIXES {
        return Err(Refusal::new(
            format!("{} cluster subnets", merged.len()),
            format!(
                "more than {MAX_CLUSTER_PREFIXES} separate prefixes (adjacent ones merged); a cluster needs a few (a service and a pod range per address family)"
            ),
        )
        .allow("--also-proxy with ranges that cover them")
        .error());
    }
    let mut gateways = vec![("gatewayIp", IpAddr::V4(info.gateway_ip.addr()))];
    let mut tunnels = vec![("tunnelCidr", IpNet::V4(info.tunnel_cidr.trunc()))];
    if let Some(i) = info6 {
        let ip6 = IpAddr::V6(i.tunnel_ip6(info.gateway_ip));
        gateways.push(("the gateway's IPv6 tunnel address", ip6));
        tunnels.push(("ipv6.json tunnelCidr", IpNet::V6(i.tunnel_cidr.trunc())));
    }
    for (what, ip) in gateways {
        let gateway = IpNet::from(ip);
        if !users(&gateway) {
            check_subnet(&gateway, machine, consent).map_err(|mut r| {
                r.what = format!("{what} {ip}");
                r.error()
            })?;
        }
    }
    for (what, tunnel) in tunnels {
        if !users(&tunnel) {
            check_space(&tunnel).map_err(|(why, allow)| {
                Refusal::new(format!("{what} {tunnel}"), why)
                    .allow(allow)
                    .error()
            })?;
        }
    }
    check_cluster_domain(&info.cluster_domain, consent)?;
    let dns6 = info6.and_then(|i| i.dns_ip).map(IpAddr::V6);
    let ranges = cluster_ranges(info);
    if let Some(dns) = info
        .dns_ip
        .into_iter()
        .chain(dns6)
        .find(|dns| !ranges.iter().any(|n| n.contains(dns)))
    {
        return Err(refused(
            format!("dnsIp {dns}"),
            "it is not inside the cluster's service or pod CIDRs, so queries for cluster names would leave the tunnel",
        ));
    }
    Ok(())
}

/// Why a gateway info carries no IPv6 (the end of [`Error::UncarriedFamily`]'s sentence).
pub const GATEWAY_IPV4_ONLY: &str = "this cluster's gateway carries only IPv4 (kwg-gateway-info has no ipv6.json: the cluster has no IPv6 range, or its gateway is older than IPv6 support)";

/// `--also-proxy` ranges must be of a family the tunnel carries: IPv4 always, IPv6 when the
/// gateway publishes `ipv6.json` and this join carries it (`ipv4_only` says why not,
/// docs/contract.md, IP families); an IPv6 range would otherwise be routed into `kwg0` and go
/// nowhere.
pub fn check_families(also_proxy: &[IpNet], ipv4_only: Option<&str>) -> Result<(), Error> {
    match (
        also_proxy.iter().find(|n| matches!(n, IpNet::V6(_))),
        ipv4_only,
    ) {
        (Some(net), Some(why)) => Err(Error::UncarriedFamily {
            net: *net,
            why: why.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Where a prefix lies: not too wide, not reserved, inside private or shared space. The error
/// is why, and the flag that would route it anyway.
fn check_space(net: &IpNet) -> Result<(), (String, String)> {
    let allow = format!("--also-proxy {net}");
    let min = match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if net.prefix_len() < min {
        return Err((
            format!(
                "a prefix shorter than /{min} would route far more than a cluster through the tunnel"
            ),
            allow,
        ));
    }
    for r in RESERVED {
        let r: IpNet = r.parse().expect("a valid range");
        if r.contains(net) || net.contains(&r) {
            return Err((format!("it overlaps the reserved range {r}"), allow));
        }
    }
    if !PRIVATE
        .iter()
        .any(|p| p.parse::<IpNet>().expect("a valid range").contains(net))
    {
        return Err((
            format!(
                "it is public address space, while a cluster's subnets lie in private or shared space ({})",
                PRIVATE.join(", ")
            ),
            allow,
        ));
    }
    Ok(())
}

/// [`check_space`]'s verdict for kwg-helper, which enforces it on every route a user's session
/// asks for (docs/laptop-trust.md): why `net` may not be routed without the user's say-so.
pub fn address_space(net: &IpNet) -> Result<(), String> {
    check_space(net).map_err(|(why, _)| why)
}

/// A cluster subnet: [`check_space`], and covering none of the machine's own addresses, default
/// gateways, DNS servers or the API server (unless `--never-proxy` keeps that address off the
/// tunnel).
fn check_subnet(net: &IpNet, machine: &Machine, consent: &Consent<'_>) -> Result<(), Refusal> {
    let what = format!("cluster subnet {net}");
    check_space(net).map_err(|(why, allow)| Refusal::new(&what, why).allow(allow))?;
    let kept_off = |ip: &IpAddr| consent.never_proxy.iter().any(|n| n.contains(ip));
    match machine
        .kept_out()
        .find(|(_, ip)| net.contains(ip) && !kept_off(ip))
    {
        Some((whose, ip)) => Err(Refusal::new(&what, format!("it covers {whose} {ip}"))
            .allow(format!("--never-proxy {}", IpNet::from(ip)))),
        None => Ok(()),
    }
}

/// The cluster domain: a DNS name of at least two labels that captures no public name: not a
/// public suffix (`co.uk`) nor any name under one (`bbc.co.uk`), per the Public Suffix List;
/// names for private use (`cluster.local`, `*.internal`, `*.home.arpa`) and unlisted
/// top-level domains pass. `--cluster-domain` with that very name accepts it anyway;
/// `--dns-include-suffix` lets it under an excluded suffix.
pub fn check_cluster_domain(domain: &str, consent: &Consent<'_>) -> Result<(), Error> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let what = || format!("clusterDomain {:?}", crate::text::sanitize(domain));
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
    if consent
        .cluster_domain
        .is_some_and(|c| c.trim_end_matches('.').eq_ignore_ascii_case(&d))
    {
        return Ok(());
    }
    let allow = format!("--cluster-domain {d}");
    let under = |suffixes: &[&str]| {
        suffixes.iter().any(|s| {
            let s = s.trim_matches('.').to_ascii_lowercase();
            d == s || d.ends_with(&format!(".{s}"))
        })
    };
    if !d.contains('.') {
        return Err(Refusal::new(
            what(),
            "a single label is a top-level domain: every name under it would go to the cluster",
        )
        .allow(allow)
        .error());
    }
    if under(PRIVATE_DOMAINS) {
        return Ok(());
    }
    let (exclude, include) = (strs(consent.exclude), strs(consent.include));
    if under(&exclude) && !under(&include) {
        return Err(Refusal::new(
            what(),
            "it is under an excluded suffix, whose names must stay the machine's",
        )
        .allow(format!("{allow} (or --dns-include-suffix)"))
        .error());
    }
    if let Some(suffix) = psl::suffix(d.as_bytes()).filter(|s| s.is_known()) {
        let suffix = String::from_utf8_lossy(suffix.trim().as_bytes()).into_owned();
        let why = if suffix == d {
            "it is a public suffix (Public Suffix List): anyone may register names under it, and every such name would go to the cluster".to_string()
        } else {
            let registrable = psl::domain(d.as_bytes())
                .map(|r| String::from_utf8_lossy(r.trim().as_bytes()).into_owned())
                .unwrap_or_else(|| d.clone());
            format!(
                "it is a public name under the public suffix {suffix} (registrable domain {registrable}): the cluster would answer for names that belong to someone else"
            )
        };
        return Err(Refusal::new(what(), why).allow(allow).error());
    }
    Ok(())
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The tunnel IP the gateway annotated: inside the tunnel CIDR, not the gateway's own, not an
/// address the machine already has or talks to (its DNS servers, default gateways, the API
/// server: the tunnel address would capture that traffic locally).
pub fn check_tunnel_ip(ip: Ipv4Addr, info: &GatewayInfo, machine: &Machine) -> Result<(), Error> {
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
    // In a dual-stack cluster the IPv6 tunnel address embeds it: the same rules.
    let ip6 = info.ipv6.as_ref().map(|i| i.tunnel_ip6(TunnelIp::new(ip)));
    for ip in std::iter::once(IpAddr::V4(ip)).chain(ip6.map(IpAddr::V6)) {
        check_clear_of_machine(ip, machine)?;
    }
    Ok(())
}

/// The machine's rules of a tunnel address (IPv4, or its IPv6 twin): none of the machine's
/// own addresses, default gateways, DNS servers or the API server's address, which the
/// tunnel address, added as a local address on the interface, would take over.
pub fn check_clear_of_machine(ip: IpAddr, machine: &Machine) -> Result<(), Error> {
    let what = || format!("tunnel IP {ip}");
    if machine.addresses.contains(&ip) {
        return Err(refused(what(), "this machine already has that address"));
    }
    for (ips, whose) in [
        (&machine.gateways, "this machine's default gateway"),
        (&machine.dns_servers, "this machine's DNS server"),
        (&machine.api_server, "the API server's address"),
    ] {
        if ips.contains(&ip) {
            return Err(refused(what(), format!("it is {whose}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> GatewayInfo {
        let key = kwg_contract::keys::PrivateKey::generate().public_key();
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

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn machine() -> Machine {
        Machine {
            addresses: ips(&["192.0.2.10", "10.1.2.3"]),
            gateways: ips(&["192.168.1.1"]),
            dns_servers: ips(&["172.20.0.53"]),
            api_server: ips(&["192.0.2.1", "100.100.0.1"]),
        }
    }

    fn exclude() -> Vec<String> {
        crate::dns::split::DEFAULT_EXCLUDE_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// `check_info` with these flags.
    fn check(
        i: &GatewayInfo,
        also: &[&str],
        never: &[&str],
        domain: Option<&str>,
    ) -> Result<(), String> {
        check_on(&machine(), i, also, never, domain)
    }

    fn check_on(
        machine: &Machine,
        i: &GatewayInfo,
        also: &[&str],
        never: &[&str],
        domain: Option<&str>,
    ) -> Result<(), String> {
        let nets = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpNet>>();
        let (also, never, exclude) = (nets(also), nets(never), exclude());
        let consent = Consent {
            also_proxy: &also,
            never_proxy: &never,
            cluster_domain: domain,
            exclude: &exclude,
            include: &[],
        };
        check_info(i, machine, &consent).map_err(|e| e.to_string())
    }

    fn with_pod(cidr: &str) -> GatewayInfo {
        let mut i = info();
        i.pod_cidrs.push(cidr.parse().unwrap());
        i
    }

    #[test]
    fn an_ipv6_also_proxy_is_refused_in_one_sentence_when_the_join_carries_only_ipv4() {
        let nets: Vec<IpNet> = vec![
            "10.50.0.0/16".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
        ];
        let e = check_families(&nets, Some(GATEWAY_IPV4_ONLY))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("--also-proxy fd00::/64 is an IPv6 range, and {GATEWAY_IPV4_ONLY}: remove it")
        );
        assert_eq!(e.matches('\n').count(), 0, "{e}");
        // A dual-stack join carries it; IPv4 ranges pass either way.
        check_families(&nets, None).unwrap();
        check_families(&nets[..1], Some(GATEWAY_IPV4_ONLY)).unwrap();
    }

    /// The IPv6 side of a dual-stack cluster as the one-machine cluster publishes it.
    fn info6() -> kwg_contract::GatewayInfo6 {
        kwg_contract::GatewayInfo6 {
            tunnel_cidr: kwg_contract::DEFAULT_TUNNEL_CIDR6.parse().unwrap(),
            service_cidrs: vec!["fd00:10:96::/112".parse().unwrap()],
            pod_cidrs: vec!["fd00:10:244::/56".parse().unwrap()],
            dns_ip: Some("fd00:10:96::a".parse().unwrap()),
        }
    }

    fn dual(change: impl FnOnce(&mut kwg_contract::GatewayInfo6)) -> GatewayInfo {
        let mut i = info();
        let mut six = info6();
        change(&mut six);
        i.ipv6 = Some(six);
        i
    }

    /// A machine on a dual-stack LAN.
    fn machine6() -> Machine {
        let mut m = machine();
        m.addresses
            .extend(ips(&["fd00:c0:2::10", "2001:db8:5::10", "fe80::1"]));
        m.gateways.push("fe80::1".parse().unwrap());
        m.dns_servers.push("fd00:c0:2::53".parse().unwrap());
        m
    }

    #[test]
    fn a_dual_stack_cluster_is_accepted_and_its_ipv6_side_follows_the_same_rules() {
        check_on(&machine6(), &dual(|_| {}), &[], &[], None).unwrap();
        for (change, what, why, flag) in [
            (
                "2001:db8:1::/48",
                "cluster subnet 2001:db8:1::/48",
                "public address space",
                "--also-proxy 2001:db8:1::/48",
            ),
            (
                "::/0",
                "cluster subnet ::/0",
                "shorter than /32",
                "--also-proxy ::/0",
            ),
            (
                "2000::/3",
                "cluster subnet 2000::/3",
                "shorter than /32",
                "--also-proxy",
            ),
            (
                "fc00::/7",
                "cluster subnet fc00::/7",
                "shorter than /32",
                "--also-proxy",
            ),
            (
                "fe80::/64",
                "cluster subnet fe80::/64",
                "reserved range fe80::/10",
                "--also-proxy",
            ),
            (
                "ff02::/64",
                "cluster subnet ff02::/64",
                "reserved range ff00::/8",
                "--also-proxy",
            ),
            (
                "::1/128",
                "cluster subnet ::1/128",
                "reserved range ::1/128",
                "--also-proxy",
            ),
            (
                "fd00:c0:2::/64",
                "cluster subnet fd00:c0:2::/64",
                "covers this machine's address fd00:c0:2::10",
                "--never-proxy fd00:c0:2::10/128",
            ),
        ] {
            let i = dual(|s| s.pod_cidrs.push(change.parse().unwrap()));
            let err = check_on(&machine6(), &i, &[], &[], None).unwrap_err();
            assert!(
                err.contains(&format!("refused {what} from the cluster"))
                    && err.contains(why)
                    && err.contains(&format!("pass {flag}")),
                "{change}: {err}"
            );
        }
        // The user's own flags accept what they name, as for IPv4.
        let public = dual(|s| s.pod_cidrs.push("2001:db8:1::/48".parse().unwrap()));
        check_on(&machine6(), &public, &["2001:db8::/32"], &[], None).unwrap();
        let lan = dual(|s| s.pod_cidrs.push("fd00:c0:2::/64".parse().unwrap()));
        check_on(
            &machine6(),
            &lan,
            &[],
            &["fd00:c0:2::10/128", "fd00:c0:2::53/128"],
            None,
        )
        .unwrap();
        // The tunnel prefix and the gateway's IPv6 address.
        let global = dual(|s| s.tunnel_cidr = "2001:db8:77::/96".parse().unwrap());
        let err = check_on(&machine6(), &global, &[], &[], None).unwrap_err();
        assert!(
            err.contains("refused the gateway's IPv6 tunnel address 2001:db8:77::644d:1")
                && err.contains("public address space"),
            "{err}"
        );
        let err = check_on(
            &machine6(),
            &global,
            &["2001:db8:77::644d:1/128"],
            &[],
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("refused ipv6.json tunnelCidr 2001:db8:77::/96")
                && err.contains("pass --also-proxy 2001:db8:77::/96"),
            "{err}"
        );
        // The cluster DNS's IPv6 address must be the cluster's.
        let dns = dual(|s| s.dns_ip = Some("fd00:c0:2::53".parse().unwrap()));
        let err = check_on(&machine(), &dns, &[], &[], None).unwrap_err();
        assert!(err.contains("refused dnsIp fd00:c0:2::53"), "{err}");
    }

    #[test]
    fn the_ipv6_tunnel_address_is_checked_with_the_ipv4_one() {
        let ip: Ipv4Addr = "100.77.0.2".parse().unwrap();
        check_tunnel_ip(ip, &dual(|_| {}), &machine6()).unwrap();
        let mut m = machine6();
        m.addresses.push("fd6b:7767::644d:2".parse().unwrap());
        let err = check_tunnel_ip(ip, &dual(|_| {}), &m)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refused tunnel IP fd6b:7767::644d:2")
                && err.contains("already has that address"),
            "{err}"
        );
        // Without ipv6.json the IPv6 address is not the laptop's: nothing to check.
        check_tunnel_ip(ip, &info(), &m).unwrap();
    }

    /// A small deterministic generator (xorshift64*), so the property below runs the same
    /// cases everywhere.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn property_an_accepted_ipv6_cluster_subnet_is_unique_local_narrow_and_off_the_machine() {
        let m = machine6();
        let ula: IpNet = "fc00::/7".parse().unwrap();
        let mut rng = Rng(0x6b77_6764_7561_6c31);
        // Addresses near the ranges that matter (unique local, the machine's own, link-local,
        // multicast, loopback, global) and anywhere.
        let bases: Vec<u128> = [
            "fd00::",
            "fd00:c0:2::",
            "fe80::",
            "ff02::",
            "::",
            "2001:db8::",
            "fc00::",
        ]
        .iter()
        .map(|a| u128::from(a.parse::<std::net::Ipv6Addr>().unwrap()))
        .collect();
        let mut accepted = 0;
        for case in 0..20_000u32 {
            let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            let len = (rng.next() % 129) as u8;
            let base = match case % 8 {
                7 => r,
                k => bases[k as usize] ^ (r >> (16 + rng.next() % 100)),
            };
            let net = IpNet::V6(
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(base), len)
                    .unwrap()
                    .trunc(),
            );
            let i = dual(|s| {
                s.pod_cidrs = vec![match net {
                    IpNet::V6(n) => n,
                    IpNet::V4(_) => unreachable!(),
                }]
            });
            if check_on(&m, &i, &[], &[], None).is_ok() {
                accepted += 1;
                assert!(ula.contains(&net), "{net} accepted outside fc00::/7");
                assert!(
                    net.prefix_len() >= MIN_PREFIX_V6,
                    "{net} accepted wider than /32"
                );
                for a in &m.addresses {
                    assert!(!net.contains(a), "{net} accepted over this machine's {a}");
                }
            }
        }
        // The generator reaches both verdicts.
        assert!(accepted > 100 && accepted < 19_000, "{accepted} accepted");
    }

    #[test]
    fn a_normal_cluster_is_accepted() {
        check(&info(), &[], &[], None).unwrap();
        check_tunnel_ip("100.77.0.2".parse().unwrap(), &info(), &machine()).unwrap();
        // The edges of private and shared space, IPv6 unique local, per-node pod CIDRs.
        for cidr in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fd00:10:244::/56",
            "10.244.7.0/24",
        ] {
            let public_only = Machine {
                addresses: ips(&["192.0.2.10"]),
                ..Machine::default()
            };
            check_on(&public_only, &with_pod(cidr), &[], &[], None)
                .unwrap_or_else(|e| panic!("{cidr}: {e}"));
        }
    }

    #[test]
    fn hostile_subnets_are_refused_with_the_reason_and_the_flag() {
        for (cidr, why, flag) in [
            (
                "0.0.0.0/1",
                "a prefix shorter than /8",
                "--also-proxy 0.0.0.0/1",
            ),
            (
                "0.0.0.0/0",
                "a prefix shorter than /8",
                "--also-proxy 0.0.0.0/0",
            ),
            ("127.0.0.0/16", "reserved range 127.0.0.0/8", "--also-proxy"),
            (
                "169.254.169.254/32",
                "reserved range 169.254.0.0/16",
                "--also-proxy",
            ),
            ("224.0.0.0/8", "reserved range 224.0.0.0/4", "--also-proxy"),
            (
                "8.0.0.0/8",
                "public address space",
                "--also-proxy 8.0.0.0/8",
            ),
            (
                "172.32.0.0/16",
                "public address space",
                "--also-proxy 172.32.0.0/16",
            ),
            ("100.128.0.0/10", "public address space", "--also-proxy"),
            (
                "192.0.2.0/24",
                "public address space",
                "--also-proxy 192.0.2.0/24",
            ),
            (
                "2001:db8::/32",
                "public address space",
                "--also-proxy 2001:db8::/32",
            ),
            ("fc00::/7", "a prefix shorter than /32", "--also-proxy"),
            (
                "10.1.0.0/16",
                "covers this machine's address 10.1.2.3",
                "--never-proxy 10.1.2.3/32",
            ),
            (
                "192.168.1.0/24",
                "covers this machine's default gateway 192.168.1.1",
                "--never-proxy 192.168.1.1/32",
            ),
            (
                "172.20.0.0/16",
                "covers this machine's DNS server 172.20.0.53",
                "--never-proxy 172.20.0.53/32",
            ),
            (
                "100.100.0.0/24",
                "covers the API server's address 100.100.0.1",
                "--never-proxy 100.100.0.1/32",
            ),
        ] {
            let err = check(&with_pod(cidr), &[], &[], None).unwrap_err();
            let net: IpNet = cidr.parse().unwrap();
            assert!(
                err.contains(&format!(
                    "refused cluster subnet {} from the cluster",
                    net.trunc()
                )) && err.contains(why)
                    && err.contains(&format!("pass {flag}")),
                "{cidr}: {err}"
            );
        }
    }

    #[test]
    fn the_users_own_flags_accept_what_they_name() {
        // --also-proxy: a subnet inside it is the user's own route.
        check(&with_pod("8.0.0.0/8"), &["8.0.0.0/8"], &[], None).unwrap();
        check(&with_pod("8.8.8.0/24"), &["8.0.0.0/8"], &[], None).unwrap();
        check(&with_pod("8.0.0.0/7"), &["8.0.0.0/8"], &[], None).unwrap_err();
        // --never-proxy: a covered address kept off the tunnel.
        check(&with_pod("172.20.0.0/16"), &[], &["172.20.0.53/32"], None).unwrap();
        check(&with_pod("172.20.0.0/16"), &[], &["172.20.1.0/24"], None).unwrap_err();
    }

    #[test]
    fn the_218_public_slash_8s_are_refused_as_one_sentence() {
        let mut i = info();
        let publics: Vec<IpNet> = (1..=223u8)
            .filter(|o| ![10, 100, 127, 172, 192, 169].contains(o))
            .map(|o| format!("{o}.0.0.0/8").parse().unwrap())
            .collect();
        let n = publics.len();
        i.service_cidrs.extend(publics);
        let err = check(&i, &[], &[], None).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "refused cluster subnet 1.0.0.0/8 (and {} more) from the cluster: it is public address space",
                n - 1
            )),
            "{err}"
        );
        assert_eq!(err.matches('\n').count(), 0, "{err}");
    }

    #[test]
    fn more_prefixes_than_the_cap_are_refused_and_adjacent_ones_merge() {
        // 256 per-node /24s merge into one /16: fine.
        let mut i = info();
        i.pod_cidrs = (0..=255u8)
            .map(|n| format!("10.244.{n}.0/24").parse().unwrap())
            .collect();
        check(&i, &[], &[], None).unwrap();
        // Exactly the cap (with the service CIDR) passes, one more does not.
        let spread = |count: usize| -> Vec<IpNet> {
            (0..count)
                .map(|n| format!("10.200.{}.0/24", n * 2).parse().unwrap())
                .collect()
        };
        i.pod_cidrs = spread(MAX_CLUSTER_PREFIXES - 1);
        check(&i, &[], &[], None).unwrap();
        i.pod_cidrs = spread(MAX_CLUSTER_PREFIXES);
        let err = check(&i, &[], &[], None).unwrap_err();
        assert!(
            err.contains("refused 33 cluster subnets from the cluster: more than 32")
                && err.contains("pass --also-proxy"),
            "{err}"
        );
        // The user's own range covering them.
        check(&i, &["10.200.0.0/16"], &[], None).unwrap();
    }

    #[test]
    fn the_gateway_ip_and_tunnel_cidr_follow_the_same_rules() {
        let mut i = info();
        i.tunnel_cidr = "8.8.8.0/24".parse().unwrap();
        i.gateway_ip = "8.8.8.1".parse().unwrap();
        let err = check(&i, &[], &[], None).unwrap_err();
        assert!(
            err.contains("refused gatewayIp 8.8.8.1") && err.contains("public address space"),
            "{err}"
        );
        assert!(err.contains("pass --also-proxy 8.8.8.1/32"), "{err}");
        let err = check(&i, &["8.8.8.1/32"], &[], None).unwrap_err();
        assert!(
            err.contains("refused tunnelCidr 8.8.8.0/24") && err.contains("public"),
            "{err}"
        );
        check(&i, &["8.8.8.0/24"], &[], None).unwrap();
        let mut i = info();
        i.tunnel_cidr = "100.100.0.0/16".parse().unwrap();
        i.gateway_ip = "100.100.0.1".parse().unwrap();
        let err = check(&i, &[], &[], None).unwrap_err();
        assert!(
            err.contains("refused gatewayIp 100.100.0.1")
                && err.contains("covers the API server's address"),
            "{err}"
        );
    }

    fn domain(d: &str, flag: Option<&str>) -> Result<(), String> {
        let mut i = info();
        i.cluster_domain = d.into();
        check(&i, &[], &[], flag)
    }

    #[test]
    fn cluster_domains_at_the_edges_of_the_public_suffix_list() {
        for ok in [
            "cluster.local",
            "corp.internal",
            "k8s.lan",
            "cluster.home.arpa",
            "foo.example",
            "cluster.local.",
            "Cluster.Local",
            "prod.k8s",
        ] {
            domain(ok, None).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("co.uk", "is a public suffix"),
            (
                "bbc.co.uk",
                "public name under the public suffix co.uk (registrable domain bbc.co.uk)",
            ),
            ("www.bbc.co.uk", "registrable domain bbc.co.uk"),
            ("k8s.example.de", "public suffix de"),
            ("co.jp", "is a public suffix"),
            ("k8s.blogspot.com", "excluded suffix"),
            ("example.com", "excluded suffix"),
            ("com", "single label"),
            ("local", "single label"),
        ] {
            let err = domain(bad, None).unwrap_err();
            let name = bad.trim_end_matches('.');
            assert!(
                err.contains(&format!("refused clusterDomain {name:?}"))
                    && err.contains(why)
                    && err.contains(&format!("pass --cluster-domain {name}")),
                "{bad}: {err}"
            );
        }
        // The user's say-so: that very name, not another.
        domain("co.uk", Some("co.uk")).unwrap();
        domain("bbc.co.uk", Some("bbc.co.uk.")).unwrap();
        domain("k8s.example.com", Some("k8s.example.com")).unwrap();
        domain("bbc.co.uk", Some("co.uk")).unwrap_err();
        domain("co.uk", Some("bbc.co.uk")).unwrap_err();
    }

    #[test]
    fn names_that_are_not_dns_names_are_refused_without_control_characters() {
        for d in ["bad_name.local", "\u{1b}[31mred.local", "-a.local", ""] {
            let err = domain(d, Some(d)).unwrap_err();
            assert!(err.contains("not a DNS name"), "{d}: {err}");
            assert!(!err.contains('\u{1b}'), "{err}");
        }
        // An include suffix lets a private-looking name under an excluded suffix through, but
        // not past the Public Suffix List.
        let consent = Consent {
            also_proxy: &[],
            never_proxy: &[],
            cluster_domain: None,
            exclude: &[".corp".into()],
            include: &[".k8s.corp".into()],
        };
        check_cluster_domain("a.k8s.corp", &consent).unwrap();
        check_cluster_domain("b.corp", &consent).unwrap_err();
    }

    #[test]
    fn a_dns_ip_outside_the_cluster_and_forged_tunnel_ips_are_refused() {
        let mut i = info();
        i.dns_ip = Some("192.0.2.53".parse().unwrap());
        let err = check(&i, &[], &[], None).unwrap_err();
        assert!(err.contains("dnsIp 192.0.2.53"), "{err}");
        for (ip, why) in [
            ("192.0.2.53", "outside the tunnel CIDR"),
            ("100.77.0.1", "gateway's"),
            ("100.77.0.0", "CIDR's own"),
        ] {
            let err = check_tunnel_ip(ip.parse().unwrap(), &info(), &machine())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{ip}: {err}");
        }
        let mut m = machine();
        m.addresses.push("100.77.0.9".parse().unwrap());
        m.dns_servers.push("100.77.0.53".parse().unwrap());
        let err = check_tunnel_ip("100.77.0.9".parse().unwrap(), &info(), &m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already has that address"), "{err}");
        let err = check_tunnel_ip("100.77.0.53".parse().unwrap(), &info(), &m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("it is this machine's DNS server"), "{err}");
    }
}
