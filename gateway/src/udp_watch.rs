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
mod tests;
