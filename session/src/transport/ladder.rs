//! The path ladder (pure, time passed in): which way WireGuard's datagrams go to the gateway.
//!
//! Rungs, best first: UDP to the advertised endpoint, TCP to the same endpoint, the API
//! server's `pods/portforward` to a gateway pod. In mode `auto` the join starts on UDP and
//! opens the TCP stream at once; if no handshake completed over UDP within
//! [`Timings::switch_after`], the handshake moves to the stream (and on to the API server when
//! TCP cannot connect). Joined on a stream, it probes UDP every [`Timings::probe_every`] with a
//! handshake initiation sent over UDP while traffic stays on the stream; an answer over UDP
//! moves the tunnel up (same session, no packet dropped) and the stream closes a little later.
//! A broken stream is reconnected with back-off. Forced modes use one rung only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Mode, Rung};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Without a handshake over UDP by then, the handshake moves to the stream.
    pub switch_after: Duration,
    /// How often a better path is probed while on a stream.
    pub probe_every: Duration,
    /// How long a probe waits for its answer.
    pub probe_wait: Duration,
    /// A stream's first reconnection delay, doubled up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// After moving up, the old stream stays open this long for packets in flight.
    pub close_after: Duration,
    /// A session on UDP stalled this long falls back to a stream.
    pub fallback_after: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            switch_after: Duration::from_millis(1000),
            probe_every: Duration::from_secs(60),
            probe_wait: Duration::from_secs(3),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            close_after: Duration::from_secs(5),
            fallback_after: Duration::from_secs(5),
        }
    }
}

/// What the I/O side does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Open a stream of this rung (answer with `connected` or `connect_failed`).
    Connect(Rung),
    /// Pin the gateway peer to this rung; `restart`: start a new handshake on it at once.
    Use { rung: Rung, restart: bool },
    /// A fresh UDP source port and a new handshake (a stale NAT/conntrack entry).
    Rebind,
    /// A handshake initiation over this rung, the peer staying where it is.
    Probe(Rung),
    /// Close the open stream.
    Close,
}

/// Why a rung failed, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stream {
    None,
    Connecting(Rung),
    Up(Rung),
    Retry { rung: Rung, at: Instant },
}

#[derive(Debug)]
pub struct Ladder {
    mode: Mode,
    t: Timings,
    started: Instant,
    /// Where the peer is pinned.
    path: Rung,
    /// The rung the last handshake completed on.
    joined: Option<Rung>,
    stream: Stream,
    failures: BTreeMap<Rung, Failure>,
    next_probe: Option<Instant>,
    probe_sent: Option<Instant>,
    close_at: Option<Instant>,
    /// Since when the session on UDP stalls (reset by a handshake).
    udp_stall: Option<Instant>,
    /// The last reconnection delay (reset once a stream is up).
    backoff: Option<Duration>,
    /// When the peer was last pinned with a new handshake.
    restarted: Option<Instant>,
    steps: std::collections::VecDeque<Step>,
}

impl Ladder {
    pub fn new(mode: Mode, t: Timings, now: Instant) -> Ladder {
        let first = mode.forced().unwrap_or(Rung::Udp);
        let mut l = Ladder {
            mode,
            t,
            started: now,
            path: first,
            joined: None,
            stream: Stream::None,
            failures: BTreeMap::new(),
            next_probe: None,
            probe_sent: None,
            close_at: None,
            restarted: None,
            backoff: None,
            udp_stall: None,
            steps: Default::default(),
        };
        match first {
            Rung::Udp => {
                l.steps.push_back(Step::Use {
                    rung: Rung::Udp,
                    restart: false,
                });
                if mode == Mode::Auto {
                    l.connect(Rung::Tcp);
                }
            }
            stream => l.connect(stream),
        }
        l
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The rung in use, once a handshake completed on it.
    pub fn path(&self) -> Option<Rung> {
        self.joined.filter(|j| *j == self.path)
    }

    /// Where the peer is pinned now (handshake done or not).
    pub fn pinned(&self) -> Rung {
        self.path
    }

    /// Better rungs that failed, best first.
    pub fn failures(&self) -> impl Iterator<Item = (Rung, &Failure)> {
        let path = self.path();
        self.failures
            .iter()
            .filter(move |(r, _)| path.is_none_or(|p| **r < p))
            .map(|(r, f)| (*r, f))
    }

    #[must_use]
    pub fn next_probe(&self) -> Option<Instant> {
        self.next_probe
    }

    /// The next step for the driver: a dropped step is a connection never made.
    #[must_use]
    pub fn poll(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    /// When [`Ladder::tick`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let switch = (self.mode == Mode::Auto && self.joined.is_none())
            .then_some(self.started + self.t.switch_after);
        let retry = match self.stream {
            Stream::Retry { at, .. } => Some(at),
            _ => None,
        };
        let probe_done = self.probe_sent.map(|s| s + self.t.probe_wait);
        [switch, retry, self.next_probe, probe_done, self.close_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn connect(&mut self, rung: Rung) {
        self.stream = Stream::Connecting(rung);
        self.steps.push_back(Step::Connect(rung));
    }

    fn fail(&mut self, rung: Rung, reason: impl Into<String>, now: Instant) {
        let reason = reason.into();
        tracing::info!(path = %rung, %reason, "transport path failed");
        self.failures.insert(rung, Failure { reason, at: now });
    }

    fn stream_rung(&self) -> Option<Rung> {
        match self.stream {
            Stream::Up(r) => Some(r),
            _ => None,
        }
    }

    fn use_rung(&mut self, rung: Rung, restart: bool, now: Instant) {
        self.path = rung;
        if restart {
            self.restarted = Some(now);
        }
        self.steps.push_back(Step::Use { rung, restart });
    }

    /// UDP did not answer the join's handshake in time: said once (a stall may have said it
    /// already, and a failure is dropped once UDP answers).
    fn udp_silent(&mut self, now: Instant) {
        if self.path == Rung::Udp && !self.failures.contains_key(&Rung::Udp) {
            let ms = self.t.switch_after.as_millis();
            let reason = format!("no handshake answer over UDP within {ms} ms");
            self.fail(Rung::Udp, reason, now);
        }
    }

    /// The rung a stream is being opened for, whose result is awaited.
    pub fn connecting(&self) -> Option<Rung> {
        match self.stream {
            Stream::Connecting(r) => Some(r),
            _ => None,
        }
    }

    /// A stream of `rung` is open. Ignored unless that is the rung being opened (a result of
    /// an attempt the ladder moved on from).
    pub fn connected(&mut self, rung: Rung, now: Instant) {
        if self.connecting() != Some(rung) {
            tracing::debug!(path = %rung, "stream opened for an attempt moved on from");
            return;
        }
        self.stream = Stream::Up(rung);
        self.backoff = None;
        match self.joined {
            // Joined on UDP meanwhile: the stream is not needed.
            Some(Rung::Udp) if self.path == Rung::Udp => {
                self.stream = Stream::None;
                self.steps.push_back(Step::Close);
            }
            // A reconnection of the stream in use: the session continues on it.
            Some(j) if j == rung || self.path == rung => self.use_rung(rung, false, now),
            _ if self.mode != Mode::Auto => self.use_rung(rung, true, now),
            _ if now >= self.started + self.t.switch_after => {
                self.udp_silent(now);
                self.use_rung(rung, true, now);
            }
            _ => {}
        }
    }

    /// A stream of `rung` could not be opened. Ignored unless that is the rung being opened.
    pub fn connect_failed(&mut self, rung: Rung, reason: &str, now: Instant) {
        if self.connecting() != Some(rung) {
            return;
        }
        if self.path() == Some(Rung::Udp) {
            // A spare stream for a join that UDP carried: not needed.
            self.stream = Stream::None;
            return;
        }
        self.fail(rung, reason, now);
        let next = rung.next_stream().filter(|_| self.mode == Mode::Auto);
        match next {
            Some(n) => self.connect(n),
            // Auto starts over from the best stream rung, and asks UDP at once when the tunnel
            // was on a stream that is gone: UDP may answer again (the next probe is up to
            // `probe_every` away).
            _ if self.mode == Mode::Auto => {
                self.retry(Rung::Tcp, now);
                if self.path != Rung::Udp && self.probe_sent.is_none() {
                    self.probe_sent = Some(now);
                    self.steps.push_back(Step::Probe(Rung::Udp));
                }
            }
            _ => self.retry(rung, now),
        }
    }

    fn retry(&mut self, rung: Rung, now: Instant) {
        let backoff = self
            .backoff
            .map_or(self.t.backoff, |b| (b * 2).min(self.t.max_backoff));
        self.backoff = Some(backoff);
        self.stream = Stream::Retry {
            rung,
            at: now + backoff,
        };
    }

    /// The open stream ended.
    pub fn stream_closed(&mut self, reason: &str, now: Instant) {
        let Some(rung) = self.stream_rung() else {
            return;
        };
        if self.path != rung {
            self.stream = Stream::None;
            return;
        }
        self.fail(rung, format!("the stream broke: {reason}"), now);
        // The best stream rung is tried again first, unless it failed within the last probe
        // interval (the next probe tries UDP, and a stream above this one, again).
        let tcp_failed_lately = self
            .failures
            .get(&Rung::Tcp)
            .is_some_and(|f| now < f.at + self.t.probe_every);
        let again = match self.mode {
            Mode::Auto if rung == Rung::ApiServer && tcp_failed_lately => rung,
            Mode::Auto => Rung::Tcp,
            _ => rung,
        };
        self.connect(again);
    }

    /// A handshake with the gateway completed while the peer was pinned to the current path.
    pub fn handshake(&mut self, now: Instant) {
        self.udp_stall = None;
        if self.joined == Some(self.path) {
            return;
        }
        tracing::info!(path = %self.path, "transport path in use");
        self.joined = Some(self.path);
        self.failures.remove(&self.path);
        match self.path {
            Rung::Udp => {
                // A stream still connecting is closed by `connected`.
                match self.stream {
                    Stream::Up(_) => {
                        self.stream = Stream::None;
                        self.steps.push_back(Step::Close);
                    }
                    Stream::Retry { .. } => self.stream = Stream::None,
                    Stream::Connecting(_) | Stream::None => {}
                }
                self.next_probe = None;
            }
            _ if self.mode == Mode::Auto => self.next_probe = Some(now + self.t.probe_every),
            _ => {}
        }
    }

    /// No handshake in time, or the session stalled (the session core's rebind).
    pub fn stall(&mut self, now: Instant) {
        let first = self.joined.is_none();
        match (self.path, self.stream_rung()) {
            (Rung::Udp, Some(s)) if self.mode == Mode::Auto => {
                self.fail(Rung::Udp, "no handshake answer over UDP", now);
                self.use_rung(s, true, now);
            }
            (Rung::Udp, _) => {
                // A gateway restarting answers UDP again within seconds: only a stall that
                // lasts falls back to a stream.
                let since = *self.udp_stall.get_or_insert(now);
                if self.mode == Mode::Auto && !first && now >= since + self.t.fallback_after {
                    self.fail(Rung::Udp, "packets over UDP went unanswered", now);
                    // The stream takes over when it connects, unless UDP answers first.
                    self.joined = None;
                    if self.stream == Stream::None {
                        self.connect(Rung::Tcp);
                    }
                }
                self.steps.push_back(Step::Rebind);
            }
            // The handshake on the stream just started: give it time.
            (_, Some(_))
                if first
                    && self
                        .restarted
                        .is_some_and(|t| now < t + self.t.switch_after) => {}
            (rung, Some(_)) if first => {
                self.fail(rung, format!("no handshake answer over {rung}"), now);
                self.use_rung(rung, true, now);
            }
            (rung, Some(_)) => {
                self.fail(rung, "packets over the stream went unanswered", now);
                self.stream = Stream::None;
                self.steps.push_back(Step::Close);
                self.connect(rung);
            }
            (_, None) => {}
        }
    }

    /// An authenticated packet came over `rung` while pinned elsewhere: the probe's answer.
    pub fn heard(&mut self, rung: Rung, now: Instant) {
        if self.mode != Mode::Auto || rung >= self.path || self.probe_sent.is_none() {
            return;
        }
        tracing::info!(from = %self.path, to = %rung, "a better path answered: moving up");
        self.probe_sent = None;
        self.next_probe = None;
        self.failures.remove(&rung);
        self.use_rung(rung, false, now);
        self.joined = Some(rung);
        self.close_at = Some(now + self.t.close_after);
    }

    /// Timers: the switch to the stream, reconnections, probes, closing a stream moved from.
    pub fn tick(&mut self, now: Instant) {
        if self.mode == Mode::Auto
            && self.joined.is_none()
            && self.path == Rung::Udp
            && now >= self.started + self.t.switch_after
        {
            self.udp_silent(now);
            if let Some(s) = self.stream_rung() {
                self.use_rung(s, true, now);
            }
        }
        if let Stream::Retry { rung, at, .. } = self.stream
            && now >= at
        {
            self.steps.push_back(Step::Connect(rung));
            self.stream = Stream::Connecting(rung);
        }
        if let Some(sent) = self.probe_sent
            && now >= sent + self.t.probe_wait
        {
            self.probe_sent = None;
            let secs = self.t.probe_wait.as_secs();
            self.fail(
                Rung::Udp,
                format!("no answer to a handshake over UDP within {secs} s"),
                now,
            );
        }
        if self.next_probe.is_some_and(|t| now >= t) && self.path != Rung::Udp {
            self.next_probe = Some(now + self.t.probe_every);
            self.probe_sent = Some(now);
            self.steps.push_back(Step::Probe(Rung::Udp));
        }
        if self.close_at.is_some_and(|t| now >= t) {
            self.close_at = None;
            if self.stream_rung().is_some_and(|s| s != self.path) {
                self.stream = Stream::None;
                self.steps.push_back(Step::Close);
            }
        }
    }
}
