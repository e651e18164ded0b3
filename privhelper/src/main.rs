//! `kwg-helper`: the privileged part of `kwg join` for a normal user (issue 26).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use kwg_privhelper::auth::{Access, DEFAULT_GROUP};
use kwg_privhelper::client::Client;
use kwg_privhelper::journal::Journal;
use kwg_privhelper::registry::Limits;
use kwg_privhelper::server::{self, Config, Helper};
use kwg_privhelper::{install, policy, system};

#[derive(Parser)]
#[command(
    name = "kwg-helper",
    version,
    about = "The root helper of kwg join: creates the TUN, addresses, routes and firewall table for a user's session, and nothing else"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the socket (as root): root and members of --group may open sessions.
    Serve {
        #[arg(long, default_value_os_t = server::default_socket())]
        socket: PathBuf,
        /// The group whose members are served (besides root).
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        /// A uid served besides root and the group (kwg join started this helper through sudo).
        #[arg(long = "allow-uid", value_name = "UID")]
        allow_uid: Vec<u32>,
        /// Public prefixes members may route when they pass them as --also-proxy (root may
        /// route any; the machine's own addresses, gateways and DNS servers never).
        #[arg(long = "allow-route", value_name = "CIDR")]
        allow_route: Vec<IpNet>,
        /// Where the journal lives (0700).
        #[arg(long, default_value = "/run/kwg-helper/journal")]
        journal: PathBuf,
    },
    /// Writes the systemd socket and service units (under --root) and says how to remove them.
    Install {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, default_value_os_t = server::default_socket())]
        socket: PathBuf,
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        /// The helper binary the service runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Lists the sessions you may see (root: all).
    List {
        #[arg(long, default_value_os_t = server::default_socket())]
        socket: PathBuf,
    },
    /// Ends your session on INTERFACE (root: anyone's), reverting its changes.
    End {
        interface: String,
        #[arg(long, default_value_os_t = server::default_socket())]
        socket: PathBuf,
    },
}

fn main() -> ExitCode {
    kwg_host::logging::init("info");
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match rt.block_on(run(Cli::parse().command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kwg-helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            socket,
            group,
            allow_uid,
            allow_route,
            journal,
        } => {
            if !nix::unistd::geteuid().is_root() {
                anyhow::bail!(
                    "kwg-helper serve changes links, routes and the firewall: run it as root (sudo), or install it once with kwg-helper install"
                );
            }
            let access = Access::lookup(&group);
            let first_uid = allow_uid.first().copied();
            let cfg = Config {
                access: access.clone(),
                allow_uids: allow_uid,
                allow_routes: allow_route,
                limits: Limits::default(),
            };
            let journal = Journal::open(&journal)?;
            let helper = Helper::start(
                cfg,
                journal,
                Box::new(system::Kernel),
                Box::new(policy::TrustRules),
            )
            .await?;
            let listener = server::listener(&socket, access.gid)?;
            // A helper started for one user (`sudo kwg join`, kwg join's `sudo -b`): that user
            // may connect (the socket is 0660); who is served is still decided by SO_PEERCRED.
            if let Some(uid) = first_uid.filter(|_| std::env::var_os("LISTEN_FDS").is_none()) {
                // Not following a symlink: the directory is root's (server::listener checks).
                std::os::unix::fs::lchown(&socket, Some(uid), None)?;
            }
            tracing::info!(socket = %socket.display(), group, "kwg-helper serving");
            let mut signals = kwg_host::process::Signals::new()?;
            tokio::select! {
                r = helper.serve(listener) => r?,
                _ = signals.recv() => {
                    tracing::info!("stopping: reverting every session");
                    helper.end_all().await;
                }
            }
            Ok(())
        }
        Command::Install {
            root,
            socket,
            group,
            binary,
        } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            let written = install::install(&root, &binary, &socket, &group)?;
            println!("{}", install::instructions(&group, &written));
            Ok(())
        }
        Command::List { socket } => {
            let mut c = Client::connect(&socket).await?;
            for s in c.list().await? {
                let routes: Vec<String> = s.routes.iter().map(ToString::to_string).collect();
                println!(
                    "{}\tuid {}\tpid {}\t{}",
                    s.interface,
                    s.uid,
                    s.pid.map_or("-".into(), |p| p.to_string()),
                    routes.join(",")
                );
            }
            Ok(())
        }
        Command::End { interface, socket } => {
            let mut c = Client::connect(&socket).await?;
            c.end(&interface).await?;
            println!("ended the session on {interface}");
            Ok(())
        }
    }
}
