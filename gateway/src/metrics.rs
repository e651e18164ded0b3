//! Prometheus text exposition of the gateway's state, rendered by a pure function.

use crate::core::ActivePeer;
use kwg_wg::device::PeerStats;
use kwg_wg::keys::PublicKey;
use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

/// Upper bounds (seconds) of the reconcile duration histogram.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Counters the reconcile loop keeps.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub reconcile: Histogram,
    /// Malformed Secrets right now.
    pub malformed: usize,
    /// Malformed Secret reports (one per Secret and reason).
    pub malformed_total: u64,
    pub peers_added_total: u64,
    pub peers_removed_total: u64,
    pub expired_total: u64,
}

/// Renders every metric. `peers` are the active peers, `stats` the device's view.
pub fn render(
    counters: &Counters,
    peers: &[ActivePeer],
    stats: &[PeerStats],
    now: SystemTime,
) -> String {
    let by_key: HashMap<&PublicKey, &PeerStats> =
        stats.iter().map(|s| (&s.public_key, s)).collect();
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        "kwg_gateway_peers",
        "Valid peer Secrets configured on the device.",
        "gauge",
        peers.len().to_string(),
    );
    let recent = peers
        .iter()
        .filter_map(|p| by_key.get(&p.spec.public_key)?.last_handshake)
        .filter(|t| {
            now.duration_since(*t)
                .map(|d| d < Duration::from_secs(180))
                .unwrap_or(true)
        })
        .count();
    gauge(
        "kwg_gateway_peers_connected",
        "Peers with a handshake in the last 3 minutes (WireGuard rekeys every 2).",
        "gauge",
        recent.to_string(),
    );
    gauge(
        "kwg_gateway_malformed_secrets",
        "Peer Secrets skipped as malformed.",
        "gauge",
        counters.malformed.to_string(),
    );
    gauge(
        "kwg_gateway_malformed_secrets_total",
        "Malformed peer Secret reports.",
        "counter",
        counters.malformed_total.to_string(),
    );
    gauge(
        "kwg_gateway_peers_added_total",
        "Peers added to the device.",
        "counter",
        counters.peers_added_total.to_string(),
    );
    gauge(
        "kwg_gateway_peers_removed_total",
        "Peers removed from the device.",
        "counter",
        counters.peers_removed_total.to_string(),
    );
    gauge(
        "kwg_gateway_leases_expired_total",
        "Peer Secrets deleted after their lease ended.",
        "counter",
        counters.expired_total.to_string(),
    );

    let h = &counters.reconcile;
    let name = "kwg_gateway_reconcile_duration_seconds";
    let _ = writeln!(
        s,
        "# HELP {name} Time to reconcile peer Secrets with the device.\n# TYPE {name} histogram"
    );
    for (b, c) in BUCKETS.iter().zip(h.counts) {
        let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {c}");
    }
    let _ = writeln!(
        s,
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
        h.count, h.sum, h.count
    );

    let per_peer: [(&str, &str, &str, fn(&PeerStats) -> Option<f64>); 3] = [
        (
            "kwg_gateway_peer_rx_bytes",
            "Bytes received from the peer.",
            "counter",
            |p| Some(p.rx_bytes as f64),
        ),
        (
            "kwg_gateway_peer_tx_bytes",
            "Bytes sent to the peer.",
            "counter",
            |p| Some(p.tx_bytes as f64),
        ),
        (
            "kwg_gateway_peer_last_handshake_seconds",
            "Unix time of the peer's last handshake.",
            "gauge",
            |p| {
                p.last_handshake?
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs_f64())
            },
        ),
    ];
    for (name, help, kind, value) in per_peer {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in peers {
            if let Some(v) = by_key.get(&p.spec.public_key).and_then(|st| value(st)) {
                let _ = writeln!(
                    s,
                    "{name}{{peer=\"{}\",tunnel_ip=\"{}\"}} {v}",
                    p.spec.name, p.ip
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use kwg_wg::contract::PeerSpec;
    use kwg_wg::keys::PrivateKey;

    #[test]
    fn renders_counts_histogram_and_peers() {
        let key = PrivateKey::generate().public_key();
        let spec = PeerSpec {
            name: "mybox".parse().unwrap(),
            public_key: key,
            owner: "me".into(),
            hostname: "mybox".into(),
            namespaces: vec![],
            lease_expires: kwg_wg::contract::parse_lease("2030-01-01T00:00:00Z").unwrap(),
        };
        let peers = [ActivePeer {
            spec,
            ip: "100.77.0.2".parse().unwrap(),
        }];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stats = [PeerStats {
            public_key: key,
            endpoint: None,
            allowed_ips: vec![],
            last_handshake: Some(now - Duration::from_secs(5)),
            rx_bytes: 148,
            tx_bytes: 92,
            persistent_keepalive: None,
        }];
        let mut c = Counters {
            malformed: 1,
            malformed_total: 2,
            ..Default::default()
        };
        c.reconcile.observe(Duration::from_millis(3));
        let text = render(&c, &peers, &stats, now);
        for line in [
            "kwg_gateway_peers 1",
            "kwg_gateway_peers_connected 1",
            "kwg_gateway_malformed_secrets 1",
            "kwg_gateway_malformed_secrets_total 2",
            "kwg_gateway_reconcile_duration_seconds_bucket{le=\"0.0025\"} 0",
            "kwg_gateway_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
            "kwg_gateway_reconcile_duration_seconds_count 1",
            "kwg_gateway_peer_rx_bytes{peer=\"mybox\",tunnel_ip=\"100.77.0.2\"} 148",
            "kwg_gateway_peer_last_handshake_seconds{peer=\"mybox\",tunnel_ip=\"100.77.0.2\"} 999995",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }
}
