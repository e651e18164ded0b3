//! The gateway's Prometheus metrics (prometheus-client, Prometheus text format 0.0.4).
//!
//! Counters and the reconcile histogram live in [`Metrics`] (atomics the reconcile loop
//! updates); the per-peer series and the peer gauges are built at scrape time from the
//! active peers and the device's statistics by [`render`].

use crate::core::ActivePeer;
use kwg_contract::UdpReceive;
use kwg_contract::keys::PublicKey;
use kwg_wg::device::PeerStats;
use kwg_wg::io::stats::IoStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

/// Owners no RBAC binding could grant whom a cluster-scope SubjectAccessReview allowed anyway
/// (another authorizer: a webhook), each counted once ([`crate::reach_watch`]; process-wide,
/// as there is one reach loop per process).
pub static REACH_GRANTED_ELSEWHERE: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the reconcile duration histogram.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// A handshake this recent counts as connected (WireGuard rekeys every 2 minutes).
const CONNECTED_WITHIN: Duration = Duration::from_secs(180);

/// The metrics the reconcile loop keeps; cheap to clone (shared atomics).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub reconcile: Histogram,
    /// Secrets not served right now (malformed, too large, duplicate key, over a limit).
    pub malformed: Gauge,
    /// Reports of such Secrets (one per Secret and reason).
    pub malformed_reports: Counter,
    /// Reports of Secrets larger than `--max-secret-bytes`.
    pub oversized_reports: Counter,
    pub peers_added: Counter,
    pub peers_removed: Counter,
    pub leases_expired: Counter,
    /// WireGuard TCP connections refused: their source held too many unauthenticated ones.
    pub tcp_refused_source: Counter,
    /// WireGuard TCP connections refused: every stream slot was taken.
    pub tcp_refused_full: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            reconcile: Histogram::new(BUCKETS),
            malformed: Gauge::default(),
            malformed_reports: Counter::default(),
            oversized_reports: Counter::default(),
            peers_added: Counter::default(),
            peers_removed: Counter::default(),
            leases_expired: Counter::default(),
            tcp_refused_source: Counter::default(),
            tcp_refused_full: Counter::default(),
        }
    }
}

/// This replica's UDP receive: the device's counters and the last verdict on them
/// ([`crate::udp_watch`]).
#[derive(Debug, Clone, Default)]
pub struct UdpReceiveStats {
    pub io: IoStats,
    pub verdict: Option<UdpReceive>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    tunnel_ip: String,
}

/// Renders every metric. `peers` are the active peers, `stats` the device's view, `drops`
/// the packets reach by RBAC dropped per peer address, `udp` this replica's UDP receive.
pub fn render(
    m: &Metrics,
    peers: &[ActivePeer],
    stats: &[PeerStats],
    drops: &[(Ipv4Addr, u64)],
    udp: &UdpReceiveStats,
    now: SystemTime,
) -> String {
    let by_key: HashMap<&PublicKey, &PeerStats> =
        stats.iter().map(|s| (&s.public_key, s)).collect();
    let mut r = Registry::default();
    r.register(
        "kwg_gateway_peers",
        "Valid peer Secrets configured on the device",
        gauge(peers.len()),
    );
    let connected = peers
        .iter()
        .filter_map(|p| by_key.get(&p.spec.public_key)?.last_handshake)
        .filter(|t| {
            now.duration_since(*t)
                .map_or(true, |d| d < CONNECTED_WITHIN)
        })
        .count();
    r.register(
        "kwg_gateway_peers_connected",
        "Peers with a handshake in the last 3 minutes (WireGuard rekeys every 2)",
        gauge(connected),
    );
    r.register(
        "kwg_gateway_malformed_secrets",
        "Peer Secrets not served: malformed, too large, duplicate key or over a limit",
        m.malformed.clone(),
    );
    let counters = [
        (
            "kwg_gateway_malformed_secrets",
            "Reports of peer Secrets not served (one per Secret and reason)",
            &m.malformed_reports,
        ),
        (
            "kwg_gateway_oversized_secrets",
            "Reports of peer Secrets larger than --max-secret-bytes, left unparsed",
            &m.oversized_reports,
        ),
        (
            "kwg_gateway_peers_added",
            "Peers added to the device",
            &m.peers_added,
        ),
        (
            "kwg_gateway_peers_removed",
            "Peers removed from the device",
            &m.peers_removed,
        ),
        (
            "kwg_gateway_leases_expired",
            "Peer Secrets deleted after their lease ended",
            &m.leases_expired,
        ),
        (
            "kwg_gateway_tcp_refused_per_source",
            "WireGuard TCP connections closed at once: their source address held --tcp-pending-per-source unauthenticated ones",
            &m.tcp_refused_source,
        ),
        (
            "kwg_gateway_tcp_refused_full",
            "WireGuard TCP connections closed at once: every stream slot was taken",
            &m.tcp_refused_full,
        ),
        (
            "kwg_gateway_reach_granted_elsewhere",
            "Owners no RBAC binding could grant whom another authorizer grants every namespace (start the gateway with --review-all-pairs to ask their pairs one by one)",
            &REACH_GRANTED_ELSEWHERE,
        ),
    ];
    for (name, help, counter) in counters {
        r.register(name, help, counter.clone());
    }
    register_udp(&mut r, udp);
    r.register(
        "kwg_gateway_reconcile_duration_seconds",
        "Time to reconcile peer Secrets with the device",
        m.reconcile.clone(),
    );

    let rx = Family::<PeerLabels, Counter>::default();
    let tx = Family::<PeerLabels, Counter>::default();
    let handshake = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
    let dropped = Family::<PeerLabels, Counter>::default();
    let drops: HashMap<Ipv4Addr, u64> = drops.iter().copied().collect();
    for p in peers {
        let labels = PeerLabels {
            peer: p.spec.name.to_string(),
            tunnel_ip: p.ip.to_string(),
        };
        if let Some(n) = drops.get(&p.ip.addr()) {
            dropped.get_or_create(&labels).inc_by(*n);
        }
        let Some(st) = by_key.get(&p.spec.public_key) else {
            continue;
        };
        rx.get_or_create(&labels).inc_by(st.rx_bytes);
        tx.get_or_create(&labels).inc_by(st.tx_bytes);
        if let Some(d) = st
            .last_handshake
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            handshake.get_or_create(&labels).set(d.as_secs_f64());
        }
    }
    r.register(
        "kwg_gateway_peer_rx_bytes",
        "Bytes received from the peer",
        rx,
    );
    r.register("kwg_gateway_peer_tx_bytes", "Bytes sent to the peer", tx);
    r.register(
        "kwg_gateway_peer_last_handshake_seconds",
        "Unix time of the peer's last handshake",
        handshake,
    );
    r.register(
        "kwg_gateway_peer_dropped_packets",
        "Packets from the peer to destinations it may not reach (reach by RBAC)",
        dropped,
    );
    let mut text = String::new();
    prometheus_text::encode(&mut text, &r).expect("writing to a String cannot fail");
    text
}

/// The UDP receive's counters (this replica's socket, since it was bound) and its verdict.
fn register_udp(r: &mut Registry, udp: &UdpReceiveStats) {
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    let (recv, gro) = (udp.io.udp_recv, udp.io.udp_recv_gro);
    r.register(
        "kwg_gateway_udp_receive_calls",
        "UDP receive system calls (recvmmsg) that returned datagrams",
        counter(recv.calls),
    );
    r.register(
        "kwg_gateway_udp_receive_messages",
        "UDP messages received; a message holds several datagrams when the node coalesced them (GRO forwarding, docs/performance.md)",
        counter(gro.calls),
    );
    r.register(
        "kwg_gateway_udp_datagrams_received",
        "UDP datagrams received",
        counter(recv.segments),
    );
    if let Some(v) = &udp.verdict {
        r.register(
            "kwg_gateway_udp_receive_one_per_frame",
            "1 when the last window under load got about one datagram per message (the node does not coalesce forwarded UDP: ethtool -K <nic> rx-udp-gro-forwarding on, docs/performance.md), 0 when coalesced",
            gauge(usize::from(v.one_per_frame)),
        );
    }
}

/// A gauge holding a count.
fn gauge(v: usize) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

#[cfg(test)]
mod tests;
