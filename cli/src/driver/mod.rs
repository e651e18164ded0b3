//! The daemon's driver: executes the session core's actions (kube, netlink, the device, DNS,
//! files), feeds the results back as events, and serves the control socket. It owns every
//! resource; the core owns every decision.

mod actions;
mod edge;
pub mod exec;
pub mod firewall;
mod helper;
mod inspect;
mod status;
pub mod undo;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kwg_contract::keys::PrivateKey;
use kwg_contract::{GatewayInfo, Status};
use kwg_wg::device::Device;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::api::{self, Incoming, Reply, Request};
use crate::args::JoinArgs;
use crate::cluster::Kube;
use crate::dns::forwarder::Forwarder;
use crate::error::Error;
use crate::lock::DaemonLock;
use crate::state::{State, StateDir, StateFile, Undo};
use actions::Started;
use kwg_session::machine::{Action, Event, Phase, Session};
pub use status::{dns_problem, peer_secret, silent_daemon_status, status_from_state};

/// What the daemon tells `kwg join` while it comes up (one JSON object per line).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Progress {
    /// A step begins (`step` names the session's phase): the spinner's text.
    Doing {
        step: String,
        message: String,
    },
    /// A sentence about what was done.
    Step(String),
    Ready(Box<Status>),
    Failed(crate::exit::Failure),
    /// The session ended and every step it took was undone (what was removed), but for the
    /// peer Secret the cluster would not delete (its lease collects it).
    Left {
        removed: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left_behind: Option<crate::state::LeftBehind>,
    },
    /// With `--foreground`: a signal (its name) cancels the join.
    Cancelling(String),
}

/// The signals that end a session or cancel a join: SIGINT, SIGTERM and SIGHUP.
pub struct CancelSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl CancelSignals {
    /// Registers the handlers (from then on none of these signals kills the process); needs a
    /// tokio runtime.
    pub fn new() -> Result<CancelSignals, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let register =
            |kind| signal(kind).map_err(|e| Error::io("handle SIGINT/SIGTERM/SIGHUP", e));
        Ok(CancelSignals {
            int: register(SignalKind::interrupt())?,
            term: register(SignalKind::terminate())?,
            hup: register(SignalKind::hangup())?,
        })
    }

    /// The next of these signals.
    pub async fn recv(&mut self) -> crate::exit::Cancel {
        use crate::exit::Cancel;
        tokio::select! {
            _ = self.int.recv() => Cancel::Interrupt,
            _ = self.term.recv() => Cancel::Terminate,
            _ = self.hup.recv() => Cancel::Hangup,
        }
    }
}

/// What the spinner says while the session is in `phase` (`None`: nothing to wait for).
fn doing(phase: Phase, userspace: bool) -> Option<&'static str> {
    Some(match phase {
        Phase::Inspecting => "Reading the kubeconfig and the gateway's info",
        Phase::Registering => "Registering this machine's peer",
        Phase::WaitingTunnelIp => "Waiting for the gateway to assign a tunnel IP",
        Phase::CreatingDevice if userspace => "Starting the userspace tunnel and proxy",
        Phase::CreatingDevice => "Creating the tunnel interface",
        Phase::ConfiguringNetwork => "Adding the tunnel address and routes",
        Phase::InstallingFirewall => "Installing the tunnel's firewall rules",
        Phase::StartingDns => "Starting the DNS forwarder",
        Phase::WritingResolvConf => "Pointing resolv.conf at the DNS forwarder",
        Phase::ConfiguringResolved => "Configuring systemd-resolved",
        Phase::RevertingResolved => "Falling back from systemd-resolved to resolv.conf",
        Phase::AwaitingHandshake => "Waiting for the WireGuard handshake with the gateway",
        Phase::ProbingDns => "Checking that cluster DNS answers through the tunnel",
        Phase::TearingDown => "Undoing the steps taken",
        Phase::Serving | Phase::Done => return None,
    })
}

type Long = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A finished long action.
enum Done {
    Event(Event),
    Inspected(Result<inspect::Inspected, Error>),
    /// The credentials were loaded again from the kubeconfig: the client to keep.
    Reconnected(Box<Kube>, Event),
}

struct Driver {
    args: JoinArgs,
    dir: StateDir,
    kube: Option<Kube>,
    key: Option<PrivateKey>,
    device: Option<Device>,
    /// Chooses the gateway's path (UDP, TCP, API server) once the peer is configured.
    transport: Option<crate::transport::Transport>,
    /// Its last status, kept for the error when no path worked.
    transport_status: Option<kwg_contract::TransportStatus>,
    /// Userspace mode's stack and proxy (the device is `device`).
    userspace: Option<crate::userspace::Userspace>,
    forwarder: Option<Forwarder>,
    resolved: Option<crate::dns::resolved::Resolved>,
    watch: Option<tokio::task::JoinHandle<()>>,
    /// The gateway admin address the DNS follower in `watch` asks (`None`: no follower).
    followed_admin: Option<std::net::SocketAddr>,
    info_tx: mpsc::Sender<GatewayInfo>,
    /// Said to `kwg join` with the next progress line.
    warnings: Vec<String>,
    /// A normal user's join: the session with kwg-helper, which made the TUN and holds the
    /// address, routes and firewall (`crate::privileged`).
    helper: Option<crate::privileged::Helper>,
    /// The identity (device, inode) of the UDP socket whose buffers kwg-helper forced last:
    /// a rebind onto the same port is another socket.
    udp_forced: Option<(u64, u64)>,
}

/// Runs the daemon: takes the lock, cleans up after a dead predecessor, brings everything up
/// (reporting progress), serves until `leave` or SIGTERM/SIGINT, then undoes everything. A
/// signal or `leave` before it is ready cancels the join: [`Error::Cancelled`] once undone.
/// SIGHUP counts only with `--foreground` (a closed terminal); the detached daemon outlives
/// the terminal that started it.
pub async fn run(
    args: JoinArgs,
    dir: StateDir,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), Error> {
    // Handled from the start, so a signal during bring-up also undoes what was done.
    let mut signals = CancelSignals::new()?;
    dir.create()?;
    let _lock = DaemonLock::acquire(&dir.lock())?;
    if let Some(stale) = State::load(&dir.state())? {
        progress(Progress::Step(
            "Cleaning up after a previous kwg daemon that died".into(),
        ));
        // With the kubeconfig this join was given, not the dead session's (which may be
        // expired or revoked); a peer Secret it cannot delete is left to its lease.
        let kube = (
            args.kube.kubeconfig.as_deref(),
            args.kube.context.as_deref(),
        );
        let cleaned = undo::cleanup_dead(&stale, &dir, Some(kube)).await?;
        if let Some(l) = cleaned.left_behind {
            progress(Progress::Step(format!(
                "Could not delete the previous session's peer Secret {}/{} ({}): the gateway removes it {}",
                l.namespace,
                l.secret,
                l.reason,
                l.when()
            )));
        }
    }
    let (req_tx, mut requests) = mpsc::channel::<Incoming>(16);
    let server = tokio::spawn(api::serve(api::listen(&dir.socket())?, req_tx));
    let (info_tx, mut infos) = mpsc::channel(4);
    let config = kwg_session::SessionConfig::from(&args);
    let template = State::template(
        &config,
        args.kube.kubeconfig.clone(),
        args.kube.context.clone(),
        Some(std::process::id()),
        chrono::Utc::now(),
    );
    // Why a previous session (this one or another) ended on its own is no longer news.
    crate::privileged::clear_ended_notes(&dir.0);
    let started = Instant::now();
    let mut session = Session::new(config, template, dir.resolv_backup(), started.into_std());
    let mut d = Driver {
        args,
        dir: dir.clone(),
        kube: None,
        key: None,
        device: None,
        transport: None,
        transport_status: None,
        userspace: None,
        forwarder: None,
        resolved: None,
        watch: None,
        followed_admin: None,
        info_tx,
        warnings: Vec::new(),
        helper: None,
        udp_forced: None,
    };
    let mut long: Option<Long> = None;
    let mut leave_waiters: Vec<oneshot::Sender<Reply>> = Vec::new();
    let mut joined = false;
    let mut cancelled: Option<crate::exit::Cancel> = None;
    // kwg-helper, which held the machine side, went away: the session is ending.
    let mut helper_lost = false;
    let mut shown: Option<Phase> = None;
    'run: loop {
        while let Some(action) = session.poll_action() {
            let now = std::time::Instant::now();
            match action {
                Action::Exit => break 'run,
                Action::Cancel => long = None,
                Action::Progress(s) => {
                    for w in d.warnings.drain(..) {
                        progress(Progress::Step(w));
                    }
                    progress(Progress::Step(s))
                }
                Action::Ready => {
                    joined = true;
                    // Said before the join's last line (a namespace left out of the link's
                    // domains comes with the DNS step, after its progress line).
                    for w in d.warnings.drain(..) {
                        progress(Progress::Step(w));
                    }
                    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "joined");
                    progress(Progress::Ready(Box::new(d.status(&session).await)));
                    d.watch_gateway_info();
                }
                a => match d.start(a).await {
                    Started::Now(ev) => session.handle(ev, now),
                    Started::Long(fut) => long = Some(fut),
                    Started::Nothing => {}
                },
            }
            let phase = session.phase();
            if shown != Some(phase) && (!joined || phase == Phase::TearingDown) {
                shown = Some(phase);
                if let Some(message) = doing(phase, d.args.userspace) {
                    let step = format!("{phase:?}");
                    progress(Progress::Doing {
                        step,
                        message: message.into(),
                    });
                }
            }
        }
        // A reinstalled gateway's new tunnel CIDR moved its admin address (journalled by
        // the Save just run): the DNS follower starts again asking the new one.
        d.follow_gateway_admin(session.state().and_then(|s| s.gateway_admin));
        let timeout = session.poll_timeout().map(Instant::from_std);
        let helper = d.helper.clone().filter(|_| joined && !helper_lost);
        tokio::select! {
            () = crate::privileged::lost(helper) => {
                // The helper held the machine side: the session ends as at leave (the peer
                // deregistered, transports and forwarder stopped), saying why for kwg status.
                helper_lost = true;
                tracing::warn!("kwg-helper went away: ending the session");
                let note = crate::privileged::ended_path(&dir.0);
                if let Err(e) = std::fs::write(&note, crate::privileged::HELPER_WENT_AWAY) {
                    tracing::warn!(error = %e, "cannot write {}", note.display());
                }
                session.handle(Event::Leave, std::time::Instant::now());
            }
            done = async { long.as_mut().expect("in flight").await }, if long.is_some() => {
                long = None;
                let ev = d.finished(done);
                session.handle(ev, std::time::Instant::now());
            }
            _ = tokio::time::sleep_until(timeout.unwrap_or_else(Instant::now)), if timeout.is_some() => {
                session.handle_timeout(std::time::Instant::now());
            }
            signal = signals.recv() => {
                use crate::exit::Cancel;
                if signal == Cancel::Hangup && !d.args.foreground {
                    tracing::info!("SIGHUP ignored: the daemon outlives the terminal that started it");
                    continue;
                }
                if session.phase() == Phase::TearingDown {
                    progress(Progress::Step("Still undoing the steps taken; kwg exits when they are undone".into()));
                }
                if !joined && cancelled.is_none() {
                    cancelled = Some(signal);
                    // Detached, `kwg join` itself says so (it sent the SIGTERM).
                    if d.args.foreground {
                        progress(Progress::Cancelling(signal.name().into()));
                    }
                }
                session.handle(Event::Signal, std::time::Instant::now())
            }
            Some((req, reply)) = requests.recv() => match req {
                Request::Status => {
                    let checked = d.status_checked(&session).await;
                    tokio::spawn(async move { let _ = reply.send(Reply::Status(Box::new(checked.await))); });
                }
                Request::Leave => {
                    if !joined {
                        cancelled.get_or_insert(crate::exit::Cancel::Leave);
                    }
                    leave_waiters.push(reply);
                    session.handle(Event::Leave, std::time::Instant::now());
                }
            },
            Some(info) = infos.recv() => session.handle(Event::GatewayInfo(Box::new(info)), std::time::Instant::now()),
        }
    }
    server.abort();
    if let Some(w) = d.watch.take() {
        w.abort();
    }
    let _ = std::fs::remove_file(dir.socket());
    let outcome = session
        .outcome()
        .map_err(|e| d.paths_error(edge::from_session(e)));
    for w in leave_waiters {
        let _ = w.send(match &outcome {
            Ok(removed) => Reply::Left {
                removed: removed.clone(),
                left_behind: session.left_behind().cloned(),
            },
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        });
    }
    // Give the `leave` clients a moment to read their reply before the process exits.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let left_behind = session.left_behind().cloned();
    match (&outcome, &left_behind) {
        (Ok(removed), _) => progress(Progress::Left {
            removed: removed.clone(),
            left_behind: left_behind.clone(),
        }),
        // A failed join: its error is the failure, the Secret it could not delete a sentence.
        (Err(_), Some(l)) => progress(Progress::Step(format!("kwg {l}"))),
        (Err(_), None) => {}
    }
    match outcome {
        Ok(_) if !joined && let Some(by) = cancelled => Err(Error::Cancelled {
            by,
            undone: crate::exit::undone(left_behind.as_ref()),
        }),
        Ok(_) => Ok(()),
        Err(e) if joined => {
            tracing::error!(error = %e, "leaving did not undo everything; kwg leave retries");
            Err(e)
        }
        Err(e) => Err(e),
    }
}

impl Driver {
    /// No handshake on any path: the error names each path tried and why it failed.
    fn paths_error(&self, e: Error) -> Error {
        match (e, &self.transport_status) {
            (Error::Session(kwg_session::Error::GatewayUdp { secs, .. }), Some(t))
                if !t.failed.is_empty() =>
            {
                Error::GatewayPaths {
                    secs,
                    tried: crate::transport::failures_text(t),
                }
            }
            (e, _) => e,
        }
    }

    fn finished(&mut self, done: Done) -> Event {
        match done {
            Done::Event(e) => e,
            Done::Inspected(Ok(i)) => {
                self.kube = Some(i.kube);
                self.key = Some(i.key);
                self.resolved = i.resolved;
                self.warnings.extend(i.notes);
                Event::Inspected(i.facts)
            }
            Done::Inspected(Err(e)) => Event::Failed(e.into()),
            Done::Reconnected(kube, e) => {
                self.kube = Some(*kube);
                // The watches (gateway info, namespaces) hold the client they started with,
                // which the API server now rejects: started again with the new one.
                if let Some(w) = self.watch.take() {
                    w.abort();
                    self.watch_gateway_info();
                }
                e
            }
        }
    }

    /// Deletes this join's peer Secret; credentials the API rejects are loaded again from the
    /// kubeconfig (a new token, the exec plugin run again) for one more try.
    async fn delete_peer(&mut self, u: &Undo) -> Event {
        let Some(kube) = self.kube.clone() else {
            return Event::UndoFailed(
                undo::left_behind(u, "the cluster cannot be reached".into()).into(),
            );
        };
        let mut r = undo::delete_peer(u, &kube).await;
        // Rejected credentials are loaded again; an unreachable server is tried once more on
        // a fresh client, whose connections start from the machine's current address (a
        // pooled one from an address the machine no longer has only times out).
        if let Err(Error::Unauthorized { .. } | Error::ApiUnreachable { .. }) = r
            && let Some(fresh) = self.reconnect().await
        {
            r = undo::delete_peer(u, &fresh).await;
        }
        match r {
            Ok(what) => Event::Undone(what),
            Err(e) => Event::UndoFailed(undo::left_behind(u, e.to_string()).into()),
        }
    }

    /// A new client from the kubeconfig this daemon was started with (re-read, exec plugin
    /// run again), kept for what follows; `None` when that fails too.
    async fn reconnect(&mut self) -> Option<Kube> {
        let k = &self.args.kube;
        match Kube::connect(k.kubeconfig.as_deref(), k.context.as_deref()).await {
            Ok(fresh) => {
                tracing::info!("loaded the kubeconfig again for a fresh API server client");
                self.kube = Some(fresh.clone());
                Some(fresh)
            }
            Err(e) => {
                tracing::warn!(error = %e, "loading the kubeconfig again failed");
                None
            }
        }
    }

    /// Undoes one step; the daemon's own device and forwarder are stopped here first.
    async fn undo(&mut self, u: Undo) -> Event {
        match &u {
            Undo::StopForwarder => {
                if let Some(f) = self.forwarder.take() {
                    f.stop();
                }
            }
            // A normal user's session: the helper reverts the link it configured.
            Undo::RevertLink { .. } if self.helper.is_some() => {
                let h = self.helper.as_ref().expect("checked");
                return match h.revert_dns().await {
                    Ok(()) => Event::Undone(Some("DNS settings in systemd-resolved".into())),
                    Err(e) => Event::UndoFailed(e.into()),
                };
            }
            Undo::RevertLink { ifindex, .. } => {
                if let Some(c) = &self.resolved {
                    return match c.revert(*ifindex).await {
                        Ok(()) => Event::Undone(Some("DNS settings in systemd-resolved".into())),
                        Err(e) => Event::UndoFailed(Error::from(e).into()),
                    };
                }
            }
            Undo::StopProxy { listen } => {
                if let Some(u) = self.userspace.take() {
                    u.stop();
                }
                if let Some(d) = self.device.take()
                    && let Err(e) = d.shutdown().await
                {
                    tracing::warn!(error = %e, "stopping the device");
                }
                return Event::Undone(Some(format!("the userspace tunnel and proxy on {listen}")));
            }
            // The helper removes the table with the rest of the session (below).
            Undo::RemoveFirewall { .. } if self.helper.is_some() => return Event::Undone(None),
            Undo::RestoreResolvConf { .. } if self.helper.is_some() => {
                let h = self.helper.as_mut().expect("checked");
                return match h.revert_dns().await {
                    Ok(()) => Event::Undone(Some("DNS settings".into())),
                    Err(e) => Event::UndoFailed(e.into()),
                };
            }
            Undo::DeleteInterface { name, .. } => {
                if let Some(t) = self.transport.take() {
                    self.transport_status = t.last_status();
                }
                if let Some(d) = self.device.take() {
                    if let Err(e) = d.shutdown().await {
                        tracing::warn!(error = %e, "stopping the device");
                    }
                    if let Some(h) = self.helper.take() {
                        return match h.close().await {
                            Ok(()) => Event::Undone(Some(format!("routes and interface {name}"))),
                            Err(e) => Event::UndoFailed(Error::from(e).into()),
                        };
                    }
                    // The TUN goes with the device; delete it if it is somehow still there.
                    return match undo::undo_step(&u, self.kube.as_ref()).await {
                        Ok(_) => Event::Undone(Some(format!("routes and interface {name}"))),
                        Err(e) => Event::UndoFailed(Error::from(e).into()),
                    };
                }
            }
            Undo::DeletePeer { .. } => return self.delete_peer(&u).await,
            _ => {}
        }
        match undo::undo_step(&u, self.kube.as_ref()).await {
            Ok(what) => Event::Undone(what),
            Err(e) => Event::UndoFailed(e.into()),
        }
    }
}
