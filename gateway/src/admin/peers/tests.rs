use super::*;
use kwg_contract::PeerSpec;
use kwg_contract::keys::PrivateKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn conn(local: &str, remote: &str) -> Conn {
    Conn {
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
    }
}

fn cidr() -> Ipv4Net {
    "100.77.0.0/16".parse().unwrap()
}

#[test]
fn callers_by_address() {
    let cases = [
        (conn("127.0.0.1:8080", "127.0.0.1:5000"), Caller::Local),
        (conn("[::1]:8080", "[::1]:5000"), Caller::Local),
        (
            conn("[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:5000"),
            Caller::Local,
        ),
        (
            conn("100.77.0.1:8080", "100.77.0.2:5000"),
            Caller::Peer("100.77.0.2".parse().unwrap()),
        ),
        // A pod, the kubelet, a node.
        (conn("10.244.0.5:8080", "10.244.0.9:5000"), Caller::Other),
        (conn("10.244.0.5:8080", "192.0.2.1:5000"), Caller::Other),
        // A tunnel source to the pod address: not through the tunnel.
        (conn("10.244.0.5:8080", "100.77.0.2:5000"), Caller::Other),
        (conn("100.77.0.1:8080", "100.78.0.2:5000"), Caller::Other),
    ];
    for (c, want) in cases {
        assert_eq!(Caller::of(c, cidr()), want, "{c:?}");
    }
}

/// An active peer and its device statistics (also for the siblings tests).
pub(crate) fn peer(name: &str, ip: &str) -> (ActivePeer, PeerStats) {
    let key = PrivateKey::generate().public_key();
    let spec = PeerSpec {
        name: name.parse().unwrap(),
        public_key: key,
        owner: "dev".into(),
        hostname: format!("{name}-laptop"),
        namespaces: vec!["default".into()],
        lease_expires: kwg_contract::parse_lease("2030-01-01T00:00:00Z").unwrap(),
    };
    let stats = PeerStats {
        public_key: key,
        endpoint: Some("192.0.2.10:40000".parse().unwrap()),
        allowed_ips: vec![],
        last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        rx_bytes: 10,
        tx_bytes: 20,
        persistent_keepalive: None,
    };
    (
        ActivePeer {
            spec,
            ip: ip.parse().unwrap(),
            groups: vec![],
        },
        stats,
    )
}

#[test]
fn a_peer_sees_others_without_endpoint_or_hostname() {
    let (a, sa) = peer("a", "100.77.0.2");
    let (b, sb) = peer("b", "100.77.0.3");
    let peers = [a, b];
    let stats = [sa, sb];
    let view = ReachView {
        enforced: true,
        by_peer: [
            ("100.77.0.2".parse().unwrap(), vec!["emojivoto".to_owned()]),
            ("100.77.0.3".parse().unwrap(), vec!["default".to_owned()]),
        ]
        .into(),
        namespaces_of: Arc::new(
            [(
                "10.96.0.10".parse().unwrap(),
                vec!["kube-system".to_owned()],
            )]
            .into(),
        ),
    };
    let drops = [("100.77.0.2".parse().unwrap(), 7)];
    let refused = [
        ("100.77.0.2".parse().unwrap(), "10.96.0.10".parse().unwrap()),
        ("100.77.0.3".parse().unwrap(), "10.96.0.10".parse().unwrap()),
    ];
    let counted = Counted {
        drops: &drops,
        refused: &refused,
    };
    let reach = (&view, counted);
    let seen = gateway_peers(
        &peers,
        &stats,
        reach,
        Caller::Peer("100.77.0.2".parse().unwrap()),
    );
    let (me, other) = (&seen[0], &seen[1]);
    assert_eq!(me.hostname.as_deref(), Some("a-laptop"));
    let mine = me.reach.as_ref().expect("own reach shown");
    assert_eq!(
        (mine.namespaces.as_slice(), mine.dropped_packets),
        (&["emojivoto".to_owned()][..], 7)
    );
    let refused = mine.last_refused.as_ref().expect("last refused shown");
    assert_eq!(refused.namespaces, ["kube-system"]);
    assert_eq!(
        refused.allow,
        [format!(
            "kubectl -n kube-system create rolebinding kwg-reach-{0} --clusterrole=view --user={0}",
            me.owner
        )]
    );
    assert_eq!(other.reach, None, "another peer's reach is not shown");
    assert!(me.endpoint.is_some());
    assert_eq!(other.name.as_str(), "b");
    assert_eq!(
        other.tunnel_ip.map(|i| i.to_string()).as_deref(),
        Some("100.77.0.3")
    );
    assert!(other.last_handshake.is_some());
    assert_eq!((other.hostname.as_ref(), other.endpoint), (None, None));
    let json = serde_json::to_string(&seen).unwrap();
    assert!(
        !json.contains("b-laptop") && json.matches("192.0.2.10").count() == 1,
        "{json}"
    );

    // Loopback is also where a kwg user's `kubectl port-forward` arrives.
    let local = gateway_peers(&peers, &stats, reach, Caller::Local);
    assert!(
        local
            .iter()
            .all(|p| p.hostname.is_none() && p.endpoint.is_none() && p.reach.is_none()),
        "{local:?}"
    );
    assert!(local.iter().all(|p| p.last_handshake.is_some()));
}

#[test]
fn reach_undecided_or_open() {
    let (a, sa) = peer("a", "100.77.0.2");
    let me = Caller::Peer("100.77.0.2".parse().unwrap());
    let undecided = ReachView {
        enforced: true,
        ..ReachView::open()
    };
    let seen = gateway_peers(
        std::slice::from_ref(&a),
        std::slice::from_ref(&sa),
        (&undecided, Counted::default()),
        me,
    );
    assert_eq!(seen[0].reach, None, "not decided yet: not shown as nothing");
    let seen = gateway_peers(&[a], &[sa], (&ReachView::open(), Counted::default()), me);
    let r = seen[0].reach.as_ref().unwrap();
    assert!(!r.enforced && r.namespaces.is_empty());
}

#[test]
fn peers_self_is_the_asking_peers_own_entry_by_its_tunnel_address() {
    let (a, sa) = peer("a", "100.77.0.2");
    let (b, sb) = peer("b", "100.77.0.3");
    let peers = [a, b];
    let caller = Caller::of(conn("100.77.0.1:8080", "100.77.0.3:50000"), cidr());
    let own = own_peers(&peers, caller).unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].spec.name.as_str(), "b");
    let view = ReachView {
        enforced: true,
        by_peer: [("100.77.0.3".parse().unwrap(), vec!["default".into()])].into(),
        namespaces_of: Arc::default(),
    };
    let entries = gateway_peers(&own, &[sa, sb], (&view, Counted::default()), caller);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].hostname.as_deref(), Some("b-laptop"));
    assert_eq!(entries[0].reach.as_ref().unwrap().namespaces, ["default"]);
    // A peer the gateway no longer has: nothing (404), not someone else's entry.
    let gone = Caller::of(conn("100.77.0.1:8080", "100.77.0.9:50000"), cidr());
    assert!(own_peers(&peers, gone).unwrap().is_empty());
    // Loopback (an exec or a user's port-forward) and pods are no peer: no self to show.
    let local = Caller::of(conn("127.0.0.1:8080", "127.0.0.1:50000"), cidr());
    assert!(own_peers(&peers, local).is_none());
    let pod = Caller::of(conn("10.244.0.5:8080", "10.244.0.9:50000"), cidr());
    assert!(own_peers(&peers, pod).is_none());
}
