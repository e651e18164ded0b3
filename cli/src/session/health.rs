//! Noticing a dead session at once (the gateway pod replaced, the laptop's address changed, a
//! wake-up after sleep) instead of waiting out WireGuard's timers (about 15 s): when packets
//! go into the tunnel and nothing comes back for a moment, start a new handshake from a fresh
//! UDP port. Pure: the driver reads the device's byte counters when asked.

use std::time::{Duration, Instant};

/// How often the counters are read while serving.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long sent packets may go unanswered before the session counts as dead. A round trip
/// through a healthy tunnel takes milliseconds; TCP's first retransmission comes after 1 s.
pub const STALL: Duration = Duration::from_millis(1500);
/// At most one new handshake per this long while the stall lasts.
pub const RETRY: Duration = Duration::from_secs(3);
/// Sending after this long without sending starts a new streak: persistent keepalives (every
/// 25 s, unanswered by design) never add up to a stall, TCP's retransmissions (1 s, 2 s) do.
pub const IDLE: Duration = Duration::from_secs(5);

/// The receive-stall detector.
#[derive(Debug, Clone)]
pub struct Health {
    pub next: Instant,
    last_tx: u64,
    last_rx: u64,
    /// When sending without an answer was first seen, and in how many reads.
    unanswered_since: Option<Instant>,
    unanswered_reads: u32,
    last_sent: Option<Instant>,
    last_restart: Option<Instant>,
    pub restarts: u32,
}

impl Health {
    pub fn new(now: Instant) -> Health {
        Health {
            next: now + CHECK_EVERY,
            last_tx: 0,
            last_rx: 0,
            unanswered_since: None,
            unanswered_reads: 0,
            last_sent: None,
            last_restart: None,
            restarts: 0,
        }
    }

    /// The counters read at `now`; `true` when a new handshake should start: packets were
    /// sent in at least two reads of one streak and none was answered for [`STALL`].
    pub fn observe(&mut self, tx: u64, rx: u64, now: Instant) -> bool {
        self.next = now + CHECK_EVERY;
        let (sent, received) = (tx > self.last_tx, rx > self.last_rx);
        self.last_tx = tx;
        self.last_rx = rx;
        if received {
            self.unanswered_since = None;
            self.unanswered_reads = 0;
            return false;
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
        let stalled = self.unanswered_reads >= 2
            && self.unanswered_since.is_some_and(|t| now - t >= STALL)
            && self.last_restart.is_none_or(|t| now - t >= RETRY);
        if stalled {
            self.last_restart = Some(now);
            self.restarts += 1;
            self.unanswered_since = None;
            self.unanswered_reads = 0;
        }
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds (tx, rx) every CHECK_EVERY; returns the reads (indexes) that restarted.
    fn run(samples: &[(u64, u64)]) -> Vec<usize> {
        let start = Instant::now();
        let mut h = Health::new(start);
        samples
            .iter()
            .enumerate()
            .filter(|(i, (tx, rx))| h.observe(*tx, *rx, start + CHECK_EVERY * (*i as u32 + 1)))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_healthy_or_idle_tunnel_never_restarts() {
        // Traffic both ways.
        let busy: Vec<(u64, u64)> = (1..40).map(|i| (i * 100, i * 100)).collect();
        assert!(run(&busy).is_empty());
        // Idle with a persistent keepalive every 25 s that nobody answers.
        let mut idle = Vec::new();
        for i in 0..400u64 {
            idle.push((32 * (i / 100 + 1), 0));
        }
        assert!(run(&idle).is_empty());
    }

    #[test]
    fn sending_without_answers_restarts_after_the_stall_then_at_most_every_retry() {
        // Answers until read 4, then only sending (a curl loop into a dead session).
        let mut s: Vec<(u64, u64)> = (1..=4).map(|i| (i * 100, i * 100)).collect();
        for i in 5..=40 {
            s.push((i * 100, 400));
        }
        // Unanswered from read 4 (index 4): the stall (6 reads) ends at index 10, then every
        // RETRY (12 reads).
        assert_eq!(run(&s), [10, 22, 34]);
    }

    #[test]
    fn an_answer_clears_the_stall() {
        let mut s: Vec<(u64, u64)> = Vec::new();
        for i in 1..=40u64 {
            // Sending every read, an answer every fifth read (a slow but live server).
            s.push((i * 100, (i / 5) * 100));
        }
        assert!(run(&s).is_empty());
    }
}

#[cfg(test)]
mod retransmit_tests {
    use super::*;

    #[test]
    fn a_single_connection_retransmitting_into_a_dead_session_restarts_it() {
        // One TCP SYN at 0 s, retransmitted at 1 s and 3 s; nothing comes back.
        let start = Instant::now();
        let mut h = Health::new(start);
        let mut tx = 0;
        let mut restarted = None;
        for i in 1..=16u32 {
            let now = start + CHECK_EVERY * i;
            if [1, 5, 13].contains(&i) {
                tx += 60;
            }
            if h.observe(tx, 0, now) && restarted.is_none() {
                restarted = Some((now - start).as_millis());
            }
        }
        assert_eq!(restarted, Some(1750));
    }
}
