//! kwg: join this machine to a Kubernetes cluster over WireGuard, with split DNS.

pub mod api;
pub mod args;
pub mod caps;
pub mod cluster;
pub mod commands;
pub mod credentials;
pub mod dns;
pub mod doctor;
pub mod driver;
pub mod error;
pub mod exit;
pub mod health;
pub mod lock;
pub mod output;
pub mod peer;
pub mod portforward;
pub mod privileged;
pub mod progress;
pub mod reach;
pub mod state;
pub mod transport;
pub mod userspace;
pub mod version;
pub mod wait;

pub use error::Error;

use args::{Cli, Command};
use state::StateDir;

/// Starts tracing. kwg's commands say what matters in sentences of their own, so their logs
/// are off unless `KWG_LOG` asks for them (an `EnvFilter` directive such as `debug`), on
/// stderr, coloured only when stderr is a terminal; `KWG_LOG_FORMAT=json` for JSON lines. The
/// daemon (`daemon`) logs warnings to its log file, never coloured.
pub fn init_tracing(daemon: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = if daemon { "warn" } else { "off" };
    let filter = EnvFilter::try_from_env("KWG_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!daemon && std::io::stderr().is_terminal())
        // A failed write (a closed pipe or terminal) is dropped, never a panic.
        .log_internal_errors(false);
    if std::env::var("KWG_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32, Error> {
    // `sudo kwg ...` by a user who is not root: everything but `join` runs as that user (or is
    // refused) before anything of root's is read or run.
    privileged::sudo::dispatch(&cli.command)?;
    // Commands that touch no state.
    match cli.command {
        Command::Version(a) => return version::run(a).await,
        Command::Completion(a) => {
            version::completion(&a);
            return Ok(0);
        }
        Command::Man(a) => return version::man(&a).map(|()| 0),
        _ => {}
    }
    let dir = StateDir::from_env();
    if !matches!(cli.command, Command::CiCredentials(_)) {
        // Before anything in it is trusted: another local user may have planted it.
        dir.check()?;
    }
    match cli.command {
        Command::Join(a) => {
            let json = a.output == args::Format::Json;
            let result = commands::join(*a, dir).await;
            if let (true, Err(e)) = (json, &result) {
                // `-o json`: one JSON object on stdout, also on failure.
                let failure = exit::Failure::from(e);
                println!(
                    "{}",
                    serde_json::to_string(&failure).expect("failure serializes")
                );
            }
            result.map(|()| 0)
        }
        Command::Status(a) => commands::status(a, dir).await,
        Command::Peers(a) => commands::peers(a, dir).await.map(|()| 0),
        Command::Leave(a) => commands::leave(a, dir).await.map(|()| 0),
        Command::CiCredentials(a) => credentials::run(a).await.map(|()| 0),
        Command::Forward(a) => userspace::client::forward(a.spec, dir).await.map(|()| 0),
        Command::Exec(a) => userspace::client::exec(&a.command, dir).map(|()| 0),
        Command::Doctor(a) => doctor::run(a, dir).await,
        Command::Daemon(a) => commands::daemon(&a.spec, dir).await.map(|()| 0),
        Command::Version(_) | Command::Completion(_) | Command::Man(_) => {
            unreachable!("answered above")
        }
    }
}
