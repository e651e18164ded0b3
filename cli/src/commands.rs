//! `join`, `status`, `peers`, `leave`: thin clients of the daemon and the state file.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::api::{self, ClientError, Reply, Request};
use crate::args::{Format, JoinArgs, LeaveArgs, OutputArgs, PeersArgs};
use crate::cluster::Kube;
use crate::driver::{self, Progress, status_from_state, undo::cleanup_dead};
use crate::error::Error;
use crate::exit::Cancel;
use crate::lock::{DaemonLock, Holder};
use crate::output::{self, PeerRow};
use crate::progress::Reporter;
use crate::state::{State, StateDir};
use kwg_wg::contract::Status;

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process may create interfaces and routes.
pub fn privileged() -> bool {
    nix::unistd::geteuid().is_root() || has_cap_net_admin()
}

/// Whether CAP_NET_ADMIN is in this process's effective capabilities.
pub fn has_cap_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// `kwg join`: starts the daemon (or runs it here with --foreground) and waits until it is
/// connected or failed.
pub async fn join(mut args: JoinArgs, dir: StateDir) -> Result<(), Error> {
    let format = args.output;
    let reporter = Reporter::new(format);
    let facts = crate::userspace::ModeFacts::probe();
    match crate::userspace::choose(args.userspace, args.tun, facts, args.proxy_listen) {
        (crate::userspace::Mode::Userspace, why) => {
            args.userspace = true;
            if let Some(why) = why {
                reporter.step(&why);
            }
        }
        _ if !privileged() => return Err(Error::NotPrivileged),
        _ => {}
    }
    let started = Instant::now();
    dir.create()?;
    if let Holder::Running(pid) = DaemonLock::holder(&dir.lock()) {
        return Err(Error::AlreadyJoined { pid });
    }
    if args.foreground {
        let mut report = |p: Progress| match p {
            Progress::Ready(status) => {
                reporter.clear();
                print_joined(&status, format, started.elapsed());
            }
            p => reporter.show(&p),
        };
        return driver::run(args, dir, &mut report).await;
    }
    // From here a signal cancels the join (the daemon undoes its steps) instead of killing kwg.
    let mut signals = driver::CancelSignals::new()?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find the kwg executable", e))?;
    let log = std::fs::File::create(dir.log())
        .map_err(|e| Error::io(format!("create {}", dir.log().display()), e))?;
    let spec = serde_json::to_string(&args).expect("join args serialize");
    let mut child = kwg_wg::process::spawn_detached(
        Process::new(exe)
            .args(["daemon", "--spec", &spec])
            .stdout(Stdio::piped())
            .stderr(log),
    )
    .map_err(|e| Error::io("start the kwg daemon", e))?;
    let stdout = child.stdout.take().expect("piped");
    // Each line as it comes: the progress is shown while the daemon works.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(p) = serde_json::from_str::<Progress>(&line) else {
                continue;
            };
            if tx.send(p).is_err() {
                break;
            }
        }
    });
    // The daemon gives up itself at --timeout; this is the bound for a daemon that hangs.
    let timeout = args.timeout + Duration::from_secs(5);
    let mut deadline = tokio::time::Instant::now() + timeout;
    let log = dir.log().display().to_string();
    let mut cancel: Option<Cancel> = None;
    let mut outcome = Err(Error::DaemonExited { log: log.clone() });
    loop {
        tokio::select! {
            p = lines.recv() => match p {
                // Cancelled: the daemon's stdout closes when it has undone its steps and exits.
                None => break,
                Some(Progress::Ready(status)) if cancel.is_none() => {
                    outcome = Ok(status);
                    break;
                }
                Some(Progress::Failed(f)) => {
                    outcome = Err(Error::Reported(f));
                    break;
                }
                Some(p) => reporter.show(&p),
            },
            by = signals.recv() => match cancel {
                None => {
                    cancel = Some(by);
                    reporter.cancelling(by);
                    // SIGTERM makes the daemon undo every step it took, reporting as it goes.
                    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
                    deadline = tokio::time::Instant::now() + CANCEL_GRACE;
                }
                Some(_) => reporter.still_cleaning(),
            },
            _ = tokio::time::sleep_until(deadline) => {
                let undone = stop_daemon(&mut child, &dir).await;
                reporter.clear();
                return Err(match cancel {
                    Some(by) => Error::Cancelled { by, undone },
                    None => Error::DaemonTimeout { secs: timeout.as_secs(), log },
                });
            }
        }
    }
    if let Some(by) = cancel {
        let undone = stop_daemon(&mut child, &dir).await;
        reporter.clear();
        return Err(Error::Cancelled { by, undone });
    }
    let status = match outcome {
        Ok(status) => status,
        Err(e @ Error::DaemonExited { .. }) => {
            // It died without undoing: what its journal holds is undone here.
            let undone = stop_daemon(&mut child, &dir).await;
            if undone != UNDONE {
                reporter.step(&format!("The daemon's steps: {undone}"));
            }
            reporter.clear();
            return Err(e);
        }
        Err(e) => {
            let _ = child.wait();
            reporter.clear();
            return Err(e);
        }
    };
    let after_ready = async {
        let mut status = status;
        if !args.wait_for.is_empty() {
            let names: Vec<String> = args.wait_for.iter().map(|t| t.to_string()).collect();
            let waiting = format!("Waiting for {}", names.join(", "));
            reporter.doing("WaitFor", &waiting);
            let deadline = started + args.timeout;
            let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
            crate::wait::all(&args.wait_for, &status, deadline).await?;
        }
        tell_reach(&mut status, &dir, &reporter).await;
        Ok::<_, Error>(status)
    };
    let result = tokio::select! {
        r = after_ready => r.map_err(|e| (e, None)),
        by = signals.recv() => {
            reporter.cancelling(by);
            Err((Error::Cancelled { by, undone: String::new() }, Some(by)))
        }
    };
    match result {
        Ok(status) => {
            reporter.clear();
            print_joined(&status, format, started.elapsed());
            Ok(())
        }
        Err((e, by)) => {
            // Nothing of a join that failed its wait or was cancelled stays behind.
            let undone = match undo_all(&dir, &reporter).await {
                Ok(c) => {
                    reporter.left(&c.removed);
                    UNDONE.to_string()
                }
                Err(undo) => {
                    let undone = format!("undoing failed ({undo}): run kwg leave");
                    if by.is_none() {
                        reporter.step(&format!("Leaving again: {undone}"));
                    }
                    undone
                }
            };
            reporter.clear();
            Err(match by {
                Some(by) => Error::Cancelled { by, undone },
                None => e,
            })
        }
    }
}

/// How long a cancelled daemon may take to undo its steps before it is killed and its journal
/// undone here.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// The end of [`Error::Cancelled`]'s sentence when everything was undone.
pub const UNDONE: &str = "every step it had taken is undone";

/// Waits for a daemon that was told to stop (SIGTERM) to exit, kills it after 5 s, and undoes
/// what its journal still holds; says whether everything is undone.
async fn stop_daemon(child: &mut std::process::Child, dir: &StateDir) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if matches!(child.try_wait(), Ok(None)) {
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
    match State::load(&dir.state()) {
        Ok(Some(state)) => match cleanup_dead(&state, dir, None).await {
            Ok(_) => UNDONE.into(),
            Err(e) => format!("undoing failed ({e}): run kwg leave"),
        },
        Ok(None) => UNDONE.into(),
        Err(e) => format!("its journal is unreadable ({e}): run kwg leave"),
    }
}

/// Tells the user which mapped namespaces the gateway will not forward to (waiting up to 3 s
/// for the gateway to decide), and puts the reach into the status `kwg join` prints.
async fn tell_reach(status: &mut Status, dir: &StateDir, reporter: &Reporter) {
    let Some(admin) = State::load(&dir.state())
        .ok()
        .flatten()
        .and_then(|s| s.gateway_admin)
    else {
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    status.reach = crate::reach::wait_own(admin, &status.peer, deadline).await;
    match &status.reach {
        Some(r) => crate::reach::warnings(status, r)
            .iter()
            .for_each(|w| reporter.step(w)),
        None => reporter.step(
            "The gateway did not say which namespaces this peer reaches yet: see `kwg status`.",
        ),
    }
}

fn print_joined(status: &Status, format: Format, elapsed: Duration) {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string(status).expect("status serializes")
        );
    } else {
        let how = match status.proxy {
            Some(p) => format!("userspace mode, proxy on {p}"),
            None => format!(
                "DNS {}",
                status
                    .dns
                    .as_ref()
                    .map(|d| d.mode.as_str())
                    .unwrap_or("off")
            ),
        };
        println!(
            "Joined: {} as {} in namespace {} ({} subnets, {how}) in {} ms",
            status.context.as_deref().unwrap_or(&status.server),
            status.tunnel_ip.as_deref().unwrap_or("-"),
            status.namespace,
            status.subnets.len(),
            elapsed.as_millis()
        );
    }
}

/// The daemon process: runs [`driver::run`], reporting progress as JSON lines on stdout.
pub async fn daemon(spec: &str, dir: StateDir) -> Result<(), Error> {
    let args: JoinArgs =
        serde_json::from_str(spec).map_err(|e| Error::invalid("daemon spec", e.to_string()))?;
    let mut out = std::io::stdout();
    let mut send = |p: Progress| {
        // `kwg join` stops reading once ready: later writes may fail, which is fine.
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&p).expect("progress serializes")
        );
        let _ = out.flush();
    };
    let result = driver::run(args, dir, &mut send).await;
    if let Err(e) = &result {
        send(Progress::Failed(e.into()));
    }
    result
}

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
        Some(admin) if running => gateway_peers(admin).await,
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

/// The gateway's `/peers` JSON through the tunnel (empty when it does not answer).
pub(crate) async fn gateway_peers(
    admin: std::net::SocketAddr,
) -> Vec<kwg_wg::contract::GatewayPeer> {
    use http_body_util::BodyExt;
    let fetch = async {
        let tcp = crate::userspace::client::dial_cluster(admin).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/peers")
            .header(hyper::header::HOST, admin.to_string())
            .header(hyper::header::ACCEPT, "application/json")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
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
        match api::call(&dir.socket(), Request::Leave, Duration::from_secs(15)).await {
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
        if let Some(pid) = pid {
            wait_exit(dir, pid, Duration::from_secs(5)).await;
        }
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

/// Waits until the daemon released its lock (it exited), at most `max`; then kills it.
async fn wait_exit(dir: &StateDir, pid: u32, max: Duration) {
    let running = || DaemonLock::holder(&dir.lock()) == Holder::Running(Some(pid));
    let deadline = Instant::now() + max;
    while running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if running() {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
}
