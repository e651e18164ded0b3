//! `kwg-gateway`: parses flags, starts tracing, runs the gateway until SIGTERM.

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = kwg_gateway::Config::parse();
    init_tracing();
    let shutdown = async {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match kwg_gateway::run(cfg, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kwg-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `KWG_LOG` filters (default `info`), `KWG_LOG_FORMAT=json` prints JSON lines.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KWG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("KWG_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
