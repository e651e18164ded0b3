use super::*;

fn c(calls: u64, segments: u64) -> EdgeCount {
    EdgeCount { calls, segments }
}

fn wall() -> DateTime<Utc> {
    "2026-12-07T17:00:00Z".parse().unwrap()
}

#[test]
fn one_per_frame_is_published_and_warned_once_an_hour() {
    let t0 = Instant::now();
    let mut w = ReceiveWatch::new(c(0, 0), t0);
    let out = w.observe(c(25_000, 25_100), t0 + SAMPLE, wall());
    assert!(out.warn && out.publish);
    let p = out.judged.unwrap();
    assert!(p.one_per_frame);
    assert_eq!((p.messages, p.datagrams), (25_000, 25_100));
    // The same verdict again: neither published nor warned within the hour.
    let out = w.observe(c(50_000, 50_100), t0 + 2 * SAMPLE, wall());
    assert!(!out.warn && !out.publish, "{out:?}");
    // An hour later, still one per frame: warned again, not republished.
    let later = t0 + WARN_EVERY + 3 * SAMPLE;
    let out = w.observe(c(75_000, 75_100), later, wall());
    assert!(out.warn && !out.publish, "{out:?}");
}

#[test]
fn coalescing_is_published_without_a_warning() {
    let t0 = Instant::now();
    let mut w = ReceiveWatch::new(c(0, 0), t0);
    let out = w.observe(c(25_000, 25_000), t0 + SAMPLE, wall());
    assert!(out.warn);
    // The node was tuned: ~40 per message now; the change is published.
    let out = w.observe(c(25_500, 45_000), t0 + 2 * SAMPLE, wall());
    assert!(!out.warn && out.publish, "{out:?}");
    let p = out.judged.unwrap();
    assert!(!p.one_per_frame);
    assert_eq!(p.per_message(), 40.0);
}

#[test]
fn a_trickle_is_never_judged() {
    let t0 = Instant::now();
    let mut w = ReceiveWatch::new(c(0, 0), t0);
    // 1000 datagrams a minute, one per message, for an hour: never a window under load.
    for m in 1..=60u64 {
        let out = w.observe(
            c(m * 1000, m * 1000),
            t0 + Duration::from_secs(60 * m),
            wall(),
        );
        assert_eq!(out, Outcome::default(), "minute {m}");
    }
}

#[test]
fn a_rebound_socket_starts_a_new_window() {
    let t0 = Instant::now();
    let mut w = ReceiveWatch::new(c(90_000, 90_000), t0);
    assert_eq!(
        w.observe(c(10, 10), t0 + SAMPLE, wall()),
        Outcome::default()
    );
    let out = w.observe(c(500, 20_010), t0 + 2 * SAMPLE, wall());
    assert_eq!(out.judged.map(|p| p.datagrams), Some(20_000));
}
