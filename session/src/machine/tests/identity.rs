//! The peer's identity in the journal: undo deletes only this join's own Secret (its uid once
//! created, this machine's key before), a Secret that cannot be deleted never keeps the machine
//! from being cleaned up, and rejected credentials are what the lease status says.

use super::*;

fn delete_peer(s: &State) -> Undo {
    s.undo
        .iter()
        .find(|u| matches!(u, Undo::DeletePeer { .. }))
        .cloned()
        .expect("DeletePeer journalled")
}

#[test]
fn the_journal_names_this_joins_secret_by_key_before_the_create_and_by_uid_after() {
    let mut r = Run::new(defaults);
    let lease: chrono::DateTime<chrono::Utc> = "2026-01-01T00:01:30Z".parse().unwrap();
    let (mut last_saved, mut before_create) = (None, None);
    r.pump(|a| match a {
        Action::Save(s) => {
            last_saved = Some(delete_peer(s));
            None
        }
        Action::Register { .. } => {
            before_create = last_saved.clone();
            Some(Some(Event::Registered(Registration {
                uid: "uid-1".into(),
                lease_expires: lease,
            })))
        }
        _ => None,
    });
    // Saved before the create was asked for: no uid yet, this machine's key.
    let Some(Undo::DeletePeer {
        uid, public_key, ..
    }) = before_create
    else {
        panic!("no DeletePeer before Register");
    };
    assert_eq!(uid, None);
    assert!(public_key.is_some());
    match delete_peer(r.saved.as_ref().unwrap()) {
        Undo::DeletePeer {
            uid,
            public_key: key,
            lease_expires,
            ..
        } => {
            assert_eq!(uid.as_deref(), Some("uid-1"));
            assert_eq!(key, public_key);
            assert_eq!(lease_expires, Some(lease));
        }
        u => panic!("{u:?}"),
    }
    // Each renewal moves the journalled lease end.
    let later: chrono::DateTime<chrono::Utc> = "2026-01-01T00:02:00Z".parse().unwrap();
    r.advance(Duration::from_secs(30));
    r.pump(|a| matches!(a, Action::RenewLease { .. }).then(|| Some(Event::LeaseRenewed(later))));
    match delete_peer(r.saved.as_ref().unwrap()) {
        Undo::DeletePeer { lease_expires, .. } => assert_eq!(lease_expires, Some(later)),
        u => panic!("{u:?}"),
    }
}

#[test]
fn a_peer_that_cannot_be_deleted_leaves_the_machine_clean_and_the_state_removed() {
    let mut r = Run::new(defaults);
    r.pump(|_| None);
    r.take_log();
    let left = crate::journal::LeftBehind {
        namespace: "kwg-system".into(),
        secret: "kwg-peer-laptop".into(),
        reason: "forbidden".into(),
        lease_expires: Some("2026-01-01T00:01:30Z".parse().unwrap()),
    };
    r.s.handle(Event::Leave, r.now);
    r.pump(|a| {
        matches!(a, Action::Undo(Undo::DeletePeer { .. })).then(|| {
            let kind = StepKind::PeerLeftBehind(left.clone());
            Some(Event::UndoFailed(failed(kind, "forbidden")))
        })
    });
    let log = r.take_log();
    // Every local step undone, then the state file removed (nothing kept for a next leave).
    assert_eq!(
        &log[log.len() - 3..],
        ["undo DeletePeer", "RemoveState", "Exit"]
    );
    assert_eq!(r.s.left_behind(), Some(&left));
    assert!(r.s.outcome().is_ok());
    assert!(
        left.to_string()
            .contains("the gateway removes it when its lease ends at 2026-01-01 00:01:30 UTC"),
        "{left}"
    );
}

#[test]
fn rejected_credentials_are_named_with_their_time_until_a_renewal_succeeds() {
    let mut r = Run::new(defaults);
    r.pump(|_| None);
    let wall: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let rejected = || {
        failed(
            StepKind::CredentialsRejected,
            "the Kubernetes API server https://192.0.2.1:6443 rejected the credentials of your kubeconfig user ci",
        )
    };
    r.advance(Duration::from_secs(30));
    let since = r.now;
    r.pump(|a| {
        matches!(a, Action::RenewLease { .. })
            .then(|| Some(Event::LeaseFailed(LeaseFailure::Other(rejected()))))
    });
    // A later failure of the same kind keeps the first time.
    r.advance(Duration::from_secs(2));
    r.pump(|a| {
        matches!(a, Action::RenewLease { .. })
            .then(|| Some(Event::LeaseFailed(LeaseFailure::Other(rejected()))))
    });
    let at = wall - chrono::Duration::from_std(r.now - since).unwrap();
    let status = r.s.lease_status(r.now, wall).unwrap();
    assert_eq!(
        status.error.as_deref(),
        Some(credentials_rejected(at).as_str())
    );
    assert!(
        status
            .error
            .unwrap()
            .starts_with("credentials rejected since 2025-12-31 23:59:58 UTC: log in again"),
    );
    // Logged in again: the next renewal works and the sentence goes.
    r.advance(Duration::from_secs(10));
    r.pump(|_| None);
    assert_eq!(r.s.lease_status(r.now, wall).unwrap().error, None);
}
