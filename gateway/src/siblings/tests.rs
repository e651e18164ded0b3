use super::*;
use kwg_contract::keys::PrivateKey;

fn stats(key: &PublicKey, hs_ms: Option<u64>, rx: u64) -> PeerStats {
    PeerStats {
        public_key: *key,
        endpoint: Some("192.0.2.10:40000".parse().unwrap()),
        allowed_ips: vec!["100.77.0.2/32".parse().unwrap()],
        last_handshake: hs_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        rx_bytes: rx,
        tx_bytes: rx * 2,
        persistent_keepalive: None,
    }
}

#[test]
fn each_peer_comes_from_the_replica_with_its_latest_handshake() {
    let (a, b, c) = (
        PrivateKey::generate().public_key(),
        PrivateKey::generate().public_key(),
        PrivateKey::generate().public_key(),
    );
    // a: session here; b: session on a sibling (here an old one); c: nowhere yet.
    let local = [
        stats(&a, Some(2_000), 10),
        stats(&b, Some(1_000), 5),
        stats(&c, None, 0),
    ];
    let mut sib_b = ReplicaStat::from(&stats(&b, Some(3_000), 700));
    sib_b.endpoint = Some("192.0.2.20:50000".parse().unwrap());
    let siblings = [
        ReplicaStat::from(&stats(&a, Some(1_500), 99)),
        sib_b,
        ReplicaStat::from(&stats(&c, None, 0)),
        // A peer this replica does not serve: left out.
        ReplicaStat::from(&stats(&PrivateKey::generate().public_key(), Some(9_000), 1)),
        ReplicaStat {
            public_key: "not a key".into(),
            endpoint: None,
            last_handshake_ms: Some(10_000),
            rx_bytes: 1,
            tx_bytes: 1,
            dropped_packets: 0,
        },
    ];
    let merged = merge(&local, &siblings);
    assert_eq!(merged.len(), 3);
    assert_eq!(
        merged[0], local[0],
        "a stays local: its handshake is the latest"
    );
    assert_eq!(merged[1].rx_bytes, 700);
    assert_eq!(merged[1].tx_bytes, 1400);
    assert_eq!(
        merged[1].last_handshake,
        Some(UNIX_EPOCH + Duration::from_millis(3_000))
    );
    assert_eq!(
        merged[1].endpoint,
        Some("192.0.2.20:50000".parse().unwrap())
    );
    assert_eq!(merged[1].allowed_ips, local[1].allowed_ips);
    assert_eq!(merged[2], local[2]);
}

#[test]
fn a_peers_drops_are_summed_over_the_replicas() {
    use crate::admin::peers::tests::peer;
    let (a, sa) = peer("a", "100.77.0.2");
    let (b, sb) = peer("b", "100.77.0.3");
    let (c, sc) = peer("c", "100.77.0.4");
    let gone = PrivateKey::generate().public_key();
    let peers = [a, b, c];
    // What a sibling answers: its own counters matched to keys through its active peers.
    let sib_drops = [
        ("100.77.0.2".parse().unwrap(), 5),
        ("100.77.0.3".parse().unwrap(), 40),
        ("100.77.0.9".parse().unwrap(), 1),
    ];
    let mut sib = own_stats(
        &[sa.clone(), sb, sc, stats(&gone, None, 0)],
        &peers,
        &sib_drops,
    );
    assert_eq!(
        sib.iter().map(|s| s.dropped_packets).collect::<Vec<_>>(),
        [5, 40, 0, 0]
    );
    // A third replica that still holds a's old session, and one older than the field.
    let mut third = own_stats(&[sa], &peers, &[("100.77.0.2".parse().unwrap(), 2)]);
    let old: ReplicaStat = serde_json::from_str(&format!(
        r#"{{"publicKey": "{}", "endpoint": null, "lastHandshakeMs": null, "rxBytes": 0, "txBytes": 0}}"#,
        peers[2].spec.public_key
    ))
    .unwrap();
    assert_eq!(old.dropped_packets, 0, "absent from an older replica");
    sib.append(&mut third);
    sib.push(old);
    // Drops for a key no active peer has (left the sibling's view, not ours): left out.
    sib.push(ReplicaStat {
        dropped_packets: 7,
        ..ReplicaStat::from(&stats(&gone, None, 0))
    });
    let local = [
        ("100.77.0.2".parse().unwrap(), 3),
        ("100.77.0.4".parse().unwrap(), 1),
    ];
    assert_eq!(
        total_drops(&peers, &local, &sib),
        [
            ("100.77.0.2".parse().unwrap(), 10),
            ("100.77.0.3".parse().unwrap(), 40),
            ("100.77.0.4".parse().unwrap(), 1),
        ]
    );
    assert_eq!(total_drops(&peers, &local, &[]), local, "no siblings: ours");
}
