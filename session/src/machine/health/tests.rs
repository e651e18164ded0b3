use super::*;
use std::time::Duration;

/// Feeds (tx, rx) every CHECK_EVERY; returns the reads (indexes) with a verdict, and which.
fn run(samples: &[(u64, u64)]) -> Vec<(usize, Verdict)> {
    let start = Instant::now();
    let mut h = Health::new(start);
    samples
        .iter()
        .enumerate()
        .map(|(i, (tx, rx))| {
            (
                i,
                h.observe(*tx, *rx, 0, start + CHECK_EVERY * (i as u32 + 1)),
            )
        })
        .filter(|(_, v)| *v != Verdict::Fine)
        .collect()
}

#[test]
fn a_healthy_or_idle_tunnel_never_restarts() {
    // Traffic both ways.
    let busy: Vec<(u64, u64)> = (1..100).map(|i| (i * 100, i * 100)).collect();
    assert!(run(&busy).is_empty());
    // Idle with a persistent keepalive every 25 s that nobody answers.
    let idle: Vec<(u64, u64)> = (0..1000u64).map(|i| (32 * (i / 250 + 1), 0)).collect();
    assert!(run(&idle).is_empty());
}

#[test]
fn a_dead_session_gets_a_handshake_after_half_a_second_then_a_new_port() {
    // Answers until read 4, then only sending (a curl loop into a dead session).
    let mut s: Vec<(u64, u64)> = (1..=4).map(|i| (i * 100, i * 100)).collect();
    for i in 5..=160 {
        s.push((i * 100, 400));
    }
    // Unanswered from index 4 (500 ms): the stall (5 reads) ends at index 9 (1.0 s): a
    // handshake on this socket; unanswered again (a new streak from index 10): a new port at
    // index 15; then only new ports (each its own initiation; a handshake every 600 ms in
    // between replaced the one under way), 3 s, 3 s, then 6 s apart (doubling while nothing
    // answers: `stall_rebind_gap`).
    let v = run(&s);
    assert_eq!(v[0], (9, Verdict::Handshake));
    assert_eq!(v[1], (15, Verdict::Rebind));
    assert!(v[1..].iter().all(|v| v.1 == Verdict::Rebind), "{v:?}");
    let rebinds: Vec<usize> = v
        .iter()
        .filter(|(_, v)| *v == Verdict::Rebind)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(rebinds, [15, 45, 75, 135]);
}

#[test]
fn an_answered_handshake_ends_it_without_a_new_port() {
    // The replica holding the session is gone; the handshake reaches another one, which answers.
    let mut s: Vec<(u64, u64)> = (1..=4).map(|i| (i * 100, i * 100)).collect();
    for i in 5..=10 {
        s.push((i * 100, 400));
    }
    for i in 11..=60 {
        s.push((i * 100, i * 100));
    }
    assert_eq!(run(&s), [(9, Verdict::Handshake)]);
}

#[test]
fn one_way_traffic_gets_a_handshake_at_most_every_retry() {
    // A UDP stream nobody answers; each handshake is answered (rx grows by its response).
    let start = Instant::now();
    let mut h = Health::new(start);
    let (mut tx, mut rx) = (0, 0);
    let mut tries = Vec::new();
    for i in 1..=100u32 {
        tx += 100;
        let now = start + CHECK_EVERY * i;
        match h.observe(tx, rx, 0, now) {
            Verdict::Fine => {}
            v => {
                tries.push((i, v));
                rx += 92; // the handshake response, read next time
            }
        }
    }
    assert_eq!(tries[0], (6, Verdict::Handshake));
    assert!(
        tries.iter().all(|(_, v)| *v == Verdict::Handshake),
        "{tries:?}"
    );
    for w in tries.windows(2) {
        assert!(CHECK_EVERY * (w[1].0 - w[0].0) >= RETRY, "{tries:?}");
    }
}

#[test]
fn an_answer_clears_the_stall() {
    // Sending every read, an answer every fourth read (a slow but live server).
    let s: Vec<(u64, u64)> = (1..=100u64).map(|i| (i * 100, (i / 4) * 100)).collect();
    assert!(run(&s).is_empty());
}

#[test]
fn a_single_connection_retransmitting_into_a_dead_session_restarts_it() {
    // One TCP SYN at 0 s, retransmitted at 1 s and 3 s; nothing comes back.
    let start = Instant::now();
    let mut h = Health::new(start);
    let mut tx = 0;
    let mut restarted = None;
    for i in 1..=40u32 {
        let now = start + CHECK_EVERY * i;
        if [1, 11, 31].contains(&i) {
            tx += 60;
        }
        if h.observe(tx, 0, 0, now) != Verdict::Fine && restarted.is_none() {
            restarted = Some((now - start).as_millis());
        }
    }
    // Seen at 0.1 s and again at 1.1 s (the retransmission): a handshake at once.
    assert_eq!(restarted, Some(1100));
}

#[test]
fn a_replaced_gateway_peer_counting_from_zero_is_watched_too() {
    // A busy session, then the gateway's new key: a new peer whose counters start at 0 and
    // whose first handshake goes unanswered.
    let mut s: Vec<(u64, u64)> = (1..=20).map(|i| (i * 1000, i * 1000)).collect();
    for i in 1..=20 {
        s.push((i * 100, 0));
    }
    let verdicts = run(&s);
    assert_eq!(
        verdicts.first().map(|v| v.1),
        Some(Verdict::Handshake),
        "{verdicts:?}"
    );
    assert!(verdicts[0].0 <= 26, "noticed at read {}", verdicts[0].0);
}

#[test]
fn an_unanswered_handshake_to_a_replaced_peer_moves_to_a_new_port() {
    // The gateway's new key: a peer without a session. Its first initiation and the new
    // handshake go unanswered; later packets wait inside boringtun, so the counters stay.
    let start = Instant::now();
    let mut h = Health::new(start);
    let at = |i: u32| start + CHECK_EVERY * i;
    assert_eq!(h.observe(1000, 1000, 0, at(1)), Verdict::Fine);
    h.peer_replaced(at(2));
    let mut verdicts = Vec::new();
    let mut tx = 148;
    for i in 3..=100u32 {
        let v = h.observe(tx, 0, 0, at(i));
        if v != Verdict::Fine {
            verdicts.push((i, v));
            tx += 148; // its initiation
        }
    }
    // Noticed half a second after the replacement; unanswered for ESCALATE: a new port; then
    // another RETRY later (the next one 6 s after that), and nothing in between.
    assert_eq!(
        verdicts,
        [
            (7, Verdict::Handshake),
            (27, Verdict::Rebind),
            (57, Verdict::Rebind)
        ]
    );
    // An answer ends it.
    let mut h2 = h.clone();
    assert_eq!(h2.observe(tx, 92, 0, at(101)), Verdict::Fine);
    assert!((102..200).all(|i| h2.observe(tx, 92, 0, at(i)) == Verdict::Fine));
}

#[test]
fn a_replaced_peer_read_before_the_device_swapped_it_is_still_watched() {
    // The session sees the new key and calls `peer_replaced`, but the transport task swaps
    // the device's peer a moment later: one read still shows the old peer's counters (its
    // answers), then the new peer's single unanswered initiation, and nothing moves after it
    // (packets wait inside boringtun for the handshake). Before, that read cleared the streak
    // and only boringtun's 5 s REKEY_TIMEOUT retried.
    let start = Instant::now();
    let mut h = Health::new(start);
    let at = |i: u32| start + CHECK_EVERY * i;
    assert_eq!(h.observe(1000, 1000, 0, at(1)), Verdict::Fine);
    h.peer_replaced(at(2));
    assert_eq!(h.observe(1100, 1100, 0, at(3)), Verdict::Fine);
    let first = (4..=40u32)
        .map(|i| (i, h.observe(148, 0, 0, at(i))))
        .find(|(_, v)| *v != Verdict::Fine);
    // Half a second after the new peer's counters first showed.
    assert_eq!(first, Some((9, Verdict::Handshake)));
}

/// The new ports of a session whose gateway stays unreachable for an hour of reads (every
/// `CHECK_EVERY`), the laptop sending all along (`busy`: an application retrying; else only
/// the initiations of a replaced gateway peer), in seconds from the start.
fn rebinds_while_unreachable(busy: bool) -> Vec<u64> {
    let start = Instant::now();
    let mut h = Health::new(start);
    let at = |i: u32| start + CHECK_EVERY * i;
    assert_eq!(h.observe(1000, 1000, 0, at(1)), Verdict::Fine);
    // The new peer counts from zero: its first initiation, then nothing comes back.
    h.peer_replaced(at(2));
    let mut tx = 148;
    let mut rebinds = Vec::new();
    for i in 3..=36_000u32 {
        if busy {
            tx += 100;
        }
        match h.observe(tx, 0, 0, at(i)) {
            Verdict::Rebind => rebinds.push((at(i) - start).as_secs()),
            Verdict::Handshake => tx += 148,
            Verdict::Fine => {}
        }
    }
    rebinds
}

#[test]
fn an_unreachable_gateway_gets_new_ports_ever_more_slowly_up_to_one_a_minute() {
    let rebinds = rebinds_while_unreachable(false);
    let gaps: Vec<u64> = rebinds.windows(2).map(|w| w[1] - w[0]).collect();
    // 3 s, 6 s, 12 s, 24 s, 48 s, then a minute apart (it was 3 s apart for the whole hour:
    // 1200 new ports, each a new conntrack entry and a log line).
    assert_eq!(gaps[..5], [3, 6, 12, 24, 48], "{rebinds:?}");
    assert!(gaps[5..].iter().all(|g| *g == 60), "{gaps:?}");
    assert!(rebinds.len() < 65, "{} new ports", rebinds.len());
    // An application sending all along stalls again and again: the second new port as soon
    // as the first (the transport's cue to fall back to a stream), then the same doubling (it
    // was a new port, or a stream closed and connected again, every 3 s for the whole hour).
    let busy = rebinds_while_unreachable(true);
    let gaps: Vec<u64> = busy.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[..6], [3, 3, 6, 12, 24, 48], "{busy:?}");
    assert!(gaps[6..].iter().all(|g| *g == 60), "{gaps:?}");
    assert!(busy.len() < 67, "{} new ports", busy.len());
}

/// A user sending every read into a peer without a session (expired, or a new gateway key):
/// boringtun holds the packets and sends an initiation for the first, again 5 s after its
/// last; each `Handshake` or `Rebind` is a new initiation too (a `Rebind` loses what was in
/// flight: a new port, or a stream connected again). The gateway answers an initiation
/// `rtt` later (never: `None`; not the first: `lose_first`), and boringtun takes the answer
/// only to one of its last two initiations. The verdicts (seconds from the start) and when
/// the handshake completed.
fn held_for_a_handshake(
    rtt: Option<Duration>,
    lose_first: bool,
    reads: u32,
) -> (Vec<(f64, Verdict)>, Option<f64>) {
    sending_until_a_handshake(rtt, lose_first, reads, false)
}

/// The same with the session's keys still live (`live`): nothing is held, every packet the
/// user sends goes out (tx grows every read), and boringtun starts no handshake of its own.
fn sending_until_a_handshake(
    rtt: Option<Duration>,
    lose_first: bool,
    reads: u32,
    live: bool,
) -> (Vec<(f64, Verdict)>, Option<f64>) {
    let start = Instant::now();
    let mut h = Health::new(start);
    let (mut tx, mut rx, mut held) = (0u64, 0u64, 0u64);
    let mut sent = 0u32; // initiations so far
    let mut last_init: Option<Instant> = None;
    let mut in_flight: Vec<(Instant, u32)> = Vec::new();
    let (mut verdicts, mut done) = (Vec::new(), None);
    let mut initiate = |now: Instant,
                        tx: &mut u64,
                        in_flight: &mut Vec<(Instant, u32)>,
                        last: &mut Option<Instant>| {
        sent += 1;
        *tx += 148;
        *last = Some(now);
        if let Some(rtt) = rtt.filter(|_| !(lose_first && sent == 1)) {
            in_flight.push((now + rtt, sent));
        }
        sent
    };
    let mut newest = 0;
    for i in 1..=reads {
        let now = start + CHECK_EVERY * i;
        let secs = (now - start).as_secs_f64();
        if done.is_none() {
            let arrived = in_flight
                .iter()
                .any(|(at, n)| *at <= now && *n + 1 >= newest);
            in_flight.retain(|(at, _)| *at > now);
            if arrived {
                done = Some(secs);
                rx += 92;
            }
        }
        if done.is_some() {
            (tx, rx) = (tx + 100, rx + 100);
        } else if live {
            tx += 100;
        } else {
            held += 1;
            if last_init.is_none_or(|t| now - t >= Duration::from_secs(5)) {
                newest = initiate(now, &mut tx, &mut in_flight, &mut last_init);
            }
        }
        let v = h.observe(tx, rx, held, now);
        if v == Verdict::Rebind {
            in_flight.clear();
        }
        if v != Verdict::Fine {
            verdicts.push((secs, v));
            newest = initiate(now, &mut tx, &mut in_flight, &mut last_init);
        }
    }
    (verdicts, done)
}

#[test]
fn packets_held_for_an_unanswered_handshake_get_one_new_handshake_then_new_ports_slowly() {
    // A minute of sending into a peer without a session, nothing answering.
    let (v, _) = held_for_a_handshake(None, false, 600);
    assert_eq!(v.first().map(|v| v.1), Some(Verdict::Handshake), "{v:?}");
    assert!(v[0].0 <= 1.0, "{v:?}");
    // One new handshake, then new ports at the pace of an unanswered one: ESCALATE, then
    // RETRY doubling (it was a new handshake every 0.6 s and a new port every 3 s).
    assert!(v[1..].iter().all(|v| v.1 == Verdict::Rebind), "{v:?}");
    let gaps: Vec<u64> = v
        .windows(2)
        .map(|w| ((w[1].0 - w[0].0) * 10.0).round() as u64)
        .collect();
    assert_eq!(gaps, [20, 30, 60, 120, 240], "{v:?}");
    // Ten minutes of it: about one new port a minute at the end.
    let (v, _) = held_for_a_handshake(None, false, 6000);
    let last: Vec<f64> = v.iter().rev().take(3).map(|v| v.0).collect();
    assert!(
        last.windows(2).all(|w| (w[0] - w[1] - 60.0).abs() < 0.05),
        "{v:?}"
    );
    assert!(v.len() < 18, "{} verdicts: {v:?}", v.len());
}

#[test]
fn a_handshake_over_a_slow_path_completes_while_the_user_sends() {
    // A round trip of 1.5 s (the API server's port-forward) and the first initiation lost:
    // the forced handshake's answer arrives before anything replaces it. It never completed:
    // a new handshake every 0.6 s, each replacing the last two, and a new stream every 3 s.
    let (v, done) = held_for_a_handshake(Some(Duration::from_millis(1500)), true, 300);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].1, Verdict::Handshake);
    let done = done.expect("the handshake completes");
    assert!(
        (done - v[0].0 - 1.5).abs() < 0.15,
        "completed at {done} s: {v:?}"
    );
    // Its own first initiation answered after 1.5 s: done then, one new handshake at most.
    let (v, done) = held_for_a_handshake(Some(Duration::from_millis(1500)), false, 300);
    assert!(v.len() <= 1, "{v:?}");
    assert!(
        done.is_some_and(|d| d <= 1.6),
        "completed at {done:?}: {v:?}"
    );
}

#[test]
fn live_keys_unanswered_get_new_ports_without_a_handshake_every_stall() {
    // A minute of the user sending through live keys, nothing answering: one forced
    // handshake, then only new ports (each its own initiation), never two tries closer than
    // the new-port pacing. It was a handshake every 0.6 s between the new ports, for ever.
    let (v, done) = sending_until_a_handshake(None, false, 600, true);
    assert_eq!(done, None);
    assert_eq!(v.first().map(|v| v.1), Some(Verdict::Handshake), "{v:?}");
    assert!(v[0].0 <= 1.0, "{v:?}");
    assert!(v[1..].iter().all(|v| v.1 == Verdict::Rebind), "{v:?}");
    let tries: Vec<u64> = v.iter().map(|v| (v.0 * 10.0).round() as u64).collect();
    // The first new port 0.6 s after the handshake, the second 3 s later (the transport's cue
    // to fall back to a stream, within its 5 s), then doubling.
    assert_eq!(tries[..5], [6, 12, 42, 72, 132], "{v:?}");
    // A round trip of 1.5 s (the API server's port-forward): the forced handshake's answer
    // arrives before anything replaces it (a new port at 1.2 s drops it; the next one's own
    // initiation is answered). It completed only when the keys expired (~180 s).
    let (v, done) = sending_until_a_handshake(Some(Duration::from_millis(1500)), false, 600, true);
    let done = done.expect("the handshake completes");
    assert!(done <= 3.0, "completed at {done} s: {v:?}");
    assert!(v.len() <= 2, "{v:?}");
}

/// A replaced gateway peer that answers nothing for 3000 reads (5 minutes): the detector,
/// the sent counter and the read of the last new port.
fn five_minutes_unanswered() -> (Health, Instant, u64, u32) {
    let start = Instant::now();
    let mut h = Health::new(start);
    let at = |i: u32| start + CHECK_EVERY * i;
    assert_eq!(h.observe(1000, 1000, 0, at(1)), Verdict::Fine);
    h.peer_replaced(at(2));
    let (mut tx, mut last) = (148, 0);
    for i in 3..=3000u32 {
        match h.observe(tx, 0, 0, at(i)) {
            Verdict::Fine => {}
            Verdict::Rebind => (tx, last) = (tx + 148, i),
            Verdict::Handshake => tx += 148,
        }
    }
    (h, start, tx, last)
}

#[test]
fn registering_again_brings_back_the_first_pace() {
    let (mut h, start, tx, last) = five_minutes_unanswered();
    let at = |i: u32| start + CHECK_EVERY * i;
    // New ports a minute apart by now; the Secret registered again (the gateway had collected
    // the peer): the next new port comes 3 s after the last, not a minute.
    h.registered_again();
    let next = (3001..=4000u32).find(|i| h.observe(tx, 0, 0, at(*i)) == Verdict::Rebind);
    assert_eq!(
        next,
        Some((last + 30).max(3001)),
        "last new port at read {last}"
    );
}

#[test]
fn an_answer_after_the_outage_brings_back_the_quick_new_port() {
    let (mut h, start, mut tx, _) = five_minutes_unanswered();
    let at = |i: u32| start + CHECK_EVERY * i;
    // The gateway answers again, then its next key goes unanswered: the first new port comes
    // ESCALATE after the handshake, the next RETRY later, as at the first outage.
    assert_eq!(h.observe(tx, 92, 0, at(3001)), Verdict::Fine);
    h.peer_replaced(at(3002));
    tx = 148;
    let mut verdicts = Vec::new();
    for i in 3003..=3100u32 {
        let v = h.observe(tx, 0, 0, at(i));
        if v != Verdict::Fine {
            verdicts.push((i - 3000, v));
            tx += 148;
        }
    }
    assert_eq!(
        verdicts,
        [
            (7, Verdict::Handshake),
            (27, Verdict::Rebind),
            (57, Verdict::Rebind)
        ]
    );
}
