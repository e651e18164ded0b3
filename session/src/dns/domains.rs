//! The domains of kwg's link (pure): which names systemd-resolved routes to kwg, and which
//! name it completes single labels with.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::Error;

/// Labels that must never become routing domains: routing them would send a whole TLD, mDNS
/// (`local`, RFC 6762) or reverse lookups (`arpa`) to the cluster.
const RESERVED_LABELS: &[&str] = &["local", "arpa", "localhost", "invalid", "test", "onion"];

/// One domain of a link: `routing_only` is resolved's `~domain` (routes, never searched).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkDomain {
    pub name: String,
    pub routing_only: bool,
}

impl std::fmt::Display for LinkDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tilde = if self.routing_only { "~" } else { "" };
        write!(f, "{tilde}{}", self.name)
    }
}

/// What kwg sets on its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// The tunnel interface's index (`if_nametoindex`).
    pub ifindex: u32,
    /// kwg's DNS forwarder.
    pub server: SocketAddr,
    pub domains: Vec<LinkDomain>,
}

/// The link's domains and the namespaces left out (with why), for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDomains {
    pub domains: Vec<LinkDomain>,
    pub skipped: Vec<(String, &'static str)>,
}

/// Every domain of kwg's link for `split`: [`link_domains`] of the namespaces it routes to
/// the cluster ([`SplitDns::routed_namespaces`]), then [`reverse_domains`] of its subnets.
/// A session with an alias also routes `~svc.<alias>`; a secondary one (another session
/// answers the short names) routes only that and its reverse names.
pub fn split_domains(split: &crate::dns::split::SplitDns) -> Result<Vec<LinkDomain>, Error> {
    let names = split.routed_namespaces();
    let mut domains = if split.naming.secondary {
        Vec::new()
    } else {
        link_domains(
            &split.cluster_domain,
            &split.namespace,
            names.iter().map(String::as_str),
            &split.exclude_suffixes,
            &split.named_namespaces(),
        )?
        .domains
    };
    if let Some(alias) = &split.naming.alias {
        domains.push(LinkDomain {
            name: format!("svc.{alias}"),
            routing_only: true,
        });
    }
    domains.extend(reverse_domains(&split.reverse_subnets));
    Ok(domains)
}

/// The domains of kwg's link: `~<cluster_domain>`, the search domain
/// `<namespace>.svc.<cluster_domain>`, and `~<ns>` for the connected namespace and each of
/// `namespaces` (the mapped ones, or all visible ones). A namespace (untrusted: from the
/// cluster) that is not a DNS label, is a reserved name, ends like an exclude suffix (`com`
/// would route every `.com` name to the cluster) or is a public suffix not in `named` (the
/// user's `--namespace` and `--mapped-namespaces`: `~de` would route every `.de` name) is
/// skipped.
pub fn link_domains<'a>(
    cluster_domain: &str,
    namespace: &str,
    namespaces: impl IntoIterator<Item = &'a str>,
    exclude_suffixes: &[String],
    named: &std::collections::BTreeSet<String>,
) -> Result<LinkDomains, Error> {
    let domain = cluster_domain.trim_matches('.').to_ascii_lowercase();
    if domain.is_empty() || !domain.split('.').all(is_dns_label) {
        return Err(Error::DnsConfig(format!(
            "cluster domain {cluster_domain:?} is not a DNS name: pass --cluster-domain (e.g. cluster.local)"
        )));
    }
    let namespace = namespace.to_ascii_lowercase();
    if !is_dns_label(&namespace) {
        return Err(Error::DnsConfig(format!(
            "namespace {namespace:?} is not a DNS label: pass -n with a Kubernetes namespace"
        )));
    }
    let mut domains = vec![
        LinkDomain {
            name: domain.clone(),
            routing_only: true,
        },
        LinkDomain {
            name: format!("{namespace}.svc.{domain}"),
            routing_only: false,
        },
    ];
    let mut skipped = Vec::new();
    let mut names: Vec<String> = namespaces
        .into_iter()
        .map(str::to_ascii_lowercase)
        .chain([namespace])
        .collect();
    names.sort();
    names.dedup();
    for ns in names {
        match namespace_unroutable(&ns, &domain, exclude_suffixes, named.contains(&ns)) {
            Some(why) => skipped.push((ns, why)),
            None => domains.push(LinkDomain {
                name: ns,
                routing_only: true,
            }),
        }
    }
    Ok(LinkDomains { domains, skipped })
}

/// Routing domains for reverse lookups (PTR) of the cluster's CIDRs, which kwg's forwarder
/// answers: `~96.10.in-addr.arpa`. A prefix between octet (IPv4) or nibble (IPv6) boundaries
/// is covered by the zones of the next boundary: 10.96.0.0/12 gives `~96.10.in-addr.arpa` to
/// `~111.10.in-addr.arpa`. A /0 is skipped (it would route every reverse lookup to kwg).
pub fn reverse_domains(cidrs: &[IpNet]) -> Vec<LinkDomain> {
    let mut out = Vec::new();
    for net in cidrs.iter().map(IpNet::trunc) {
        let (step, suffix) = match net {
            IpNet::V4(_) => (8, "in-addr.arpa"),
            IpNet::V6(_) => (4, "ip6.arpa"),
        };
        let bits = net.prefix_len().div_ceil(step) * step;
        if bits == 0 {
            continue;
        }
        for zone in net.subnets(bits).into_iter().flatten() {
            let labels: Vec<String> = match zone.addr() {
                IpAddr::V4(a) => a.octets()[..usize::from(bits / 8)]
                    .iter()
                    .rev()
                    .map(u8::to_string)
                    .collect(),
                IpAddr::V6(a) => {
                    let nibbles = a
                        .octets()
                        .iter()
                        .flat_map(|b| [b >> 4, b & 0xf])
                        .collect::<Vec<_>>();
                    nibbles[..usize::from(bits / 4)]
                        .iter()
                        .rev()
                        .map(|n| format!("{n:x}"))
                        .collect()
                }
            };
            out.push(LinkDomain {
                name: format!("{}.{suffix}", labels.join(".")),
                routing_only: true,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Why `ns` cannot be a routing domain, if it cannot.
fn namespace_unroutable(
    ns: &str,
    domain: &str,
    exclude: &[String],
    named: bool,
) -> Option<&'static str> {
    if !is_dns_label(ns) {
        return Some("not a DNS label");
    }
    if RESERVED_LABELS.contains(&ns) || domain.split('.').next_back() == Some(ns) {
        return Some("a reserved or top-level name");
    }
    let excluded = |suffix: &str| suffix.trim_matches('.').eq_ignore_ascii_case(ns);
    let defaults = crate::dns::split::DEFAULT_EXCLUDE_SUFFIXES.iter().copied();
    if exclude
        .iter()
        .map(String::as_str)
        .chain(defaults)
        .any(excluded)
    {
        return Some("an excluded suffix");
    }
    if !named && crate::dns::split::is_public_suffix(ns) {
        return Some("a public suffix not named in --namespace or --mapped-namespaces");
    }
    None
}

/// A DNS label as Kubernetes names namespaces (RFC 1123): a-z, 0-9, '-', 1-63 characters.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> std::collections::BTreeSet<String> {
        std::collections::BTreeSet::new()
    }

    fn names(d: &LinkDomains) -> Vec<String> {
        d.domains.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_link_routes_the_cluster_domain_and_each_namespace_and_searches_the_connected_one() {
        let d = link_domains(
            "cluster.local.",
            "emojivoto",
            ["default", "kube-system"],
            &[],
            &none(),
        )
        .unwrap();
        assert_eq!(
            names(&d),
            [
                "~cluster.local",
                "emojivoto.svc.cluster.local",
                "~default",
                "~emojivoto",
                "~kube-system",
            ]
        );
        assert!(d.skipped.is_empty());
    }

    #[test]
    fn namespaces_that_would_capture_other_names_are_skipped() {
        // `~com` or `~de` (a public suffix) would send every `.com` or `.de` name to the cluster.
        let excl = vec![".corp".to_string()];
        let spaces = [
            "com", "local", "corp", "Bad_Name", "-x", "arpa", "web2", "de", "dev",
        ];
        let d = link_domains("cluster.local", "emojivoto", spaces, &excl, &none()).unwrap();
        let routed = ["~cluster.local", "emojivoto.svc.cluster.local"];
        assert_eq!(names(&d), [&routed[..], &["~emojivoto", "~web2"]].concat());
        let skipped: Vec<&str> = d.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "-x", "arpa", "bad_name", "com", "corp", "de", "dev", "local"
            ]
        );
        assert!(
            d.skipped
                .contains(&("com".to_string(), "an excluded suffix"))
        );
        assert!(d.skipped.contains(&(
            "de".to_string(),
            "a public suffix not named in --namespace or --mapped-namespaces"
        )));
        // A public suffix named in --mapped-namespaces: the user's choice.
        let named = ["dev".to_string()].into();
        let d = link_domains("cluster.local", "emojivoto", ["dev"], &[], &named).unwrap();
        assert_eq!(names(&d), [&routed[..], &["~dev", "~emojivoto"]].concat());
    }

    #[test]
    fn a_bad_cluster_domain_or_namespace_is_an_error_naming_the_flag() {
        let e = link_domains("", "dev", [], &[], &none())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cluster-domain"), "{e}");
        let e = link_domains("clu ster.local", "dev", [], &[], &none())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cluster-domain"), "{e}");
        let e = link_domains("cluster.local", "a.b", [], &[], &none())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pass -n"), "{e}");
    }

    #[test]
    fn reverse_zones_of_the_cluster_cidrs_round_to_octet_and_nibble_boundaries() {
        let nets: Vec<IpNet> = [
            "10.96.0.0/12",
            "10.244.0.0/16",
            "10.244.1.0/24",
            "fd00:10:96::/62",
            "0.0.0.0/0",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let got: Vec<String> = reverse_domains(&nets)
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut want: Vec<String> = (96..=111)
            .map(|o| format!("~{o}.10.in-addr.arpa"))
            .collect();
        want.push("~1.244.10.in-addr.arpa".into());
        want.push("~244.10.in-addr.arpa".into());
        // fd00:0010:0096:0000::/62 -> the 16th nibble is 0..=3.
        for n in 0..4 {
            want.push(format!("~{n}.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa"));
        }
        want.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want);
    }
}
