//! The split-DNS decision: which resolver answers a query name, and under which name.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// Telepresence's default exclude suffixes: names ending in these never go to the cluster
/// (unless an include suffix matches too).
pub const DEFAULT_EXCLUDE_SUFFIXES: &[&str] = &[".arpa", ".com", ".io", ".net", ".org", ".ru"];

/// Where a query goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ask the cluster DNS for this fully qualified name (no trailing dot), then answer under
    /// the original query name.
    Cluster(String),
    /// Relay to the machine's original resolvers unchanged.
    Upstream,
    /// A cluster name the user chose not to see (`--mapped-namespaces`): NXDOMAIN.
    Hidden,
}

/// The inputs of the decision, fixed while joined.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SplitDns {
    /// e.g. `cluster.local`
    pub cluster_domain: String,
    /// The connected namespace: single labels resolve in it.
    pub namespace: String,
    /// Namespaces that exist in the cluster (as far as the user may list them).
    pub cluster_namespaces: BTreeSet<String>,
    /// `--mapped-namespaces`: when set, only these namespaces' names are visible.
    pub mapped: Option<BTreeSet<String>>,
    pub include_suffixes: Vec<String>,
    pub exclude_suffixes: Vec<String>,
    /// Subnets whose reverse (PTR) names the cluster DNS answers.
    pub reverse_subnets: Vec<IpNet>,
}

impl SplitDns {
    fn visible(&self, ns: &str) -> bool {
        match &self.mapped {
            Some(m) => m.contains(ns),
            None => ns == self.namespace || self.cluster_namespaces.contains(ns),
        }
    }

    fn is_cluster_namespace(&self, ns: &str) -> bool {
        ns == self.namespace
            || self.cluster_namespaces.contains(ns)
            || self.mapped.as_ref().is_some_and(|m| m.contains(ns))
    }

    /// Decides for a query name (any case, with or without the trailing dot).
    pub fn decide(&self, qname: &str) -> Decision {
        let name = qname.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Decision::Upstream;
        }
        let dotted = format!(".{name}");
        if self
            .include_suffixes
            .iter()
            .any(|s| ends_with_suffix(&dotted, s))
        {
            return Decision::Cluster(name);
        }
        let domain = self.cluster_domain.trim_matches('.').to_ascii_lowercase();
        if name == domain || dotted.ends_with(&format!(".{domain}")) {
            return self.decide_cluster_fqdn(&name, &domain);
        }
        if let Some(ip) = reverse_name_ip(&name) {
            return if self.reverse_subnets.iter().any(|n| n.contains(&ip)) {
                Decision::Cluster(name)
            } else {
                Decision::Upstream
            };
        }
        if self
            .exclude_suffixes
            .iter()
            .any(|s| ends_with_suffix(&dotted, s))
        {
            return Decision::Upstream;
        }
        let labels: Vec<&str> = name.split('.').collect();
        match labels.as_slice() {
            [svc] => Decision::Cluster(format!("{svc}.{}.svc.{domain}", self.namespace)),
            [svc, ns] | [svc, ns, "svc"] if self.is_cluster_namespace(ns) => {
                if self.visible(ns) {
                    Decision::Cluster(format!("{svc}.{ns}.svc.{domain}"))
                } else {
                    Decision::Hidden
                }
            }
            _ => Decision::Upstream,
        }
    }

    /// `<...>.<ns>.svc.<domain>` is hidden when `ns` is not mapped.
    fn decide_cluster_fqdn(&self, name: &str, domain: &str) -> Decision {
        let rest = name
            .strip_suffix(domain)
            .unwrap_or(name)
            .trim_end_matches('.');
        let labels: Vec<&str> = rest.split('.').collect();
        if let [.., ns, "svc"] = labels.as_slice()
            && labels.len() >= 3
            && !self.visible(ns)
        {
            return Decision::Hidden;
        }
        Decision::Cluster(name.to_string())
    }

    /// The search domains to put first in the machine's resolver configuration.
    pub fn search_domains(&self) -> Vec<String> {
        let d = self.cluster_domain.trim_matches('.');
        vec![
            format!("{}.svc.{d}", self.namespace),
            format!("svc.{d}"),
            d.to_string(),
        ]
    }
}

fn ends_with_suffix(dotted_name: &str, suffix: &str) -> bool {
    let s = suffix.trim_end_matches('.').to_ascii_lowercase();
    let s = if s.starts_with('.') {
        s
    } else {
        format!(".{s}")
    };
    dotted_name.ends_with(&s)
}

/// The address of an `in-addr.arpa` / `ip6.arpa` name.
fn reverse_name_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest
            .split('.')
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles
        .iter()
        .rev()
        .collect::<Vec<_>>()
        .chunks(2)
        .enumerate()
    {
        bytes[i] = (pair[0] << 4) | pair[1];
    }
    Some(IpAddr::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(mapped: Option<&[&str]>) -> SplitDns {
        SplitDns {
            cluster_domain: "cluster.local".into(),
            namespace: "emojivoto".into(),
            cluster_namespaces: ["default", "emojivoto", "kube-system", "other"]
                .map(String::from)
                .into(),
            mapped: mapped.map(|m| m.iter().map(|s| s.to_string()).collect()),
            include_suffixes: vec![],
            exclude_suffixes: DEFAULT_EXCLUDE_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            reverse_subnets: vec!["10.96.0.0/12".parse().unwrap()],
        }
    }

    fn cluster(s: &str) -> Decision {
        Decision::Cluster(s.into())
    }

    #[test]
    fn names_resolve_like_inside_a_pod() {
        let s = split(None);
        assert_eq!(
            s.decide("web-app"),
            cluster("web-app.emojivoto.svc.cluster.local")
        );
        assert_eq!(
            s.decide("Web-App."),
            cluster("web-app.emojivoto.svc.cluster.local")
        );
        assert_eq!(
            s.decide("web-app.emojivoto"),
            cluster("web-app.emojivoto.svc.cluster.local")
        );
        assert_eq!(
            s.decide("echo.other"),
            cluster("echo.other.svc.cluster.local")
        );
        assert_eq!(
            s.decide("echo.other.svc"),
            cluster("echo.other.svc.cluster.local")
        );
        assert_eq!(
            s.decide("web-app.emojivoto.svc.cluster.local."),
            cluster("web-app.emojivoto.svc.cluster.local")
        );
        assert_eq!(s.decide("intranet.corp.example"), Decision::Upstream);
        assert_eq!(s.decide("web-app.nosuchns"), Decision::Upstream);
        assert_eq!(s.decide("example.com"), Decision::Upstream);
        assert_eq!(s.decide("debian.org."), Decision::Upstream);
    }

    #[test]
    fn excludes_and_includes() {
        let mut s = split(None);
        s.cluster_namespaces.insert("com".into());
        assert_eq!(s.decide("x.com"), Decision::Upstream);
        s.include_suffixes = vec![".corp.example".into()];
        assert_eq!(
            s.decide("intranet.corp.example"),
            cluster("intranet.corp.example")
        );
        s.include_suffixes = vec!["x.com".into()];
        assert_eq!(s.decide("a.x.com"), cluster("a.x.com"));
    }

    #[test]
    fn mapped_namespaces_hide_the_others() {
        let s = split(Some(&["emojivoto"]));
        assert_eq!(
            s.decide("web-app"),
            cluster("web-app.emojivoto.svc.cluster.local")
        );
        assert_eq!(s.decide("echo.other"), Decision::Hidden);
        assert_eq!(s.decide("echo.other.svc.cluster.local"), Decision::Hidden);
        assert_eq!(
            s.decide("web-app.emojivoto.svc.cluster.local"),
            cluster("web-app.emojivoto.svc.cluster.local")
        );
        assert_eq!(s.decide("kubernetes.default"), Decision::Hidden);
    }

    #[test]
    fn reverse_names_of_cluster_subnets_go_to_the_cluster() {
        let s = split(None);
        assert_eq!(
            s.decide("10.0.96.10.in-addr.arpa."),
            cluster("10.0.96.10.in-addr.arpa")
        );
        assert_eq!(s.decide("80.2.0.192.in-addr.arpa"), Decision::Upstream);
        assert_eq!(
            reverse_name_ip(&format!("{}ip6.arpa", "1.0.".repeat(16))),
            Some("0101:0101:0101:0101:0101:0101:0101:0101".parse().unwrap())
        );
    }

    #[test]
    fn search_domains_follow_the_namespace() {
        assert_eq!(
            split(None).search_domains(),
            [
                "emojivoto.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
    }
}
