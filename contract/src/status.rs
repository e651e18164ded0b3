//! `kwg status -o json`: what a joined client reports (see `docs/contract.md`, "Status").
//!
//! The CLI fills and prints these; scripts and other tools read them. Field names are camelCase.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

/// `kwg status -o json` of a joined machine. When nothing is joined the CLI prints
/// `{"connected":false}` instead and exits with 1.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Whether the daemon runs (`false`: run `kwg leave`, then `kwg join`).
    pub connected: bool,
    pub daemon_pid: Option<u32>,
    /// The API server URL.
    pub server: String,
    /// The kubeconfig context, `None` for the current one.
    pub context: Option<String>,
    pub user: String,
    pub namespace: String,
    /// `None`: every namespace is mapped.
    pub mapped_namespaces: Option<Vec<String>>,
    /// This machine's peer name.
    pub peer: String,
    /// The tunnel interface, e.g. `kwg0`.
    pub interface: String,
    pub tunnel_ip: Option<String>,
    /// The IPv6 tunnel address of a dual-stack join (`ipv6.json`'s prefix with the IPv4
    /// tunnel address in its last 32 bits); absent when the join carries IPv4 only (and from
    /// an older daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_ip6: Option<String>,
    pub gateway_endpoint: Option<String>,
    pub gateway_key: Option<String>,
    pub last_handshake: Option<DateTime<Utc>>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// `None` when cluster DNS is off.
    pub dns: Option<DnsStatus>,
    /// The subnets routed through the tunnel.
    pub subnets: Vec<PlannedRoute>,
    /// The peer Secret's lease as the daemon renews it; absent from an older daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    /// What the gateway forwards this peer to, as the gateway enforces it (from its `/peers`
    /// entry through the tunnel); absent when the gateway did not say (not reachable, not
    /// decided yet, or an older gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<ReachStatus>,
    /// How the tunnel reaches the gateway (UDP, TCP or the API server) and why better paths
    /// failed; absent from an older daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportStatus>,
    /// The last change of the gateway info the daemon refused while joined (it kept its last
    /// good configuration), and why; absent when none was, or a later change was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_info: Option<RefusedInfo>,
    /// Userspace mode: the loopback SOCKS5/HTTP proxy that reaches the cluster (there is no
    /// interface, no route and no resolver change); absent with the TUN path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<std::net::SocketAddr>,
    /// The verdict: `connected` only while every health rule holds (see [`HealthIssue`]);
    /// absent from an older daemon (then only `connected` tells, and only that it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ConnectionState>,
    /// One entry per problem found, each with its fix; empty when `connected`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthIssue>,
}

/// What `kwg status` concludes (`state` of [`Status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionState {
    /// A recent handshake, the gateway answers through the tunnel, the lease is valid, the
    /// peer Secret exists, routes and DNS are in place.
    Connected,
    /// The daemon runs (or holds its lock) but at least one of those does not hold: see
    /// `health`.
    Degraded,
    /// The daemon is still joining.
    Joining,
    /// No daemon runs, but what `kwg join` changed is still in place.
    NotRunning,
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectionState::Connected => "Connected",
            ConnectionState::Degraded => "Degraded",
            ConnectionState::Joining => "Joining",
            ConnectionState::NotRunning => "Daemon not running",
        })
    }
}

/// One problem of a joined machine (`health` of [`Status`]), like `tailscale status`'s
/// health lines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthIssue {
    /// Stable name for scripts, e.g. `peer-deleted` (see docs/contract.md).
    pub kind: HealthKind,
    /// What is wrong, one sentence.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// The kinds of [`HealthIssue`]. New kinds may be added: consumers treat an unknown one as
/// a problem (`state` is `degraded` either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthKind {
    /// The daemon holds its lock but does not answer.
    DaemonUnresponsive,
    /// No WireGuard handshake with the gateway yet.
    NoHandshake,
    /// The last handshake is older than WireGuard's REJECT_AFTER_TIME (180 s).
    HandshakeStale,
    /// The gateway did not answer through the tunnel.
    GatewaySilent,
    /// The peer Secret is gone (deleted, or collected when the lease ended).
    PeerDeleted,
    /// The lease ended without renewal.
    LeaseExpired,
    /// The API server rejects the daemon's credentials: the lease cannot be renewed.
    CredentialsRejected,
    /// A change of the gateway info was refused (the last good configuration stays).
    GatewayInfoRefused,
    /// Routes of the plan are missing from the tunnel interface.
    RoutesMissing,
    /// The machine's resolver no longer points at kwg.
    DnsMissing,
    /// kwg-helper, which holds a normal user's interface, routes and DNS, is gone.
    HelperGone,
    /// Any kind this version does not know (from a newer daemon).
    #[serde(other)]
    Other,
}

impl Status {
    /// The example of `docs/contract.md` (for tests and documentation of consumers).
    pub fn example() -> Status {
        Status {
            connected: true,
            daemon_pid: Some(4242),
            server: "https://192.0.2.1:6443".into(),
            context: None,
            user: "developer".into(),
            namespace: "emojivoto".into(),
            mapped_namespaces: None,
            peer: "laptop".into(),
            interface: "kwg0".into(),
            tunnel_ip: Some("100.77.0.2".into()),
            tunnel_ip6: None,
            gateway_endpoint: Some("192.0.2.1:31820".into()),
            gateway_key: Some("p0DgqXpMPbxjtgkBYpjGFK6fJVGdjwi3mv3ZCw5qQV0=".into()),
            last_handshake: Some("2026-01-01T00:00:57Z".parse().unwrap()),
            rx_bytes: 2048,
            tx_bytes: 10,
            dns: Some(DnsStatus {
                mode: "resolv-conf".into(),
                remote_ip: Some("10.96.0.10".into()),
                forwarder: "127.77.0.53:53".parse().unwrap(),
                upstreams: vec!["192.0.2.53:53".parse().unwrap()],
                include_suffixes: vec![],
                exclude_suffixes: vec![".com".into(), ".io".into()],
                timeout_secs: 4,
            }),
            subnets: vec![
                PlannedRoute::new("10.96.0.0/12".parse().unwrap(), RouteSource::Service),
                PlannedRoute::new("172.30.0.0/16".parse().unwrap(), RouteSource::AlsoProxy),
            ],
            lease: None,
            reach: None,
            transport: None,
            refused_info: None,
            proxy: None,
            state: Some(ConnectionState::Connected),
            health: vec![],
        }
    }
}

/// The `refusedInfo` part of [`Status`]: a gateway info change that failed the laptop's trust
/// checks (docs/laptop-trust.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedInfo {
    /// When the change arrived.
    pub at: DateTime<Utc>,
    /// The refusal, one sentence: what, why, and the flag that would accept it.
    pub reason: String,
}

/// The `transport` part of [`Status`]: the path WireGuard's datagrams take to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportStatus {
    /// `kwg join --transport`: `auto`, `udp`, `tcp` or `api-server`.
    pub mode: String,
    /// The path in use: `udp`, `tcp` or `api-server`; `None` until a handshake completed on
    /// one.
    pub path: Option<String>,
    /// Where that path goes, e.g. `udp 192.0.2.1:31820`.
    pub endpoint: Option<String>,
    /// Better paths than the one in use that failed, best first, with why.
    pub failed: Vec<PathFailure>,
    /// When better paths are tried again (mode `auto` on a stream path).
    pub next_probe: Option<DateTime<Utc>>,
}

/// A path that did not work, in [`TransportStatus`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathFailure {
    pub path: String,
    /// One sentence, e.g. `no answer to a handshake over UDP within 3 s`.
    pub reason: String,
    /// When it last failed.
    pub at: DateTime<Utc>,
}

/// A peer's reach as the gateway enforces it (`reach` of [`Status`] and of the gateway's
/// `/peers` entry of the caller itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReachStatus {
    /// `false`: the gateway runs with `--reach=all` and forwards to every namespace
    /// (`namespaces` is then empty).
    pub enforced: bool,
    /// The namespaces whose ClusterIPs and pod IPs the gateway forwards this peer to: mapped
    /// by the peer (or every namespace when none is mapped) and whose Services its owner may
    /// `get`. Sorted.
    pub namespaces: Vec<String>,
    /// Packets from this peer the gateway refused (destinations it may not reach): each
    /// answered at once with a TCP reset or ICMP administratively prohibited.
    pub dropped_packets: u64,
    /// The destination the gateway last refused this peer (within the last hour, on the
    /// replica answering); absent when none or from an older gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<RefusedDestination>,
}

/// A destination the gateway refused a peer, and what would allow it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedDestination {
    pub address: std::net::Ipv4Addr,
    /// The namespaces the address belongs to (a pod's, a ClusterIP's endpoints'); empty when
    /// it is no pod or ClusterIP of the cluster.
    pub namespaces: Vec<String>,
    /// One command per namespace the owner lacks, creating the RoleBinding that would allow it
    /// (`get services` there, through ClusterRole `view`).
    pub allow: Vec<String>,
}

impl ReachStatus {
    /// The namespaces of `wanted` this peer cannot reach (none when not enforced).
    pub fn unreachable<'a>(&'a self, wanted: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        wanted
            .iter()
            .map(String::as_str)
            .filter(move |w| self.enforced && !self.namespaces.iter().any(|n| n == w))
    }
}

/// The `lease` part of [`Status`]: renewal of the peer Secret's lease, and why it fails (the
/// tunnel keeps carrying traffic while the API server is unreachable).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    pub ttl_secs: u64,
    /// The last successful registration or renewal.
    pub renewed: Option<DateTime<Utc>>,
    /// When the gateway removes this peer unless the lease is renewed.
    pub expires: Option<DateTime<Utc>>,
    /// Since when renewals fail; `None` while they succeed.
    pub failing_since: Option<DateTime<Utc>>,
    /// The last failure, as a sentence.
    pub error: Option<String>,
    /// Consecutive failed renewals.
    pub failures: u32,
    /// The next renewal (or retry).
    pub next_attempt: Option<DateTime<Utc>>,
    /// Registering again: the Secret was gone (the lease ended while the machine slept).
    pub reregistering: bool,
}

/// The `dns` part of [`Status`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsStatus {
    /// How the machine's resolver was pointed at kwg, e.g. `resolv-conf`.
    pub mode: String,
    /// The cluster DNS server reached through the tunnel.
    pub remote_ip: Option<String>,
    /// The local forwarder.
    pub forwarder: SocketAddr,
    /// The machine's original servers, for names outside the cluster.
    pub upstreams: Vec<SocketAddr>,
    pub include_suffixes: Vec<String>,
    pub exclude_suffixes: Vec<String>,
    pub timeout_secs: u64,
}

/// Why a subnet is routed through the tunnel (shown in errors and `kwg status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteSource {
    Service,
    Pod,
    AlsoProxy,
    Gateway,
    /// The gateway's whole tunnel CIDR, routed only when mapped (issue 27: it overlaps an
    /// earlier session's, e.g. two installs with the same `KWG_TUNNEL_CIDR`).
    Tunnel,
}

impl std::fmt::Display for RouteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteSource::Service => "service CIDR",
            RouteSource::Pod => "pod CIDR",
            RouteSource::AlsoProxy => "--also-proxy",
            RouteSource::Gateway => "gateway tunnel address",
            RouteSource::Tunnel => "tunnel CIDR",
        })
    }
}

/// One subnet to route through the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedRoute {
    /// What this machine routes (a mapped range, when `cluster` is set).
    pub subnet: IpNet,
    pub source: RouteSource,
    /// Virtual subnets (issue 27): the cluster's own range, which overlaps this machine's
    /// networks or another session's, reached through `subnet`, the same size; the laptop's
    /// data plane translates between the two. Absent when the subnet is routed as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<IpNet>,
    /// The user chose `subnet` with `--map` (the cluster range need not overlap anything);
    /// otherwise a mapped range came from `--map-pool`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

impl PlannedRoute {
    /// A subnet routed as it is.
    pub fn new(subnet: IpNet, source: RouteSource) -> PlannedRoute {
        PlannedRoute {
            subnet,
            source,
            cluster: None,
            forced: false,
        }
    }

    /// The range as the cluster knows it (the gateway peer's AllowedIPs).
    pub fn cluster_subnet(&self) -> IpNet {
        self.cluster.unwrap_or(self.subnet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of `docs/contract.md`, byte for byte as `kwg status -o json` prints it.
    const EXAMPLE: &str = r#"{
  "connected": true,
  "daemonPid": 4242,
  "server": "https://192.0.2.1:6443",
  "context": null,
  "user": "developer",
  "namespace": "emojivoto",
  "mappedNamespaces": null,
  "peer": "laptop",
  "interface": "kwg0",
  "tunnelIp": "100.77.0.2",
  "gatewayEndpoint": "192.0.2.1:31820",
  "gatewayKey": "p0DgqXpMPbxjtgkBYpjGFK6fJVGdjwi3mv3ZCw5qQV0=",
  "lastHandshake": "2026-01-01T00:00:57Z",
  "rxBytes": 2048,
  "txBytes": 10,
  "dns": {
    "mode": "resolv-conf",
    "remoteIp": "10.96.0.10",
    "forwarder": "127.77.0.53:53",
    "upstreams": [
      "192.0.2.53:53"
    ],
    "includeSuffixes": [],
    "excludeSuffixes": [
      ".com",
      ".io"
    ],
    "timeoutSecs": 4
  },
  "subnets": [
    {
      "subnet": "10.96.0.0/12",
      "source": "service"
    },
    {
      "subnet": "172.30.0.0/16",
      "source": "also-proxy"
    }
  ],
  "state": "connected"
}"#;

    #[test]
    fn status_json_is_the_documented_one() {
        assert_eq!(
            serde_json::to_string_pretty(&Status::example()).unwrap(),
            EXAMPLE
        );
        let back: Status = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(back, Status::example());
    }

    #[test]
    fn reach_json_and_unreachable_namespaces() {
        let mut s = Status::example();
        s.reach = Some(ReachStatus {
            enforced: true,
            namespaces: vec!["emojivoto".into()],
            dropped_packets: 3,
            last_refused: None,
        });
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["reach"],
            serde_json::json!({"enforced": true, "namespaces": ["emojivoto"], "droppedPackets": 3})
        );
        let r = s.reach.as_ref().unwrap();
        let wanted = ["emojivoto".to_owned(), "default".to_owned()];
        assert_eq!(r.unreachable(&wanted).collect::<Vec<_>>(), ["default"]);
        let open = ReachStatus {
            enforced: false,
            namespaces: vec![],
            dropped_packets: 0,
            last_refused: None,
        };
        assert_eq!(open.unreachable(&wanted).count(), 0);
    }

    #[test]
    fn health_json_and_older_daemons() {
        let mut s = Status::example();
        s.state = Some(ConnectionState::Degraded);
        s.health = vec![HealthIssue {
            kind: HealthKind::PeerDeleted,
            message: "gone".into(),
            fix: "join".into(),
        }];
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "degraded");
        assert_eq!(
            json["health"],
            serde_json::json!([{"kind": "peer-deleted", "message": "gone", "fix": "join"}])
        );
        // An older daemon's status has neither; a newer one's unknown kind still parses.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("state");
        old.as_object_mut().unwrap().remove("health");
        let back: Status = serde_json::from_value(old).unwrap();
        assert_eq!((back.state, back.health.len()), (None, 0));
        let mut newer = json;
        newer["health"][0]["kind"] = "something-new".into();
        let back: Status = serde_json::from_value(newer).unwrap();
        assert_eq!(back.health[0].kind, HealthKind::Other);
    }
}
