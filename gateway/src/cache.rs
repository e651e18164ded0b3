//! A value shared by the requests of about a second: `/peers` and `/metrics` ask every sibling
//! replica (after listing pods on the API server) and run `nft`; a peer looping them must not
//! multiply that work. Callers arriving while a fetch runs wait for it and share its result.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a fetched value is served before the next caller fetches again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last fetched value and when it was fetched.
pub struct Cached<T> {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Default for Cached<T> {
    fn default() -> Self {
        Cached::new(FRESH_FOR)
    }
}

/// Whether a value fetched at `at` is still served at `now` (a fetch that finished after a
/// waiting caller's `now` is fresh for it).
pub fn is_fresh(at: Instant, now: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(at) < ttl
}

impl<T: Clone> Cached<T> {
    pub fn new(ttl: Duration) -> Self {
        Cached {
            ttl,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The value fetched within `ttl` of `now`, or `fetch`'s, stored as of `now`. One fetch at
    /// a time: concurrent callers wait for it and get its value.
    pub async fn get<F: Future<Output = T>>(&self, now: Instant, fetch: impl FnOnce() -> F) -> T {
        let mut last = self.last.lock().await;
        if let Some((at, v)) = last.as_ref()
            && is_fresh(*at, now, self.ttl)
        {
            return v.clone();
        }
        let v = fetch().await;
        *last = Some((now, v.clone()));
        v
    }
}

#[cfg(test)]
mod tests;
