//! `join`, `status`, `peers`, `leave`: thin clients of the daemon and the state file.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::api::{self, ClientError, Reply, Request};
use crate::args::{Format, LeaveArgs, OutputArgs, PeersArgs};
use crate::cluster::Kube;
use crate::driver::{self, status_from_state, undo::cleanup_dead};
use crate::error::Error;
use crate::lock::{DaemonLock, Holder};
use crate::output::{self, PeerRow};
use crate::progress::Reporter;
use crate::state::{State, StateDir, StateFile};

mod join;
pub use join::{daemon, join};

/// `kwg status`: exit code 1 when not joined.
pub async fn status(args: OutputArgs, dir: StateDir) -> Result<i32, Error> {
    let Some(state) = State::load(&dir.state())? else {
        if args.output == Format::Json {
            println!("{}", serde_json::json!({ "connected": false }));
        } else {
            println!("{}", output::NOT_JOINED);
        }
        return Ok(1);
    };
    let status = match DaemonLock::holder(&dir.lock()) {
        Holder::None => status_from_state(&state, false),
        Holder::Running(_) => {
            match api::call(&dir.socket(), Request::Status, Duration::from_secs(3)).await {
                Ok(Reply::Status(s)) => *s,
                Ok(other) => {
                    tracing::warn!(?other, "unexpected reply to status");
                    status_from_state(&state, false)
                }
                // An older daemon: its version sentence is the answer.
                Err(e @ (ClientError::OlderDaemon | ClientError::OtherVersion { .. })) => {
                    return Err(e.into());
                }
                Err(e) => crate::driver::silent_daemon_status(&state, e.to_string()).await,
            }
        }
    };
    let mut status = status;
    // A daemon of this version asked the gateway itself (`state` is its verdict).
    if let (true, None, Some(admin)) = (status.connected, status.state, state.gateway_admin) {
        status.reach = crate::reach::own(admin, &status.peer).await;
    }
    if args.output == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serializes")
        );
    } else {
        print!("{}", output::status_text(&status, Utc::now()));
    }
    Ok(crate::health::exit_code(&status))
}

/// `kwg peers`: the peer Secrets, with tunnel statistics from the gateway when joined.
pub async fn peers(args: PeersArgs, dir: StateDir) -> Result<(), Error> {
    let state = State::load(&dir.state())?;
    let (kubeconfig, context) = match (&args.kube.kubeconfig, &args.kube.context, &state) {
        (None, None, Some(s)) => (s.kubeconfig.clone(), s.context.clone()),
        _ => (args.kube.kubeconfig.clone(), args.kube.context.clone()),
    };
    let kube = Kube::connect(kubeconfig.as_deref(), context.as_deref()).await?;
    let listed = kube.list_peers(&args.kube.kwg_namespace).await?;
    let running = matches!(DaemonLock::holder(&dir.lock()), Holder::Running(_));
    let stats = match state.as_ref().and_then(|s| s.gateway_admin) {
        Some(admin) if running => crate::reach::peers(admin).await,
        _ => Vec::new(),
    };
    let me = state.as_ref().map(|s| s.peer.to_string());
    let mut rows: Vec<PeerRow> = listed
        .into_iter()
        .filter_map(|p| {
            let spec = p.spec.ok()?;
            let live = stats.iter().find(|g| g.name == spec.name);
            Some(PeerRow {
                name: spec.name.to_string(),
                this_machine: me.as_deref() == Some(spec.name.as_str()),
                tunnel_ip: p.tunnel_ip,
                owner: spec.owner,
                hostname: spec.hostname,
                namespaces: spec.namespaces,
                public_key: spec.public_key.to_string(),
                endpoint: live.and_then(|g| g.endpoint).map(|e| e.to_string()),
                last_handshake: live.and_then(|g| g.last_handshake),
                rx_bytes: live.map(|g| g.rx_bytes),
                tx_bytes: live.map(|g| g.tx_bytes),
                lease_expires: spec.lease_expires,
                error: p.error,
            })
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        ),
        f => print!(
            "{}",
            output::peers_text(&rows, f == Format::Wide, Utc::now())
        ),
    }
    Ok(())
}

/// `kwg leave`: asks the daemon to undo everything, or undoes it from the state file.
pub async fn leave(args: LeaveArgs, dir: StateDir) -> Result<(), Error> {
    let started = Instant::now();
    let reporter = Reporter::new(args.output);
    let holder = DaemonLock::holder(&dir.lock());
    if holder == Holder::None && State::load(&dir.state())?.is_none() {
        reporter.step("kwg is not joined; nothing to do.");
        if args.output == Format::Json {
            println!("{}", serde_json::json!({ "left": false, "removed": [] }));
        }
        return Ok(());
    };
    reporter.doing("Leaving", "Undoing what kwg join set up");
    let cleaned = undo_all(&dir, &reporter).await;
    reporter.clear();
    let cleaned = cleaned?;
    let (removed, left_behind) = (cleaned.removed, cleaned.left_behind);
    let ms = started.elapsed().as_millis();
    if args.output == Format::Json {
        println!(
            "{}",
            serde_json::json!({ "left": true, "removed": removed, "elapsedMs": ms, "leftBehind": left_behind })
        );
    } else if removed.is_empty() {
        println!("Left the cluster ({ms} ms).");
    } else {
        println!(
            "Left the cluster: removed {} ({ms} ms).",
            removed.join(", ")
        );
    }
    // The machine is clean; what could not be done remotely is one sentence and its own
    // exit code.
    match left_behind {
        Some(l) => Err(Error::PeerLeftBehind(l)),
        None => Ok(()),
    }
}

/// Asks the daemon to undo everything (or stops it), then undoes what is left from the
/// state file; returns what was removed and the peer Secret that could not be deleted.
async fn undo_all(dir: &StateDir, reporter: &Reporter) -> Result<driver::undo::Cleaned, Error> {
    let mut removed: Vec<String> = Vec::new();
    let mut left_behind = None;
    if let Holder::Running(pid) = DaemonLock::holder(&dir.lock()) {
        match api::call(&dir.socket(), Request::Leave, LEAVE_TIMEOUT).await {
            Ok(Reply::Left {
                removed: r,
                left_behind: l,
            }) => {
                removed.extend(r);
                left_behind = l;
            }
            Ok(other) => {
                tracing::warn!(?other, "unexpected reply to leave");
                reporter.step("The daemon's answer to leave was not understood; cleaning up from the state file");
            }
            Err(ClientError::Daemon(e)) => reporter.step(&format!(
                "The daemon could not undo everything ({e}); cleaning up from the state file"
            )),
            Err(e) => {
                // An older daemon, or one that hangs: SIGTERM makes it undo everything.
                reporter.step(&format!(
                    "The daemon did not take the leave request ({e}); stopping it"
                ));
                if let Some(pid) = pid {
                    signal(pid, nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
        wait_exit(dir, pid, Duration::from_secs(5)).await;
    }
    if let Some(state) = State::load(&dir.state())? {
        let cleaned = cleanup_dead(&state, dir, None).await?;
        removed.extend(cleaned.removed);
        left_behind = left_behind.or(cleaned.left_behind);
    }
    Ok(driver::undo::Cleaned {
        removed,
        left_behind,
    })
}

/// Signals `pid` (only ever a pid read from the daemon's lock file while it is held).
fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// How long `kwg leave` waits for the daemon's answer: its teardown may take the peer delete's
/// read timeout (15 s) and a retry with reloaded credentials.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the daemon released its lock (it exited), at most `max`; then kills it and
/// waits (at most 2 s more) until it is gone, so that nothing it still does races the cleanup
/// from the state file. A holder whose pid is unknown cannot be killed: only waited for.
async fn wait_exit(dir: &StateDir, pid: Option<u32>, max: Duration) {
    let running = || matches!(DaemonLock::holder(&dir.lock()), Holder::Running(_));
    let until_gone = |deadline: Instant| async move {
        while running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    until_gone(Instant::now() + max).await;
    if let Some(pid) = pid.filter(|_| running()) {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
        until_gone(Instant::now() + Duration::from_secs(2)).await;
    }
}
