//! The gateway's flags (each also an environment variable).

use clap::Parser;
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// kwg gateway: the in-cluster WireGuard end of kwg. Runs in a pod with NET_ADMIN.
#[derive(Debug, Clone, Parser)]
#[command(name = "kwg-gateway", version)]
pub struct Config {
    /// Namespace of peer Secrets and the gateway info ConfigMap (kwg users write here).
    #[arg(long, env = "KWG_NAMESPACE", default_value = kwg_contract::DEFAULT_NAMESPACE)]
    pub kwg_namespace: String,
    /// Namespace the gateway runs in, where kwg users have no rights: its Service, the
    /// leader Lease and the private key Secret. The manifests set it to the pod's namespace.
    #[arg(long, env = "KWG_GATEWAY_NAMESPACE", default_value = kwg_contract::DEFAULT_GATEWAY_NAMESPACE)]
    pub gateway_namespace: String,
    /// Addresses handed to peers; the gateway takes the first host address. Unset: the
    /// CIDR kept in the key Secret, which a new install picks at random, a /20 inside
    /// 100.64.0.0/10, so two clusters' gateways rarely collide (a key Secret from before
    /// keeps 100.77.0.0/16). Either must be a /8 to /30 inside 10.0.0.0/8, 172.16.0.0/12,
    /// 192.168.0.0/16 or 100.64.0.0/10, overlapping no --service-cidr or --pod-cidr; else the
    /// gateway does not start.
    #[arg(long = "tunnel-cidr", env = "KWG_TUNNEL_CIDR")]
    pub tunnel_cidr_flag: Option<Ipv4Net>,
    /// The tunnel CIDR in use: `--tunnel-cidr`, else the one kept in the key Secret (set by
    /// `run::build`).
    #[arg(skip = legacy_tunnel_cidr())]
    pub tunnel_cidr: Ipv4Net,
    /// WireGuard UDP port in the pod.
    #[arg(long, env = "KWG_LISTEN_PORT", default_value_t = kwg_contract::WIREGUARD_PORT)]
    pub listen_port: u16,
    /// WireGuard-over-TCP connections one source address (IPv4, or IPv6 /64) may hold before
    /// they authenticate; more are closed at once. Raise it when many peers join at once
    /// through one NAT address, or through nodes that masquerade NodePort traffic.
    #[arg(long, env = "KWG_TCP_PENDING_PER_SOURCE", default_value_t = crate::tcp::limit::PER_SOURCE as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_pending_per_source: u32,
    /// TUN interface name.
    #[arg(long, env = "KWG_INTERFACE", default_value = "kwg0")]
    pub interface: String,
    /// TUN MTU.
    #[arg(long, env = "KWG_MTU", default_value_t = kwg_wg::device::DEFAULT_MTU)]
    pub mtu: u16,
    /// The IPv6 tunnel prefix, a /96, used when the cluster has IPv6 Service or pod CIDRs: a
    /// peer's IPv6 tunnel address is its IPv4 one in the last 32 bits (docs/contract.md).
    #[arg(long, env = "KWG_TUNNEL_CIDR6", default_value = kwg_contract::DEFAULT_TUNNEL_CIDR6,
          value_parser = parse_tunnel_cidr6)]
    pub tunnel_cidr6: ipnet::Ipv6Net,
    /// Admin HTTP address (/healthz, /readyz, /metrics, /peers). The default `[::]:8080` takes
    /// both families (the kubelet of an IPv6-only cluster probes the pod's IPv6 address); in a
    /// pod without IPv6 it is `0.0.0.0:8080`.
    #[arg(long, env = "KWG_ADMIN_ADDR", default_value = "[::]:8080")]
    pub admin_addr: SocketAddr,
    /// Service CIDR(s) when neither ServiceCIDR objects nor the API's error reveal them.
    #[arg(long, env = "KWG_SERVICE_CIDR", value_delimiter = ',')]
    pub service_cidr: Vec<IpNet>,
    /// Pod CIDR(s) when Nodes have no podCIDR.
    #[arg(long, env = "KWG_POD_CIDR", value_delimiter = ',')]
    pub pod_cidr: Vec<IpNet>,
    /// Extra destinations peers may reach (besides service and pod CIDRs).
    #[arg(long, env = "KWG_ALLOW_CIDR", value_delimiter = ',')]
    pub allow_cidr: Vec<IpNet>,
    /// Let peers reach each other through the gateway.
    #[arg(long, env = "KWG_ALLOW_PEER_TO_PEER")]
    pub allow_peer_to_peer: bool,
    /// Cluster DNS IP when there is no kube-system/kube-dns Service.
    #[arg(long, env = "KWG_DNS_IP")]
    pub dns_ip: Option<IpAddr>,
    /// Cluster domain published to clients.
    #[arg(long, env = "KWG_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Service whose NodePort / LoadBalancer ingress peers use.
    #[arg(long, env = "KWG_SERVICE_NAME", default_value = kwg_contract::GATEWAY_SERVICE)]
    pub service_name: String,
    /// Safety-net resync of CIDRs, DNS IP and endpoints (changes are watched and applied at
    /// once; this re-asks the API for the service range when there are no ServiceCIDR objects,
    /// and rewrites the gateway info ConfigMap).
    #[arg(long, env = "KWG_DISCOVERY_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub discovery_interval: Duration,
    /// Most peers one owner (the `owner` field of peer Secrets) may have; the oldest are
    /// served, later ones get an error annotation.
    #[arg(long, env = "KWG_MAX_PEERS_PER_OWNER", default_value_t = crate::core::DEFAULT_PEERS_PER_OWNER)]
    pub max_peers_per_owner: usize,
    /// Longest lease honoured: a peer Secret whose `leaseExpires` lies farther out is treated
    /// as ending this long after the gateway first saw that value (each renewal starts anew),
    /// so a Secret written once with a lease in years is collected like any unrenewed peer.
    #[arg(long, env = "KWG_MAX_LEASE", default_value = "24h", value_parser = positive_duration)]
    pub max_lease: Duration,
    /// Largest peer Secret the gateway parses (bytes of data, annotations and labels);
    /// larger ones are left unparsed with an error annotation.
    #[arg(long, env = "KWG_MAX_SECRET_BYTES", default_value_t = crate::peer_object::DEFAULT_MAX_SECRET_BYTES)]
    pub max_secret_bytes: usize,
    /// What peers reach. `rbac`: ClusterIPs and pod IPs of the namespaces whose Services the
    /// peer's owner may `get` (SubjectAccessReview) and the peer asked for, plus cluster DNS;
    /// never node addresses or hostNetwork pods. `all`: the service and pod CIDRs, whoever
    /// the owner is (the behaviour before reach by RBAC).
    #[arg(long, env = "KWG_REACH", value_enum, default_value_t = Reach::Rbac)]
    pub reach: Reach,
    /// Count the groups a peer Secret names (`kwg.io/groups`) in its owner's reviews. Unset
    /// (the default): counted when the admission policy `kwg-peer-ownership` and its binding
    /// (manifests/admission-policy.yaml, Kubernetes >= 1.30) exist at start, since they make
    /// them the owner's own groups; without them they would be self-declared (anyone could
    /// claim `system:masters`). `false`: only grants to the owner by name (and
    /// `system:authenticated`, ServiceAccount groups) count. `true`: counted without looking.
    #[arg(long, env = "KWG_TRUST_PEER_GROUPS", num_args = 0..=1, default_missing_value = "true")]
    pub trust_peer_groups: Option<bool>,
    /// How often every owner's grants are asked again (they are also asked again at once when
    /// a Role, ClusterRole or binding changes).
    #[arg(long, env = "KWG_REACH_REFRESH", default_value = "60s", value_parser = humantime::parse_duration)]
    pub reach_refresh: Duration,
    /// At most this many SubjectAccessReviews a second from this replica, in bursts of up to
    /// twice as many (what an RBAC change can have moved first, then new peers' questions;
    /// the periodic re-review takes at most half, stretching its period beyond
    /// --reach-refresh when there are more answers than that lets through). Every replica
    /// asks its own: the default keeps the shipped 2 replicas at 20 a second together.
    #[arg(long, env = "KWG_REACH_REVIEWS_PER_SECOND", default_value_t = 10.0)]
    pub reach_reviews_per_second: f64,
    /// Ask a SubjectAccessReview for every (owner, namespace) a peer asks for, instead of only
    /// where the cluster's RBAC objects (Roles, ClusterRoles, their bindings and aggregations)
    /// could grant `get services`, denying the others without a review. For clusters where
    /// another authorizer (a webhook, ABAC) can grant what RBAC does not (without it, an owner
    /// no binding could grant gets one cluster-scope review, and only a cluster-wide grant of
    /// that authorizer counts). Every pair is then asked at --reach-reviews-per-second (default
    /// 10, was 100): reach after a restart comes back about 10 times slower than before.
    #[arg(long, env = "KWG_REVIEW_ALL_PAIRS", num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub review_all_pairs: bool,
    /// After SIGTERM: how long the tunnel keeps serving, not ready (while endpoints and load
    /// balancers stop sending here), before it stops; keep it below the pod's grace period.
    #[arg(long, env = "KWG_DRAIN", default_value = "2s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Serve the WireGuard UAPI socket in this directory (for `wg show`).
    #[arg(long, env = "KWG_UAPI_DIR")]
    pub uapi_dir: Option<PathBuf>,
}

/// A duration above zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than 0s".into()),
        other => other.map_err(|e| e.to_string()),
    }
}

/// `--reach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reach {
    Rbac,
    All,
}

impl Config {
    /// A config with every default (for tests).
    pub fn defaults() -> Config {
        Config::parse_from(["kwg-gateway"])
    }
}

/// `--tunnel-cidr6`: a /96 without host bits.
fn parse_tunnel_cidr6(s: &str) -> Result<ipnet::Ipv6Net, String> {
    let net: ipnet::Ipv6Net = s
        .parse()
        .map_err(|e| format!("{s:?} is not an IPv6 CIDR ({e}); write it like fd6b:7767::/96"))?;
    kwg_contract::check_tunnel_cidr6(net)?;
    Ok(net)
}

/// The tunnel CIDR of every install before random ones (and of a key Secret without
/// `tunnelCidr`): its peers keep their addresses.
pub fn legacy_tunnel_cidr() -> Ipv4Net {
    kwg_contract::DEFAULT_TUNNEL_CIDR.parse().expect("a CIDR")
}

/// Where random tunnel CIDRs come from: RFC 6598 shared address space.
const SHARED_SPACE: Ipv4Net = Ipv4Net::new_assert(std::net::Ipv4Addr::new(100, 64, 0, 0), 10);

/// The prefix length of a random tunnel CIDR: 4094 peers, one of 1024 in 100.64.0.0/10.
pub const RANDOM_TUNNEL_PREFIX: u8 = 20;

/// The `n`th /20 of 100.64.0.0/10 (`n` taken modulo 1024): a new install's tunnel CIDR for a
/// random `n`.
pub fn random_tunnel_cidr(n: u32) -> Ipv4Net {
    let count = 1u32 << (RANDOM_TUNNEL_PREFIX - SHARED_SPACE.prefix_len());
    let step = 1u32 << (32 - RANDOM_TUNNEL_PREFIX);
    let base = u32::from(SHARED_SPACE.network());
    Ipv4Net::new_assert((base + (n % count) * step).into(), RANDOM_TUNNEL_PREFIX)
}

/// Where a tunnel CIDR may lie: private (RFC 1918) or shared (RFC 6598) space.
const TUNNEL_SPACES: [Ipv4Net; 4] = [
    Ipv4Net::new_assert(std::net::Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(std::net::Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(std::net::Ipv4Addr::new(192, 168, 0, 0), 16),
    SHARED_SPACE,
];

/// The shortest and longest tunnel CIDR prefixes: a /30 holds the gateway and one peer.
const TUNNEL_PREFIXES: std::ops::RangeInclusive<u8> = 8..=30;

/// Whether `cidr` may be the tunnel CIDR: inside private or shared space, a /8 to /30, and
/// overlapping none of `cluster` (the Service and pod ranges known at start). `from` names
/// where it came from (`--tunnel-cidr`, the key Secret's field) and `fix` how to change it.
/// The error is one sentence naming the value, its source and the fix.
pub fn check_tunnel_cidr(
    cidr: Ipv4Net,
    from: &str,
    fix: &str,
    cluster: &[IpNet],
) -> Result<(), String> {
    let problem = if !TUNNEL_PREFIXES.contains(&cidr.prefix_len()) {
        "is not a /8 to /30".to_owned()
    } else if !TUNNEL_SPACES.iter().any(|s| s.contains(&cidr)) {
        "is not inside private (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) or shared \
         (100.64.0.0/10) space"
            .to_owned()
    } else if let Some(c) = cluster.iter().find(|c| match c {
        IpNet::V4(c) => c.contains(&cidr.network()) || cidr.contains(&c.network()),
        IpNet::V6(_) => false,
    }) {
        format!("overlaps the cluster range {c}")
    } else {
        return Ok(());
    };
    Err(format!("tunnel CIDR {cidr} from {from} {problem}: {fix}"))
}

#[cfg(test)]
mod tests;
