//! boringtun's clock. With feature `timers`, boringtun reads `mock_instant`'s clock (per thread),
//! which the world advances with its own: keepalives, rekeys, handshake retransmissions and
//! session expiry fire in fake time. Without, they run on the real clock and never fire within
//! a run of a few seconds.

use std::time::Duration;

/// Whether boringtun's timers run on the model's clock.
pub const TIMERS: bool = cfg!(feature = "timers");

/// Moves boringtun's clock on by `d` (with feature `timers`; else nothing).
pub fn advance(d: Duration) {
    #[cfg(feature = "timers")]
    mock_instant::MockClock::advance(d);
    #[cfg(not(feature = "timers"))]
    let _ = d;
}
