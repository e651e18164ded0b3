//! Which domains a session may put on its link in systemd-resolved (`resolvedLink`): those the
//! laptop's own planning gives a link (`kwg_session::dns::domains`) and the cluster-domain rule
//! allows with no consent, checked here again because the user side may be compromised. Never
//! `~.` (every name), never a public suffix or a name under one, never a reverse zone of public
//! address space or outside the session's own routes, never a name on another session's link.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kwg_session::dns::domains::LinkDomain;

use crate::rules::{Policy, printable};

/// At most this many domains on one link (a namespace each, plus the cluster's and reverse
/// zones).
pub const MAX_LINK_DOMAINS: usize = 512;

/// `Ok` when `d` may be a domain of a session's link:
/// - a search domain (resolved also routes it): what [`crate::rules::check_search`] allows of
///   the cluster's (`<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`, the domain passing the
///   cluster-domain rule with no consent);
/// - a routing-only domain of several labels (`~cluster.local`, `~svc.<alias>`): it passes the
///   cluster-domain rule with no consent;
/// - a routing-only single label (`~emojivoto`, a namespace): one the laptop's planning routes
///   without the user naming it (not reserved, not an excluded suffix, not a public suffix);
/// - a reverse zone (`~96.10.in-addr.arpa`, `~...ip6.arpa`) of a network in the address space
///   the trust rule allows (private or shared, not wider than the rule's limit) and inside one
///   of `routes`, the session's own (the laptop plans reverse zones of the subnets it routes
///   only: another's would take the PTR lookups of the LAN or of another session).
pub fn check_link_domain(
    d: &LinkDomain,
    routes: &[IpNet],
    policy: &dyn Policy,
) -> Result<(), String> {
    let shown = printable(&d.to_string());
    let refuse = |why: String| Err(format!("refused link domain {shown}: {why}"));
    let name = d.name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return refuse(
            "it would send every name to kwg (systemd-resolved's default route is not kwg's to take)"
                .into(),
        );
    }
    if !d.routing_only {
        return crate::rules::check_search(&name, "", policy)
            .map_err(|e| format!("{e} (link {shown})"));
    }
    if let Some(net) = reverse_zone(&name) {
        return match net.and_then(|n| policy.address_space(&n).map(|()| n)) {
            Ok(n) if routes.iter().any(|r| r.contains(&n)) => Ok(()),
            Ok(n) => refuse(format!(
                "{n} is inside none of this session's routes ({}): kwg plans reverse zones only for the subnets the session routes",
                match routes {
                    [] => "none yet: send routes first".to_string(),
                    _ => routes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            )),
            Err(why) => refuse(format!("not a reverse zone of the cluster's space: {why}")),
        };
    }
    if !name.contains('.') {
        let empty = std::collections::BTreeSet::new();
        let planned =
            kwg_session::dns::domains::link_domains("cluster.local", &name, [], &[], &empty);
        return match planned {
            Ok(p) if p.skipped.is_empty() => Ok(()),
            Ok(p) => refuse(format!(
                "{} (kwg-helper takes no --namespace consent from the user side)",
                p.skipped.first().map_or("", |(_, why)| why)
            )),
            Err(e) => refuse(e.to_string()),
        };
    }
    // The cluster-domain rule's shortcut for names under a private-use domain (`home.arpa`)
    // does not apply here: such a name is the LAN's (`~home.arpa`), so the excluded suffixes
    // count.
    if let Some(x) = kwg_session::dns::split::DEFAULT_EXCLUDE_SUFFIXES
        .iter()
        .map(|x| x.trim_matches('.'))
        .find(|x| name == *x || name.ends_with(&format!(".{x}")))
    {
        return refuse(format!(
            "it is under the excluded suffix .{x}, whose names stay the machine's (kwg-helper takes no --dns-include-suffix consent from the user side)"
        ));
    }
    policy.cluster_domain(&name).or_else(|why| {
        refuse(format!(
            "{why} (kwg-helper takes no --cluster-domain consent from the user side; join as root for such a domain)"
        ))
    })
}

/// The network a reverse zone names (`Some(Err)`: it ends like one but names none), or `None`
/// when `name` is no reverse zone.
fn reverse_zone(name: &str) -> Option<Result<IpNet, String>> {
    let bad = || Err("not a reverse zone kwg plans".to_string());
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        let octets: Option<Vec<u8>> = labels.iter().rev().map(|l| l.parse().ok()).collect();
        let Some(octets) = octets.filter(|o| (1..=4).contains(&o.len())) else {
            return Some(bad());
        };
        let mut a = [0u8; 4];
        a[..octets.len()].copy_from_slice(&octets);
        let len = u8::try_from(octets.len() * 8).expect("at most 32");
        return Some(
            Ipv4Net::new(Ipv4Addr::from(a), len)
                .map(IpNet::V4)
                .or_else(|_| bad()),
        );
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Option<Vec<u8>> = rest
            .split('.')
            .rev()
            .map(|l| u8::from_str_radix(l, 16).ok().filter(|_| l.len() == 1))
            .collect();
        let Some(nibbles) = nibbles.filter(|n| (1..=32).contains(&n.len())) else {
            return Some(bad());
        };
        let mut a = [0u8; 16];
        for (i, n) in nibbles.iter().enumerate() {
            a[i / 2] |= if i % 2 == 0 { n << 4 } else { *n };
        }
        let len = u8::try_from(nibbles.len() * 4).expect("at most 128");
        return Some(
            Ipv6Net::new(Ipv6Addr::from(a), len)
                .map(IpNet::V6)
                .or_else(|_| bad()),
        );
    }
    if name == "in-addr.arpa" || name == "ip6.arpa" || name == "arpa" {
        return Some(bad());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TrustRules;

    /// The session's routes in these tests.
    fn routes() -> Vec<IpNet> {
        ["10.96.0.0/12", "10.244.0.0/16", "fd00:10:96::/112"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect()
    }

    fn check(d: &str) -> Result<(), String> {
        let (name, routing_only) = match d.strip_prefix('~') {
            Some(n) => (n, true),
            None => (d, false),
        };
        check_link_domain(
            &LinkDomain {
                name: name.into(),
                routing_only,
            },
            &routes(),
            &TrustRules,
        )
    }

    #[test]
    fn what_the_laptop_plans_for_a_link_is_accepted() {
        let split = kwg_session::dns::domains::link_domains(
            "cluster.local",
            "emojivoto",
            ["default", "kube-system"],
            &[],
            &Default::default(),
        )
        .unwrap();
        let reverse = kwg_session::dns::domains::reverse_domains(&routes());
        for d in split.domains.iter().chain(&reverse) {
            assert_eq!(check_link_domain(d, &routes(), &TrustRules), Ok(()), "{d}");
        }
        assert_eq!(check("~svc.staging"), Ok(()));
    }

    #[test]
    fn the_default_route_public_names_and_public_reverse_zones_are_refused() {
        for (d, why) in [
            ("~.", "every name"),
            ("~", "every name"),
            (".", "every name"),
            ("~com", "excluded suffix"),
            ("~de", "public suffix"),
            ("~local", "reserved"),
            ("~google.com", "excluded suffix"),
            ("~svc.dev", "public suffix"),
            ("google.com", "excluded suffix"),
            ("emojivoto", "single label"),
            ("~8.8.8.in-addr.arpa", "public address space"),
            ("~in-addr.arpa", "not a reverse zone"),
            ("~arpa", "not a reverse zone"),
            ("~x.10.in-addr.arpa", "not a reverse zone"),
            ("~0.0.2.ip6.arpa", "far more than a cluster"),
            ("~home.arpa", "excluded suffix .arpa"),
            // Private, but not the session's: the LAN's PTR lookups.
            (
                "~1.168.192.in-addr.arpa",
                "inside none of this session's routes",
            ),
            ("~10.in-addr.arpa", "inside none of this session's routes"),
            (
                "~0.2.0.0.0.0.d.f.ip6.arpa",
                "inside none of this session's routes",
            ),
            ("~nas.home.arpa", "excluded suffix .arpa"),
        ] {
            let got = check(d);
            assert!(got.as_ref().is_err_and(|e| e.contains(why)), "{d}: {got:?}");
        }
    }
}
