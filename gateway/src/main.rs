//! `kwg-gateway`: parses flags, starts tracing, runs the gateway until SIGTERM.

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = kwg_gateway::Config::parse();
    kwg_wg::logging::init("info");
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
