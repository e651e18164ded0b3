use super::*;
use crate::core::Malformed;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

fn ip(last: u8) -> TunnelIp {
    TunnelIp::new(Ipv4Addr::new(100, 77, 0, last))
}

fn annotate(pairs: &[(&str, u8)]) -> Plan {
    Plan {
        annotate: pairs.iter().map(|(n, i)| (n.to_string(), ip(*i))).collect(),
        ..Plan::default()
    }
}

/// The store: each Secret's resourceVersion and uid.
#[derive(Default)]
struct Store(BTreeMap<String, Known>);

impl Store {
    fn put(&mut self, name: &str, rv: &str) {
        self.0.insert(
            name.to_owned(),
            Known {
                resource_version: Some(rv.to_owned()),
                uid: format!("uid-{name}"),
            },
        );
    }

    fn known(&self) -> impl Fn(&str) -> Option<Known> + '_ {
        |n| self.0.get(n).cloned()
    }
}

/// The writes sent, as (secret, op, version).
fn sent(s: &Sends) -> Vec<(&str, &WriteOp, Option<&str>)> {
    s.writes
        .iter()
        .map(|w| (w.secret.as_str(), &w.op, w.resource_version.as_deref()))
        .collect()
}

fn leader() -> Writes {
    let mut w = Writes::new();
    w.set_leading(true);
    w
}

#[test]
fn a_follower_sends_nothing_and_a_new_leader_sends_everything_once() {
    let t0 = Instant::now();
    let mut store = Store::default();
    store.put("kwg-peer-a", "7");
    let plan = annotate(&[("kwg-peer-a", 2)]);
    let mut w = Writes::new();
    assert_eq!(w.decide(&plan, store.known(), t0), Sends::default());
    w.set_leading(true);
    let first = w.decide(&plan, store.known(), t0);
    let want = WriteOp::Annotate { ip: ip(2) };
    assert_eq!(sent(&first), [("kwg-peer-a", &want, Some("7"))]);
    // Every reconcile asks again until the watch brings the annotated version: not repeated.
    for s in 1..100 {
        let later = t0 + Duration::from_secs(s);
        assert!(w.decide(&plan, store.known(), later).writes.is_empty());
    }
    assert_eq!(
        w.poll_timeout(),
        None,
        "nothing failed: no retry to wake for"
    );
    // Leading again (after following a while) decides anew.
    w.set_leading(false);
    assert!(w.decide(&plan, store.known(), t0).writes.is_empty());
    w.set_leading(true);
    assert_eq!(w.decide(&plan, store.known(), t0).writes.len(), 1);
}

#[test]
fn a_new_version_of_the_secret_is_decided_again() {
    let t0 = Instant::now();
    let mut store = Store::default();
    store.put("kwg-peer-a", "7");
    let plan = annotate(&[("kwg-peer-a", 2)]);
    let mut w = leader();
    assert_eq!(w.decide(&plan, store.known(), t0).writes.len(), 1);
    // A client changed the Secret meanwhile: the patch at 7 got 409; the watch brings 8.
    store.put("kwg-peer-a", "8");
    w.observed("kwg-peer-a");
    let again = w.decide(&plan, store.known(), t0);
    let want = WriteOp::Annotate { ip: ip(2) };
    assert_eq!(sent(&again), [("kwg-peer-a", &want, Some("8"))]);
    // A re-list decides every write anew too.
    w.resynced();
    assert_eq!(w.decide(&plan, store.known(), t0).writes.len(), 1);
}

#[test]
fn a_failed_write_is_sent_again_after_a_growing_backoff() {
    let t0 = Instant::now();
    let mut store = Store::default();
    store.put("kwg-peer-a", "7");
    store.put("kwg-peer-b", "3");
    let plan = annotate(&[("kwg-peer-a", 2), ("kwg-peer-b", 3)]);
    let mut w = leader();
    let first = w.decide(&plan, store.known(), t0);
    let a = first.writes[0].id;
    w.failed(a, t0);
    // Not straight away (an API server refusing every write is not hammered)…
    assert_eq!(w.poll_timeout(), Some(t0 + RETRY_FIRST));
    let soon = t0 + RETRY_FIRST - Duration::from_millis(1);
    assert!(w.decide(&plan, store.known(), soon).writes.is_empty());
    // …then only the failed one, at the version the store holds now.
    let mut now = t0 + RETRY_FIRST;
    let retry = w.decide(&plan, store.known(), now);
    let want = WriteOp::Annotate { ip: ip(2) };
    assert_eq!(sent(&retry), [("kwg-peer-a", &want, Some("7"))]);
    assert_eq!(w.poll_timeout(), None, "under way again");
    // Each failure in a row doubles the wait, up to RETRY_MAX.
    let mut id = retry.writes[0].id;
    let mut waits = Vec::new();
    for _ in 0..7 {
        w.failed(id, now);
        let at = w.poll_timeout().expect("a retry is due later");
        waits.push((at - now).as_secs());
        now = at;
        let again = w.decide(&plan, store.known(), now);
        assert_eq!(again.writes.len(), 1);
        id = again.writes[0].id;
    }
    assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
    // A new version of the Secret starts over: sent at once, the next failure waits 1 s.
    w.failed(id, now);
    store.put("kwg-peer-a", "9");
    w.observed("kwg-peer-a");
    let fresh = w.decide(&plan, store.known(), now);
    assert_eq!(sent(&fresh), [("kwg-peer-a", &want, Some("9"))]);
    w.failed(fresh.writes[0].id, now);
    assert_eq!(w.poll_timeout(), Some(now + RETRY_FIRST));
}

#[test]
fn a_failed_write_the_plan_no_longer_asks_for_is_not_waited_for() {
    let mut w = leader();
    let mut store = Store::default();
    store.put("kwg-peer-a", "7");
    let t0 = Instant::now();
    let first = w.decide(&annotate(&[("kwg-peer-a", 2)]), store.known(), t0);
    w.failed(first.writes[0].id, t0);
    // The Secret needs no write any more (its peer went, or the plan changed its mind): the
    // backoff still runs until its retry was due…
    let none = Plan::default();
    assert_eq!(w.decide(&none, store.known(), t0), Sends::default());
    assert_eq!(w.poll_timeout(), Some(t0 + RETRY_FIRST));
    // …then there is no retry to wake for: the peer loop does not spin on a past instant.
    let t1 = t0 + RETRY_FIRST;
    assert_eq!(w.decide(&none, store.known(), t1), Sends::default());
    assert_eq!(w.poll_timeout(), None);
    assert_eq!(w.decide(&none, store.known(), t1), Sends::default());
}

#[test]
fn the_failure_of_a_superseded_write_changes_nothing() {
    let t0 = Instant::now();
    let mut store = Store::default();
    store.put("kwg-peer-a", "7");
    let plan = annotate(&[("kwg-peer-a", 2)]);
    let mut w = leader();
    let old = w.decide(&plan, store.known(), t0).writes[0].id;
    store.put("kwg-peer-a", "8");
    w.observed("kwg-peer-a");
    assert_eq!(w.decide(&plan, store.known(), t0).writes.len(), 1);
    // The write at 7 reports its failure after the one at 8 went: no duplicate, no wait.
    w.failed(old, t0);
    assert_eq!(w.poll_timeout(), None);
    assert!(w.decide(&plan, store.known(), t0).writes.is_empty());
}

#[test]
fn a_different_decision_replaces_the_one_under_way() {
    let t0 = Instant::now();
    let mut store = Store::default();
    store.put("kwg-peer-a", "7");
    let mut w = leader();
    assert_eq!(
        w.decide(&annotate(&[("kwg-peer-a", 2)]), store.known(), t0)
            .writes
            .len(),
        1
    );
    // The lease ended before the annotation showed up: the deletion is sent, at 7.
    let expired = Plan {
        expired: vec!["kwg-peer-a".into()],
        ..Plan::default()
    };
    let del = w.decide(&expired, store.known(), t0);
    assert_eq!(sent(&del), [("kwg-peer-a", &WriteOp::Delete, Some("7"))]);
    assert!(w.decide(&expired, store.known(), t0).writes.is_empty());
    // A deletion is of one version: the renewal's version 8 is another deletion.
    store.put("kwg-peer-a", "8");
    let del = w.decide(&expired, store.known(), t0);
    assert_eq!(sent(&del), [("kwg-peer-a", &WriteOp::Delete, Some("8"))]);
}

#[test]
fn a_secret_not_served_gets_its_event_once_and_its_error_annotation() {
    let t0 = Instant::now();
    let mut store = Store::default();
    store.put("kwg-peer-x", "4");
    let malformed = |first_report, write_annotation| Plan {
        malformed: vec![Malformed {
            secret_name: "kwg-peer-x".into(),
            problem: Problem::Invalid,
            reason: "no publicKey".into(),
            first_report,
            write_annotation,
        }],
        ..Plan::default()
    };
    let mut w = leader();
    let first = w.decide(&malformed(true, true), store.known(), t0);
    assert_eq!(
        first.reports,
        [Report {
            secret: "kwg-peer-x".into(),
            uid: Some("uid-kwg-peer-x".into()),
            problem: Problem::Invalid,
            reason: "no publicKey".into(),
        }]
    );
    let mark = WriteOp::MarkError {
        reason: "no publicKey".into(),
    };
    assert_eq!(sent(&first), [("kwg-peer-x", &mark, Some("4"))]);
    // The core reports a reason once; the annotation is asked for until it shows.
    let next = w.decide(&malformed(false, true), store.known(), t0);
    assert_eq!(next, Sends::default());
    // A Secret the store no longer holds: its Event names no uid.
    let gone = w.decide(&malformed(true, false), |_: &str| None, t0);
    assert_eq!(gone.reports[0].uid, None);
    assert!(gone.writes.is_empty());
}
