//! What the helper refuses, whatever the client says: the client is a user process that parses
//! the cluster's input and may be compromised. The address-space rule is the laptop's trust rule
//! (docs/laptop-trust.md), reached through [`Policy`] so that there is one copy of it; the rest
//! (the machine's own addresses, other sessions, interface names) is the helper's own.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use kwg_host::netlink::RouteEntry;

/// The `local` routing table (`RT_TABLE_LOCAL`): the machine's own addresses, never a conflict.
const LOCAL_TABLE: u32 = 255;

/// Where a prefix may lie without the user's say-so: the trust rule on cluster subnets
/// (private or shared space, not reserved, not too wide). `Err` is why, in a clause.
pub trait Policy: Send + Sync {
    fn address_space(&self, net: &IpNet) -> Result<(), String>;
    /// Whether `domain` may be a cluster domain without the user's say-so (the laptop's rule:
    /// at least two labels, no public suffix nor a name under one).
    fn cluster_domain(&self, domain: &str) -> Result<(), String> {
        crate::policy::cluster_domain(domain)
    }
}

/// What the helper reads about the machine before each change (excluding its sessions' links).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Addresses of the machine's interfaces.
    pub addresses: Vec<IpAddr>,
    /// Next hops of default routes (any table).
    pub gateways: Vec<IpAddr>,
    /// The resolver file's `nameserver`s.
    pub dns_servers: Vec<IpAddr>,
    /// Every route of every table.
    pub routes: Vec<RouteEntry>,
    /// The resolver file's text (`/etc/resolv.conf`, empty when unreadable).
    pub resolv_conf: String,
    /// systemd-resolved's domains by link index (0: its global ones), read for `resolvedLink`
    /// only (empty otherwise, or when resolved does not answer).
    pub resolved_domains: Vec<(u32, kwg_session::dns::domains::LinkDomain)>,
}

impl Facts {
    /// The facts without what belongs to the links in `own` (the sessions' TUNs).
    pub fn without_links(mut self, own: &[(String, Vec<IpNet>)]) -> Facts {
        let theirs = |ip: &IpAddr| own.iter().any(|(_, a)| a.iter().any(|n| n.addr() == *ip));
        self.addresses.retain(|a| !theirs(a));
        self
    }
}

/// Interface names a session may use: `kwg` then up to 12 letters, digits, `-` or `_` (IFNAMSIZ
/// 16 with its NUL). Nothing else of the machine's links is the helper's to touch.
pub fn check_interface(name: &str) -> Result<(), String> {
    let rest = name.strip_prefix("kwg").unwrap_or("!");
    let ok = rest.len() <= 12
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "interface name {:?} is not one kwg-helper manages: use kwg followed by up to 12 lowercase letters, digits or _ (e.g. kwg0; no -, so that each name has its own nftables table)",
            printable(name)
        ))
    }
}

/// A route prefix: inside the policy's space unless the caller's consent covers it, and never
/// over the machine's own addresses, default gateways or DNS servers (no consent widens that:
/// the machine would lose its own traffic, its way out or its name resolution).
pub fn check_route(
    net: &IpNet,
    facts: &Facts,
    policy: &dyn Policy,
    consent: &[IpNet],
) -> Result<(), String> {
    if !consent.iter().any(|c| c.contains(net)) {
        policy
            .address_space(net)
            .map_err(|why| format!("refused route {net}: {why}"))?;
    }
    for (ips, whose) in [
        (&facts.addresses, "this machine's address"),
        (&facts.gateways, "this machine's default gateway"),
        (&facts.dns_servers, "this machine's DNS server"),
    ] {
        if let Some(ip) = ips.iter().find(|ip| net.contains(*ip)) {
            return Err(format!("refused route {net}: it covers {whose} {ip}"));
        }
    }
    Ok(())
}

/// The tunnel address: a host address (/32 or /128: a shorter prefix would be a route too) in
/// the policy's space that the machine does not have.
pub fn check_address(addr: &IpNet, facts: &Facts, policy: &dyn Policy) -> Result<(), String> {
    let host = IpNet::from(addr.addr());
    if addr.prefix_len() != host.prefix_len() {
        return Err(format!(
            "refused address {addr}: the tunnel address is one host ({host}); a shorter prefix would route {} through the tunnel",
            addr.trunc()
        ));
    }
    policy
        .address_space(&host)
        .map_err(|why| format!("refused address {addr}: {why}"))?;
    let taken = facts
        .addresses
        .iter()
        .chain(&facts.gateways)
        .chain(&facts.dns_servers)
        .any(|ip| *ip == addr.addr());
    if taken {
        return Err(format!(
            "refused address {addr}: this machine already has or talks to {}",
            addr.addr()
        ));
    }
    Ok(())
}

/// The loopback range a session's DNS forwarder may listen in: the CLI's default
/// `127.77.0.53:53` and the next addresses it picks when another session has one
/// (`free_dns_listen`: `127.77.0.53`..`127.77.0.252`).
pub const DNS_LISTEN_RANGE: [u8; 3] = [127, 77, 0];

/// Where a session's DNS forwarder may listen (the helper binds it: port 53 is privileged):
/// port 53 of an address in `127.77.0.0/24`, never one of the machine's own resolvers
/// (`facts.dns_servers`). Any other loopback address may be a resolver of the machine that is
/// not running at this moment (`127.0.1.1`: NetworkManager's dnsmasq, `127.0.2.1`:
/// dnscrypt-proxy, `127.0.0.53`: systemd-resolved): a user holding its port 53 would answer
/// every lookup once it restarts.
pub fn check_dns_listen(listen: SocketAddr, facts: &Facts) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("refused DNS listen address {listen}: {why}"));
    let IpAddr::V4(ip) = listen.ip() else {
        return refuse("the forwarder listens on port 53 of 127.77.0.0/24 (e.g. 127.77.0.53:53)");
    };
    let [a, b, c, _] = ip.octets();
    if [a, b, c] != DNS_LISTEN_RANGE || listen.port() != 53 {
        return refuse(
            "the forwarder listens on port 53 of 127.77.0.0/24: pass --dns-listen 127.77.0.53:53 (or leave it out)",
        );
    }
    if facts.dns_servers.contains(&listen.ip()) {
        return refuse(
            "it is a nameserver of this machine's resolver file: pass --dns-listen with another address of 127.77.0.0/24",
        );
    }
    Ok(())
}

/// At most this many search domains (glibc reads 6; kwg adds 3 to the machine's own).
pub const MAX_SEARCH: usize = 16;

/// A search domain of the joined resolver file: one the file has already (the machine's own),
/// or the cluster's `<domain>`, `svc.<domain>` or `<namespace>.svc.<domain>` whose domain passes
/// the policy's cluster-domain rule with no consent (never a public suffix, a name under one, or
/// a single label: single-label names would go to the cluster).
pub fn check_search(entry: &str, original: &str, policy: &dyn Policy) -> Result<(), String> {
    let e = entry.trim_end_matches('.').to_ascii_lowercase();
    let refuse = |why: String| {
        Err(format!(
            "refused search domain {:?}: {why}",
            printable(entry)
        ))
    };
    let own = original.lines().any(|l| {
        let mut w = l.split_whitespace();
        matches!(w.next(), Some("search" | "domain"))
            && w.any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&e))
    });
    if own {
        return Ok(());
    }
    let domain = match (e.split_once(".svc."), e.strip_prefix("svc.")) {
        (Some((ns, d)), _) if is_label(ns) => d,
        (Some(_), _) => return refuse("the part before .svc. is not a namespace".into()),
        (None, Some(d)) => d,
        (None, None) => e.as_str(),
    };
    match policy.cluster_domain(domain) {
        Ok(()) => Ok(()),
        Err(why) => refuse(format!(
            "{why} (kwg-helper takes no --cluster-domain consent from the user side; join as root for such a domain)"
        )),
    }
}

fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A route against the machine's existing routes (other than `own` interface's, default routes
/// and the local table): an overlap is refused unless inside `allowed`
/// (`--allow-conflicting-subnets`); `None`: the caller may not exempt any (only root may, since
/// a route over the LAN's takes the LAN's traffic).
pub fn check_machine_routes(
    net: &IpNet,
    own: &str,
    sessions: &[&str],
    facts: &Facts,
    allowed: Option<&[IpNet]>,
) -> Result<(), String> {
    if allowed.is_some_and(|a| a.iter().any(|a| a.contains(net))) {
        return Ok(());
    }
    let hint = match allowed {
        Some(_) => format!("pass --allow-conflicting-subnets {net} to route it anyway"),
        None => format!(
            "only root may route over it: join as root with --allow-conflicting-subnets {net}"
        ),
    };
    match clashing_route(net, own, sessions, facts) {
        Some(e) => Err(format!(
            "refused route {net}: it overlaps the existing route {e} ({hint})"
        )),
        None => Ok(()),
    }
}

/// The tunnel address against the machine's existing routes: an address inside one (a LAN
/// host's, a container's) would let the tunnel answer for that host. No exemption.
pub fn check_address_routes(
    addr: &IpNet,
    own: &str,
    sessions: &[&str],
    facts: &Facts,
) -> Result<(), String> {
    let host = IpNet::from(addr.addr());
    match clashing_route(&host, own, sessions, facts) {
        Some(e) => Err(format!(
            "refused address {addr}: it is inside the existing route {e}, so the tunnel would answer for a host there; pick an address outside this machine's networks"
        )),
        None => Ok(()),
    }
}

/// The machine's route (other than `own` interface's, other sessions', default routes and the
/// local table) that overlaps `net`.
fn clashing_route<'a>(
    net: &IpNet,
    own: &str,
    sessions: &[&str],
    facts: &'a Facts,
) -> Option<&'a RouteEntry> {
    facts.routes.iter().find(|e| {
        e.table != LOCAL_TABLE
            && e.destination.prefix_len() > 0
            && e.interface.as_deref() != Some(own)
            // Other sessions' routes are judged by the registry, which names the session.
            && !e.interface.as_deref().is_some_and(|i| sessions.contains(&i))
            && (e.destination.contains(net) || net.contains(&e.destination))
    })
}

/// A name as text safe to print (control characters replaced).
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stand-in for the trust rule in tests of this crate: 10/8 only, at least /8.
    pub(crate) struct TenOnly;
    impl Policy for TenOnly {
        fn address_space(&self, net: &IpNet) -> Result<(), String> {
            let ten: IpNet = "10.0.0.0/8".parse().unwrap();
            if ten.contains(net) {
                Ok(())
            } else {
                Err("it is public address space".into())
            }
        }
    }

    pub(crate) fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    pub(crate) fn facts() -> Facts {
        Facts {
            addresses: vec!["10.1.2.3".parse().unwrap(), "192.0.2.10".parse().unwrap()],
            gateways: vec!["192.0.2.1".parse().unwrap()],
            dns_servers: vec!["10.53.0.53".parse().unwrap()],
            routes: vec![RouteEntry {
                destination: n("10.1.2.0/24"),
                interface: Some("eth0".into()),
                gateway: None,
                table: 254,
            }],
            resolv_conf: "search corp.example\nnameserver 10.53.0.53\n".into(),
            resolved_domains: vec![],
        }
    }

    #[test]
    fn dns_listens_on_port_53_of_127_77_0_0_24_never_a_resolver_of_the_machine() {
        let mut f = facts();
        assert_eq!(
            check_dns_listen("127.77.0.53:53".parse().unwrap(), &f),
            Ok(())
        );
        assert_eq!(
            check_dns_listen("127.77.0.252:53".parse().unwrap(), &f),
            Ok(())
        );
        for bad in [
            "127.0.0.1:53",
            "127.0.0.53:53",
            "127.0.0.54:53",
            // NetworkManager's dnsmasq and dnscrypt-proxy: a held port 53 there would answer
            // the machine's lookups once the resolver restarts.
            "127.0.1.1:53",
            "127.0.2.1:53",
            "127.78.0.53:53",
            "127.77.0.53:5353",
            "192.0.2.10:53",
            "[::1]:53",
        ] {
            let e = check_dns_listen(bad.parse().unwrap(), &f).unwrap_err();
            assert!(e.contains("127.77.0.0/24"), "{bad}: {e}");
        }
        f.dns_servers.push("127.77.0.60".parse().unwrap());
        let e = check_dns_listen("127.77.0.60:53".parse().unwrap(), &f).unwrap_err();
        assert!(e.contains("nameserver of this machine"), "{e}");
    }

    #[test]
    fn search_domains_are_the_machines_or_a_private_cluster_domains() {
        let original = "search corp.example\nnameserver 10.53.0.53\n";
        let p = TenOnly;
        for ok in [
            "corp.example",
            "cluster.local",
            "svc.cluster.local",
            "emojivoto.svc.cluster.local",
            "prod.internal",
        ] {
            assert_eq!(check_search(ok, original, &p), Ok(()), "{ok}");
        }
        for bad in [
            "com",
            "google.com",
            "svc.co.uk",
            "x.svc.bbc.co.uk",
            "a.b.svc.cluster.local",
            "local",
        ] {
            let e = check_search(bad, original, &p).unwrap_err();
            assert!(e.starts_with("refused search domain"), "{bad}: {e}");
        }
    }

    #[test]
    fn interface_names_are_kwg_only() {
        for ok in ["kwg", "kwg0", "kwg_ci_1", "kwgabcdefghijkl"] {
            assert_eq!(check_interface(ok), Ok(()), "{ok}");
        }
        for bad in [
            "eth0",
            "wg0",
            "kwg0/../x",
            "kwgabcdefghijklm",
            "KWG0",
            "kwg 0",
            "kwg-a",
            "lo",
            "",
        ] {
            let e = check_interface(bad).unwrap_err();
            assert!(e.contains("kwg followed by"), "{bad}: {e}");
        }
    }

    #[test]
    fn routes_stay_in_the_policy_space_and_off_the_machine() {
        let f = facts();
        assert_eq!(check_route(&n("10.96.0.0/12"), &f, &TenOnly, &[]), Ok(()));
        let e = check_route(&n("8.8.8.0/24"), &f, &TenOnly, &[]).unwrap_err();
        assert_eq!(e, "refused route 8.8.8.0/24: it is public address space");
        // Consent widens the space...
        assert_eq!(
            check_route(&n("8.8.8.0/24"), &f, &TenOnly, &[n("8.8.0.0/16")]),
            Ok(())
        );
        // ...never over the machine's own addresses, gateways or DNS servers.
        for (net, why) in [
            ("10.1.0.0/16", "this machine's address 10.1.2.3"),
            ("10.53.0.0/24", "this machine's DNS server 10.53.0.53"),
        ] {
            let e = check_route(&n(net), &f, &TenOnly, &[]).unwrap_err();
            assert!(e.ends_with(why), "{e}");
        }
        let e = check_route(&n("192.0.2.0/24"), &f, &TenOnly, &[n("0.0.0.0/0")]).unwrap_err();
        assert!(e.ends_with("this machine's address 192.0.2.10"), "{e}");
    }

    #[test]
    fn machine_routes_conflict_unless_allowed() {
        let f = facts();
        let e = check_machine_routes(&n("10.1.0.0/16"), "kwg0", &[], &f, Some(&[])).unwrap_err();
        assert!(
            e.contains("overlaps the existing route 10.1.2.0/24 dev eth0"),
            "{e}"
        );
        assert_eq!(
            check_machine_routes(
                &n("10.1.0.0/16"),
                "kwg0",
                &[],
                &f,
                Some(&[n("10.1.0.0/16")])
            ),
            Ok(())
        );
        assert_eq!(
            check_machine_routes(&n("10.96.0.0/12"), "kwg0", &[], &f, Some(&[])),
            Ok(())
        );
    }

    #[test]
    fn the_tunnel_address_is_private_and_not_the_machines() {
        let f = facts();
        assert_eq!(check_address(&n("10.77.0.2/32"), &f, &TenOnly), Ok(()));
        assert!(check_address(&n("10.53.0.53/32"), &f, &TenOnly).is_err());
        assert!(check_address(&n("8.8.8.8/32"), &f, &TenOnly).is_err());
        let e = check_address(&n("10.77.0.2/8"), &f, &TenOnly).unwrap_err();
        assert!(
            e.contains("would route 10.0.0.0/8 through the tunnel"),
            "{e}"
        );
    }
}
