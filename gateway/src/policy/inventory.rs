//! What the cluster holds that peers may reach (pure): pod IPs per namespace and ClusterIPs
//! by where their EndpointSlices point.
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
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

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
    /// IPv6 ClusterIPs no peer reaches: their Service is refused, or an endpoint of its IPv6
    /// slices is no pod of the namespaces its IPv4 ClusterIP needs (an IPv6-only Service: an
    /// endpoint that is no pod).
    pub refused6: BTreeMap<std::net::Ipv6Addr, Refused>,
    pub dns: BTreeSet<Ipv4Addr>,
    /// Whose pod each address is (two namespaces for a stale address already reused).
    pub pods: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// Whose pod each IPv6 address is (what an IPv6 endpoint is judged by).
    pub pods6: BTreeMap<std::net::Ipv6Addr, BTreeSet<String>>,
    /// Each Service's endpoints in its slices now (not those in `--allow-cidr`), judged.
    pub endpoints: BTreeMap<ServiceKey, Judged>,
    /// A dual-stack object's IPv6 address and an IPv4 address of the same object (a pod's
    /// IPv4 pod IP, a Service's IPv4 ClusterIP): the IPv6 one goes where the IPv4 one is
    /// judged to go (an IPv6-only object has no twin and no peer reaches it). A Service's
    /// IPv6 ClusterIPs are linked only while every endpoint of its IPv6 slices is a pod (by
    /// the pods' own links) of namespaces its IPv4 ClusterIP already needs: kube-proxy sends
    /// the IPv6 ClusterIP to the IPv6 endpoints, which a slice writer may point anywhere.
    /// An object with no IPv4 address at all (an IPv6-only cluster's) is keyed by the
    /// [`Keys6`] key of its first IPv6 address instead, everywhere an IPv4 address would be.
    pub twins6: BTreeMap<std::net::Ipv6Addr, Ipv4Addr>,
}

/// How many [`Keys6`] there are: 240.0.0.0/4 holds 2^28 addresses.
const KEYS6: u32 = 1 << 28;

/// The keys IPv6 addresses take where the policy counts in IPv4 addresses: each IPv6-only
/// object (no IPv4 twin) is counted under the key of its first IPv6 address, and each
/// address has its own key in 240.0.0.0/4 (RFC 1112's reserved class E, never a pod IP or
/// ClusterIP, kept out of the IPv4 sets by [`is_key6`]), handed out in the order addresses
/// are met. Two objects share a key only when they share the address (a stale pod address
/// already reused), which makes it a span of their namespaces, as an IPv4 address would.
/// Not its low bits: a multi-node IPv6-only cluster's per-node /64s hand out ::5 on every
/// node, and one namespace's pod would become a span with another's.
///
/// A key lives for one [`inventory`] pass only (it indexes the claims of
/// [`super::sets::desired`]; the nft sets hold the IPv6 address itself, through
/// [`Inventory::twins6`]), so an address no object holds any more has no key in the next
/// pass. Past 2^28 addresses in one pass (more than any API server stores), an
/// address gets no key and its object no twin: no peer reaches it.
#[derive(Debug)]
pub struct Keys6 {
    of: BTreeMap<std::net::Ipv6Addr, Ipv4Addr>,
    limit: u32,
}

impl Default for Keys6 {
    fn default() -> Keys6 {
        Keys6 {
            of: BTreeMap::new(),
            limit: KEYS6,
        }
    }
}

impl Keys6 {
    /// The key of `a` (`None`: all of them are taken).
    fn key(&mut self, a: std::net::Ipv6Addr) -> Option<Ipv4Addr> {
        let next = u32::try_from(self.of.len())
            .ok()
            .filter(|n| *n < self.limit);
        match self.of.entry(a) {
            std::collections::btree_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::btree_map::Entry::Vacant(e) => {
                Some(*e.insert(Ipv4Addr::from(0xF000_0000 | next?)))
            }
        }
    }
}

/// Whether `a` is a [`Keys6`] key (in 240.0.0.0/4), not an address of the cluster.
pub fn is_key6(a: Ipv4Addr) -> bool {
    a.octets()[0] >= 240
}

/// A Service: (namespace, name).
pub type ServiceKey = (String, String);
/// An endpoint address as its slice spells it: IPv4 (from an IPv4 slice) or IPv6 (from an
/// IPv6 slice), or (`Err`) not in canonical form for its slice's family.
pub type EndpointAddr = Result<IpAddr, String>;
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

/// Pod addresses, IPv4 and IPv6, that went within [`DEPARTED_GRACE`] (time passed in).
#[derive(Debug, Default)]
pub struct Departed {
    last: BTreeMap<IpAddr, String>,
    left: BTreeMap<IpAddr, (String, Instant)>,
}

impl Departed {
    /// Notes the addresses that stopped being pods since the last call (`pods`, `pods6`: the
    /// inventory's) and forgets those that are pods again or went more than the grace ago.
    /// Whether an address just went (judge the endpoints again with it).
    pub fn update(
        &mut self,
        pods: &BTreeMap<Ipv4Addr, BTreeSet<String>>,
        pods6: &BTreeMap<std::net::Ipv6Addr, BTreeSet<String>>,
        now: Instant,
    ) -> bool {
        let v4 = pods.iter().map(|(ip, ns)| (IpAddr::V4(*ip), ns));
        let pods: BTreeMap<IpAddr, &BTreeSet<String>> = v4
            .chain(pods6.iter().map(|(ip, ns)| (IpAddr::V6(*ip), ns)))
            .collect();
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
    pub fn recent(&self) -> BTreeMap<IpAddr, String> {
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

/// The label naming an EndpointSlice's Service (what kube-proxy reads).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The inventory of watched objects: every IPv4 pod IP of a running or pending Pod per
/// namespace, except hostNetwork Pods and addresses of Nodes (a peer never reaches a node);
/// every IPv4 ClusterIP of a Service (not headless) by where its IPv4 EndpointSlices point
/// (see the module's documentation; endpoints in `allowed`, the admin's `--allow-cidr`, need
/// nothing; an address in `departed`, whose pod went moments ago, still counts as that
/// namespace's; an endpoint in `removed`, which left its Service's slices moments ago, still
/// counts as it was judged then); DNS: the ClusterIPs of `kube-system/kube-dns`. IPv6: see
/// [`Inventory::twins6`] and [`Keys6`]; a departed pod's IPv6 address counts as its IPv4 one.
pub fn inventory<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: impl IntoIterator<Item = &'a Node>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    allowed: &[IpNet],
    departed: &BTreeMap<IpAddr, String>,
    removed: &BTreeMap<ServiceKey, Judged>,
) -> Inventory {
    let node_addrs: BTreeSet<Ipv4Addr> = nodes
        .into_iter()
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let mut inv = Inventory::default();
    let mut keys = Keys6::default();
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
        let ips: Vec<IpAddr> = ips.filter_map(|ip| ip.parse().ok()).collect();
        let key = twin_v6(&mut inv.twins6, &mut keys, &ips, &node_addrs);
        let set = inv.by_namespace.entry(ns.clone()).or_default();
        let v4 = ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(ip) if !node_addrs.contains(ip) && !is_key6(*ip) => Some(*ip),
            _ => None,
        });
        // An IPv6-only pod counts under its key.
        for ip in v4 {
            set.insert(ip);
            pod_ns.entry(ip).or_default().insert(ns.clone());
        }
        set.extend(key.filter(|k| is_key6(*k)));
        for ip in &ips {
            if let IpAddr::V6(a6) = ip {
                inv.pods6.entry(*a6).or_default().insert(ns.clone());
            }
        }
    }
    let endpoints = service_endpoints(slices);
    let mut owners: BTreeMap<IpAddr, BTreeSet<String>> = pod_ns
        .iter()
        .map(|(ip, ns)| (IpAddr::V4(*ip), ns.clone()))
        .chain(
            inv.pods6
                .iter()
                .map(|(ip, ns)| (IpAddr::V6(*ip), ns.clone())),
        )
        .collect();
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
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let ips6: BTreeSet<std::net::Ipv6Addr> = cluster_ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            })
            .collect();
        let ipv6_only = !cluster_ips.iter().any(IpAddr::is_ipv4);
        // An IPv6-only Service counts under the key of its first IPv6 ClusterIP.
        let key = cluster_ips.iter().find_map(|ip| match ip {
            IpAddr::V6(a) if ipv6_only => keys.key(*a),
            _ => None,
        });
        let ips = cluster_ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(a) if !is_key6(*a) => Some(*a),
                _ => None,
            })
            .filter(|a| !node_addrs.contains(a))
            .chain(key)
            .collect::<BTreeSet<_>>();
        if ns == "kube-system" && name == "kube-dns" {
            inv.dns.extend(ips.iter().copied());
        }
        let eps = endpoints
            .get(&(ns.as_str(), name.as_str()))
            .into_iter()
            .flatten();
        let anyones = |a: &IpAddr| allowed.iter().any(|n| n.contains(a));
        let judged: Judged = eps
            .filter(|a| !a.as_ref().is_ok_and(anyones))
            .map(|a| {
                // Whose pod holds that very address (of its family).
                let whose = a.as_ref().ok().and_then(|a| owners.get(a)).cloned();
                (a.map_err(str::to_owned), whose)
            })
            .collect();
        let key = (ns.clone(), name.clone());
        // Endpoints that left moments ago: kube-proxy may still send new connections there.
        let lingering = removed.get(&key).into_iter().flatten();
        let lingering = lingering.filter(|(a, _)| !judged.contains_key(*a));
        // An IPv6-only Service's IPv6 endpoints are its only ones: judged as IPv4 ones are.
        let (v6, v4): (Vec<_>, Vec<_>) = judged
            .iter()
            .chain(lingering)
            .partition(|(a, _)| matches!(a, Ok(IpAddr::V6(_))) && !ipv6_only);
        let mut span = BTreeSet::from([ns.clone()]);
        let mut refused = None;
        for (a, whose) in v4 {
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
        // The IPv6 ClusterIPs go where the IPv4 ones do only if the IPv6 endpoints need no
        // more than that (a hand-made IPv6 slice may name a node or another namespace's pod).
        let outside = v6
            .iter()
            .find(|(_, whose)| !whose.as_ref().is_some_and(|o| o.is_subset(&span)));
        let refused6 = refused.clone().or_else(|| {
            outside.map(|(a, _)| Refused {
                service: format!("{ns}/{name}"),
                endpoint: a.as_ref().map_or_else(Clone::clone, ToString::to_string),
            })
        });
        match &refused6 {
            None => {
                twin_v6(&mut inv.twins6, &mut keys, &cluster_ips, &node_addrs);
            }
            Some(r) => {
                for a6 in &ips6 {
                    inv.refused6.insert(*a6, r.clone());
                }
            }
        }
        inv.endpoints.insert(key, judged);
        for ip in ips {
            if let Some(r) = &refused {
                if !is_key6(ip) {
                    inv.refused.insert(ip, r.clone());
                }
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

/// Records each IPv6 address of one object (`parsed`: a pod's podIPs, a Service's
/// ClusterIPs) with the object's first IPv4 address, not a node's, or with the key of its
/// first IPv6 address when it has no IPv4 address at all (an IPv6-only object); returns
/// that address (`None`: no twin).
fn twin_v6(
    twins: &mut BTreeMap<std::net::Ipv6Addr, Ipv4Addr>,
    keys: &mut Keys6,
    parsed: &[IpAddr],
    node_addrs: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let v6 = parsed.iter().filter_map(|a| match a {
        IpAddr::V6(a6) => Some(*a6),
        IpAddr::V4(_) => None,
    });
    let v4 = match parsed.iter().any(IpAddr::is_ipv4) {
        true => parsed.iter().find_map(|a| match a {
            IpAddr::V4(a) if !node_addrs.contains(a) && !is_key6(*a) => Some(*a),
            _ => None,
        })?,
        false => keys.key(v6.clone().next()?)?,
    };
    for a6 in v6 {
        twins.insert(a6, v4);
    }
    Some(v4)
}

/// Every IPv4 and IPv6 endpoint address of each Service (`namespace`, `name`), from the
/// EndpointSlices labelled with its name in its namespace, whoever manages them: kube-proxy
/// sends a ClusterIP's connections to all of its family's. FQDN slices carry nothing for a
/// ClusterIP. An address that is no address of its slice's family in canonical form stays as
/// written (`Err`, which refuses the Service's ClusterIPs of both families):
/// the API server validates slices with Go's lenient parser, which takes `010.244.001.007`
/// (kube-proxy reads it as 10.244.1.7) and `::ffff:10.244.1.7`, so it may lead anywhere.
fn service_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<(&'a str, &'a str), BTreeSet<Result<IpAddr, &'a str>>> {
    let mut out: BTreeMap<(&str, &str), BTreeSet<Result<IpAddr, &str>>> = BTreeMap::new();
    for s in slices.into_iter() {
        let parse: fn(&str) -> Option<IpAddr> = match s.address_type.as_str() {
            "IPv4" => |a| a.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            "IPv6" => |a| a.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
            _ => continue,
        };
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
            .extend(addrs.map(|a| parse(a).ok_or(a.as_str())));
    }
    out
}

#[cfg(test)]
mod tests;
