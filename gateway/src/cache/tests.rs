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
