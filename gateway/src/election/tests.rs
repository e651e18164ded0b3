use super::*;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(10),
        renew_deadline: Duration::from_secs(6),
        retry: Duration::from_secs(1),
    }
}

/// Runs one round for `e`: decide, and when it writes, the write succeeds.
fn round(e: &mut Elector, lease: &mut Option<Record>, now: SystemTime) -> Step {
    let step = e.decide(lease.as_ref(), now);
    if let Step::Write(r) = &step {
        e.written(r.clone(), now);
        *lease = Some(r.clone());
    }
    step
}

#[test]
fn first_replica_creates_the_lease_and_the_second_follows() {
    let (mut a, mut b) = (Elector::new("a", timing()), Elector::new("b", timing()));
    let mut lease = None;
    assert!(matches!(round(&mut a, &mut lease, t(0)), Step::Write(_)));
    assert!(a.is_leader(t(0)));
    assert_eq!(
        round(&mut b, &mut lease, t(0)),
        Step::Follow { holder: "a".into() }
    );
    assert!(!b.is_leader(t(0)));
    // a renews every second: b never takes over.
    for s in 1..30 {
        assert!(matches!(round(&mut a, &mut lease, t(s)), Step::Write(_)));
        assert!(matches!(
            round(&mut b, &mut lease, t(s)),
            Step::Follow { .. }
        ));
        assert!(a.is_leader(t(s)) && !b.is_leader(t(s)));
    }
    assert_eq!(lease.as_ref().unwrap().transitions, 0);
}

#[test]
fn a_dead_leader_is_replaced_after_the_lease_duration_of_the_followers_clock() {
    let (mut a, mut b) = (Elector::new("a", timing()), Elector::new("b", timing()));
    let mut lease = None;
    round(&mut a, &mut lease, t(0));
    // b first sees the record at 5 (its renewTime says 0): it counts from 5.
    assert!(matches!(
        round(&mut b, &mut lease, t(5)),
        Step::Follow { .. }
    ));
    assert!(matches!(
        round(&mut b, &mut lease, t(14)),
        Step::Follow { .. }
    ));
    // a stopped acting at its renew deadline, before b may take over.
    assert!(!a.is_leader(t(6)));
    let Step::Write(r) = round(&mut b, &mut lease, t(15)) else {
        panic!("b takes over")
    };
    assert_eq!((r.holder.as_deref(), r.transitions), (Some("b"), 1));
    assert!(b.is_leader(t(15)));
    // a comes back and sees b holding it.
    assert!(matches!(
        round(&mut a, &mut lease, t(16)),
        Step::Follow { .. }
    ));
    assert!(!a.is_leader(t(16)));
}

#[test]
fn a_racing_write_that_fails_leaves_the_replica_a_follower() {
    let (mut a, mut b) = (Elector::new("a", timing()), Elector::new("b", timing()));
    // Both read "no Lease"; a's create wins, b's gets 409 (never reported as written).
    let sa = a.decide(None, t(0));
    let sb = b.decide(None, t(0));
    let (Step::Write(ra), Step::Write(_)) = (sa, sb) else {
        panic!("both try")
    };
    a.written(ra.clone(), t(0));
    assert!(a.is_leader(t(0)) && !b.is_leader(t(0)));
    assert!(matches!(b.decide(Some(&ra), t(1)), Step::Follow { .. }));
}

#[test]
fn a_leader_that_cannot_renew_stops_at_the_renew_deadline() {
    let mut a = Elector::new("a", timing());
    let mut lease = None;
    round(&mut a, &mut lease, t(0));
    let held = lease.clone().expect("a wrote the Lease");
    // Renewals fail from now on (decide, no write): each round still asks to renew its own
    // record at that instant, and a keeps leading until the renew deadline.
    for s in 1..=5 {
        let Step::Write(r) = a.decide(lease.as_ref(), t(s)) else {
            panic!("the holder renews at {s}")
        };
        assert_eq!(r.holder.as_deref(), Some("a"));
        assert_eq!(r.renew_time, Some(t(s)), "a renewal stamps the time asked");
        assert_eq!((r.acquire_time, r.transitions), (held.acquire_time, 0));
        assert!(a.is_leader(t(s)));
    }
    assert!(!a.is_leader(t(6)));
    // The failed renewals wrote nothing: the Lease still says a renewed at 0, so another
    // replica takes over a lease duration after it first saw that record.
    assert_eq!(lease.as_ref().and_then(|r| r.renew_time), Some(t(0)));
}

#[test]
fn release_hands_over_at_once() {
    let (mut a, mut b) = (Elector::new("a", timing()), Elector::new("b", timing()));
    let mut lease = None;
    round(&mut a, &mut lease, t(0));
    assert!(matches!(
        round(&mut b, &mut lease, t(1)),
        Step::Follow { .. }
    ));
    let released = a.release(t(2)).expect("the leader releases");
    assert_eq!(released.holder, None);
    assert_eq!(b.release(t(2)), None, "a follower has nothing to release");
    lease = Some(released);
    let Step::Write(r) = round(&mut b, &mut lease, t(2)) else {
        panic!("b takes the released lease")
    };
    assert_eq!((r.holder.as_deref(), r.transitions), (Some("b"), 1));
}
