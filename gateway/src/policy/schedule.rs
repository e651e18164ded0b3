//! When reach by RBAC asks the API server (pure; time passed in): the periodic safety
//! re-review of every known (owner, namespace) answer spread evenly over its period instead of
//! all at once, and a global rate limit on reviews (a token bucket) so that a burst (a
//! ClusterRole change, a thousand peers joining) is paced rather than sent at once.

use super::grants::Question;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// The periodic re-review: each question is due once per `period`, at a phase of its own (a
/// stable hash of it), so N known answers cost N / period reviews per second, evenly.
#[derive(Debug, Clone)]
pub struct Spread {
    period: Duration,
    epoch: Instant,
    /// Up to where (since `epoch`) questions were handed out.
    done: Duration,
}

/// How often the spread hands out the questions that fell due (at most a second's worth at a
/// time, at least 60 slices a period).
fn tick(period: Duration) -> Duration {
    (period / 60).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// `q`'s phase within the period: a stable hash (FNV-1a) of the question, so a question keeps
/// its slot while the gateway runs and questions spread evenly.
fn phase(q: &Question, period: Duration) -> Duration {
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
    let nanos = period.as_nanos().max(1);
    Duration::from_nanos((u128::from(h.finish()) % nanos) as u64)
}

impl Spread {
    pub fn new(period: Duration, now: Instant) -> Spread {
        Spread {
            period: period.max(Duration::from_secs(1)),
            epoch: now,
            done: Duration::ZERO,
        }
    }

    /// When [`Spread::due`] next has something to hand out.
    pub fn next_wake(&self) -> Instant {
        self.epoch + self.done + tick(self.period)
    }

    /// The questions of `known` whose phase passed since the last call (each once per period).
    pub fn due<'a>(
        &mut self,
        known: impl Iterator<Item = &'a Question>,
        now: Instant,
    ) -> Vec<Question> {
        let until = now.saturating_duration_since(self.epoch);
        if until <= self.done {
            return Vec::new();
        }
        let p = self.period.as_nanos();
        let (from, to) = (self.done.as_nanos(), until.as_nanos());
        self.done = until;
        known
            .filter(|q| {
                let ph = phase(q, self.period).as_nanos();
                // The first instant after `from` at this phase: from + (ph - from) mod p, or a
                // full period later when that is `from` itself.
                let step = (ph + p - from % p) % p;
                let step = if step == 0 { p } else { step };
                from + step <= to
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
#[path = "schedule_tests.rs"]
mod tests;
