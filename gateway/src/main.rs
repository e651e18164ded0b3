//! `kwg-gateway`: parses flags, starts tracing, builds the gateway and runs it until SIGTERM
//! or SIGINT (the drain signal).

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = kwg_gateway::Config::parse();
    kwg_host::logging::init("info");
    let mut signals = kwg_host::process::Signals::new().expect("SIGTERM/SIGINT handlers");
    let drain = CancellationToken::new();
    tokio::spawn({
        let drain = drain.clone();
        async move {
            signals.recv().await;
            drain.cancel();
        }
    });
    let result = match kwg_gateway::build(cfg).await {
        Ok(gateway) => gateway.run(drain).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kwg-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
