//! Reach by RBAC, the pure part: which destinations each peer may reach, as the contents of
//! three nftables sets, and the element commands that move the loaded sets to new contents.
//!
//! A peer reaches the ClusterIPs and pod IPs of a namespace when its owner may `get` Services
//! there (a SubjectAccessReview, answered by the I/O side and passed in) and the peer asked
//! for it (the peer Secret's `namespaces`; empty asks for every namespace), plus cluster DNS.
//! The sets (see [`crate::nft`]):
//! - `dest_ns`: destination address → namespace id (one element per ClusterIP and pod IP);
//! - `peer_ns`: peer address . namespace id (one element per peer and granted namespace);
//! - `dns`: the cluster DNS addresses (port 53 for every peer).
//!
//! So a packet costs two hash lookups whatever the number of peers, Services or pods, and the
//! sets hold peers × namespaces + destinations elements, not peers × destinations.

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// A namespace's number in the `dest_ns` and `peer_ns` sets (the packet mark the lookup sets;
/// never 0, the mark of a packet whose destination is in no namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsId(u32);

impl NsId {
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Stable ids per namespace name: a namespace keeps its id while the gateway runs, so a
/// change elsewhere never rewrites its elements.
#[derive(Debug, Default)]
pub struct NsIds {
    ids: HashMap<String, NsId>,
}

impl NsIds {
    pub fn id(&mut self, namespace: &str) -> NsId {
        let next = NsId(u32::try_from(self.ids.len() + 1).unwrap_or(u32::MAX));
        *self.ids.entry(namespace.to_owned()).or_insert(next)
    }
}

/// What the cluster holds: reachable addresses per namespace and the cluster DNS addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// ClusterIPs and pod IPs (not hostNetwork, not node addresses) per namespace.
    pub by_namespace: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    pub dns: BTreeSet<Ipv4Addr>,
}

/// Who a review asks about: a peer's owner and the groups counted for it. Reviews are keyed
/// by it, so two peers of one owner with other groups get their own answers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    pub user: String,
    /// Sorted, without repeats: [`owner_groups`] and the verified groups of the peer's Secret.
    pub groups: Vec<String>,
}

impl Subject {
    /// `owner` with `verified` groups (the Secret's `kwg.io/groups` when the gateway trusts
    /// them, see `--trust-peer-groups`; none otherwise). A `system:` group of the Secret never
    /// counts (`system:masters` would grant everything, and principals exempt from the
    /// admission policy can write any groups): the `system:` groups of a review are only the
    /// ones [`owner_groups`] derives from the owner.
    pub fn new(owner: &str, verified: &[String]) -> Subject {
        let mut groups = owner_groups(owner);
        groups.extend(
            verified
                .iter()
                .filter(|g| !g.is_empty() && !g.starts_with("system:"))
                .cloned(),
        );
        groups.sort();
        groups.dedup();
        Subject {
            user: owner.to_owned(),
            groups,
        }
    }
}

/// A served peer as reach sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReach {
    pub ip: Ipv4Addr,
    pub subject: Subject,
    /// The namespaces it asked for; empty: every namespace.
    pub asked: Vec<String>,
}

impl PeerReach {
    /// The namespaces of `inv` this peer asked for.
    fn wanted<'a>(&'a self, inv: &'a Inventory) -> impl Iterator<Item = &'a str> + 'a {
        let all = self.asked.is_empty();
        inv.by_namespace
            .keys()
            .map(String::as_str)
            .filter(move |ns| all || self.asked.iter().any(|a| a == ns))
    }
}

/// A subject and a namespace: one SubjectAccessReview (`get services` there).
pub type Question = (Subject, String);

/// The reviews needed to decide every peer's reach that `known` does not answer yet.
pub fn questions(
    inv: &Inventory,
    peers: &[PeerReach],
    known: impl Fn(&Subject, &str) -> bool,
) -> BTreeSet<Question> {
    peers
        .iter()
        .flat_map(|p| p.wanted(inv).map(move |ns| (&p.subject, ns)))
        .filter(|(o, ns)| !known(o, ns))
        .map(|(o, ns)| (o.clone(), ns.to_owned()))
        .collect()
}

/// The contents of the three sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sets {
    pub dest_ns: BTreeMap<Ipv4Addr, NsId>,
    pub peer_ns: BTreeSet<(Ipv4Addr, NsId)>,
    pub dns: BTreeSet<Ipv4Addr>,
}

impl Sets {
    /// Namespaces a peer reaches (for logs and tests).
    pub fn granted(&self, peer: Ipv4Addr) -> impl Iterator<Item = NsId> + '_ {
        self.peer_ns
            .range((peer, NsId(0))..=(peer, NsId(u32::MAX)))
            .map(|(_, n)| *n)
    }
}

/// What the sets must hold, given the cluster, the peers and the owners' grants (`allowed`
/// answers a review; an unanswered one counts as denied until it is answered).
pub fn desired(
    inv: &Inventory,
    peers: &[PeerReach],
    allowed: impl Fn(&Subject, &str) -> bool,
    ids: &mut NsIds,
) -> Sets {
    let mut sets = Sets {
        dns: inv.dns.clone(),
        ..Sets::default()
    };
    for (ns, addrs) in &inv.by_namespace {
        let id = ids.id(ns);
        for a in addrs {
            // An address in two namespaces (a stale pod IP reused): the first keeps it.
            sets.dest_ns.entry(*a).or_insert(id);
        }
    }
    for p in peers {
        for ns in p.wanted(inv).filter(|ns| allowed(&p.subject, ns)) {
            sets.peer_ns.insert((p.ip, ids.id(ns)));
        }
    }
    sets
}

/// The namespaces each peer reaches, by name (what `/peers` tells the peer itself), for the
/// peers whose every review is answered (`answer` is `None` while one is not): a peer whose
/// reach is not decided yet is left out rather than shown less than it will get.
pub fn reachable(
    inv: &Inventory,
    peers: &[PeerReach],
    answer: impl Fn(&Subject, &str) -> Option<bool>,
) -> HashMap<Ipv4Addr, Vec<String>> {
    peers
        .iter()
        .filter_map(|p| {
            let mut granted = Vec::new();
            for ns in p.wanted(inv) {
                if answer(&p.subject, ns)? {
                    granted.push(ns.to_owned());
                }
            }
            Some((p.ip, granted))
        })
        .collect()
}

/// Namespaced RBAC objects (Roles and RoleBindings): (kind, namespace, name) → resourceVersion.
pub type RbacVersions = BTreeMap<(&'static str, String, String), String>;

/// The namespaces where a Role or RoleBinding was added, changed or deleted between `old` and
/// `new`: only grants there can have changed (a RoleBinding grants nothing elsewhere), so only
/// those reviews are asked again at once.
pub fn changed_namespaces(old: &RbacVersions, new: &RbacVersions) -> BTreeSet<String> {
    let gone = old.iter().filter(|(k, v)| new.get(*k) != Some(*v));
    let came = new.iter().filter(|(k, v)| old.get(*k) != Some(*v));
    gone.chain(came).map(|((_, ns, _), _)| ns.clone()).collect()
}

/// Element commands taking the loaded sets from `old` to `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub del_dest: Vec<Ipv4Addr>,
    pub add_dest: Vec<(Ipv4Addr, NsId)>,
    pub del_peer: Vec<(Ipv4Addr, NsId)>,
    pub add_peer: Vec<(Ipv4Addr, NsId)>,
    pub del_dns: Vec<Ipv4Addr>,
    pub add_dns: Vec<Ipv4Addr>,
}

pub fn diff(old: &Sets, new: &Sets) -> Diff {
    let mut d = Diff::default();
    for (a, id) in &old.dest_ns {
        // A changed namespace is a delete then an add (nft keeps a map element's value on add).
        if new.dest_ns.get(a) != Some(id) {
            d.del_dest.push(*a);
        }
    }
    for (a, id) in &new.dest_ns {
        if old.dest_ns.get(a) != Some(id) {
            d.add_dest.push((*a, *id));
        }
    }
    d.del_peer = old.peer_ns.difference(&new.peer_ns).copied().collect();
    d.add_peer = new.peer_ns.difference(&old.peer_ns).copied().collect();
    d.del_dns = old.dns.difference(&new.dns).copied().collect();
    d.add_dns = new.dns.difference(&old.dns).copied().collect();
    d
}

/// Elements per `nft` command line (bounds one line's length; the script is one transaction).
const CHUNK: usize = 2000;

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements added or deleted.
    pub fn len(&self) -> usize {
        self.del_dest.len()
            + self.add_dest.len()
            + self.del_peer.len()
            + self.add_peer.len()
            + self.del_dns.len()
            + self.add_dns.len()
    }

    /// The `nft -f -` script (one transaction): deletes first, then adds.
    pub fn render(&self, table: &str) -> String {
        let mut s = String::new();
        let dest = |(a, id): &(Ipv4Addr, NsId)| format!("{a} : {}", id.0);
        let pair = |(a, id): &(Ipv4Addr, NsId)| format!("{a} . {}", id.0);
        let addr = |a: &Ipv4Addr| a.to_string();
        lines(&mut s, "delete", table, "dest_ns", &self.del_dest, addr);
        lines(&mut s, "delete", table, "peer_ns", &self.del_peer, pair);
        lines(&mut s, "delete", table, "dns", &self.del_dns, addr);
        lines(&mut s, "add", table, "dest_ns", &self.add_dest, dest);
        lines(&mut s, "add", table, "peer_ns", &self.add_peer, pair);
        lines(&mut s, "add", table, "dns", &self.add_dns, addr);
        s
    }
}

fn lines<T>(
    s: &mut String,
    verb: &str,
    table: &str,
    set: &str,
    items: &[T],
    fmt: impl Fn(&T) -> String,
) {
    for chunk in items.chunks(CHUNK) {
        let list: Vec<String> = chunk.iter().map(&fmt).collect();
        let _ = writeln!(
            s,
            "{verb} element inet {table} {set} {{ {} }}",
            list.join(", ")
        );
    }
}

/// The groups a review names for `owner`: every user is `system:authenticated`; a
/// ServiceAccount (`system:serviceaccount:<ns>:<name>`) also has its two ServiceAccount groups.
/// Other groups (from the cluster's authenticator) count only as the peer Secret's verified
/// `kwg.io/groups` ([`Subject::new`]).
pub fn owner_groups(owner: &str) -> Vec<String> {
    let mut groups = vec!["system:authenticated".to_owned()];
    if let Some(rest) = owner.strip_prefix("system:serviceaccount:")
        && let Some((ns, name)) = rest.split_once(':')
        && !ns.is_empty()
        && !name.is_empty()
    {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    groups
}

/// The inventory of watched objects: every IPv4 ClusterIP of a Service (not headless) and pod
/// IP of a running or pending Pod, per namespace, except hostNetwork Pods and addresses of
/// Nodes (a peer never reaches a node); DNS: the ClusterIPs of `kube-system/kube-dns`.
pub fn inventory<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Inventory {
    let node_addrs: BTreeSet<Ipv4Addr> = nodes
        .into_iter()
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let mut inv = Inventory::default();
    let mut put = |ns: Option<&String>, ips: Vec<Ipv4Addr>| {
        if let Some(ns) = ns {
            let set = inv.by_namespace.entry(ns.clone()).or_default();
            set.extend(ips.into_iter().filter(|a| !node_addrs.contains(a)));
        }
    };
    let mut dns = BTreeSet::new();
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
            .collect::<Vec<_>>();
        if s.metadata.namespace.as_deref() == Some("kube-system")
            && s.metadata.name.as_deref() == Some("kube-dns")
        {
            dns.extend(ips.iter().copied());
        }
        put(s.metadata.namespace.as_ref(), ips);
    }
    for p in pods {
        let host = p.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let Some(st) = p.status.as_ref().filter(|_| !host) else {
            continue;
        };
        if matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue; // its address may already be another pod's
        }
        let ips = st
            .pod_ips
            .iter()
            .flatten()
            .map(|i| &i.ip)
            .chain(st.pod_ip.iter())
            .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
            .collect::<Vec<_>>();
        put(p.metadata.namespace.as_ref(), ips);
    }
    inv.dns = dns;
    inv
}

#[cfg(test)]
#[path = "reach_tests.rs"]
mod tests;
