//! Tracing set-up shared by every kwg binary: logs go to stderr, filtered by `KWG_LOG`
//! (an `EnvFilter` directive such as `debug` or `kwg_gateway=trace`), as JSON lines when
//! `KWG_LOG_FORMAT=json`; coloured only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default_filter` applies when `KWG_LOG` is unset or invalid.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_env("KWG_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: pod logs, files and pipes get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        // A failed log write is dropped: by default tracing reports it with `eprintln!`, which
        // panics when stderr is a closed pipe (a daemon whose parent has exited), and a panic
        // in the middle of a UAPI `set` made `wg` fail with "Protocol error".
        .log_internal_errors(false);
    if std::env::var("KWG_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
