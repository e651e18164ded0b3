use super::*;
use kwg_contract::PeerSpec;
use kwg_contract::keys::PrivateKey;
use kwg_wg::io::stats::EdgeCount;

#[test]
fn renders_counts_histogram_and_peers() {
    let key = PrivateKey::generate().public_key();
    let spec = PeerSpec {
        name: "mybox".parse().unwrap(),
        public_key: key,
        owner: "me".into(),
        hostname: "mybox".into(),
        namespaces: vec![],
        lease_expires: kwg_contract::parse_lease("2030-01-01T00:00:00Z").unwrap(),
    };
    let peers = [ActivePeer {
        spec,
        ip: "100.77.0.2".parse().unwrap(),
        groups: vec![],
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
    let m = Metrics::default();
    m.malformed.set(1);
    m.malformed_reports.inc_by(2);
    m.reconcile.observe(0.003);
    m.tcp_refused_source.inc_by(4);
    let drops = [
        ("100.77.0.2".parse().unwrap(), 3),
        ("100.77.0.9".parse().unwrap(), 1),
    ];
    let udp = UdpReceiveStats {
        io: IoStats {
            udp_recv: EdgeCount {
                calls: 30,
                segments: 1200,
            },
            udp_recv_gro: EdgeCount {
                calls: 40,
                segments: 1200,
            },
            ..Default::default()
        },
        verdict: Some(UdpReceive {
            one_per_frame: false,
            messages: 40,
            datagrams: 1200,
            observed_at: "2026-12-07T17:00:00Z".parse().unwrap(),
        }),
    };
    let text = render(&m, &peers, &stats, &drops, &udp, now);
    for line in [
        "# TYPE kwg_gateway_peers gauge",
        "kwg_gateway_peers 1",
        "kwg_gateway_peers_connected 1",
        "# TYPE kwg_gateway_malformed_secrets gauge",
        "kwg_gateway_malformed_secrets 1",
        "# TYPE kwg_gateway_malformed_secrets_total counter",
        "kwg_gateway_malformed_secrets_total 2",
        "kwg_gateway_oversized_secrets_total 0",
        "kwg_gateway_peers_added_total 0",
        "kwg_gateway_leases_expired_total 0",
        "kwg_gateway_tcp_refused_per_source_total 4",
        "kwg_gateway_tcp_refused_full_total 0",
        "kwg_gateway_reach_granted_elsewhere_total 0",
        "# TYPE kwg_gateway_udp_receive_calls_total counter",
        "kwg_gateway_udp_receive_calls_total 30",
        "kwg_gateway_udp_receive_messages_total 40",
        "kwg_gateway_udp_datagrams_received_total 1200",
        "# TYPE kwg_gateway_udp_receive_one_per_frame gauge",
        "kwg_gateway_udp_receive_one_per_frame 0",
        "# TYPE kwg_gateway_reconcile_duration_seconds histogram",
        "kwg_gateway_reconcile_duration_seconds_bucket{le=\"0.0025\"} 0",
        "kwg_gateway_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
        "kwg_gateway_reconcile_duration_seconds_bucket{le=\"+Inf\"} 1",
        "kwg_gateway_reconcile_duration_seconds_count 1",
        "# TYPE kwg_gateway_peer_rx_bytes_total counter",
        "kwg_gateway_peer_rx_bytes_total{peer=\"mybox\",tunnel_ip=\"100.77.0.2\"} 148",
        "kwg_gateway_peer_tx_bytes_total{peer=\"mybox\",tunnel_ip=\"100.77.0.2\"} 92",
        "kwg_gateway_peer_last_handshake_seconds{peer=\"mybox\",tunnel_ip=\"100.77.0.2\"} 999995.0",
        "kwg_gateway_peer_dropped_packets_total{peer=\"mybox\",tunnel_ip=\"100.77.0.2\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    assert!(
        text.contains("# HELP kwg_gateway_peers Valid peer Secrets configured on the device.\n"),
        "{text}"
    );
}
