use super::*;
use kwg_contract::LeaseStatus;

/// The fake clock: every time is `T0` plus seconds.
fn at(secs: i64) -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::TimeDelta::seconds(secs)
}

/// A joined machine that handshook at 0 s and renewed its 900 s lease at 0 s.
fn joined() -> Status {
    let mut s = Status::example();
    s.last_handshake = Some(at(0));
    s.lease = Some(LeaseStatus {
        ttl_secs: 900,
        renewed: Some(at(0)),
        expires: Some(at(900)),
        failing_since: None,
        error: None,
        failures: 0,
        next_attempt: Some(at(300)),
        reregistering: false,
    });
    s
}

fn answered() -> Observed {
    Observed {
        gateway: Probe::Answered,
        peer_secret: SecretProbe::Present {
            lease_expires: Some(at(900)),
        },
        ..Observed::default()
    }
}

fn kinds(s: &Status, o: &Observed, now: i64) -> (ConnectionState, Vec<HealthKind>) {
    let (state, lines) = assess(s, o, at(now));
    (state, lines.iter().map(|l| l.kind).collect())
}

#[test]
fn connected_while_every_rule_holds() {
    assert_eq!(
        kinds(&joined(), &answered(), 10),
        (ConnectionState::Connected, vec![])
    );
    // Nothing asked (userspace mode has no gateway probe): the handshake alone decides.
    assert_eq!(
        kinds(&joined(), &Observed::default(), 180),
        (ConnectionState::Connected, vec![])
    );
}

#[test]
fn a_handshake_older_than_reject_after_time_is_degraded() {
    assert_eq!(
        kinds(&joined(), &Observed::default(), 181),
        (ConnectionState::Degraded, vec![HealthKind::HandshakeStale])
    );
    let mut never = joined();
    never.last_handshake = None;
    let (state, lines) = assess(&never, &Observed::default(), at(5));
    assert_eq!(state, ConnectionState::Degraded);
    assert_eq!(lines[0].kind, HealthKind::NoHandshake);
    assert_eq!(
        lines[0].message,
        "no WireGuard handshake with the gateway yet"
    );
}

#[test]
fn a_silent_gateway_is_one_line_whatever_the_handshake() {
    let o = Observed {
        gateway: Probe::Failed("no answer within 1 s".into()),
        ..answered()
    };
    let (state, lines) = assess(&joined(), &o, at(30));
    assert_eq!(state, ConnectionState::Degraded);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0].message,
        "the gateway does not answer through the tunnel (no answer within 1 s); last handshake 30s ago"
    );
    assert!(lines[0].fix.contains("kwg doctor"), "{}", lines[0].fix);
}

#[test]
fn a_deleted_peer_secret_is_named_with_its_renewal() {
    let o = Observed {
        peer_secret: SecretProbe::Missing {
            namespace: "kwg-system".into(),
            name: "laptop".into(),
        },
        ..answered()
    };
    let (state, lines) = assess(&joined(), &o, at(100));
    assert_eq!(state, ConnectionState::Degraded);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].kind, HealthKind::PeerDeleted);
    assert!(
        lines[0]
            .message
            .starts_with("the peer Secret kwg-system/laptop was deleted"),
        "{}",
        lines[0].message
    );
    assert!(
        lines[0]
            .fix
            .starts_with("the daemon registers again at its next renewal (next attempt in 3m 20s)"),
        "{}",
        lines[0].fix
    );
    // The gateway drops a peer without Secret: its silence is not named as a cause of its own.
    let silent_too = Observed {
        gateway: Probe::Failed("no answer within 1500 ms".into()),
        ..o
    };
    assert_eq!(
        kinds(&joined(), &silent_too, 100),
        (ConnectionState::Degraded, vec![HealthKind::PeerDeleted])
    );
    // The daemon found out itself at a renewal (404) and is registering again.
    let mut s = joined();
    s.lease.as_mut().unwrap().reregistering = true;
    assert_eq!(
        kinds(&s, &answered(), 100),
        (ConnectionState::Degraded, vec![HealthKind::PeerDeleted])
    );
}

#[test]
fn the_lease_counts_only_once_it_has_ended() {
    let mut s = joined();
    let l = s.lease.as_mut().unwrap();
    l.failing_since = Some(at(300));
    l.error = Some("the API server cannot be reached".into());
    l.failures = 3;
    l.next_attempt = Some(at(610));
    // Renewals fail but the lease holds: the tunnel works (the Lease row says why).
    assert_eq!(
        kinds(&s, &answered(), 899),
        (ConnectionState::Connected, vec![])
    );
    // At the end of the lease (exactly), it has ended.
    let (state, lines) = assess(&s, &answered(), at(900));
    assert_eq!(state, ConnectionState::Degraded);
    assert_eq!(lines[0].kind, HealthKind::LeaseExpired);
    assert_eq!(
        lines[0].message,
        "the lease ended 0s ago without renewal: the API server cannot be reached: the gateway removes this peer"
    );
}

#[test]
fn a_silent_daemon_is_judged_on_what_the_cluster_says() {
    // `kwg status` when the daemon holds its lock but does not answer: the state file's
    // status (no handshake known) and the peer Secret read by the CLI.
    let mut s = joined();
    s.connected = false;
    s.lease = None;
    s.last_handshake = None;
    let silent = Observed {
        daemon_silent: Some("no answer within 3 s".into()),
        peer_secret: SecretProbe::Present {
            lease_expires: Some(at(60)),
        },
        ..Observed::default()
    };
    assert_eq!(
        kinds(&s, &silent, 30),
        (
            ConnectionState::Degraded,
            vec![HealthKind::DaemonUnresponsive]
        )
    );
    assert_eq!(
        kinds(&s, &silent, 61),
        (
            ConnectionState::Degraded,
            vec![HealthKind::DaemonUnresponsive, HealthKind::LeaseExpired]
        )
    );
    let collected = Observed {
        peer_secret: SecretProbe::Missing {
            namespace: "kwg-system".into(),
            name: "laptop".into(),
        },
        ..silent
    };
    assert_eq!(
        kinds(&s, &collected, 200).1,
        [HealthKind::DaemonUnresponsive, HealthKind::PeerDeleted]
    );
    // No daemon at all: nothing to assess.
    assert_eq!(
        kinds(&s, &Observed::default(), 30),
        (ConnectionState::NotRunning, vec![])
    );
}

#[test]
fn missing_routes_and_dns_are_named() {
    let o = Observed {
        missing_routes: vec!["10.96.0.0/12".parse().unwrap()],
        dns: Some("/etc/resolv.conf does not name kwg's forwarder 127.77.0.53".into()),
        ..answered()
    };
    let (state, lines) = assess(&joined(), &o, at(10));
    assert_eq!(state, ConnectionState::Degraded);
    assert_eq!(lines[0].message, "routes missing from kwg0: 10.96.0.0/12");
    assert_eq!(lines[1].kind, HealthKind::DnsMissing);
    assert!(
        lines[1].fix.contains("/etc/resolv.conf"),
        "{}",
        lines[1].fix
    );
}

#[test]
fn a_joining_daemon_has_no_verdict_yet() {
    let mut s = joined();
    s.tunnel_ip = None;
    s.lease = None;
    assert_eq!(
        kinds(&s, &Observed::default(), 0),
        (ConnectionState::Joining, vec![])
    );
    // A tunnel IP but no handshake and no lease yet: still joining, not Degraded.
    let mut s = joined();
    s.last_handshake = None;
    s.lease = None;
    assert_eq!(
        kinds(&s, &Observed::default(), 0),
        (ConnectionState::Joining, vec![])
    );
}

#[test]
fn text_lists_each_problem_then_its_fix() {
    let mut s = joined();
    apply(
        &mut s,
        &Observed {
            missing_routes: vec!["10.96.0.0/12".parse().unwrap()],
            ..answered()
        },
        at(10),
    );
    assert_eq!(state_text(&s), "Degraded");
    assert_eq!(
        lines_text(&s),
        "Health:\n  - routes missing from kwg0: 10.96.0.0/12\n    fix: something removed them (NetworkManager, another VPN, ip route flush): run kwg leave, then kwg join\n"
    );
    s.state = None;
    assert_eq!(state_text(&s), "Connected");
}

#[test]
fn rejected_credentials_and_a_refused_gateway_info_are_lines_too() {
    let mut s = joined();
    s.lease.as_mut().unwrap().error = Some("credentials rejected since 2026-01-01 00:01:40 UTC: log in again (kwg reloads the kubeconfig at each retry)".into());
    s.refused_info = Some(kwg_contract::RefusedInfo {
        at: at(50),
        reason: "serviceCidrs 8.0.0.0/8 is public address space: pass --also-proxy 8.0.0.0/8"
            .into(),
    });
    let (state, lines) = assess(&s, &answered(), at(200));
    assert_eq!(state, ConnectionState::Degraded);
    assert_eq!(
        lines.iter().map(|l| l.kind).collect::<Vec<_>>(),
        [
            HealthKind::CredentialsRejected,
            HealthKind::GatewayInfoRefused
        ]
    );
    assert_eq!(
        lines[0].message,
        "the API server rejects the daemon's credentials: the lease cannot be renewed (the lease ends in 11m 40s)"
    );
    assert!(lines[0].fix.starts_with("log in again"), "{}", lines[0].fix);
    assert!(
        lines[1]
            .message
            .starts_with("a change of the gateway info 2m 30s ago was refused"),
        "{}",
        lines[1].message
    );
}

#[test]
fn a_gone_helper_is_degraded_with_the_way_back() {
    let o = Observed {
        helper_gone: Some(
            "kwg-helper, which holds this session's interface, routes and DNS, is gone".into(),
        ),
        ..answered()
    };
    let (state, lines) = assess(&joined(), &o, at(30));
    assert_eq!(state, ConnectionState::Degraded);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].kind, HealthKind::HelperGone);
    assert!(
        lines[0].fix.contains("kwg-helper serve"),
        "{}",
        lines[0].fix
    );
}
