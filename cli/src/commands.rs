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
use crate::state::{Session, State, StateDir, StateFile, pick, sessions};
use kwg_contract::Status;

mod join;
mod sessions;
pub use join::{daemon, join};

/// `kwg status`: every session (or the one of `--context`); exit code 1 when not joined,
/// else the worst of the sessions' codes.
pub async fn status(args: OutputArgs, dir: StateDir) -> Result<i32, Error> {
    // `sudo kwg status`: the invoking user's sessions, as `sudo kwg join` made them.
    crate::privileged::sudo::as_invoker()?;
    let all = sessions(&dir)?;
    let several = all.len() > 1;
    let chosen: Vec<&Session> = all
        .iter()
        .filter(|s| s.state.is_some())
        .filter(|s| args.context.is_none() || s.context() == args.context.as_deref())
        .collect();
    if chosen.is_empty() {
        if args.output == Format::Json {
            println!(
                "{}",
                serde_json::json!({ "connected": false, "sessions": [] })
            );
        } else if let Some(c) = &args.context {
            println!("kwg is not joined to context {c}: run `kwg join --context {c}`.");
        } else {
            println!("{}", output::NOT_JOINED);
        }
        return Ok(1);
    }
    let mut shown = Vec::new();
    for s in &chosen {
        let state = s.state.as_ref().expect("filtered");
        shown.push((*s, session_status(state, &s.dir).await?));
    }
    let code = shown
        .iter()
        .map(|(_, st)| crate::health::exit_code(st))
        .max()
        .unwrap_or(1);
    if args.output == Format::Json {
        // The primary session's status at the top (as with one session), every session's in
        // `sessions` (docs/contract.md).
        let top = shown
            .iter()
            .position(|(s, _)| s.primary())
            .unwrap_or_default();
        let each: Vec<serde_json::Value> =
            shown.iter().map(|(s, st)| session_json(s, st)).collect();
        let mut out = each[top].clone();
        out["sessions"] = serde_json::Value::Array(each);
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("status serializes")
        );
    } else {
        for (i, (s, st)) in shown.iter().enumerate() {
            if several {
                if i > 0 {
                    println!();
                }
                println!(
                    "{}",
                    output::session_heading(&s.label(), s.alias(), s.primary())
                );
            }
            print!("{}", output::status_text(st, Utc::now()));
        }
    }
    Ok(code)
}

/// One session's status object with its alias and role added.
fn session_json(s: &Session, status: &Status) -> serde_json::Value {
    let mut v = serde_json::to_value(status).expect("status serializes");
    v["alias"] = serde_json::json!(s.alias());
    v["primary"] = serde_json::json!(s.primary());
    v
}

/// One session's status: its daemon's answer, else what its journal says.
async fn session_status(state: &State, dir: &StateDir) -> Result<Status, Error> {
    let status = match DaemonLock::holder(&dir.lock()) {
        Holder::None => status_from_state(state, false),
        Holder::Running(_) => {
            match api::call(&dir.socket(), Request::Status, Duration::from_secs(3)).await {
                Ok(Reply::Status(s)) => *s,
                Ok(other) => {
                    tracing::warn!(?other, "unexpected reply to status");
                    status_from_state(state, false)
                }
                // An older daemon: its version sentence is the answer.
                Err(e @ (ClientError::OlderDaemon | ClientError::OtherVersion { .. })) => {
                    return Err(e.into());
                }
                Err(e) => crate::driver::silent_daemon_status(state, e.to_string()).await,
            }
        }
    };
    let mut status = status;
    // A daemon of this version asked the gateway itself (`state` is its verdict).
    if let (true, None, Some(admin)) = (status.connected, status.state, state.gateway_admin) {
        status.reach = crate::reach::own(admin, &status.peer).await;
    }
    Ok(status)
}

/// `kwg peers`: the peer Secrets, with tunnel statistics from the gateway when joined (the
/// session of `--context`, else the only or the primary session).
pub async fn peers(args: PeersArgs, dir: StateDir) -> Result<(), Error> {
    // `sudo kwg peers`: the invoking user's sessions and kubeconfig.
    crate::privileged::sudo::as_invoker()?;
    let all = sessions(&dir)?;
    let session = match pick(&all, args.kube.context.as_deref()) {
        Ok(s) => s,
        Err(_) => all
            .iter()
            .find(|s| s.running.is_some() && s.primary())
            .or(all.first()),
    };
    let state = session.and_then(|s| s.state.clone());
    let dir = session.map_or(dir, |s| s.dir.clone());
    let (kubeconfig, context) = match &state {
        Some(s) => (
            args.kube.kubeconfig.clone().or(s.kubeconfig.clone()),
            args.kube.context.clone().or(s.context.clone()),
        ),
        None => (args.kube.kubeconfig.clone(), args.kube.context.clone()),
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

/// `kwg leave`: the session of `--context`, every session with `--all`, else the only one
/// (with several: asked on a terminal, refused otherwise). Asks each daemon to undo
/// everything, or undoes it from the journal; one session's leave touches nothing of another.
pub async fn leave(args: LeaveArgs, dir: StateDir) -> Result<(), Error> {
    // `sudo kwg leave`: the invoking user's sessions, as `sudo kwg join` made them.
    crate::privileged::sudo::as_invoker()?;
    let reporter = Reporter::new(args.output);
    let all = sessions(&dir)?;
    let targets: Vec<&Session> = if args.all {
        all.iter().collect()
    } else {
        match pick(&all, args.context.as_deref()) {
            Ok(s) => s.into_iter().collect(),
            Err(labels) => ask_which(&all, labels)?,
        }
    };
    if targets.is_empty() {
        match &args.context {
            Some(c) => reporter.step(&format!("kwg is not joined to context {c}; nothing to do.")),
            None => reporter.step("kwg is not joined; nothing to do."),
        }
        if args.output == Format::Json {
            println!("{}", serde_json::json!({ "left": false, "removed": [] }));
        }
        return Ok(());
    }
    let named = all.len() > 1;
    let mut outcome = Ok(());
    for s in targets {
        let r = leave_one(&s.dir, named.then(|| s.label()), &args, &reporter).await;
        let _ = std::fs::remove_file(s.dir.session_info());
        outcome = outcome.and(r);
    }
    outcome
}

/// Asks on a terminal which session to leave; refuses off a terminal with the list.
fn ask_which(all: &[Session], labels: Vec<String>) -> Result<Vec<&Session>, Error> {
    use std::io::{BufRead, IsTerminal, Write};
    let refused = || Error::WhichSession {
        contexts: labels.clone(),
    };
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(refused());
    }
    let mut err = std::io::stderr();
    let _ = writeln!(err, "Several sessions are joined:");
    for (i, s) in all.iter().enumerate() {
        let role = if s.primary() { ", primary" } else { "" };
        let _ = writeln!(
            err,
            "  {}) {} ({}{role})",
            i + 1,
            s.label(),
            s.interface().unwrap_or("-")
        );
    }
    let _ = write!(err, "Leave which? [1-{}, a for all]: ", all.len());
    let _ = err.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim() {
        "a" | "all" => Ok(all.iter().collect()),
        n => match n.parse::<usize>() {
            Ok(i) if (1..=all.len()).contains(&i) => Ok(vec![&all[i - 1]]),
            _ => Err(refused()),
        },
    }
}

/// Leaves one session; `named` is its label when several sessions exist.
async fn leave_one(
    dir: &StateDir,
    named: Option<String>,
    args: &LeaveArgs,
    reporter: &Reporter,
) -> Result<(), Error> {
    let started = Instant::now();
    let what = named.map_or("the cluster".to_string(), |n| format!("context {n}"));
    reporter.doing("Leaving", "Undoing what kwg join set up");
    let cleaned = undo_all(dir, reporter).await;
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
        println!("Left {what} ({ms} ms).");
    } else {
        println!("Left {what}: removed {} ({ms} ms).", removed.join(", "));
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
