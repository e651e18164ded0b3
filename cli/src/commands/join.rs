//! `kwg join` and the daemon process it starts: the daemon's progress shown as it comes,
//! and a signal to `join` before it returns passed on as a cancel.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use super::{signal, undo_all};
use crate::args::{Format, JoinArgs};
use crate::caps::privileged;
use crate::driver::{self, Progress, undo::cleanup_dead};
use crate::error::Error;
use crate::exit::{Cancel, UNDONE};
use crate::lock::{DaemonLock, Holder};
use crate::progress::Reporter;
use crate::state::{State, StateDir, StateFile};
use kwg_contract::Status;

/// `kwg join`: starts the daemon (or runs it here with --foreground) and waits until it is
/// connected or failed.
pub async fn join(mut args: JoinArgs, dir: StateDir) -> Result<(), Error> {
    // `sudo kwg join`: the same join runs as the user who typed it, through kwg-helper.
    crate::privileged::sudo::join_as_invoker(&args).await?;
    let format = args.output;
    let reporter = Reporter::new(format);
    // A normal user's TUN-mode join goes through kwg-helper (crate::privileged).
    let via_helper = crate::privileged::prepare(&mut args, &reporter).await?;
    let facts = crate::userspace::ModeFacts::probe();
    match crate::userspace::choose(args.userspace, args.tun, facts, args.proxy_listen) {
        (crate::userspace::Mode::Userspace, why) => {
            args.userspace = true;
            if let Some(why) = why {
                reporter.step(&why);
            }
        }
        _ if !privileged() && !via_helper => return Err(Error::NotPrivileged),
        _ => {}
    }
    let started = Instant::now();
    dir.create()?;
    // A session per context: its own directory, interface, forwarder and alias.
    let dir = super::sessions::place(&mut args, &dir)?;
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
    let mut child = kwg_host::process::spawn_detached(
        Process::new(exe)
            .args(["daemon", "--spec", &spec])
            // The session's own directory (sessions after the first live under sessions/).
            .env("KWG_STATE_DIR", &dir.0)
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
    // The peer Secret the daemon could not delete (it removes its state all the same).
    let mut left_behind = None;
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
                Some(p) => {
                    if let Progress::Left { left_behind: l, .. } = &p {
                        left_behind.clone_from(l);
                    }
                    // A daemon that failed is undoing its steps: they get their own time
                    // rather than being cut off by the join's bound (its real error with them).
                    if matches!(&p, Progress::Doing { step, .. } if step == "TearingDown") {
                        deadline = deadline.max(tokio::time::Instant::now() + TEARDOWN_GRACE);
                    }
                    reporter.show(&p);
                }
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
                if cancel.is_none() {
                    // SIGTERM makes the daemon undo what it did; one that does not exit is
                    // killed, and its journal undone here.
                    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
                }
                let undone = stop_daemon(&mut child, &dir, &args, left_behind.as_ref()).await;
                reporter.clear();
                return Err(match cancel {
                    Some(by) => Error::Cancelled { by, undone },
                    None => Error::DaemonTimeout { secs: timeout.as_secs(), log },
                });
            }
        }
    }
    if let Some(by) = cancel {
        let undone = stop_daemon(&mut child, &dir, &args, left_behind.as_ref()).await;
        reporter.clear();
        return Err(Error::Cancelled { by, undone });
    }
    let status = match outcome {
        Ok(status) => status,
        Err(e @ Error::DaemonExited { .. }) => {
            // It died without undoing: what its journal holds is undone here.
            let undone = stop_daemon(&mut child, &dir, &args, left_behind.as_ref()).await;
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
            // Nothing of a join that failed its wait or was cancelled stays behind; a further
            // signal while undoing does not stop that.
            let undoing = undo_all(&dir, &reporter);
            tokio::pin!(undoing);
            let undone = loop {
                tokio::select! {
                    r = &mut undoing => break r,
                    _ = signals.recv() => reporter.still_cleaning(),
                }
            };
            let undone = match undone {
                Ok(c) => {
                    reporter.left(&c.removed, c.left_behind.as_ref());
                    if let Some(l) = c.left_behind.as_ref().filter(|_| by.is_none()) {
                        reporter.step(&format!("kwg {l}"));
                    }
                    crate::exit::undone(c.left_behind.as_ref())
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

/// How long a daemon that is undoing its steps (after a failure or a cancel) may take from
/// then on: the peer delete alone may take the API's read timeout (15 s), plus a margin.
const TEARDOWN_GRACE: Duration = Duration::from_secs(20);

/// Waits for a daemon that was told to stop (SIGTERM) to exit, kills it after 5 s, and undoes
/// what its journal still holds (with the kubeconfig this join was given); says whether
/// everything is undone (`left_behind`: the peer Secret the daemon said it could not delete).
async fn stop_daemon(
    child: &mut std::process::Child,
    dir: &StateDir,
    args: &JoinArgs,
    left_behind: Option<&crate::state::LeftBehind>,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
    match State::load(&dir.state()) {
        Ok(Some(state)) => {
            let kube = (
                args.kube.kubeconfig.as_deref(),
                args.kube.context.as_deref(),
            );
            match cleanup_dead(&state, dir, Some(kube)).await {
                Ok(c) => crate::exit::undone(c.left_behind.as_ref().or(left_behind)),
                Err(e) => format!("undoing failed ({e}): run kwg leave"),
            }
        }
        // The daemon undid its journal (and said which Secret it could not delete).
        Ok(None) => crate::exit::undone(left_behind),
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
        // A dual-stack join: both tunnel addresses.
        let six = status.tunnel_ip6.as_ref().map(|ip| format!(", {ip}"));
        println!(
            "Joined: {} as {}{} in namespace {} ({} subnets, {how}) in {} ms",
            status.context.as_deref().unwrap_or(&status.server),
            status.tunnel_ip.as_deref().unwrap_or("-"),
            six.unwrap_or_default(),
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
