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
        #[arg(long, default_value = DEFAULT_JOURNAL)]
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

/// The default journal directory (`serve --journal`).
const DEFAULT_JOURNAL: &str = "/run/kwg-helper/journal";

/// The uid of the user who ran `sudo kwg-helper ...` when that is not root: `SUDO_UID` when
/// this process is really root (not a setuid binary or a user's own variable).
fn sudo_invoker(real_root: bool, sudo_uid: Option<&str>) -> Option<u32> {
    let uid = sudo_uid?.parse::<u32>().ok()?;
    (real_root && uid != 0).then_some(uid)
}

/// Why `command` is refused when run through sudo by `invoker` (not root): a sudoers rule that
/// lets a user start kwg-helper (what `kwg join --tun`'s `sudo -b kwg-helper serve --socket
/// DEFAULT --allow-uid UID` needs) must not let that user write units, end others' sessions,
/// replay a journal of theirs, widen the routes or install units running another binary.
/// `None`: allowed.
fn refused_under_sudo(command: &Command, invoker: u32) -> Option<String> {
    let why = match command {
        // `sudo kwg-helper install` as the README says: the units of this binary, as they are
        // by default; anything else (another --binary would run as root) only as root.
        Command::Install {
            binary: None,
            root,
            socket,
            group,
        } if root.as_path() == std::path::Path::new("/")
            && *socket == server::default_socket()
            && group == DEFAULT_GROUP =>
        {
            return None;
        }
        Command::Install { .. } => {
            "through sudo, kwg-helper install takes no --root, --socket, --group or --binary (another binary would run as root): run it in a root login (sudo su -)".to_string()
        }
        Command::End { .. } => {
            "through sudo, kwg-helper end would end any user's session: end yours with kwg leave (or kwg-helper end without sudo), or run it in a root login (sudo su -)".to_string()
        }
        Command::List { .. } => return None,
        Command::Serve {
            socket,
            group,
            allow_uid,
            allow_route,
            journal,
        } => {
            if group != DEFAULT_GROUP {
                format!(
                    "through sudo, kwg-helper serve serves only the default group {DEFAULT_GROUP}: drop --group, or run it as root from the installed service (kwg-helper install --group)"
                )
            } else if *socket != server::default_socket() {
                format!(
                    "through sudo, kwg-helper serve uses only the default socket {}: drop --socket, or run it as root from the installed service (kwg-helper install)",
                    server::default_socket().display()
                )
            } else if journal.as_path() != std::path::Path::new(DEFAULT_JOURNAL) {
                format!(
                    "through sudo, kwg-helper serve uses only the default journal {DEFAULT_JOURNAL}: drop --journal, or run it as root from the installed service (kwg-helper install)"
                )
            } else if allow_uid.iter().any(|u| *u != invoker) {
                format!(
                    "through sudo, kwg-helper serve serves only you (--allow-uid {invoker}): drop the other --allow-uid, or run it as root from the installed service (kwg-helper install)"
                )
            } else if !allow_route.is_empty() {
                "through sudo, kwg-helper serve takes no --allow-route: run it as root from the installed service (kwg-helper install) to allow routes".to_string()
            } else {
                return None;
            }
        }
    };
    Some(why)
}

fn main() -> ExitCode {
    // First, while this is the only thread: systemd's LISTEN_* are read, then the environment
    // is cut to server::kept_environment (PATH fixed: sudo without secure_path keeps the
    // user's PATH, and nft is started by name), so no child or thread sees the rest.
    let activation = server::Activation::from_env();
    // SAFETY: no other thread exists yet (no runtime, no logging).
    unsafe { server::clear_environment() };
    kwg_host::logging::init("info");
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match rt.block_on(run(Cli::parse().command, activation)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kwg-helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut command: Command, activation: server::Activation) -> anyhow::Result<()> {
    let real_root = nix::unistd::getuid().is_root();
    if let Some(invoker) = sudo_invoker(real_root, std::env::var("SUDO_UID").ok().as_deref()) {
        if let Some(why) = refused_under_sudo(&command, invoker) {
            anyhow::bail!("{why}");
        }
        // Through sudo the helper serves the invoker (what kwg join asks for), nobody else.
        if let Command::Serve { allow_uid, .. } = &mut command {
            if allow_uid.is_empty() {
                allow_uid.push(invoker);
            }
        }
    }
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
            let activated = activation.fd3;
            let listener = server::activated_or_bound(&socket, access.gid, activation)?;
            // A helper started for one user (`sudo kwg join`, kwg join's `sudo -b`): that user
            // may connect (the socket is 0660); who is served is still decided by SO_PEERCRED.
            if let Some(uid) = first_uid.filter(|_| !activated) {
                // Not following a symlink: the directory is root's (server::listener checks).
                std::os::unix::fs::lchown(&socket, Some(uid), None)?;
            }
            tracing::info!(socket = %socket.display(), group, "kwg-helper serving");
            let mut signals = kwg_host::process::Signals::new()?;
            tokio::select! {
                r = helper.serve(listener) => {
                    // The listener is broken for good (EBADF, EINVAL, ENOTSOCK): no session can
                    // be served any more; revert them all and exit (socket activation starts a
                    // new helper at the next connection).
                    if let Err(e) = r {
                        tracing::error!(error = %e, "cannot accept connections: reverting every session");
                        helper.end_all().await;
                        return Err(e.into());
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("kwg-helper").chain(argv.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn only_real_root_with_a_sudo_uid_other_than_0_is_run_through_sudo() {
        assert_eq!(sudo_invoker(true, Some("1000")), Some(1000));
        assert_eq!(sudo_invoker(true, Some("0")), None);
        assert_eq!(sudo_invoker(false, Some("1000")), None);
        assert_eq!(sudo_invoker(true, None), None);
        assert_eq!(sudo_invoker(true, Some("x")), None);
    }

    #[test]
    fn through_sudo_only_kwg_joins_serve_for_the_invoker_is_allowed() {
        let allowed = |argv: &[&str]| refused_under_sudo(&parse(argv), 1000);
        // What kwg join runs (ensure_for), and the defaults.
        assert_eq!(
            allowed(&[
                "serve",
                "--socket",
                "/run/kwg-helper/helper.sock",
                "--allow-uid",
                "1000"
            ]),
            None
        );
        assert_eq!(allowed(&["serve"]), None);
        assert_eq!(allowed(&["install"]), None);
        assert_eq!(allowed(&["list"]), None);
        for (argv, says) in [
            (&["install", "--root", "/tmp/x"][..], "sudo su -"),
            (&["install", "--binary", "/tmp/evil"], "another binary"),
            (&["install", "--group", "users"], "--group"),
            (&["end", "kwg0"], "kwg leave"),
            (&["serve", "--allow-route", "0.0.0.0/0"], "--allow-route"),
            (&["serve", "--allow-uid", "1001"], "only you"),
            (
                &["serve", "--allow-uid", "1000", "--allow-uid", "0"],
                "only you",
            ),
            (&["serve", "--journal", "/home/alice/j"], "default journal"),
            (&["serve", "--socket", "/tmp/s.sock"], "default socket"),
            (&["serve", "--group", "wheel"], "default group"),
        ] {
            let why = allowed(argv).unwrap_or_else(|| panic!("{argv:?} allowed"));
            assert!(why.contains(says), "{argv:?}: {why}");
        }
    }

    #[test]
    fn root_keeps_only_the_locale_log_settings_and_sudo_uid_with_a_fixed_path() {
        let vars = [
            ("PATH", "/home/alice/x:/usr/bin"),
            ("LD_PRELOAD", "/home/alice/evil.so"),
            ("LD_LIBRARY_PATH", "/home/alice/lib"),
            ("LISTEN_FDS", "1"),
            ("HOME", "/home/alice"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("TERM", "xterm"),
            ("NO_COLOR", "1"),
            ("KWG_LOG", "debug"),
            ("SUDO_UID", "1000"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let mut kept: Vec<(String, String)> = server::kept_environment(vars)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        kept.sort();
        let want: Vec<(String, String)> = [
            ("KWG_LOG", "debug"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("NO_COLOR", "1"),
            ("PATH", server::SAFE_PATH),
            ("SUDO_UID", "1000"),
            ("TERM", "xterm"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        assert_eq!(kept, want);
        assert!(!server::SAFE_PATH.contains("home"));
    }

    #[test]
    fn socket_activation_is_read_only_for_this_process() {
        use server::Activation;
        assert!(Activation::from_vars(Some("42"), Some("1"), 42).fd3);
        assert!(!Activation::from_vars(Some("41"), Some("1"), 42).fd3);
        assert!(!Activation::from_vars(Some("42"), Some("0"), 42).fd3);
        assert!(!Activation::from_vars(None, Some("1"), 42).fd3);
    }

    #[test]
    fn only_passing_accept_errors_are_retried() {
        let e = std::io::Error::from_raw_os_error;
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::ECONNABORTED,
        ] {
            assert!(server::accept_retryable(&e(errno)), "{errno}");
        }
        for errno in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK] {
            assert!(!server::accept_retryable(&e(errno)), "{errno}");
        }
        assert!(!server::accept_retryable(&std::io::Error::other("x")));
    }
}
