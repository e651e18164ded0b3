//! Whether the node coalesces the WireGuard datagrams it forwards to the gateway pod
//! (docs/performance.md): every few seconds the device's UDP receive counters are read, and a
//! window of at least [`LOAD_WINDOW_DATAGRAMS`] datagrams is judged
//! ([`kwg_wg::io::stats::judge_receive`]). One datagram per received message under load is
//! logged at most once an hour with the fix, and each change of the verdict is published in
//! the gateway info (`udpReceive`) for `kwg doctor`, and in `/metrics`.

use chrono::{DateTime, Utc};
use kwg_contract::UdpReceive;
use kwg_wg::device::DeviceHandle;
use kwg_wg::io::stats::{EdgeCount, LOAD_WINDOW_DATAGRAMS, judge_receive};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the counters are read.
const SAMPLE: Duration = Duration::from_secs(2);
/// A window that has not reached [`LOAD_WINDOW_DATAGRAMS`] in this long was not load: start
/// again (a trickle over hours says nothing about a transfer).
const MAX_WINDOW: Duration = Duration::from_secs(30);
/// The warning is repeated at most this often.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// The page the warning and `kwg doctor` point to.
pub const DOCS: &str = "docs/performance.md";

/// What one reading asks the shell to do.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The window just judged, if one was.
    pub judged: Option<UdpReceive>,
    /// The verdict changed (or is the first): publish `judged`.
    pub publish: bool,
    /// Log the one-per-frame warning now.
    pub warn: bool,
}

/// The receive watch's state (pure: counters and time are passed in).
#[derive(Debug)]
pub struct ReceiveWatch {
    start: EdgeCount,
    started: Instant,
    warned: Option<Instant>,
    published: Option<bool>,
}

impl ReceiveWatch {
    pub fn new(count: EdgeCount, now: Instant) -> ReceiveWatch {
        ReceiveWatch {
            start: count,
            started: now,
            warned: None,
            published: None,
        }
    }

    /// One reading of the GRO edge (`IoStats::udp_recv_gro`) at `now` (`wall` for the
    /// published time).
    pub fn observe(&mut self, count: EdgeCount, now: Instant, wall: DateTime<Utc>) -> Outcome {
        let went_back = count.calls < self.start.calls || count.segments < self.start.segments;
        let Some(pattern) = judge_receive(self.start, count, LOAD_WINDOW_DATAGRAMS) else {
            if went_back || now.duration_since(self.started) >= MAX_WINDOW {
                *self = ReceiveWatch {
                    start: count,
                    started: now,
                    ..*self
                };
            }
            return Outcome::default();
        };
        let one_per_frame = pattern.one_per_frame();
        let observed = UdpReceive {
            one_per_frame,
            messages: count.calls - self.start.calls,
            datagrams: count.segments - self.start.segments,
            observed_at: wall,
        };
        self.start = count;
        self.started = now;
        let warn = one_per_frame
            && self
                .warned
                .is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if warn {
            self.warned = Some(now);
        }
        let publish = self.published != Some(one_per_frame);
        self.published = Some(one_per_frame);
        Outcome {
            judged: Some(observed),
            publish,
            warn,
        }
    }
}

/// Reads the device's counters every [`SAMPLE`] until `token`.
pub async fn run(
    device: DeviceHandle,
    verdict: tokio::sync::watch::Sender<Option<UdpReceive>>,
    token: CancellationToken,
) {
    let gro = |d: &DeviceHandle| d.io_stats().udp_recv_gro;
    let mut watch = ReceiveWatch::new(gro(&device), Instant::now());
    let mut tick = tokio::time::interval(SAMPLE);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let out = watch.observe(gro(&device), Instant::now(), Utc::now());
        let Some(seen) = out.judged else {
            continue;
        };
        if out.warn {
            tracing::warn!(
                datagrams = seen.datagrams,
                messages = seen.messages,
                docs = DOCS,
                "UDP datagrams arrive one per frame under load: the node does not coalesce forwarded UDP; on the gateway's node run `ethtool -K <nic> rx-udp-gro-forwarding on` (see docs/performance.md)"
            );
        } else if out.publish && !seen.one_per_frame {
            tracing::info!(
                per_message = format!("{:.1}", seen.per_message()),
                "UDP datagrams arrive coalesced under load (the node's GRO forwarding works)"
            );
        }
        if out.publish {
            verdict.send_replace(Some(seen));
        }
    }
}

#[cfg(test)]
mod tests {
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
}
