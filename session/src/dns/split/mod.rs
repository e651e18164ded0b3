//! The split-DNS decision: which resolver answers a query name, and under which name.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// Telepresence's default exclude suffixes: names ending in these never go to the cluster
/// (unless an include suffix matches too).
pub const DEFAULT_EXCLUDE_SUFFIXES: &[&str] = &[".arpa", ".com", ".io", ".net", ".org", ".ru"];

/// Whether `name` is a public suffix (Public Suffix List: `de`, `co.uk`, `dev`), under which
/// anyone may register names. A namespace named like one routes no name to the cluster unless
/// the user named it (`--namespace` or `--mapped-namespaces`): a cluster admin creating
/// namespace `de` must not capture `paypal.de`.
pub fn is_public_suffix(name: &str) -> bool {
    let name = name.trim_matches('.').to_ascii_lowercase();
    psl::suffix(name.as_bytes())
        .filter(|s| s.is_known())
        .is_some_and(|s| s.as_bytes() == name.as_bytes())
}

/// Where a query goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ask the cluster DNS for this fully qualified name (no trailing dot), then answer under
    /// the original query name: names under the cluster domain, include suffixes, reverse
    /// names of cluster subnets.
    Cluster(String),
    /// `<name>.<ns>`: the cluster first (as this fully qualified name); when it does not know
    /// the name (NXDOMAIN, or no answer), the machine's resolvers, as before join, so a
    /// namespace called `dev` does not take `go.dev` away.
    ClusterThenUpstream(String),
    /// A single label: the machine's resolvers first, unchanged, as before join (a home
    /// router answers its hosts by single label); when they do not know it, the connected
    /// namespace (this fully qualified name).
    UpstreamThenCluster(String),
    /// Relay to the machine's original resolvers unchanged.
    Upstream,
    /// `<name>.<ns>` of a namespace the user chose not to see (`--mapped-namespaces`): the
    /// machine's resolvers (a namespace `dev` must not hide `go.dev`), and NXDOMAIN when they
    /// do not know it.
    UpstreamElseHidden,
    /// A cluster name the user chose not to see (`--mapped-namespaces`): NXDOMAIN.
    Hidden,
}

/// One place a query is asked, in a [`Decision`]'s order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    /// The cluster DNS, for this fully qualified name.
    Cluster(&'a str),
    /// The machine's resolvers, for the query as asked.
    Upstream,
}

impl Decision {
    /// Where to ask, in order: the first answer that is not an error (NOERROR, also without
    /// records) is final; empty for [`Decision::Hidden`].
    pub fn sources(&self) -> Vec<Source<'_>> {
        match self {
            Decision::Cluster(n) => vec![Source::Cluster(n)],
            Decision::ClusterThenUpstream(n) => vec![Source::Cluster(n), Source::Upstream],
            Decision::UpstreamThenCluster(n) => vec![Source::Upstream, Source::Cluster(n)],
            Decision::Upstream | Decision::UpstreamElseHidden => vec![Source::Upstream],
            Decision::Hidden => Vec::new(),
        }
    }
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
    /// The machine's own search domains before join (resolv.conf's `search`, e.g.
    /// `corp.example`): names under them stay the LAN's, and they come first in the joined
    /// search list. Never the cluster's own (see [`machine_search`]).
    #[serde(default)]
    pub machine_search: Vec<String>,
    /// The namespaces the gateway forwards this peer to (its reach by RBAC, from its
    /// `/peers` entry); `None` when it does not restrict (or has not said). Names of the
    /// others are NXDOMAIN, as for namespaces left out of `--mapped-namespaces`: their
    /// ClusterIPs would only be dropped by the gateway.
    #[serde(default)]
    pub reachable: Option<BTreeSet<String>>,
    /// This session's name next to the machine's other sessions (issue 27).
    #[serde(default)]
    pub naming: Naming,
}

/// How a session's names sit next to the machine's other sessions: `<svc>.<ns>.svc.<alias>`
/// always reach this session's cluster; the cluster domain, `<svc>.<ns>` and single labels
/// only the primary session's (a secondary one passes them on to the machine's resolvers,
/// which is where the primary session's forwarder sits), so a short name never silently
/// means two clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Naming {
    /// A DNS label ([`alias_of`] of the context by default).
    #[serde(default)]
    pub alias: Option<String>,
    /// Another session answers the short names.
    #[serde(default)]
    pub secondary: bool,
}

/// Labels an alias may not be: they would send mDNS, reverse lookups or a special-use
/// domain's names to one cluster.
const RESERVED_ALIASES: &[&str] = &["local", "arpa", "localhost", "invalid", "test", "onion"];

/// The default alias of a kubeconfig context: a DNS label (lower case, every run of other
/// characters one `-`, at most 63 characters): `kind-dev` stays, `arn:aws:eks:eu-west-1:1:cluster/prod`
/// becomes `arn-aws-eks-eu-west-1-1-cluster-prod`, `Dev.Example` `dev-example`.
pub fn alias_of(context: &str) -> String {
    let mut out = String::new();
    for c in context.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    let out = out.trim_end_matches('-').to_string();
    match out.as_str() {
        "" => "cluster".to_string(),
        a if RESERVED_ALIASES.contains(&a) || public_alias(a) => {
            let mut a = a.to_string();
            a.truncate(63 - "-cluster".len());
            format!("{}-cluster", a.trim_end_matches('-'))
        }
        _ => out,
    }
}

/// Checks an alias given with `--alias`: one DNS label, not a special-use name.
pub fn check_alias(alias: &str) -> Result<(), String> {
    let label = (1..=63).contains(&alias.len())
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !alias.starts_with('-')
        && !alias.ends_with('-');
    if !label {
        return Err(format!(
            "{alias:?} is not a DNS label: use lower-case letters, digits and - (at most 63), e.g. --alias {}",
            alias_of(alias)
        ));
    }
    if RESERVED_ALIASES.contains(&alias) {
        return Err(format!(
            "{alias:?} is a special-use name (RFC 6761): choose another --alias"
        ));
    }
    if public_alias(alias) {
        return Err(format!(
            "svc.{alias} is a public name (Public Suffix List), which anyone may register: choose another --alias, e.g. --alias {alias}-cluster"
        ));
    }
    Ok(())
}

/// Whether `svc.<alias>` (the names a session's alias sends to its cluster) is a public
/// name: under a public suffix of the Public Suffix List, as the cluster domain may not be
/// without consent (`trust::check_cluster_domain`); `dev`, `io` or `com` are.
fn public_alias(alias: &str) -> bool {
    let none = crate::trust::Consent {
        also_proxy: &[],
        never_proxy: &[],
        cluster_domain: None,
        exclude: &[],
        include: &[],
    };
    crate::trust::check_cluster_domain(&format!("svc.{alias}"), &none).is_err()
}

impl SplitDns {
    fn visible(&self, ns: &str) -> bool {
        let chosen = match &self.mapped {
            Some(m) => m.contains(ns),
            None => ns == self.namespace || self.cluster_namespaces.contains(ns),
        };
        chosen && self.reachable.as_ref().is_none_or(|r| r.contains(ns))
    }

    /// A namespace named like a public suffix that the user did not name (`--namespace`,
    /// `--mapped-namespaces`): its `<name>.<ns>` are public names, never the cluster's.
    fn public_suffix_namespace(&self, ns: &str) -> bool {
        is_public_suffix(ns)
            && ns != self.namespace
            && self.mapped.as_ref().is_none_or(|m| !m.contains(ns))
    }

    fn is_cluster_namespace(&self, ns: &str) -> bool {
        ns == self.namespace
            || self.cluster_namespaces.contains(ns)
            || self.mapped.as_ref().is_some_and(|m| m.contains(ns))
    }

    /// Decides for a query name (any case, with or without the trailing dot).
    ///
    /// The order: include suffixes; the cluster domain, unless a machine search domain is
    /// as long or longer a match (`corp.example` stays the LAN's even with cluster domain
    /// `example`); reverse names of cluster subnets; exclude suffixes and names under the
    /// machine's search domains (the machine's); `<name>.<ns>[.svc]` of a mapped (or
    /// existing) namespace (the cluster, then the machine); single labels (the machine,
    /// then the connected namespace); everything else the machine's.
    pub fn decide(&self, qname: &str) -> Decision {
        let name = qname.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Decision::Upstream;
        }
        let dotted = format!(".{name}");
        if let Some(d) = self.decide_alias(&name) {
            return d;
        }
        if self
            .include_suffixes
            .iter()
            .any(|s| ends_with_suffix(&dotted, s))
        {
            return Decision::Cluster(name);
        }
        let domain = self.cluster_domain.trim_matches('.').to_ascii_lowercase();
        let machine = self.machine_match(&dotted);
        if self.naming.secondary {
            // Only the alias names (above) and this cluster's reverse names are this
            // session's; the primary session answers the rest.
            return match reverse_name_ip(&name) {
                Some(ip) if self.reverse_subnets.iter().any(|n| n.contains(&ip)) => {
                    Decision::Cluster(name)
                }
                _ => Decision::Upstream,
            };
        }
        if ends_with_suffix(&dotted, &domain) && machine.is_none_or(|m| m.len() < domain.len()) {
            return self.decide_cluster_fqdn(&name, &domain);
        }
        if let Some(ip) = reverse_name_ip(&name) {
            return if self.reverse_subnets.iter().any(|n| n.contains(&ip)) {
                Decision::Cluster(name)
            } else {
                Decision::Upstream
            };
        }
        if machine.is_some()
            || self
                .exclude_suffixes
                .iter()
                .any(|s| ends_with_suffix(&dotted, s))
        {
            return Decision::Upstream;
        }
        let labels: Vec<&str> = name.split('.').collect();
        match labels.as_slice() {
            [svc] => {
                Decision::UpstreamThenCluster(format!("{svc}.{}.svc.{domain}", self.namespace))
            }
            [_, ns] if self.public_suffix_namespace(ns) => Decision::Upstream,
            [svc, ns] if self.visible(ns) => {
                Decision::ClusterThenUpstream(format!("{svc}.{ns}.svc.{domain}"))
            }
            [_, ns] if self.is_cluster_namespace(ns) => Decision::UpstreamElseHidden,
            [svc, ns, "svc"] if self.is_cluster_namespace(ns) => {
                if self.visible(ns) {
                    Decision::Cluster(format!("{svc}.{ns}.svc.{domain}"))
                } else {
                    Decision::Hidden
                }
            }
            _ => Decision::Upstream,
        }
    }

    /// `<svc>.<ns>.svc.<alias>` (and any name under `svc.<alias>`): the cluster's
    /// `<svc>.<ns>.svc.<cluster domain>`, hidden when `ns` is not visible.
    fn decide_alias(&self, name: &str) -> Option<Decision> {
        let alias = self.naming.alias.as_deref()?;
        let domain = self.cluster_domain.trim_matches('.').to_ascii_lowercase();
        let suffix = format!("svc.{alias}");
        if name == suffix {
            return Some(Decision::Cluster(format!("svc.{domain}")));
        }
        let rest = name.strip_suffix(&format!(".{suffix}"))?;
        let ns = rest.rsplit('.').next().unwrap_or(rest);
        Some(if self.visible(ns) {
            Decision::Cluster(format!("{rest}.svc.{domain}"))
        } else {
            Decision::Hidden
        })
    }

    /// The longest machine search domain `dotted` is equal to or under.
    fn machine_match(&self, dotted: &str) -> Option<&str> {
        self.machine_search
            .iter()
            .map(|s| s.trim_matches('.'))
            .filter(|s| !s.is_empty() && ends_with_suffix(dotted, s))
            .max_by_key(|s| s.len())
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

    /// The namespaces whose `<svc>.<ns>` names go to the cluster: the mapped ones, else the
    /// connected one and every namespace of the cluster (`~<ns>` routing domains in
    /// systemd-resolved).
    pub fn routed_namespaces(&self) -> BTreeSet<String> {
        match &self.mapped {
            Some(m) => m.clone(),
            None => self
                .cluster_namespaces
                .iter()
                .cloned()
                .chain([self.namespace.clone()])
                .collect(),
        }
    }

    /// The namespaces the user named (`--mapped-namespaces`): routed even when named like a
    /// public suffix.
    pub fn named_namespaces(&self) -> BTreeSet<String> {
        let mut named = self.mapped.clone().unwrap_or_default();
        named.insert(self.namespace.clone());
        named
    }

    /// The joined resolver's search list: the machine's own domains first, as before join
    /// (a LAN name keeps its answer even when a Service has the same name), then the
    /// connected namespace's, as inside a pod.
    /// A secondary session's list is the machine's only: short names are the primary's.
    pub fn search_domains(&self) -> Vec<String> {
        let d = self.cluster_domain.trim_matches('.');
        let mut out: Vec<String> = Vec::new();
        if self.naming.secondary {
            return self.machine_search.clone();
        }
        let cluster = [
            format!("{}.svc.{d}", self.namespace),
            format!("svc.{d}"),
            d.to_string(),
        ];
        for s in self.machine_search.iter().cloned().chain(cluster) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}

/// The machine's search domains from its resolver file, as glibc reads them (the last
/// `search` or `domain` line wins), without the cluster's own: a resolver file kwg rendered
/// (a stale one) or a machine inside the cluster lists `svc.<cluster domain>`, which must not
/// turn cluster names into LAN names.
pub fn machine_search(resolv_conf: &str, cluster_domain: &str) -> Vec<String> {
    let domain = cluster_domain.trim_matches('.').to_ascii_lowercase();
    let mut found: Vec<String> = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            found = words
                .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                .filter(|w| !w.is_empty())
                .collect();
        }
    }
    let mut out: Vec<String> = Vec::new();
    for w in found {
        if !ends_with_suffix(&format!(".{w}"), &domain) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
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
mod tests;
