//! `join`, `status`, `peers`, `leave`: thin clients of the daemon and the state file.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::args::{Format, JoinArgs, LeaveArgs, OutputArgs, PeersArgs};
use crate::cluster::Kube;
use crate::daemon::{self, Progress};
use crate::error::Error;
use crate::output::{self, PeerRow};
use crate::state::{State, StateDir, pid_alive};
use kwg_wg::contract::Status;

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process may create interfaces and routes.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn say(format: Format, line: &str) {
    if format != Format::Json {
        let mut err = std::io::stderr();
        let mark = if err.is_terminal() { "• " } else { "" };
        let _ = writeln!(err, "{mark}{line}");
    }
}

/// `kwg join`: starts the daemon (or runs it here with --foreground) and waits until it is
/// connected or failed.
pub async fn join(args: JoinArgs, dir: StateDir) -> Result<(), Error> {
    if !privileged() {
        return Err(Error::NotPrivileged);
    }
    let started = Instant::now();
    dir.create()?;
    if let Some(state) = State::load(&dir.state())? {
        match state.daemon_pid.filter(|p| pid_alive(*p)) {
            Some(pid) => return Err(Error::AlreadyJoined { pid }),
            None => {
                say(
                    args.output,
                    "Cleaning up after a previous kwg daemon that died",
                );
                cleanup_dead(&state, &dir).await?;
            }
        }
    }
    let format = args.output;
    let mut report = |p: Progress| match p {
        Progress::Step(s) => say(format, &s),
        Progress::Ready(status) => print_joined(&status, format, started.elapsed()),
        Progress::Failed(_) => {}
    };
    if args.foreground {
        return daemon::run(args, dir, &mut report).await;
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("find the kwg executable", e))?;
    let log = std::fs::File::create(dir.log())
        .map_err(|e| Error::io(format!("create {}", dir.log().display()), e))?;
    let spec = serde_json::to_string(&args).expect("join args serialize");
    let mut child = {
        use std::os::unix::process::CommandExt;
        Process::new(exe)
            .args(["daemon", "--spec", &spec])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("start the kwg daemon", e))?
    };
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let timeout = args.timeout + Duration::from_secs(5);
    let lines = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(p) = serde_json::from_str::<Progress>(&line) else {
                continue;
            };
            let last = !matches!(p, Progress::Step(_));
            out.push(p);
            if last {
                break;
            }
        }
        out
    });
    let progress = match tokio::time::timeout(timeout, lines).await {
        Ok(Ok(p)) => p,
        _ => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            // The daemon handles SIGTERM only once joined: before that it dies at once, so
            // undo from the state file what it had done, or it stays behind.
            wait_exit(pid, Duration::from_secs(5)).await;
            let _ = child.wait();
            if let Ok(Some(state)) = State::load(&dir.state())
                && let Err(e) = cleanup_dead(&state, &dir).await
            {
                tracing::error!(error = %e, "cleanup after the stopped daemon failed; run kwg leave");
            }
            return Err(Error::Daemon(format!(
                "it did not finish joining within {}s and was stopped; its log is {}",
                timeout.as_secs(),
                dir.log().display()
            )));
        }
    };
    let mut outcome = Err(Error::Daemon(format!(
        "it exited unexpectedly; its log is {}",
        dir.log().display()
    )));
    for p in progress {
        match p {
            Progress::Failed(msg) => outcome = Err(Error::Reported(msg)),
            Progress::Ready(_) => {
                outcome = Ok(());
                report(p);
            }
            p => report(p),
        }
    }
    if outcome.is_err() {
        let _ = child.wait();
    }
    outcome
}

fn print_joined(status: &Status, format: Format, elapsed: Duration) {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string(status).expect("status serializes")
        );
    } else {
        println!(
            "Joined: {} as {} in namespace {} ({} subnets, DNS {}) in {} ms",
            status.context.as_deref().unwrap_or(&status.server),
            status.tunnel_ip.as_deref().unwrap_or("-"),
            status.namespace,
            status.subnets.len(),
            status
                .dns
                .as_ref()
                .map(|d| d.mode.as_str())
                .unwrap_or("off"),
            elapsed.as_millis()
        );
    }
}

/// The daemon process: runs [`daemon::run`], reporting progress as JSON lines on stdout.
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
    let result = daemon::run(args, dir, &mut send).await;
    if let Err(e) = &result {
        send(Progress::Failed(e.to_string()));
    }
    result
}

/// Undoes a join whose daemon is gone; needs the kube client only for the Secret.
async fn cleanup_dead(state: &State, dir: &StateDir) -> Result<Vec<String>, Error> {
    let kube = Kube::connect(state.kubeconfig.as_deref(), state.context.as_deref()).await;
    if let Err(e) = &kube {
        tracing::warn!(error = %e, "cannot reach the cluster to delete the peer Secret; the gateway collects it when its lease expires");
    }
    let (done, result) = crate::undo::undo(state, dir, kube.as_ref().ok()).await;
    result.map(|()| done)
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
    let alive = state.daemon_pid.is_some_and(pid_alive);
    let status = if alive {
        match daemon::request(&dir, "status", Duration::from_secs(3))
            .await
            .ok()
            .and_then(|l| serde_json::from_str::<Status>(&l).ok())
        {
            Some(s) => s,
            None => daemon::status_from_state(&state, false),
        }
    } else {
        daemon::status_from_state(&state, false)
    };
    if args.output == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serializes")
        );
    } else {
        print!("{}", output::status_text(&status, Utc::now()));
    }
    Ok(if status.connected { 0 } else { 1 })
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
    let stats = match state.as_ref().and_then(|s| s.gateway_admin) {
        Some(admin)
            if state
                .as_ref()
                .and_then(|s| s.daemon_pid)
                .is_some_and(pid_alive) =>
        {
            gateway_peers(admin).await
        }
        _ => Vec::new(),
    };
    let me = state.as_ref().map(|s| s.peer.clone());
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
async fn gateway_peers(admin: std::net::SocketAddr) -> Vec<kwg_wg::contract::GatewayPeer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        let req =
            format!("GET /peers HTTP/1.0\r\nHost: {admin}\r\nAccept: application/json\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8(buf).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
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
    let Some(state) = State::load(&dir.state())? else {
        say(args.output, "kwg is not joined; nothing to do.");
        if args.output == Format::Json {
            println!("{}", serde_json::json!({ "left": false, "removed": [] }));
        }
        return Ok(());
    };
    let mut removed: Vec<String> = Vec::new();
    let pid = state.daemon_pid.filter(|p| pid_alive(*p));
    if let Some(pid) = pid {
        match daemon::request(&dir, "leave", Duration::from_secs(10)).await {
            Ok(line) => {
                let reply: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(r) = reply.get("removed").and_then(|r| r.as_array()) {
                    removed.extend(r.iter().filter_map(|v| v.as_str().map(String::from)));
                }
                if let Some(e) = reply.get("error").and_then(|e| e.as_str()) {
                    tracing::warn!(
                        error = e,
                        "the daemon could not undo everything; cleaning up from the state file"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, pid, "the daemon does not answer; stopping it");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        wait_exit(pid, Duration::from_secs(5)).await;
    }
    if let Some(state) = State::load(&dir.state())? {
        removed.extend(cleanup_dead(&state, &dir).await?);
    }
    let ms = started.elapsed().as_millis();
    if args.output == Format::Json {
        println!(
            "{}",
            serde_json::json!({ "left": true, "removed": removed, "elapsedMs": ms })
        );
    } else if removed.is_empty() {
        println!("Left the cluster ({ms} ms).");
    } else {
        println!(
            "Left the cluster: removed {} ({ms} ms).",
            removed.join(", ")
        );
    }
    Ok(())
}

async fn wait_exit(pid: u32, max: Duration) {
    let deadline = Instant::now() + max;
    while pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if pid_alive(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
