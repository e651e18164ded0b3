//! A request loop through the tunnel: one HTTP request to web-app every 100 ms, each result
//! with its time, to measure how long traffic stops while the gateway fails over or heals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::laptop::Laptop;

/// The healing target (README): traffic again within 3 s of the broken side being back.
/// The healing tests use the target itself as their bound: they measure 0.1-0.8 s, so a
/// loaded machine has several times that, while a tunnel left to WireGuard's own timers
/// (5 s rekey, ~15 s to a new handshake) fails it.
pub const HEAL_TARGET: Duration = Duration::from_secs(3);

/// One HTTP request through the tunnel every 100 ms, each result with its time.
pub struct RequestLoop {
    /// Every request's end and whether it succeeded.
    pub results: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RequestLoop {
    pub fn start(l: &Arc<Laptop>) -> RequestLoop {
        let results: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, l) = (results.clone(), stop.clone(), l.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let out = l.run(&[
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "1",
                    "http://web-app:80",
                ]);
                r.lock()
                    .unwrap()
                    .push((Instant::now(), out.status.success()));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RequestLoop {
            results,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until a request has gone through (panics after 10 s): call it before the fault,
    /// so a test measuring how traffic comes back knows it flowed in the first place.
    pub fn wait_working(&self) -> Instant {
        let start = Instant::now();
        crate::wait_for(
            "a request through the tunnel",
            Duration::from_secs(10),
            || {
                let r = self.results.lock().unwrap();
                Ok(r.iter().find(|(_, ok)| *ok).map(|(t, _)| *t))
            },
        )
        .unwrap_or_else(|e| {
            let r = self.results.lock().unwrap();
            panic!(
                "traffic did not flow before the fault ({} requests failed in {:?}): {e}",
                r.len(),
                start.elapsed()
            )
        })
    }

    /// How many requests that ended in `from..to` succeeded.
    pub fn successes_between(&self, from: Instant, to: Instant) -> usize {
        let r = self.results.lock().unwrap();
        r.iter()
            .filter(|(t, ok)| *ok && *t >= from && *t < to)
            .count()
    }

    /// When the first request that succeeded after `since` ended; panics after `within`.
    pub fn first_success_after(&self, since: Instant, within: Duration) -> Instant {
        crate::wait_for("a successful request", within, || {
            let r = self.results.lock().unwrap();
            Ok(r.iter().find(|(t, ok)| *ok && *t > since).map(|(t, _)| *t))
        })
        .unwrap_or_else(|e| panic!("traffic did not come back: {e}"))
    }

    /// Waits until requests have succeeded for `steady` in a row after `since`.
    pub fn wait_steady(&self, since: Instant, steady: Duration, timeout: Duration) {
        crate::wait_for("requests succeeding again", timeout, || {
            let r = self.results.lock().unwrap();
            let last_fail = r.iter().rev().find(|(_, ok)| !ok).map(|(t, _)| *t);
            let start = last_fail.map_or(since, |f| f.max(since));
            Ok(r.iter()
                .any(|(t, ok)| *ok && *t > start + steady)
                .then_some(()))
        })
        .unwrap_or_else(|e| panic!("traffic did not come back: {e}"));
    }

    /// Waits for 3 s of successes after `since`, prints the longest gap (a line
    /// scripts/bench-failover.sh reads) and checks it against `bound`.
    pub fn measure(&self, since: Instant, what: &str, bound: Duration) {
        self.wait_steady(since, Duration::from_secs(3), Duration::from_secs(40));
        let (gap, failed) = self.longest_gap(since);
        eprintln!(
            "{what}: longest gap {:.2} s, {failed} failed requests",
            gap.as_secs_f64()
        );
        assert!(gap < bound, "{what}: gap {gap:?}");
    }

    /// The longest time between two successful requests around `since` (from the last
    /// success before it on), and how many failed after it. Panics unless a request succeeded
    /// before `since` and another after it: a gap needs traffic on both sides.
    pub fn longest_gap(&self, since: Instant) -> (Duration, usize) {
        let r = self.results.lock().unwrap();
        let ok: Vec<Instant> = r.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t).collect();
        let from = ok
            .iter()
            .rposition(|t| *t <= since)
            .unwrap_or_else(|| panic!("no request succeeded before the fault ({} ran)", r.len()));
        assert!(
            ok.last().is_some_and(|t| *t > since),
            "no request succeeded after the fault ({} ran)",
            r.len()
        );
        let gap = ok[from..]
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let failed = r.iter().filter(|(t, ok)| !ok && *t > since).count();
        (gap, failed)
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
