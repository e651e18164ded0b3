//! The ladder driven through joins, fallbacks, probes and broken streams on a fake clock.

use std::time::{Duration, Instant};

use super::ladder::{Ladder, Step, Timings};
use super::{Mode, Rung};

fn steps(l: &mut Ladder) -> Vec<Step> {
    std::iter::from_fn(|| l.poll()).collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn use_(rung: Rung, restart: bool) -> Step {
    Step::Use { rung, restart }
}

fn failed(l: &Ladder) -> Vec<(Rung, String)> {
    l.failures().map(|(r, f)| (r, f.reason.clone())).collect()
}

#[test]
fn auto_keeps_udp_when_it_answers_and_closes_the_spare_stream() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    assert_eq!(
        steps(&mut l),
        [use_(Rung::Udp, false), Step::Connect(Rung::Tcp)]
    );
    l.handshake(t0 + secs(0.01));
    assert_eq!(l.path(), Some(Rung::Udp));
    l.connected(Rung::Tcp, t0 + secs(0.02));
    assert_eq!(steps(&mut l), [Step::Close]);
    l.tick(t0 + secs(120.0));
    assert_eq!(steps(&mut l), [], "no probe on the best path");
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn auto_moves_to_tcp_when_udp_is_silent_then_back_up_when_a_probe_is_answered() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.connected(Rung::Tcp, t0 + secs(0.005));
    assert_eq!(steps(&mut l), [], "UDP still has its second");
    assert_eq!(l.poll_timeout(), Some(t0 + secs(1.0)));
    l.tick(t0 + secs(1.0));
    assert_eq!(steps(&mut l), [use_(Rung::Tcp, true)]);
    assert_eq!(l.path(), None, "no handshake on TCP yet");
    l.handshake(t0 + secs(1.01));
    assert_eq!(l.path(), Some(Rung::Tcp));
    assert_eq!(
        failed(&l),
        [(
            Rung::Udp,
            "no handshake answer over UDP within 1000 ms".into()
        )]
    );
    assert_eq!(l.next_probe(), Some(t0 + secs(61.01)));

    // A minute later: UDP is probed while traffic stays on TCP; nobody answers.
    l.tick(t0 + secs(61.01));
    assert_eq!(steps(&mut l), [Step::Probe(Rung::Udp)]);
    l.tick(t0 + secs(64.01));
    assert_eq!(
        failed(&l),
        [(
            Rung::Udp,
            "no answer to a handshake over UDP within 3 s".into()
        )]
    );
    assert_eq!(l.path(), Some(Rung::Tcp));

    // The next probe is answered over UDP: up without a new handshake, TCP closed 5 s later.
    l.tick(t0 + secs(121.01));
    assert_eq!(steps(&mut l), [Step::Probe(Rung::Udp)]);
    l.heard(Rung::Udp, t0 + secs(121.02));
    assert_eq!(steps(&mut l), [use_(Rung::Udp, false)]);
    assert_eq!(l.path(), Some(Rung::Udp));
    assert_eq!(failed(&l), []);
    l.tick(t0 + secs(124.0));
    assert_eq!(steps(&mut l), []);
    l.tick(t0 + secs(126.02));
    assert_eq!(steps(&mut l), [Step::Close]);
    l.stream_closed("closed", t0 + secs(126.03));
    assert_eq!(
        steps(&mut l),
        [],
        "a stream closed on purpose is not reconnected"
    );
}

#[test]
fn a_slow_tcp_connect_takes_over_as_soon_as_it_is_up() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.tick(t0 + secs(1.5));
    assert_eq!(steps(&mut l), []);
    l.connected(Rung::Tcp, t0 + secs(2.0));
    assert_eq!(steps(&mut l), [use_(Rung::Tcp, true)]);
    assert_eq!(
        failed(&l),
        [(
            Rung::Udp,
            "no handshake answer over UDP within 1000 ms".into()
        )]
    );
}

#[test]
fn a_broken_stream_is_reconnected_and_the_session_continues_on_it() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.connected(Rung::Tcp, t0);
    l.tick(t0 + secs(1.0));
    l.handshake(t0 + secs(1.1));
    steps(&mut l);
    l.stream_closed("reset by peer", t0 + secs(10.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::Tcp)]);
    l.connected(Rung::Tcp, t0 + secs(10.1));
    assert_eq!(steps(&mut l), [use_(Rung::Tcp, false)]);
    assert_eq!(l.path(), Some(Rung::Tcp));
}

#[test]
fn tcp_refused_falls_to_the_api_server_and_then_starts_over_with_back_off() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.connect_failed(Rung::Tcp, "connection refused", t0 + secs(0.01));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::ApiServer)]);
    l.connect_failed(Rung::ApiServer, "forbidden", t0 + secs(0.1));
    assert_eq!(steps(&mut l), []);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(0.35)));
    l.tick(t0 + secs(0.35));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::Tcp)]);
    l.connect_failed(Rung::Tcp, "connection refused", t0 + secs(0.4));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::ApiServer)]);
    l.connect_failed(Rung::ApiServer, "forbidden", t0 + secs(0.5));
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + secs(1.0)),
        "the UDP switch time comes first"
    );
    l.tick(t0 + secs(1.0));
    assert_eq!(l.poll_timeout(), Some(t0 + secs(1.0)), "back-off doubled");
    let reasons = failed(&l);
    assert_eq!(
        reasons.iter().map(|f| f.0).collect::<Vec<_>>(),
        [Rung::Udp, Rung::Tcp, Rung::ApiServer],
        "UDP's silence counts without any stream to move to"
    );
    // UDP finally answers: joined on UDP, nothing more to do.
    l.handshake(t0 + secs(1.2));
    assert_eq!(l.path(), Some(Rung::Udp));
    assert_eq!(failed(&l), [], "worse paths are not reported as failures");
}

#[test]
fn forced_tcp_never_uses_udp_nor_probes_it() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Tcp, Timings::default(), t0);
    assert_eq!(steps(&mut l), [Step::Connect(Rung::Tcp)]);
    l.connected(Rung::Tcp, t0 + secs(0.01));
    assert_eq!(steps(&mut l), [use_(Rung::Tcp, true)]);
    l.handshake(t0 + secs(0.02));
    l.tick(t0 + secs(600.0));
    assert_eq!(steps(&mut l), []);
    l.heard(Rung::Udp, t0 + secs(600.0));
    assert_eq!(steps(&mut l), []);
    l.stream_closed("reset", t0 + secs(601.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::Tcp)]);
    l.connect_failed(Rung::Tcp, "refused", t0 + secs(601.0));
    l.tick(t0 + secs(601.25));
    assert_eq!(
        steps(&mut l),
        [Step::Connect(Rung::Tcp)],
        "retried, never another rung"
    );
}

#[test]
fn forced_udp_rebinds_on_a_stall_as_before() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Udp, Timings::default(), t0);
    assert_eq!(steps(&mut l), [use_(Rung::Udp, false)]);
    l.stall(t0 + secs(1.0));
    assert_eq!(steps(&mut l), [Step::Rebind]);
    l.tick(t0 + secs(5.0));
    assert_eq!(steps(&mut l), []);
}

#[test]
fn a_stall_while_serving_on_udp_brings_up_tcp_only_when_it_lasts() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.handshake(t0 + secs(0.01));
    l.connected(Rung::Tcp, t0 + secs(0.02));
    steps(&mut l);
    // A gateway restart: a fresh port and a handshake, which completes.
    l.stall(t0 + secs(300.0));
    assert_eq!(steps(&mut l), [Step::Rebind]);
    l.handshake(t0 + secs(302.0));
    l.stall(t0 + secs(400.0));
    l.stall(t0 + secs(402.0));
    assert_eq!(steps(&mut l), [Step::Rebind, Step::Rebind]);
    assert_eq!(l.path(), Some(Rung::Udp));
    // UDP stays silent: TCP comes up and takes over.
    l.stall(t0 + secs(405.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::Tcp), Step::Rebind]);
    l.connected(Rung::Tcp, t0 + secs(405.1));
    assert_eq!(steps(&mut l), [use_(Rung::Tcp, true)]);
    l.handshake(t0 + secs(405.2));
    assert_eq!(l.path(), Some(Rung::Tcp));
    assert_eq!(
        failed(&l),
        [(Rung::Udp, "packets over UDP went unanswered".into())]
    );
}

#[test]
fn a_broken_api_server_stream_comes_back_over_the_api_server_when_tcp_still_fails() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.connect_failed(Rung::Tcp, "timed out", t0 + secs(2.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::ApiServer)]);
    l.connected(Rung::ApiServer, t0 + secs(2.1));
    assert_eq!(steps(&mut l), [use_(Rung::ApiServer, true)]);
    l.handshake(t0 + secs(2.2));
    // The gateway pod goes: TCP failed a moment ago, so the API server again at once.
    l.stream_closed("closed by the other side", t0 + secs(30.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::ApiServer)]);
    l.connected(Rung::ApiServer, t0 + secs(30.1));
    assert_eq!(steps(&mut l), [use_(Rung::ApiServer, false)]);
    // Later, TCP is tried first (it may work now), then the API server again.
    l.stream_closed("closed by the other side", t0 + secs(70.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::Tcp)]);
    l.connect_failed(Rung::Tcp, "timed out", t0 + secs(72.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::ApiServer)]);
    l.connected(Rung::ApiServer, t0 + secs(72.1));
    assert_eq!(steps(&mut l), [use_(Rung::ApiServer, false)]);
    assert_eq!(l.path(), Some(Rung::ApiServer));
}

#[test]
fn a_stream_that_cannot_come_back_asks_udp_at_once() {
    // Joined over the API server (UDP silent, TCP refused); then the API server goes too.
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.connect_failed(Rung::Tcp, "refused", t0 + secs(0.1));
    l.connected(Rung::ApiServer, t0 + secs(0.2));
    l.tick(t0 + secs(1.0));
    l.handshake(t0 + secs(1.1));
    steps(&mut l);
    assert_eq!(l.path(), Some(Rung::ApiServer));
    l.stream_closed("closed by the other side", t0 + secs(5.0));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::ApiServer)]);
    l.connect_failed(Rung::ApiServer, "unreachable", t0 + secs(5.1));
    // Not only TCP again after the back-off: UDP now, not at the probe a minute after joining.
    assert_eq!(steps(&mut l), [Step::Probe(Rung::Udp)]);
    l.heard(Rung::Udp, t0 + secs(5.2));
    assert_eq!(steps(&mut l), [use_(Rung::Udp, false)]);
    assert_eq!(l.path(), Some(Rung::Udp));
}

#[test]
fn a_connect_result_for_a_rung_no_longer_opened_is_ignored() {
    let t0 = Instant::now();
    let mut l = Ladder::new(Mode::Auto, Timings::default(), t0);
    steps(&mut l);
    l.connect_failed(Rung::Tcp, "refused", t0 + secs(0.01));
    assert_eq!(steps(&mut l), [Step::Connect(Rung::ApiServer)]);
    // The TCP attempt's late success, then a late failure: neither counts.
    l.connected(Rung::Tcp, t0 + secs(0.02));
    l.connect_failed(Rung::Tcp, "late", t0 + secs(0.03));
    assert_eq!(l.connecting(), Some(Rung::ApiServer));
    assert_eq!(failed(&l), [(Rung::Tcp, "refused".into())]);
    l.tick(t0 + secs(1.0));
    assert_eq!(steps(&mut l), [], "no stream is up to switch to");
    l.connected(Rung::ApiServer, t0 + secs(1.1));
    assert_eq!(steps(&mut l), [use_(Rung::ApiServer, true)]);
    assert_eq!(l.connecting(), None);
}
