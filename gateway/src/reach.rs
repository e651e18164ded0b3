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
//!
//! A ClusterIP leads wherever its Service's EndpointSlices point, and whoever may edit a
//! namespace's EndpointSlices may point them anywhere (CVE-2021-25740). So a ClusterIP counts
//! as its namespace's only while every endpoint is a pod of that namespace; endpoints that are
//! pods of other namespaces make it a "span" of all those namespaces (its own `dest_ns` id,
//! granted to a peer reaching each of them), and an endpoint that is no pod (a node, anything
//! outside the pod network) makes it reachable by no peer, unless the address is in
//! `--allow-cidr` (every peer reaches it anyway). Whose pod an address is comes from the Pods
//! the gateway watches, never from the slice's `targetRef`, which its writer chooses.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

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
    /// Pod IPs (not hostNetwork, not node addresses) and the ClusterIPs whose endpoints are
    /// all pods of the namespace, per namespace (so every namespace a span names has one).
    pub by_namespace: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// ClusterIPs whose endpoints are pods of other namespaces too: each needs reach in every
    /// namespace of its set (its Service's own included).
    pub spans: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// ClusterIPs with an endpoint that is no pod: no peer reaches them.
    pub refused: BTreeMap<Ipv4Addr, Refused>,
    pub dns: BTreeSet<Ipv4Addr>,
    /// Whose pod each address is (two namespaces for a stale address already reused).
    pub pods: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// Each Service's endpoints in its slices now (not those in `--allow-cidr`), judged.
    pub endpoints: BTreeMap<ServiceKey, Judged>,
}

/// A Service: (namespace, name).
pub type ServiceKey = (String, String);
/// An endpoint address as its slice spells it: IPv4, or (`Err`) not in canonical form.
pub type EndpointAddr = Result<Ipv4Addr, String>;
/// Endpoint addresses with the namespaces of the pods holding them (`None`: no pod's, so no
/// peer reaches the ClusterIP).
pub type Judged = BTreeMap<EndpointAddr, Option<BTreeSet<String>>>;

/// How long an endpoint that left its Service's slices still counts for its ClusterIP:
/// kube-proxy follows a slice change a moment after the gateway (its sync period, about a
/// second, longer on a busy node), and a connection it sends to the old endpoint meanwhile
/// stays there (conntrack). The mirror of [`DEPARTED_GRACE`].
pub const REMOVED_GRACE: Duration = Duration::from_secs(30);

/// Endpoints that left their Service's slices within [`REMOVED_GRACE`] (time passed in),
/// each as it was judged when it left (a node address keeps refusing, a pod's address keeps
/// counting for that pod's namespaces even once the pod is gone).
#[derive(Debug, Default)]
pub struct Removed {
    last: BTreeMap<ServiceKey, Judged>,
    left: BTreeMap<(ServiceKey, EndpointAddr), Left>,
}

/// How a removed endpoint was judged, and when it left.
type Left = (Option<BTreeSet<String>>, Instant);

impl Removed {
    /// Notes the endpoints that left since the last call (`endpoints`: the inventory's) and
    /// forgets those that are back or left more than the grace ago. Whether one just left
    /// (judge the Services again with it).
    pub fn update(&mut self, endpoints: &BTreeMap<ServiceKey, Judged>, now: Instant) -> bool {
        let listed = |svc: &ServiceKey, a: &EndpointAddr| {
            endpoints.get(svc).is_some_and(|now| now.contains_key(a))
        };
        let mut went = false;
        for (svc, judged) in &self.last {
            for (a, owners) in judged.iter().filter(|(a, _)| !listed(svc, a)) {
                let key = (svc.clone(), a.clone());
                if let std::collections::btree_map::Entry::Vacant(e) = self.left.entry(key) {
                    e.insert((owners.clone(), now));
                    went = true;
                }
            }
        }
        self.left.retain(|(svc, a), (_, at)| {
            !listed(svc, a) && now.saturating_duration_since(*at) < REMOVED_GRACE
        });
        self.last = endpoints.clone();
        went
    }

    /// The endpoints that left recently, per Service, as they were judged.
    pub fn recent(&self) -> BTreeMap<ServiceKey, Judged> {
        let mut out: BTreeMap<ServiceKey, Judged> = BTreeMap::new();
        for ((svc, a), (owners, _)) in &self.left {
            out.entry(svc.clone())
                .or_default()
                .insert(a.clone(), owners.clone());
        }
        out
    }

    /// When the next of them stops counting.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.left.values().map(|(_, at)| *at + REMOVED_GRACE).min()
    }
}

/// How long an address whose pod went still counts as that pod's namespace's for the
/// endpoints that list it: the EndpointSlice controller drops a deleted pod's endpoint only
/// after the Pod is gone, and meanwhile the Service's ClusterIP would be refused to everyone.
pub const DEPARTED_GRACE: Duration = Duration::from_secs(10);

/// Pod addresses that went within [`DEPARTED_GRACE`] (time passed in).
#[derive(Debug, Default)]
pub struct Departed {
    last: BTreeMap<Ipv4Addr, String>,
    left: BTreeMap<Ipv4Addr, (String, Instant)>,
}

impl Departed {
    /// Notes the addresses that stopped being pods since the last call (`pods`: the
    /// inventory's) and forgets those that are pods again or went more than the grace ago.
    /// Whether an address just went (judge the endpoints again with it).
    pub fn update(&mut self, pods: &BTreeMap<Ipv4Addr, BTreeSet<String>>, now: Instant) -> bool {
        let mut went = false;
        for (ip, ns) in &self.last {
            if !pods.contains_key(ip) && !self.left.contains_key(ip) {
                self.left.insert(*ip, (ns.clone(), now));
                went = true;
            }
        }
        self.left.retain(|ip, (_, at)| {
            !pods.contains_key(ip) && now.saturating_duration_since(*at) < DEPARTED_GRACE
        });
        self.last = pods
            .iter()
            .filter_map(|(ip, ns)| Some((*ip, ns.first()?.clone())))
            .collect();
        went
    }

    /// The addresses that went recently, with the namespace of the pod that held them.
    pub fn recent(&self) -> BTreeMap<Ipv4Addr, String> {
        self.left
            .iter()
            .map(|(ip, (ns, _))| (*ip, ns.clone()))
            .collect()
    }

    /// When the next of them stops counting.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.left.values().map(|(_, at)| *at + DEPARTED_GRACE).min()
    }
}

/// Why no peer reaches a ClusterIP (for the log): the Service and its first endpoint that is
/// no pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `namespace/name`.
    pub service: String,
    /// As the slice spells it (an address not in canonical form is no pod's either).
    pub endpoint: String,
}

/// The `dest_ns` key of a span: its namespaces joined by commas (a namespace name, a DNS
/// label, holds no comma, so a span never shares an id with a namespace).
fn span_key(namespaces: &BTreeSet<String>) -> String {
    namespaces
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
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
    // The namespaces claiming each address: an address in two namespaces (a stale pod IP
    // already reused, a pod IP that is also a span's) is a span of them all, so a peer needs
    // reach in each, whichever pod answers.
    let mut claims: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for (ns, addrs) in &inv.by_namespace {
        for a in addrs {
            claims.entry(*a).or_default().insert(ns.clone());
        }
    }
    for (a, span) in &inv.spans {
        claims.entry(*a).or_default().extend(span.iter().cloned());
    }
    let mut spans: BTreeSet<&BTreeSet<String>> = BTreeSet::new();
    for (a, namespaces) in &claims {
        let id = match namespaces.first() {
            Some(ns) if namespaces.len() == 1 => ids.id(ns),
            _ => {
                spans.insert(namespaces);
                ids.id(&span_key(namespaces))
            }
        };
        sets.dest_ns.insert(*a, id);
    }
    for p in peers {
        let granted: BTreeSet<&str> = p.wanted(inv).filter(|ns| allowed(&p.subject, ns)).collect();
        for ns in &granted {
            sets.peer_ns.insert((p.ip, ids.id(ns)));
        }
        for span in spans
            .iter()
            .filter(|s| s.iter().all(|ns| granted.contains(ns.as_str())))
        {
            sets.peer_ns.insert((p.ip, ids.id(&span_key(span))));
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

/// The namespaces each address of the inventory belongs to: a pod IP or ClusterIP its
/// namespace, a span's ClusterIP every namespace of the span (a refused ClusterIP none).
pub fn address_namespaces(inv: &Inventory) -> HashMap<Ipv4Addr, Vec<String>> {
    let mut of: HashMap<Ipv4Addr, Vec<String>> = HashMap::new();
    for (ns, addrs) in &inv.by_namespace {
        for a in addrs {
            of.entry(*a).or_default().push(ns.clone());
        }
    }
    for (a, span) in &inv.spans {
        of.insert(*a, span.iter().cloned().collect());
    }
    of
}

/// The command creating the RoleBinding that lets `owner` reach `namespace`: ClusterRole
/// `view` (which holds `get services`) bound there to the user or ServiceAccount.
pub fn allow_command(owner: &str, namespace: &str) -> String {
    let subject = match owner.strip_prefix("system:serviceaccount:") {
        Some(sa) => format!("--serviceaccount={}", shell_word(sa)),
        None => format!("--user={}", shell_word(owner)),
    };
    // A RoleBinding's name is a DNS subdomain: lower case, digits, '-' and '.'.
    let label: String = owner
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .take(200)
        .collect();
    let label = label.trim_matches(|c| c == '-' || c == '.');
    format!(
        "kubectl -n {namespace} create rolebinding kwg-reach-{label} --clusterrole=view {subject}"
    )
}

/// `word` as one shell word: as is when it holds only safe characters, else single-quoted.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The label naming an EndpointSlice's Service (what kube-proxy reads).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The inventory of watched objects: every IPv4 pod IP of a running or pending Pod per
/// namespace, except hostNetwork Pods and addresses of Nodes (a peer never reaches a node);
/// every IPv4 ClusterIP of a Service (not headless) by where its IPv4 EndpointSlices point
/// (see the module's documentation; endpoints in `allowed`, the admin's `--allow-cidr`, need
/// nothing; an address in `departed`, whose pod went moments ago, still counts as that
/// namespace's; an endpoint in `removed`, which left its Service's slices moments ago, still
/// counts as it was judged then); DNS: the ClusterIPs of `kube-system/kube-dns`.
pub fn inventory<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: impl IntoIterator<Item = &'a Node>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    allowed: &[IpNet],
    departed: &BTreeMap<Ipv4Addr, String>,
    removed: &BTreeMap<ServiceKey, Judged>,
) -> Inventory {
    let node_addrs: BTreeSet<Ipv4Addr> = nodes
        .into_iter()
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let mut inv = Inventory::default();
    // Whose pod each address is (two namespaces for a stale address already reused).
    let mut pod_ns: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for p in pods {
        let host = p.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let (Some(st), Some(ns)) = (p.status.as_ref().filter(|_| !host), &p.metadata.namespace)
        else {
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
            .chain(st.pod_ip.iter());
        let set = inv.by_namespace.entry(ns.clone()).or_default();
        for ip in ips.filter_map(|ip| ip.parse::<Ipv4Addr>().ok()) {
            if !node_addrs.contains(&ip) {
                set.insert(ip);
                pod_ns.entry(ip).or_default().insert(ns.clone());
            }
        }
    }
    let endpoints = service_endpoints(slices);
    let mut owners = pod_ns.clone();
    for (ip, ns) in departed {
        owners
            .entry(*ip)
            .or_insert_with(|| BTreeSet::from([ns.clone()]));
    }
    for s in services {
        let (Some(spec), Some(ns), Some(name)) =
            (s.spec.as_ref(), &s.metadata.namespace, &s.metadata.name)
        else {
            continue;
        };
        let ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|a| !node_addrs.contains(a))
            .collect::<BTreeSet<_>>();
        if ns == "kube-system" && name == "kube-dns" {
            inv.dns.extend(ips.iter().copied());
        }
        let eps = endpoints
            .get(&(ns.as_str(), name.as_str()))
            .into_iter()
            .flatten();
        let anyones = |a: &Ipv4Addr| allowed.iter().any(|n| n.contains(&IpAddr::V4(*a)));
        let judged: Judged = eps
            .filter(|a| !a.as_ref().is_ok_and(anyones))
            .map(|a| {
                let whose = a.as_ref().ok().and_then(|a| owners.get(a)).cloned();
                (a.map_err(str::to_owned), whose)
            })
            .collect();
        let key = (ns.clone(), name.clone());
        // Endpoints that left moments ago: kube-proxy may still send new connections there.
        let lingering = removed.get(&key).into_iter().flatten();
        let lingering = lingering.filter(|(a, _)| !judged.contains_key(*a));
        let mut span = BTreeSet::from([ns.clone()]);
        let mut refused = None;
        for (a, whose) in judged.iter().chain(lingering) {
            match whose {
                Some(owners) => span.extend(owners.iter().cloned()),
                None => {
                    refused = Some(Refused {
                        service: format!("{ns}/{name}"),
                        endpoint: a.as_ref().map_or_else(Clone::clone, ToString::to_string),
                    });
                    break;
                }
            }
        }
        inv.endpoints.insert(key, judged);
        for ip in ips {
            if let Some(r) = &refused {
                inv.refused.insert(ip, r.clone());
            } else if span.len() > 1 {
                inv.spans.insert(ip, span.clone());
                // Its namespaces are asked about even when they hold no pod of their own.
                for n in &span {
                    inv.by_namespace.entry(n.clone()).or_default();
                }
            } else {
                inv.by_namespace.entry(ns.clone()).or_default().insert(ip);
            }
        }
    }
    inv.pods = pod_ns;
    inv
}

/// Every IPv4 endpoint address of each Service (`namespace`, `name`), from the EndpointSlices
/// labelled with its name in its namespace, whoever manages them: kube-proxy sends a
/// ClusterIP's connections to all of them. FQDN and IPv6 slices carry nothing for an IPv4
/// ClusterIP. An address that is no IPv4 address in canonical form stays as written (`Err`):
/// the API server validates slices with Go's lenient parser, which takes `010.244.001.007`
/// (kube-proxy reads it as 10.244.1.7) and `::ffff:10.244.1.7`, so it may lead anywhere.
fn service_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<(&'a str, &'a str), BTreeSet<Result<Ipv4Addr, &'a str>>> {
    let mut out: BTreeMap<(&str, &str), BTreeSet<Result<Ipv4Addr, &str>>> = BTreeMap::new();
    for s in slices.into_iter().filter(|s| s.address_type == "IPv4") {
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        let (Some(ns), Some(service)) = (&s.metadata.namespace, service) else {
            continue;
        };
        let addrs = s.endpoints.iter().flat_map(|e| &e.addresses);
        out.entry((ns.as_str(), service.as_str()))
            .or_default()
            .extend(addrs.map(|a| a.parse::<Ipv4Addr>().map_err(|_| a.as_str())));
    }
    out
}

#[cfg(test)]
#[path = "reach_tests.rs"]
mod tests;
