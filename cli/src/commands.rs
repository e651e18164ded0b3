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
use crate::state::{Session, State, StateDir, StateFile, pick, select, sessions};
use kwg_contract::Status;

mod join;
mod sessions;
pub use join::{daemon, join};

/// `kwg status`: every session (or the one of `--context`); exit code 1 when not joined,
/// else the worst of the sessions' codes.
pub async fn status(args: OutputArgs, dir: StateDir) -> Result<i32, Error> {
    let all = sessions(&dir)?;
    let several = all.len() > 1;
    // The session that answers the short names (issue 27; the next one after the primary left).
    let answering = crate::dns::primary::successor(&all);
    let short_names = answering.and_then(|s| s.alias()).map(str::to_string);
    let answering_later = answering.is_some_and(|s| s.dir.0 != dir.0);
    // `--context`: the session of that alias, else every one of that context (two clusters
    // may both call theirs `default`).
    let named = match &args.context {
        Some(c) => select(&all, c),
        None => all.iter().collect(),
    };
    let chosen: Vec<&Session> = named.into_iter().filter(|s| s.state.is_some()).collect();
    if chosen.is_empty() {
        // A session that ended on its own (its helper went away) says why.
        let ended = crate::privileged::ended_note(&dir.0, args.context.as_deref());
        if args.output == Format::Json {
            let mut out = serde_json::json!({ "connected": false, "sessions": [] });
            if let Some(why) = ended {
                out["message"] = serde_json::Value::String(format!("not joined: {why}"));
            }
            println!("{out}");
        } else if let Some(why) = ended {
            println!("kwg is not joined: {why}");
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
        // The live primary session's status at the top (as with one session), every session's
        // in `sessions` (docs/contract.md).
        let top = top_session(&shown.iter().map(|(s, _)| *s).collect::<Vec<_>>());
        let each: Vec<serde_json::Value> =
            shown.iter().map(|(s, st)| session_json(s, st)).collect();
        let mut out = each[top].clone();
        out["sessions"] = serde_json::Value::Array(each);
        if let Some(alias) = short_names {
            out["shortNames"] = serde_json::json!(alias);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("status serializes")
        );
    } else {
        // Once several sessions joined, or a later one took the short names over.
        if let Some(alias) = short_names.filter(|_| several || answering_later) {
            println!("Short names     : {alias} (single labels and <svc>.<ns>)");
        }
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

/// Which of the shown sessions `kwg status -o json` puts at the top: the primary whose daemon
/// runs; else (the primary crashed) the first whose daemon runs; else the primary's journal;
/// else the first.
fn top_session(shown: &[&Session]) -> usize {
    let live = |s: &&Session| s.running.is_some();
    shown
        .iter()
        .position(|s| live(s) && s.primary())
        .or_else(|| shown.iter().position(live))
        .or_else(|| shown.iter().position(|s| s.primary()))
        .unwrap_or_default()
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
    let all = sessions(&dir)?;
    let session = match pick(&all, args.kube.context.as_deref()) {
        Ok(s) => s,
        // A context two sessions share: which one.
        Err(names) if args.kube.context.is_some() => {
            return Err(Error::WhichSession { contexts: names });
        }
        Err(_) => all
            .iter()
            .find(|s| s.running.is_some() && s.primary())
            .or(all.first()),
    };
    let state = session.and_then(|s| s.state.clone());
    let dir = session.map_or(dir, |s| s.dir.clone());
    let joined = state
        .as_ref()
        .map(|s| (s.kubeconfig.clone(), s.context.clone()));
    let (kubeconfig, context) = peers_target(&args.kube, joined);
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

/// The kubeconfig and context `kwg peers` lists with: `--kubeconfig` names another cluster
/// (its `--context` or current context, nothing of the session's); without it, the chosen
/// session's kubeconfig and context (`--context` may be its alias); with no session, the flags.
type KubeTarget = (Option<std::path::PathBuf>, Option<String>);
fn peers_target(kube: &crate::args::KubeArgs, session: Option<KubeTarget>) -> KubeTarget {
    match session {
        Some(joined) if kube.kubeconfig.is_none() => joined,
        _ => (kube.kubeconfig.clone(), kube.context.clone()),
    }
}

/// `kwg leave`: the session of `--context`, every session with `--all`, else the only one
/// (with several: asked on a terminal, refused otherwise). Asks each daemon to undo
/// everything, or undoes it from the journal; one session's leave touches nothing of another.
pub async fn leave(args: LeaveArgs, dir: StateDir) -> Result<(), Error> {
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
        let r = leave_one(s, named.then(|| s.name_in(&all)), &args, &reporter).await;
        forget_if_gone(&s.dir);
        outcome = outcome.and(r);
    }
    outcome
}

/// Removes a session's record once nothing of it is left (no daemon, no journal): a leave
/// that failed keeps it, so `kwg leave` can be run again and the session keeps its role.
fn forget_if_gone(dir: &StateDir) {
    let running = matches!(DaemonLock::holder(&dir.lock()), Holder::Running(_));
    if !running && !dir.state().exists() {
        let _ = std::fs::remove_file(dir.session_info());
    }
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
            crate::output::sanitize(&s.name_in(all)),
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

/// Leaves one session; `named` is its name when several sessions exist.
async fn leave_one(
    session: &Session,
    named: Option<String>,
    args: &LeaveArgs,
    reporter: &Reporter,
) -> Result<(), Error> {
    let started = Instant::now();
    let what = named.map_or("the cluster".to_string(), |n| format!("context {n}"));
    reporter.doing("Leaving", "Undoing what kwg join set up");
    let cleaned = undo_all(&session.dir, reporter).await;
    reporter.clear();
    let cleaned = cleaned?;
    let (removed, left_behind) = (cleaned.removed, cleaned.left_behind);
    let ms = started.elapsed().as_millis();
    if args.output == Format::Json {
        println!("{}", left_json(session, &removed, ms, left_behind.as_ref()));
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

/// `kwg leave -o json`: one line per session left, naming it (context, alias, API server).
fn left_json(
    session: &Session,
    removed: &[String],
    ms: u128,
    left_behind: Option<&crate::state::LeftBehind>,
) -> serde_json::Value {
    serde_json::json!({
        "left": true,
        "context": session.context(),
        "alias": session.alias(),
        "server": session.server(),
        "removed": removed,
        "elapsedMs": ms,
        "leftBehind": left_behind,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SessionInfo;

    fn session(dir: &std::path::Path, context: &str, primary: bool, running: bool) -> Session {
        Session::example(dir.join(context), context, primary, running)
    }

    #[test]
    fn status_json_tops_the_live_session_when_the_primary_crashed() {
        let d = std::path::Path::new("/nowhere");
        let (dead, live) = (
            session(d, "old", true, false),
            session(d, "new", false, true),
        );
        assert_eq!(top_session(&[&dead, &live]), 1);
        let primary = session(d, "p", true, true);
        assert_eq!(top_session(&[&live, &primary]), 1);
        // Nothing runs: the primary's journal.
        let quiet = session(d, "q", false, false);
        assert_eq!(top_session(&[&quiet, &dead]), 1);
    }

    #[test]
    fn peers_with_another_kubeconfig_takes_nothing_of_the_session() {
        use clap::Parser;
        let kube = |argv: &[&str]| {
            let all = [&["kwg", "peers"][..], argv].concat();
            match crate::args::Cli::try_parse_from(all).unwrap().command {
                crate::args::Command::Peers(a) => a.kube,
                _ => unreachable!(),
            }
        };
        let joined = || Some((Some("/state/kubeconfig".into()), Some("alpha".to_string())));
        assert_eq!(
            peers_target(&kube(&["--kubeconfig", "/other"]), joined()),
            (Some("/other".into()), None)
        );
        assert_eq!(
            peers_target(
                &kube(&["--kubeconfig", "/other", "--context", "x"]),
                joined()
            ),
            (Some("/other".into()), Some("x".into()))
        );
        // Without --kubeconfig the session's (--context may have been its alias).
        assert_eq!(
            peers_target(&kube(&["--context", "a"]), joined()),
            joined().unwrap()
        );
        assert_eq!(peers_target(&kube(&[]), joined()), joined().unwrap());
        assert_eq!(
            peers_target(&kube(&["--context", "x"]), None),
            (None, Some("x".into()))
        );
    }

    #[test]
    fn a_failed_leave_keeps_the_session_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir(tmp.path().join("kwg"));
        dir.create().unwrap();
        let s = session(tmp.path(), "kwg", true, false);
        s.info.as_ref().unwrap().save(&dir).unwrap();
        std::fs::write(dir.state(), "{}").unwrap();
        // The journal is still there (the undo failed): the record stays for the retry.
        forget_if_gone(&dir);
        assert!(SessionInfo::load(&dir).is_some());
        std::fs::remove_file(dir.state()).unwrap();
        forget_if_gone(&dir);
        assert!(SessionInfo::load(&dir).is_none());
    }

    #[test]
    fn each_leave_json_line_names_its_session() {
        let s = session(std::path::Path::new("/nowhere"), "beta", false, false);
        let v = left_json(&s, &["route 10.0.0.0/16".into()], 12, None);
        assert_eq!(
            (
                v["context"].as_str(),
                v["alias"].as_str(),
                v["left"].as_bool()
            ),
            (Some("beta"), Some("beta"), Some(true))
        );
        assert_eq!(v["removed"][0], "route 10.0.0.0/16");
    }
}
