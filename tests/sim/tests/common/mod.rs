//! Helpers shared by the cluster tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Polls `f` every 100 ms until it returns Some, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Up a cluster, panicking with the reason.
pub fn cluster() -> kwg_sim::testing::Cluster {
    kwg_sim::testing::Cluster::up().expect("kwg-sim up")
}
