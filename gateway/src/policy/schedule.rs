//! When reach by RBAC asks the API server (pure; time passed in): the periodic safety
//! re-review of every known (owner, namespace) answer spread evenly over its period instead of
//! all at once (and stretched to stay within its share of the rate limit), and a global rate limit on reviews (a token bucket) so that a burst (a
//! ClusterRole change, a thousand peers joining) is paced rather than sent at once.

use super::grants::Question;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// The share of the rate limit the periodic re-review may take: the rest stays free for what
/// a change asks (and new peers), so those never wait behind re-reviews.
pub const REREVIEW_SHARE: f64 = 0.5;

/// The periodic re-review: each question is due once per period, at a phase of its own (a
/// stable hash of it), so N known answers cost N / period reviews per second, evenly. The
/// period is the configured one, or longer when N answers would take more than `per_second`
/// reviews a second: N / `per_second` seconds (the re-review never outgrows its share of the
/// rate limit, however many answers there are).
#[derive(Debug, Clone)]
pub struct Spread {
    period: Duration,
    per_second: f64,
    /// The last hand-out, and the period it ran at.
    last: Instant,
    current: Duration,
    /// Rounds handed out so far (1.0: every question once).
    done: f64,
}

/// How often the spread hands out the questions that fell due (at most a second's worth at a
/// time, at least 60 slices a period).
fn tick(period: Duration) -> Duration {
    (period / 60).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// `q`'s phase within a round, in [0, 1): a stable hash (FNV-1a) of the question, so a
/// question keeps its slot while the gateway runs and questions spread evenly.
fn phase(q: &Question) -> f64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    q.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Spread {
    /// Each question once per `period`, or slower so that they stay under `per_second`.
    pub fn new(period: Duration, per_second: f64, now: Instant) -> Spread {
        let period = period.max(Duration::from_secs(1));
        Spread {
            period,
            per_second: per_second.max(0.001),
            last: now,
            current: period,
            done: 0.0,
        }
    }

    /// The period in effect for `known` answers.
    pub fn period_for(&self, known: usize) -> Duration {
        let needed = Duration::from_secs_f64((known as f64 / self.per_second).min(1e9));
        self.period.max(needed)
    }

    /// The period in effect at the last hand-out.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// When [`Spread::due`] next has something to hand out.
    pub fn next_wake(&self) -> Instant {
        self.last + tick(self.current)
    }

    /// The questions of `known` (`count` of them) whose phase passed since the last call
    /// (each once per period).
    pub fn due<'a>(
        &mut self,
        known: impl Iterator<Item = &'a Question>,
        count: usize,
        now: Instant,
    ) -> Vec<Question> {
        if now <= self.last {
            return Vec::new();
        }
        self.current = self.period_for(count);
        let elapsed = now.duration_since(self.last).as_secs_f64();
        let (from, to) = (self.done, self.done + elapsed / self.current.as_secs_f64());
        self.last = now;
        self.done = to;
        known
            .filter(|q| {
                // Due when a round's instant at this phase falls in (from, to].
                let ph = phase(q);
                (to - ph).floor() > (from - ph).floor()
            })
            .cloned()
            .collect()
    }
}

/// The global rate limit on reviews: `rate` per second, bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Bucket {
        let burst = f64::from(burst.max(1));
        Bucket {
            rate: rate.max(0.001),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now.max(self.at);
    }

    /// How many of `wanted` reviews may go now (those are spent).
    pub fn take(&mut self, wanted: usize, now: Instant) -> usize {
        self.refill(now);
        let n = (self.tokens.floor() as usize).min(wanted);
        self.tokens -= n as f64;
        n
    }

    /// When the next review may go.
    pub fn next_token(&self, now: Instant) -> Instant {
        let mut b = self.clone();
        b.refill(now);
        let missing = (1.0 - b.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / b.rate)
    }
}

#[cfg(test)]
mod tests;
