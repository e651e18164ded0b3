//! `kwg-sim`: the one-machine cluster. See the library docs.
use clap::Parser;

fn main() -> std::process::ExitCode {
    kwg_host::logging::init("info");
    match kwg_sim::cli::run(kwg_sim::cli::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kwg-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
