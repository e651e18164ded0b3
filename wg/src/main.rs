//! `kwg-wg [--foreground] IFNAME`: a userspace WireGuard interface configured through UAPI
//! (`wg set`, `wg setconf`, `wg-quick` with `WG_QUICK_USERSPACE_IMPLEMENTATION=kwg-wg`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Userspace WireGuard interface, configured with `wg` over UAPI"
)]
struct Args {
    /// Stay in the foreground instead of daemonizing once the interface exists.
    #[arg(short, long)]
    foreground: bool,
    /// Set by the daemonizing parent: stop writing to its stderr once the device is up.
    #[arg(long, hide = true)]
    detached: bool,
    /// Interface name (at most 15 characters).
    ifname: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    kwg_host::logging::init("info");
    let result = if args.foreground {
        kwg_wg::run::foreground(&args.ifname, args.detached)
    } else {
        kwg_wg::run::daemonize(&args.ifname)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kwg-wg: {e:#}");
            ExitCode::FAILURE
        }
    }
}
