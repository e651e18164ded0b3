//! Process plumbing shared by `kwg`, `kwg-wg` and `kwg-gateway`: the shutdown signals and
//! starting a detached daemon.

use std::process::{Child, Command, Stdio};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT, registered when created (so a signal that arrives early is not lost
/// and does not kill the process before it can clean up).
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Registers the handlers; needs a tokio runtime.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Starts `cmd` as a daemon: in its own process group (a Ctrl-C of the terminal does not reach
/// it), stdin from /dev/null. The caller sets stdout/stderr and waits for it to report.
pub fn spawn_detached(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).process_group(0).spawn()
}
