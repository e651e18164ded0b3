//! `kwg-gateway`: parses flags, starts tracing, runs the gateway until SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = kwg_gateway::Config::parse();
    kwg_host::logging::init("info");
    let mut signals = kwg_host::process::Signals::new().expect("SIGTERM/SIGINT handlers");
    let shutdown = async move { signals.recv().await };
    match kwg_gateway::run(cfg, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kwg-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
