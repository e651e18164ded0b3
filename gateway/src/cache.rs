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
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn fresh_for_the_ttl_only() {
        let t = Instant::now();
        let ttl = Duration::from_secs(1);
        assert!(is_fresh(t, t, ttl));
        assert!(is_fresh(t, t + Duration::from_millis(999), ttl));
        assert!(!is_fresh(t, t + ttl, ttl));
        assert!(is_fresh(t + ttl, t, ttl), "fetched after the caller asked");
    }

    #[tokio::test]
    async fn repeated_and_concurrent_callers_share_one_fetch() {
        let c = Arc::new(Cached::<usize>::new(Duration::from_secs(1)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = |f: Arc<AtomicUsize>| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                f.fetch_add(1, Ordering::SeqCst) + 1
            }
        };
        let t = Instant::now();
        let (a, b) = tokio::join!(
            c.get(t, fetch(fetches.clone())),
            c.get(t, fetch(fetches.clone()))
        );
        assert_eq!((a, b), (1, 1), "concurrent callers got the one fetch");
        let half = t + Duration::from_millis(500);
        assert_eq!(c.get(half, fetch(fetches.clone())).await, 1, "still fresh");
        let later = t + Duration::from_millis(1001);
        assert_eq!(
            c.get(later, fetch(fetches.clone())).await,
            2,
            "stale: fetched again"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
