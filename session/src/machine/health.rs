//! Noticing a dead session at once (the gateway replica holding it gone, the laptop's address
//! changed, a wake-up after sleep) instead of waiting out WireGuard's timers (about 15 s): when
//! packets go into the tunnel and nothing comes back for a moment, send a new handshake
//! initiation on the current socket (any gateway replica answers it: they share the key); if
//! that goes unanswered too, start one from a fresh UDP port (a stale NAT or conntrack entry
//! for the old one swallows everything). Pure: the driver reads the device's byte counters
//! when asked.

use std::time::{Duration, Instant};

/// How often the counters are read while serving.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long sent packets may go unanswered before the session counts as dead. A round trip
/// through a healthy tunnel takes milliseconds (tens on a slow link); TCP's first SYN
/// retransmission comes after 1 s, so a dead session must be noticed well before that.
pub const STALL: Duration = Duration::from_millis(500);
/// A stall again within this long after a handshake on the current socket went unanswered:
/// the socket's path is what is dead, rebind.
pub const ESCALATE: Duration = Duration::from_secs(2);
/// At most one new port per this long; also the pace of new handshakes when the last one was
/// answered but the stall came back (one-way traffic such as a UDP stream nobody answers).
/// While new ports go unanswered the wait doubles from here up to [`RETRY_MAX`].
pub const RETRY: Duration = Duration::from_secs(3);
/// The longest wait between new ports while nothing answers (a gateway unreachable for
/// hours gets one every minute, not one every 3 s; WireGuard's own handshake retries on the
/// current port go on meanwhile).
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Sending after this long without sending starts a new streak: persistent keepalives (every
/// 25 s, unanswered by design) never add up to a stall, TCP's retransmissions (1 s, 2 s) do.
pub const IDLE: Duration = Duration::from_secs(5);

/// [`RETRY`] doubled for each of `rebinds` new ports after the first, at most [`RETRY_MAX`].
fn gap_after(rebinds: u32) -> Duration {
    let doublings = rebinds.saturating_sub(1).min(8);
    RETRY.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// What to do about the session after a read of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// A new handshake initiation on the current socket.
    Handshake,
    /// A new handshake from a fresh UDP port.
    Rebind,
}

/// The receive-stall detector.
#[derive(Debug, Clone)]
pub struct Health {
    pub next: Instant,
    last_tx: u64,
    last_rx: u64,
    /// Packets boringtun held for a handshake (no session), counted since the peer was added.
    last_held: u64,
    /// Packets were held since anything came back: no session (expired, or a new key), so
    /// the counters move only with initiations; else the keys are live and the user's
    /// packets go out.
    holding: bool,
    /// When sending without an answer was first seen, and in how many reads.
    unanswered_since: Option<Instant>,
    unanswered_reads: u32,
    last_sent: Option<Instant>,
    /// The last verdict other than `Fine`, and whether anything came back since.
    last_try: Option<Instant>,
    answered_since_try: bool,
    last_rebind: Option<Instant>,
    /// New ports since anything came back: each waits twice as long as the one before.
    rebinds_unanswered: u32,
    pub restarts: u32,
    /// Since when the last stall went unanswered (what a new session should carry again).
    pub stalled_since: Option<Instant>,
}

impl Health {
    pub fn new(now: Instant) -> Health {
        Health {
            next: now + CHECK_EVERY,
            last_tx: 0,
            last_rx: 0,
            last_held: 0,
            holding: false,
            unanswered_since: None,
            unanswered_reads: 0,
            last_sent: None,
            last_try: None,
            answered_since_try: false,
            last_rebind: None,
            rebinds_unanswered: 0,
            restarts: 0,
            stalled_since: None,
        }
    }

    /// The gateway peer was replaced (a reinstalled gateway's new key): its counters start
    /// from zero, and the one initiation it sends (later packets wait for the handshake, so
    /// the counters barely move) counts as a streak: unanswered for [`STALL`], another one.
    pub fn peer_replaced(&mut self, now: Instant) {
        self.registered_again();
        self.last_tx = 0;
        self.last_rx = 0;
        self.last_held = 0;
        self.last_sent = Some(now);
        self.unanswered_since = Some(now);
        self.unanswered_reads = 1;
    }

    /// The peer Secret was registered again (the gateway had collected it): the gateway
    /// knows this machine anew, so the next new port comes at the first pace again.
    pub fn registered_again(&mut self) {
        self.rebinds_unanswered = 0;
    }

    /// How long after the last new port another may follow: [`RETRY`], doubled for each new
    /// port since anything came back, at most [`RETRY_MAX`].
    fn rebind_gap(&self) -> Duration {
        gap_after(self.rebinds_unanswered)
    }

    /// The same for a stall (packets the user sends going unanswered), one doubling behind:
    /// the second new port comes [`RETRY`] after the first too, so that a stall lasting the
    /// transport's `fallback_after` (5 s) moves to a stream as soon as before; then the same
    /// doubling (it was a new port, or a stream closed and connected again, every 3 s for as
    /// long as the gateway stayed unreachable).
    fn stall_rebind_gap(&self) -> Duration {
        gap_after(self.rebinds_unanswered.saturating_sub(1))
    }

    /// A new port at `now`.
    fn rebind(&mut self, now: Instant) -> Verdict {
        self.last_rebind = Some(now);
        self.rebinds_unanswered += 1;
        Verdict::Rebind
    }

    /// The counters read at `now` (`held`: packets boringtun keeps for want of a session).
    /// A stall: packets were sent in at least two reads of one streak and none was answered
    /// for [`STALL`]. Held packets count as sending only while no new handshake is waiting
    /// for its answer: the user sending on meanwhile is no news, and a new handshake every
    /// stall would replace the one under way (boringtun takes an answer only to the last two),
    /// so on a path whose round trip is over a second none would ever complete; that wait
    /// is paced by [`Health::unanswered_try`] instead.
    #[must_use]
    pub fn observe(&mut self, tx: u64, rx: u64, held: u64, now: Instant) -> Verdict {
        self.next = now + CHECK_EVERY;
        if tx < self.last_tx || rx < self.last_rx || held < self.last_held {
            // Counters that went back: the gateway peer was replaced (a reinstalled gateway's
            // new key) and counts from zero again. The device applies the new peer after the
            // session saw the new key, so a read in between showed the old peer's answers and
            // cleared the streak `peer_replaced` began: begin it here again.
            self.peer_replaced(now);
        }
        let waiting = self.last_try.is_some() && !self.answered_since_try;
        self.holding |= held > self.last_held;
        let held_more = held > self.last_held && !waiting;
        let (sent, received) = (tx > self.last_tx || held_more, rx > self.last_rx);
        self.last_tx = tx;
        self.last_rx = rx;
        self.last_held = held;
        if received {
            self.unanswered_since = None;
            self.unanswered_reads = 0;
            self.answered_since_try = true;
            self.rebinds_unanswered = 0;
            self.holding = false;
            return Verdict::Fine;
        }
        if sent {
            if self.last_sent.is_some_and(|t| now - t >= IDLE) {
                self.unanswered_since = None;
                self.unanswered_reads = 0;
            }
            self.last_sent = Some(now);
            self.unanswered_since.get_or_insert(now);
            self.unanswered_reads += 1;
        }
        let stalled =
            self.unanswered_reads >= 2 && self.unanswered_since.is_some_and(|t| now - t >= STALL);
        if !stalled {
            return self.unanswered_try(now);
        }
        let since_try = self.last_try.map(|t| now - t);
        let verdict = match since_try {
            // Answered, yet stalled again soon: one-way traffic, or a path that answers only
            // handshakes; go slowly.
            Some(d) if self.answered_since_try && d < RETRY => return Verdict::Fine,
            // Unanswered since the last try, and the gap for a new port passed: a new port
            // (held packets: only soon after it; later the initiations set the pace, below).
            Some(d)
                if !self.answered_since_try
                    && (d <= ESCALATE || !self.holding)
                    && self
                        .last_rebind
                        .is_none_or(|t| now - t >= self.stall_rebind_gap()) =>
            {
                self.rebind(now)
            }
            // A new handshake unanswered for a while, and sending seen again (boringtun's own
            // initiations, 5 s apart, after the forced one): it sets the pace, not the stall.
            Some(d) if !self.answered_since_try && d > ESCALATE => return self.unanswered_try(now),
            // Unanswered since the last try, too soon for a new port: no new handshake either.
            // The user sending on (live keys, so nothing is held) is no news, and a handshake
            // every stall would replace the one under way (boringtun takes an answer only to
            // its last two), so on a path whose round trip is over a second none would ever
            // complete until the keys expired. Each new port brings its own initiation.
            Some(_) if !self.answered_since_try => return Verdict::Fine,
            _ => Verdict::Handshake,
        };
        self.last_try = Some(now);
        // The first unanswered packet went out up to one read before it was seen.
        self.stalled_since = self.unanswered_since.map(|t| t - CHECK_EVERY);
        self.answered_since_try = false;
        self.restarts += 1;
        self.unanswered_since = None;
        self.unanswered_reads = 0;
        verdict
    }

    /// A new handshake (or port) that nothing answered, with no new stall to show it: with no
    /// session (a new key, or expired) the counters move only with boringtun's initiations,
    /// seconds apart, and packets it holds for the handshake no longer count once one is
    /// forced ([`Health::observe`]). A new port
    /// after [`ESCALATE`] unanswered (after a new port, [`RETRY`] doubling up to
    /// [`RETRY_MAX`]); the transport then falls back to a stream when UDP stays silent.
    fn unanswered_try(&mut self, now: Instant) -> Verdict {
        let Some(t) = self.last_try.filter(|_| !self.answered_since_try) else {
            return Verdict::Fine;
        };
        let gap = self.rebind_gap();
        let wait = if self.last_rebind == Some(t) {
            gap
        } else {
            ESCALATE
        };
        if now - t < wait || self.last_rebind.is_some_and(|r| now - r < gap) {
            return Verdict::Fine;
        }
        self.last_try = Some(now);
        self.restarts += 1;
        // Its own initiation starts a new streak.
        self.unanswered_since = None;
        self.unanswered_reads = 0;
        self.rebind(now)
    }
}

#[cfg(test)]
mod tests;
