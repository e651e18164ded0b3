//! The session core while serving: lease renewal, registering again, the gateway info
//! changing, leave, and an undo step that fails.

use std::time::Duration;

use kwg_contract::keys::PrivateKey;

use super::*;

fn serving(change: fn(&mut SessionConfig)) -> Run {
    let mut r = Run::new(change);
    r.pump(|_| None);
    r.take_log();
    assert_eq!(r.s.phase(), Phase::Serving);
    r
}

#[test]
fn the_lease_is_renewed_every_third_of_the_ttl_and_failures_back_off() {
    let mut r = serving(defaults);
    let renew_at = r.s.lease().unwrap().next.unwrap();
    assert_eq!(renew_at - r.now, Duration::from_secs(30));
    r.advance(Duration::from_secs(30));
    r.pump(|_| None);
    // The lease's new end is journalled (what leave names when it cannot delete the peer).
    assert_eq!(r.take_log(), ["RenewLease", "Save"]);
    assert_eq!(
        r.s.lease().unwrap().next.unwrap() - r.now,
        Duration::from_secs(30)
    );
    // 409: retried after a second.
    r.advance(Duration::from_secs(30));
    r.pump(|a| {
        matches!(a, Action::RenewLease { .. })
            .then(|| Some(Event::LeaseFailed(LeaseFailure::Conflict)))
    });
    assert_eq!(
        r.s.lease().unwrap().next.unwrap() - r.now,
        RENEW_CONFLICT_RETRY
    );
    // 403 (or the API unreachable): the tunnel stays, retries back off 2 s, 4 s, 8 s, then
    // every 9 s (a tenth of the ttl: several attempts before the lease ends).
    let forbidden = || {
        Some(Event::LeaseFailed(LeaseFailure::Other(failed(
            StepKind::Other,
            "your kubeconfig user developer is not allowed to patch secrets in namespace kwg-system",
        ))))
    };
    let mut waits = Vec::new();
    for _ in 0..5 {
        let wait = r.s.lease().unwrap().next.unwrap() - r.now;
        r.advance(wait);
        r.pump(|a| matches!(a, Action::RenewLease { .. }).then(forbidden));
        waits.push((r.s.lease().unwrap().next.unwrap() - r.now).as_secs());
    }
    assert_eq!(waits, [2, 4, 8, 9, 9]);
    assert!(
        r.s.lease()
            .unwrap()
            .last_error
            .as_deref()
            .unwrap()
            .contains("not allowed to patch secrets")
    );
    assert!(undo_tail(&r.take_log()).is_empty());
    assert_eq!(r.s.phase(), Phase::Serving);
    // Success clears the error and restores the interval.
    r.advance(Duration::from_secs(9));
    r.pump(|_| None);
    assert_eq!(r.s.lease().unwrap().last_error, None);
    assert_eq!(
        r.s.lease().unwrap().next.unwrap() - r.now,
        Duration::from_secs(30)
    );
}

#[test]
fn a_vanished_secret_is_registered_again_and_a_new_address_replaces_the_old() {
    for (ip, change) in [("100.77.0.2", false), ("100.77.0.9", true)] {
        let mut r = serving(defaults);
        r.advance(Duration::from_secs(30));
        r.pump(|a| match a {
            Action::RenewLease { .. } => Some(Some(Event::LeaseFailed(LeaseFailure::NotFound))),
            Action::WaitTunnelIp { .. } => Some(Some(Event::TunnelIp(ip.parse().unwrap()))),
            _ => None,
        });
        let log = r.take_log();
        let mut expected = vec!["RenewLease", "Register", "Save", "WaitTunnelIp"];
        if change {
            expected.extend(["ChangeAddress", "Save"]);
        }
        assert_eq!(log, expected);
        assert_eq!(r.s.state().unwrap().tunnel_ip, Some(ip.parse().unwrap()));
        assert_eq!(
            r.s.lease().unwrap().next.unwrap() - r.now,
            Duration::from_secs(30)
        );
    }
}

#[test]
fn a_secret_of_our_name_with_another_uid_is_left_alone_and_registered_again() {
    let mut r = serving(defaults);
    let mut uids = Vec::new();
    let mut answer = |a: &Action| match a {
        Action::RenewLease { uid, .. } => {
            uids.push(uid.clone());
            Some(Some(Event::LeaseFailed(LeaseFailure::Replaced)))
        }
        Action::Register { .. } => Some(Some(Event::Registered(Registration {
            uid: "9a2b".into(),
            lease_expires: Default::default(),
        }))),
        Action::WaitTunnelIp { .. } => Some(Some(Event::TunnelIp("100.77.0.2".parse().unwrap()))),
        _ => None,
    };
    r.advance(Duration::from_secs(30));
    r.pump(&mut answer);
    // Not the 1 s retry of a conflict: registered again (a taken name is said from there).
    assert_eq!(
        r.take_log(),
        ["RenewLease", "Register", "Save", "WaitTunnelIp"]
    );
    assert_eq!(
        r.s.lease().unwrap().next.unwrap() - r.now,
        Duration::from_secs(30)
    );
    // The next renewal names the uid of the Secret registered now.
    r.advance(Duration::from_secs(30));
    r.pump(&mut answer);
    assert_eq!(uids, [None, Some("9a2b".to_string())]);
}

#[test]
fn the_gateway_info_changing_while_serving_is_followed() {
    let mut r = serving(defaults);
    let old_key = r.gateway.public_key();
    // Unchanged info: nothing to do.
    r.s.handle(Event::GatewayInfo(Box::new(info(&r.gateway))), r.now);
    r.pump(|_| None);
    assert!(r.take_log().is_empty());
    // Reinstalled with a new key and a second pod CIDR.
    let new = PrivateKey::generate();
    let mut changed = info(&new);
    changed.pod_cidrs.push("10.250.0.0/16".parse().unwrap());
    r.s.handle(Event::GatewayInfo(Box::new(changed)), r.now);
    let mut actions = Vec::new();
    while let Some(a) = r.s.poll_action() {
        actions.push(a);
    }
    let names: Vec<String> = actions.iter().map(name).collect();
    // A new key: the new gateway's tunnel IP for this machine is read again.
    assert_eq!(
        names,
        ["Save", "SetRoutes", "UpdateGateway", "WaitTunnelIp"]
    );
    match &actions[1] {
        Action::SetRoutes { add, remove, .. } => {
            assert_eq!(add, &["10.250.0.0/16".parse::<ipnet::IpNet>().unwrap()]);
            assert!(remove.is_empty());
        }
        a => panic!("{a:?}"),
    }
    match &actions[2] {
        Action::UpdateGateway { old_key: k, peer } => {
            assert_eq!(*k, old_key);
            assert_eq!(peer.public_key, new.public_key());
            assert!(peer.allowed_ips.contains(&"10.250.0.0/16".parse().unwrap()));
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(
        r.s.state().unwrap().gateway_key,
        Some(new.public_key().to_string())
    );
}

/// A reinstall lost the key Secret: the new gateway has a new key and picked another tunnel
/// CIDR, so it assigns this machine another tunnel IP (the old one is outside its CIDR and its
/// AllowedIPs). The session reads it, as after registering again, and moves its address.
#[test]
fn a_new_gateway_with_another_tunnel_cidr_gets_the_tunnel_ip_it_assigned() {
    let mut r = serving(defaults);
    let old: ipnet::IpNet = "100.77.0.2/32".parse().unwrap();
    let new = PrivateKey::generate();
    let mut changed = info(&new);
    changed.tunnel_cidr = "100.64.48.0/20".parse().unwrap();
    changed.gateway_ip = "100.64.48.1".parse().unwrap();
    r.s.handle(Event::GatewayInfo(Box::new(changed.clone())), r.now);
    let mut waits = Vec::new();
    // The wait gets no answer yet: the new gateway has not annotated the Secret.
    let mut unanswered = |a: &Action| match a {
        Action::WaitTunnelIp { within, .. } => {
            waits.push(*within);
            Some(None)
        }
        _ => None,
    };
    r.pump(&mut unanswered);
    assert_eq!(
        r.take_log(),
        ["Save", "SetRoutes", "UpdateGateway", "WaitTunnelIp"]
    );
    // `kwg status` and the DNS follower reach the new gateway at its new tunnel IP.
    let admin: std::net::SocketAddr = "100.64.48.1:8080".parse().unwrap();
    assert_eq!(r.s.plan().unwrap().gateway_admin, admin);
    assert_eq!(r.s.state().unwrap().gateway_admin, Some(admin));
    // The lease is due meanwhile: it goes first (the driver runs one long action at a time),
    // then the wait starts again.
    r.advance(Duration::from_secs(30));
    r.pump(&mut unanswered);
    assert_eq!(
        r.take_log(),
        ["Cancel", "RenewLease", "Save", "WaitTunnelIp"]
    );
    assert_eq!(waits, [Some(changed.tunnel_cidr); 2]);
    // The gateway annotated the Secret: the address moves to the new CIDR.
    r.s.handle(Event::TunnelIp("100.64.48.7".parse().unwrap()), r.now);
    let mut actions = Vec::new();
    while let Some(a) = r.s.poll_action() {
        actions.push(a);
    }
    let names: Vec<String> = actions.iter().map(name).collect();
    assert_eq!(names, ["ChangeAddress", "Save"]);
    match &actions[0] {
        Action::ChangeAddress { old: o, new: n, .. } => {
            assert_eq!(*o, old);
            assert_eq!(*n, "100.64.48.7/32".parse::<ipnet::IpNet>().unwrap());
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(
        r.s.state().unwrap().tunnel_ip,
        Some("100.64.48.7".parse().unwrap())
    );
    // Renewals go on as before, with nothing more to read.
    r.advance(Duration::from_secs(30));
    r.pump(|_| None);
    assert_eq!(r.take_log(), ["RenewLease", "Save"]);
    // The same info again changes nothing.
    r.s.handle(Event::GatewayInfo(Box::new(changed)), r.now);
    r.pump(|_| None);
    assert!(r.take_log().is_empty());
}

#[test]
fn a_changed_gateway_info_that_fails_the_trust_checks_is_refused_and_the_last_good_one_kept() {
    let mut r = serving(defaults);
    let routes = r.s.state().unwrap().routes.clone();
    let wall: chrono::DateTime<chrono::Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
    assert_eq!(r.s.refused_status(r.now, wall), None);
    // A new key with the Internet in its subnets: nothing of it is applied.
    let mut bad = info(&PrivateKey::generate());
    bad.service_cidrs.push("8.0.0.0/8".parse().unwrap());
    r.now += Duration::from_secs(5);
    r.s.handle(Event::GatewayInfo(Box::new(bad)), r.now);
    r.pump(|_| None);
    assert!(r.take_log().is_empty());
    assert_eq!(r.s.state().unwrap().routes, routes);
    assert_eq!(
        r.s.plan().unwrap().gateway.public_key,
        r.gateway.public_key()
    );
    let refused =
        r.s.refused_status(r.now + Duration::from_secs(10), wall)
            .unwrap();
    assert_eq!(refused.at, wall - chrono::Duration::seconds(10));
    assert!(
        refused.reason.starts_with(
            "refused cluster subnet 8.0.0.0/8 from the cluster: it is public address space"
        ),
        "{}",
        refused.reason
    );
    // A route conflict is refused too (checked at join only, before).
    let mut conflict = info(&r.gateway);
    conflict.pod_cidrs.push("192.168.5.0/24".parse().unwrap());
    let mut s = r;
    if let Some(p) = s.s.joined_mut().map(|j| &mut j.plan) {
        p.machine_routes.push(crate::routes::Route {
            destination: "192.168.0.0/16".parse().unwrap(),
            interface: Some("eth0".into()),
            gateway: None,
            table: crate::routes::MAIN_TABLE,
        });
    }
    s.s.handle(Event::GatewayInfo(Box::new(conflict)), s.now);
    assert!(s.s.poll_action().is_none());
    let reason = s.s.refused_status(s.now, wall).unwrap().reason;
    assert!(reason.contains("192.168.5.0/24"), "{reason}");
    // A good change is followed again, and the refusal is gone.
    let mut good = info(&s.gateway);
    good.pod_cidrs.push("10.250.0.0/16".parse().unwrap());
    s.s.handle(Event::GatewayInfo(Box::new(good)), s.now);
    assert!(s.s.poll_action().is_some());
    assert_eq!(s.s.refused_status(s.now, wall), None);
}

#[test]
fn leave_undoes_everything_in_reverse_and_removes_the_state() {
    let mut r = serving(defaults);
    r.s.handle(Event::Leave, r.now);
    r.pump(|a| match a {
        Action::Undo(Undo::RestoreResolvConf { .. }) => {
            Some(Some(Event::Undone(Some("DNS settings".into()))))
        }
        Action::Undo(Undo::DeletePeer { .. }) => Some(Some(Event::Undone(Some(
            "peer Secret kwg-peer-laptop".into(),
        )))),
        _ => None,
    });
    assert_eq!(
        r.take_log(),
        [
            "undo RestoreResolvConf",
            "undo StopForwarder",
            "undo RemoveFirewall",
            "undo DeleteInterface(created)",
            "undo DeletePeer",
            "RemoveState",
            "Exit"
        ]
    );
    assert_eq!(
        r.s.outcome().unwrap(),
        ["DNS settings", "peer Secret kwg-peer-laptop"]
    );
}

#[test]
fn a_failed_undo_step_stays_in_the_journal_for_the_next_leave() {
    let mut r = serving(defaults);
    r.s.handle(Event::Signal, r.now);
    r.pump(|a| {
        matches!(a, Action::Undo(Undo::DeletePeer { .. })).then(|| {
            Some(Event::UndoFailed(failed(
                StepKind::Other,
                "invalid peer Secret: unreachable",
            )))
        })
    });
    let log = r.take_log();
    assert_eq!(&log[log.len() - 2..], ["Save", "Exit"]);
    assert!(!log.contains(&"RemoveState".to_string()));
    let kept: Vec<&str> = r
        .saved
        .as_ref()
        .unwrap()
        .undo
        .iter()
        .map(undo_name)
        .collect();
    assert_eq!(kept, ["DeletePeer"]);
    assert!(r.s.outcome().is_err());
}

#[test]
fn a_session_whose_packets_go_unanswered_gets_a_new_handshake() {
    let mut r = serving(defaults);
    let (mut tx, rx) = (1000u64, 1000u64);
    let mut restarts = Vec::new();
    let start = r.now;
    for _ in 0..50 {
        // A curl loop into a dead session: only sending.
        tx += 100;
        r.advance(health::CHECK_EVERY);
        r.pump(|a| {
            matches!(a, Action::ReadStats).then_some(Some(Event::Stats {
                tx_bytes: tx,
                rx_bytes: rx,
                held_packets: 0,
            }))
        });
        for a in r.take_log() {
            if a == "Rehandshake" || a == "Rebind" {
                restarts.push((a, (r.now - start).as_millis()));
            }
        }
    }
    // The first read (100 ms) sets the baseline, sending is seen from the second (200 ms);
    // 500 ms later a handshake on the current socket; unanswered, a new streak: 600 ms later
    // a new port, then new ports only, at most every 3 s (no handshake in between: it would
    // replace the one under way).
    let at = |name: &str| -> Vec<u128> {
        restarts
            .iter()
            .filter(|(a, _)| a == name)
            .map(|(_, t)| *t)
            .collect()
    };
    assert_eq!(restarts[0], ("Rehandshake".to_string(), 700));
    assert_eq!(at("Rebind"), [1300, 4300]);
    assert_eq!(at("Rehandshake"), [700]);
    assert_eq!(r.s.restarts() as usize, restarts.len());
    assert_eq!(r.s.phase(), Phase::Serving);
}

#[test]
fn a_handshake_a_live_replica_answers_ends_the_stall_on_the_same_port() {
    let mut r = serving(defaults);
    let (mut tx, mut rx) = (1000u64, 1000u64);
    let mut log = Vec::new();
    let (start, mut replay_since) = (r.now, None);
    for _ in 0..40 {
        tx += 100;
        r.advance(health::CHECK_EVERY);
        r.pump(|a| match a {
            Action::ReadStats => Some(Some(Event::Stats {
                tx_bytes: tx,
                rx_bytes: rx,
                held_packets: 0,
            })),
            // Another replica answers the initiation; traffic flows again.
            Action::Rehandshake { since, .. } => {
                rx += 92;
                replay_since = Some(*since);
                None
            }
            _ => None,
        });
        log.extend(r.take_log());
        if log.iter().any(|a| a == "Rehandshake") {
            rx += 100;
        }
    }
    assert_eq!(
        log.iter().filter(|a| *a == "Rehandshake").count(),
        1,
        "{log:?}"
    );
    assert!(!log.iter().any(|a| a == "Rebind"), "{log:?}");
    // What was sent since the first unanswered read (200 ms) and the read before is sent
    // again under the new session.
    assert_eq!(replay_since, Some(start + Duration::from_millis(100)));
}

#[test]
fn status_says_since_when_renewal_fails_why_and_when_it_is_retried() {
    let mut r = serving(defaults);
    let wall: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let start = r.now;
    let at = |r: &Run| wall + chrono::Duration::from_std(r.now - start).unwrap();
    let lease = r.s.lease_status(r.now, wall).unwrap();
    assert_eq!((lease.renewed, lease.failing_since), (Some(wall), None));
    assert_eq!(lease.expires, Some(wall + chrono::Duration::seconds(90)));
    // The driver's summary of its error is what status shows, not the whole sentence.
    let unreachable = || {
        Some(Event::LeaseFailed(LeaseFailure::Other(Error::step(
            StepKind::Other,
            "API server https://192.0.2.1:6443 unreachable: Connection refused (os error 111)"
                .into(),
            "the Kubernetes API server https://192.0.2.1:6443 is unreachable (ServiceError: client error (Connect): tcp connect error: Connection refused (os error 111)): check your network, kubeconfig and --context",
        ))))
    };
    // Three failures: the first at 30 s, then 2 s and 4 s later.
    for _ in 0..3 {
        let wait = r.s.lease().unwrap().next.unwrap() - r.now;
        r.advance(wait);
        r.pump(|a| matches!(a, Action::RenewLease { .. }).then(unreachable));
    }
    r.advance(Duration::from_secs(1));
    let now = at(&r);
    let lease = r.s.lease_status(r.now, now).unwrap();
    assert_eq!(lease.failures, 3);
    assert_eq!(
        lease.failing_since,
        Some(wall + chrono::Duration::seconds(30))
    );
    assert_eq!(
        lease.error.as_deref(),
        Some("API server https://192.0.2.1:6443 unreachable: Connection refused (os error 111)")
    );
    // The next attempt 8 s after the third (7 s from now); the lease still ends 90 s after
    // its last renewal.
    assert_eq!(lease.next_attempt, Some(now + chrono::Duration::seconds(7)));
    assert_eq!(lease.expires, Some(wall + chrono::Duration::seconds(90)));
    // Once the API server answers again the error is gone.
    r.advance(Duration::from_secs(7));
    r.pump(|_| None);
    let lease = r.s.lease_status(r.now, at(&r)).unwrap();
    assert_eq!(
        (lease.failing_since, lease.error, lease.failures),
        (None, None, 0)
    );
    assert_eq!(lease.renewed, Some(at(&r)));
}

#[test]
fn a_new_gateway_key_whose_first_handshake_goes_unanswered_gets_another_at_once() {
    let mut r = serving(defaults);
    // A busy tunnel.
    for i in 1..=5u64 {
        r.advance(health::CHECK_EVERY);
        r.pump(|a| {
            matches!(a, Action::ReadStats).then_some(Some(Event::Stats {
                tx_bytes: i * 10_000,
                rx_bytes: i * 10_000,
                held_packets: 0,
            }))
        });
    }
    r.take_log();
    // The gateway is reinstalled: a new peer, one initiation (148 bytes) and nothing back; the
    // packets behind it wait for the handshake, so the counters stay put.
    let new = PrivateKey::generate();
    r.s.handle(Event::GatewayInfo(Box::new(info(&new))), r.now);
    let replaced = r.now;
    let mut restarted = None;
    for _ in 0..20 {
        r.advance(health::CHECK_EVERY);
        r.pump(|a| {
            matches!(a, Action::ReadStats).then_some(Some(Event::Stats {
                tx_bytes: 148,
                rx_bytes: 0,
                held_packets: 0,
            }))
        });
        if r.take_log().iter().any(|a| a == "Rehandshake") && restarted.is_none() {
            restarted = Some(r.now - replaced);
        }
    }
    // Not after WireGuard's 5 s rekey timeout: after the stall time.
    assert_eq!(restarted, Some(Duration::from_millis(500)));
}

#[test]
fn packets_held_for_a_handshake_that_goes_unanswered_count_as_a_stall() {
    let mut r = serving(defaults);
    // The session expired (180 s idle): a ping loop's packets wait inside WireGuard for the
    // handshake their first one started (148 bytes out); its retransmission is 5 s away.
    let (tx, rx) = (5000u64, 4000u64);
    let start = r.now;
    let mut restarted = None;
    for i in 1..=20u64 {
        r.advance(health::CHECK_EVERY);
        r.pump(|a| {
            matches!(a, Action::ReadStats).then_some(Some(Event::Stats {
                tx_bytes: tx + if i > 1 { 148 } else { 0 },
                rx_bytes: rx,
                held_packets: i - 1,
            }))
        });
        if r.take_log().iter().any(|a| a == "Rehandshake") && restarted.is_none() {
            restarted = Some(r.now - start);
        }
    }
    // Seen from the second read (200 ms), a stall 500 ms later: not after the retransmission.
    assert_eq!(restarted, Some(Duration::from_millis(700)));
}

#[test]
fn packets_held_while_the_new_handshake_waits_for_its_answer_force_no_other() {
    // F1: the user pings on into a peer without a session; the forced handshake's answer is
    // on its way over a slow path (the API server's port-forward). Held packets no longer
    // force a new handshake every 0.6 s (each replaced the one under way); the unanswered
    // handshake sets the pace: a new path 2 s after it.
    let mut r = serving(defaults);
    let (mut tx, rx) = (5000u64, 4000u64);
    let start = r.now;
    let mut tries = Vec::new();
    for i in 1..=40u64 {
        r.advance(health::CHECK_EVERY);
        r.pump(|a| {
            matches!(a, Action::ReadStats).then_some(Some(Event::Stats {
                tx_bytes: tx,
                rx_bytes: rx,
                held_packets: i,
            }))
        });
        for a in r.take_log() {
            if a == "Rehandshake" || a == "Rebind" {
                tries.push(((r.now - start).as_millis(), a));
                tx += 148;
            }
        }
    }
    assert_eq!(
        tries,
        [
            (700, "Rehandshake".to_string()),
            (2700, "Rebind".to_string())
        ]
    );
}

/// A reinstall that kept the tunnel CIDR but not the key (issue 27): the new gateway's
/// assignment for this machine is read again within the same CIDR, and an address other than
/// the old one is taken (the new gateway drops packets from the old source).
#[test]
fn a_new_gateway_key_in_the_same_tunnel_cidr_gets_the_tunnel_ip_it_assigned() {
    let mut r = serving(defaults);
    let new = PrivateKey::generate();
    let changed = info(&new);
    assert_eq!(changed.tunnel_cidr, info(&r.gateway).tunnel_cidr);
    r.s.handle(Event::GatewayInfo(Box::new(changed.clone())), r.now);
    let mut waits = Vec::new();
    r.pump(|a| match a {
        Action::WaitTunnelIp { within, .. } => {
            waits.push(*within);
            Some(Some(Event::TunnelIp("100.77.0.9".parse().unwrap())))
        }
        _ => None,
    });
    assert_eq!(waits, [Some(changed.tunnel_cidr)]);
    assert_eq!(
        r.take_log(),
        [
            "Save",
            "UpdateGateway",
            "WaitTunnelIp",
            "ChangeAddress",
            "Save"
        ]
    );
    assert_eq!(
        r.s.state().unwrap().tunnel_ip,
        Some("100.77.0.9".parse().unwrap())
    );
}
