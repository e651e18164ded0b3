//! The helper's socket: each connection authorized by SO_PEERCRED, one session per connection,
//! every change planned by the [`Registry`] under one lock (so two sessions never race into an
//! overlap), journalled, made, recorded. When a connection ends for any reason its session is
//! reverted at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::auth::{self, Access};
use crate::journal::{Entry, Journal};
use crate::proto::{self, ErrorKind, LineBuf, Reply, Request};
use crate::registry::{Change, Limits, Op, Peer, Refusal, Registry, Undo};
use crate::rules::Policy;
use crate::system::{Net, NewTun};

/// How the helper is configured.
pub struct Config {
    pub access: Access,
    /// Uids served besides root and the group (a helper started through `sudo` by `kwg join`
    /// serves the user who started it).
    pub allow_uids: Vec<u32>,
    pub allow_routes: Vec<IpNet>,
    pub limits: Limits,
}

/// Connections served at once (each a session or a `list`/`end`); more are refused.
const MAX_CONNECTIONS: usize = 128;
/// Connections one user (other than root) is served at once, so that one member cannot take
/// every slot from the others.
const MAX_CONNECTIONS_PER_UID: usize = 8;

/// The connections being served: in all and per uid.
#[derive(Default)]
struct Slots {
    total: usize,
    by_uid: std::collections::HashMap<u32, usize>,
}

impl Slots {
    /// Takes a slot for a caller of `uid` (`None`: unknown, refused later), or says why not.
    /// Root is never refused: it can always `list` and `end`.
    fn take(&mut self, uid: Option<u32>) -> Result<(), String> {
        let mine = uid.map_or(0, |u| self.by_uid.get(&u).copied().unwrap_or(0));
        if uid != Some(0) {
            if mine >= MAX_CONNECTIONS_PER_UID {
                return Err(format!(
                    "kwg-helper serves at most {MAX_CONNECTIONS_PER_UID} connections of one user at once: end one of your kwg sessions, or try again"
                ));
            }
            if self.total >= MAX_CONNECTIONS {
                return Err(format!(
                    "kwg-helper serves {MAX_CONNECTIONS} connections at once; try again"
                ));
            }
        }
        self.total += 1;
        if let Some(u) = uid {
            *self.by_uid.entry(u).or_default() += 1;
        }
        Ok(())
    }

    fn give_back(&mut self, uid: Option<u32>) {
        self.total -= 1;
        if let Some(u) = uid
            && let Some(n) = self.by_uid.get_mut(&u)
        {
            *n -= 1;
            if *n == 0 {
                self.by_uid.remove(&u);
            }
        }
    }
}

struct Inner {
    reg: Mutex<Registry>,
    connections: std::sync::Mutex<Slots>,
    journal: Journal,
    net: Box<dyn Net>,
    policy: Box<dyn Policy>,
    access: Access,
    allow_uids: Vec<u32>,
    /// Each session's one socket with forced buffers (`udpBuffers`), by session: a new one
    /// resets the one before, and the session's end resets it (changed under `reg`'s lock).
    forced: std::sync::Mutex<std::collections::HashMap<u64, crate::sockbuf::Forced>>,
    /// The journal's lock, held while the helper runs.
    _lock: std::fs::File,
}

/// A running helper's shared state.
#[derive(Clone)]
pub struct Helper {
    inner: Arc<Inner>,
}

impl Helper {
    /// Reverts whatever `journal` holds (a previous helper's sessions), then is ready to serve.
    pub async fn start(
        cfg: Config,
        journal: Journal,
        net: Box<dyn Net>,
        policy: Box<dyn Policy>,
    ) -> io::Result<Helper> {
        let lock = journal.lock()?;
        let entries = journal.entries()?;
        let last = entries.iter().map(|e| e.session).max().unwrap_or(0);
        for entry in entries {
            tracing::warn!(
                session = entry.session,
                uid = entry.uid,
                interface = entry.interface,
                "reverting a session the previous helper left"
            );
            let left = revert_steps(net.as_ref(), entry.undo.iter().rev()).await;
            finish_journal(&journal, entry.session, entry.uid, &entry.interface, left);
        }
        Ok(Helper {
            inner: Arc::new(Inner {
                reg: Mutex::new(
                    Registry::new(cfg.limits, cfg.allow_routes)
                        .numbering_after(last)
                        .with_dns_bound(journal.dns_bound()),
                ),
                connections: Default::default(),
                journal,
                net,
                policy,
                access: cfg.access,
                allow_uids: cfg.allow_uids,
                forced: Default::default(),
                _lock: lock,
            }),
        })
    }

    /// Serves `listener` until the task is dropped. A failed `accept` is retried when it is
    /// passing ([`accept_retryable`]); any other error is returned.
    pub async fn serve(&self, listener: UnixListener) -> io::Result<()> {
        let mut retrying = false;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if accept_retryable(&e) => {
                    // Out of descriptors (EMFILE, ENFILE), buffers or memory, or a connection
                    // reset before it was taken: the sessions being served stay; try again
                    // shortly, saying so once per burst.
                    if !retrying {
                        tracing::warn!(error = %e, "cannot accept a connection: retrying every 100 ms");
                        retrying = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                // EBADF, EINVAL, ENOTSOCK...: the listener itself is broken and no retry mends
                // it; the error ends serve (systemd restarts the service).
                Err(e) => return Err(e),
            };
            retrying = false;
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            let me = self.clone();
            let taken = me.slots().take(uid);
            if let Err(full) = taken {
                tokio::spawn(async move {
                    let _ = send(&stream, &error_reply(ErrorKind::Limit, full), None).await;
                });
                continue;
            }
            tokio::spawn(async move {
                me.connection(stream).await;
                me.slots().give_back(uid);
            });
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The sessions, as root sees them (tests and `list`).
    pub async fn sessions(&self) -> Vec<crate::proto::SessionInfo> {
        self.inner
            .reg
            .lock()
            .await
            .visible(Peer { uid: 0, pid: None })
    }

    /// Reverts every session (the helper is stopping).
    pub async fn end_all(&self) {
        let ids: Vec<u64> = self.sessions().await.iter().map(|s| s.session).collect();
        for id in ids {
            self.end(id).await;
        }
    }

    async fn connection(&self, mut stream: UnixStream) {
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                pid: c.pid().and_then(|p| u32::try_from(p).ok()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials: connection closed");
                return;
            }
        };
        let allowed = if self.inner.allow_uids.contains(&peer.uid) {
            Ok(())
        } else {
            auth::authorize(peer.uid, &auth::groups_of(peer.uid), &self.inner.access)
        };
        if let Err(message) = allowed {
            tracing::warn!(uid = peer.uid, "refused a caller");
            let reply = error_reply(ErrorKind::Unauthorized, message);
            let _ = stream.write_all(&proto::encode(&reply)).await;
            return;
        }
        let mut session = None;
        let mut lines = LineBuf::default();
        let mut buf = vec![0u8; 4096];
        // A descriptor the client passed (with `udpBuffers`).
        let mut passed = None;
        loop {
            let request = match next_request(&stream, &mut lines, &mut buf, &mut passed).await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    let reply = error_reply(ErrorKind::BadRequest, e);
                    let _ = send(&stream, &reply, None).await;
                    break;
                }
            };
            let close = request == Request::Close {};
            let fd_in = passed.take();
            let (reply, fd) = match request {
                Request::UdpBuffers {} => (self.udp_buffers(peer, session, fd_in).await, None),
                other => self.handle(peer, &mut session, other).await,
            };
            let fd_ref = fd.as_ref().map(|f| f.as_raw_fd());
            if send(&stream, &reply, fd_ref).await.is_err() || close {
                break;
            }
        }
        if let Some(id) = session {
            self.end(id).await;
        }
    }

    async fn handle(
        &self,
        peer: Peer,
        session: &mut Option<u64>,
        request: Request,
    ) -> (Reply, Option<OwnedFd>) {
        let r = match (request, *session) {
            (
                Request::Open {
                    version,
                    interface,
                    state_dir,
                    also_proxy,
                    allow_conflicting,
                },
                None,
            ) => {
                let mut reg = self.inner.reg.lock().await;
                reg.open(
                    peer,
                    version,
                    interface,
                    state_dir,
                    also_proxy,
                    allow_conflicting,
                )
                .map(|id| {
                    *session = Some(id);
                    tracing::info!(session = id, uid = peer.uid, "session opened");
                    (Reply::Opened { session: id }, None)
                })
            }
            (Request::Open { .. }, Some(_)) => Err(bad("this connection has its session already")),
            (Request::List {}, _) => {
                let sessions = self.inner.reg.lock().await.visible(peer);
                Ok((Reply::Sessions { sessions }, None))
            }
            (Request::End { interface }, _) => {
                let id = self.inner.reg.lock().await.endable(peer, &interface);
                match id {
                    Ok(id) => {
                        self.end(id).await;
                        Ok((Reply::Done, None))
                    }
                    Err(e) => Err(e),
                }
            }
            (Request::Close {}, Some(id)) => {
                self.end(id).await;
                *session = None;
                Ok((Reply::Done, None))
            }
            (_, None) => Err(bad("no session: send open first")),
            (Request::CreateTun { mtu }, Some(id)) => self.change(id, Op::CreateTun { mtu }).await,
            (Request::SetAddress { address }, Some(id)) => {
                self.change(id, Op::SetAddress { address }).await
            }
            (Request::RemoveAddress { address }, Some(id)) => {
                self.change(id, Op::RemoveAddress { address }).await
            }
            (Request::Routes { add, remove }, Some(id)) => {
                self.change(id, Op::Routes { add, remove }).await
            }
            (Request::Firewall {}, Some(id)) => self.change(id, Op::Firewall).await,
            (Request::DnsSocket { listen, tcp }, Some(id)) => {
                self.change(id, Op::DnsSocket { listen, tcp }).await
            }
            (Request::ResolvConf { forwarder, search }, Some(id)) => {
                self.change(id, Op::ResolvConf { forwarder, search }).await
            }
            (Request::ResolvedLink { domains }, Some(id)) => {
                let domains = domains.into_iter().map(Into::into).collect();
                self.change(id, Op::ResolvedLink { domains }).await
            }
            (Request::RevertDns {}, Some(id)) => self.revert_dns(id).await,
            (Request::UdpBuffers {}, Some(_)) => unreachable!("served by udp_buffers"),
        };
        match r {
            Ok(x) => x,
            Err(e) => (error_reply(e.kind, e.message), None),
        }
    }

    /// Plans `op`, then journals, makes and records each change.
    async fn change(&self, id: u64, op: Op) -> Result<(Reply, Option<OwnedFd>), Refusal> {
        let mut reg = self.inner.reg.lock().await;
        if let (Op::DnsSocket { .. }, Some(uid)) = (&op, reg.get(id).map(|s| s.peer.uid)) {
            // Forwarder addresses of the uid's ended sessions count while their sockets live.
            let mut free = Vec::new();
            for a in reg.dns_to_probe(uid) {
                if !self.inner.net.dns_in_use(a).await {
                    free.push(a);
                }
            }
            if !free.is_empty() {
                reg.forget_dns(uid, &free);
                if let Err(e) = self.inner.journal.write_dns_bound(reg.dns_bound()) {
                    tracing::warn!(error = %e, "cannot update the record of forwarder addresses");
                }
            }
        }
        let facts = self
            .inner
            .net
            .facts()
            .await
            .map_err(|e| {
                system(format!(
                    "cannot read this machine's addresses and routes: {e}"
                ))
            })?
            .without_links(&reg.links());
        let mut facts = facts;
        let mut left_out = Vec::new();
        let op = match op {
            Op::ResolvedLink { domains } => {
                facts.resolved_domains = self.inner.net.resolved_domains().await;
                let policy = self.inner.policy.as_ref();
                let (keep, out) = reg.leave_out_namespaces(id, domains, &facts, policy);
                left_out = out;
                Op::ResolvedLink { domains: keep }
            }
            op => op,
        };
        let changes = reg.plan(id, &op, &facts, self.inner.policy.as_ref())?;
        let mut reply = match left_out.is_empty() {
            true => Reply::Done,
            false => {
                let left_out: Vec<proto::LeftOut> = left_out
                    .iter()
                    .map(|(d, why)| proto::LeftOut {
                        domain: d.into(),
                        message: why.message.clone(),
                    })
                    .collect();
                for l in &left_out {
                    tracing::info!(session = id, domain = %l.domain.name, why = %l.message, "a namespace left out of the link's domains");
                }
                Reply::LinkDomains { left_out }
            }
        };
        let mut fd = None;
        for c in &changes {
            reg.journalled(id, c);
            self.write_journal(&reg, id)?;
            let made = match c {
                Change::CreateTun { name, mtu } => self.inner.net.create_tun(name, *mtu).await.map(
                    |NewTun {
                         fd: f,
                         ifindex,
                         offload,
                     }| {
                        reply = Reply::Tun {
                            name: name.clone(),
                            ifindex,
                            offload,
                        };
                        fd = Some(f);
                        Some(ifindex)
                    },
                ),
                Change::BindDns { listen, tcp } => {
                    // Recorded before it is bound, as the journal is: a new helper counts it.
                    let mut bound = reg.dns_bound().clone();
                    let uid = reg.get(id).map_or(0, |s| s.peer.uid);
                    bound.entry(uid).or_default().insert(*listen);
                    self.inner.journal.write_dns_bound(&bound).map_err(|e| {
                        system(format!(
                            "cannot write kwg-helper's record of forwarder addresses (nothing was bound): {e}"
                        ))
                    })?;
                    self.inner.net.bind_dns(*listen, *tcp).await.map(|f| {
                        reply = Reply::Socket {
                            listen: *listen,
                            tcp: *tcp,
                        };
                        fd = Some(f);
                        None
                    })
                }
                other => self.inner.net.apply(other).await.map(|()| None),
            };
            let ifindex = made.map_err(|e| system(e.to_string()))?;
            reg.applied(id, c, ifindex);
            self.write_journal(&reg, id)?;
        }
        Ok((reply, fd))
    }

    /// Puts the resolver file back and reverts the resolved link now, ahead of the rest of the
    /// session.
    async fn revert_dns(&self, id: u64) -> Result<(Reply, Option<OwnedFd>), Refusal> {
        let mut reg = self.inner.reg.lock().await;
        let undo = reg.take_dns_undo(id);
        let left = revert_steps(self.inner.net.as_ref(), undo.iter()).await;
        reg.return_dns_undo(id, left.clone());
        if let Some(s) = reg.get(id) {
            self.inner
                .journal
                .write(&Entry::of(s))
                .map_err(|e| system(format!("cannot write kwg-helper's journal: {e}")))?;
        }
        match left.is_empty() {
            true => Ok((Reply::Done, None)),
            false => Err(system(
                "cannot put the resolver file back or revert the link in systemd-resolved (kept in kwg-helper's journal; it retries when the session ends)".into(),
            )),
        }
    }

    fn write_journal(&self, reg: &Registry, id: u64) -> Result<(), Refusal> {
        let Some(s) = reg.get(id) else {
            return Ok(());
        };
        self.inner.journal.write(&Entry::of(s)).map_err(|e| {
            system(format!(
                "cannot write kwg-helper's journal (nothing was changed): {e}"
            ))
        })
    }

    /// Reverts session `id` (newest change first) and forgets it.
    async fn end(&self, id: u64) {
        let mut reg = self.inner.reg.lock().await;
        let Some(s) = reg.get(id) else {
            return;
        };
        let (uid, interface) = (s.peer.uid, s.spec.interface.clone());
        let undo = reg.close(id);
        // Its forced socket gets the default size back (dropped).
        self.forced().remove(&id);
        let left = revert_steps(self.inner.net.as_ref(), undo.iter()).await;
        finish_journal(&self.inner.journal, id, uid, &interface, left);
        tracing::info!(session = id, uid, interface, "session reverted");
    }

    fn forced(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, crate::sockbuf::Forced>> {
        self.inner.forced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `udpBuffers`: forces the buffers of the UDP socket passed with it (the session's
    /// uid's), keeping it as the session's one forced socket.
    async fn udp_buffers(&self, peer: Peer, session: Option<u64>, fd: Option<OwnedFd>) -> Reply {
        use crate::sockbuf::ForceError;
        // Under the registry's lock: the session cannot end (and reset it) meanwhile.
        let reg = self.inner.reg.lock().await;
        let Some(id) = session.filter(|id| reg.get(*id).is_some()) else {
            return error_reply(ErrorKind::BadRequest, "no session: send open first".into());
        };
        let Some(fd) = fd else {
            return error_reply(
                ErrorKind::BadRequest,
                "udpBuffers carries the session's UDP socket (SCM_RIGHTS on the request line): none came with it".into(),
            );
        };
        let forced = self.forced().entry(id).or_default().force(fd, peer.uid);
        drop(reg);
        match forced {
            Ok((receive, send)) => {
                tracing::info!(
                    session = id,
                    uid = peer.uid,
                    receive,
                    send,
                    "forced the buffers of the session's UDP socket"
                );
                Reply::Buffers {
                    receive: receive as u64,
                    send: send as u64,
                }
            }
            Err(ForceError::Refused(m)) => error_reply(ErrorKind::Refused, m),
            Err(ForceError::System(e)) => error_reply(
                ErrorKind::System,
                format!("cannot force the UDP socket's buffers: {e}"),
            ),
        }
    }
}

/// The next request on `stream`; `None` when the client went away. A descriptor passed with
/// it lands in `passed`. More than one descriptor for one request is refused (every one of
/// them closed first): the caller ends the connection.
async fn next_request(
    stream: &UnixStream,
    lines: &mut LineBuf,
    buf: &mut [u8],
    passed: &mut Option<OwnedFd>,
) -> Result<Option<Request>, String> {
    loop {
        if let Some(line) = lines.next_line().map_err(|e| e.to_string())? {
            return proto::decode::<Request>(&line)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        if stream.readable().await.is_err() {
            return Ok(None);
        }
        let raw = stream.as_raw_fd();
        match stream.try_io(Interest::READABLE, || crate::client::recv_some(raw, buf)) {
            Ok((0, _)) => return Ok(None),
            Ok((n, mut fds)) => {
                lines.push(&buf[..n]);
                let count = fds.len() + usize::from(passed.is_some() && !fds.is_empty());
                if count > 1 {
                    drop(fds);
                    *passed = None;
                    return Err(format!(
                        "{count} descriptors came with one request: kwg-helper takes one at most (the UDP socket with udpBuffers); connection closed"
                    ));
                }
                if let Some(fd) = fds.pop() {
                    *passed = Some(fd);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Ok(None),
        }
    }
}

/// Undoes `steps` in the order given; the ones that failed (oldest first), for the journal.
async fn revert_steps<'a>(net: &dyn Net, steps: impl Iterator<Item = &'a Undo>) -> Vec<Undo> {
    let mut left = Vec::new();
    for u in steps {
        if let Err(e) = net.undo(u).await {
            tracing::warn!(?u, error = %e, "undo failed: kept in the journal for the next start");
            left.push(u.clone());
        }
    }
    left.reverse();
    left
}

fn finish_journal(journal: &Journal, session: u64, uid: u32, interface: &str, left: Vec<Undo>) {
    let r = if left.is_empty() {
        journal.remove(session)
    } else {
        journal.write(&Entry {
            session,
            uid,
            interface: interface.to_string(),
            undo: left,
        })
    };
    if let Err(e) = r {
        tracing::warn!(session, error = %e, "cannot update the journal");
    }
}

fn bad(message: &str) -> Refusal {
    Refusal {
        kind: ErrorKind::BadRequest,
        message: message.into(),
    }
}

fn system(message: String) -> Refusal {
    Refusal {
        kind: ErrorKind::System,
        message,
    }
}

fn error_reply(kind: ErrorKind, message: String) -> Reply {
    Reply::Error { kind, message }
}

/// Sends `msg` (a reply, or the client's request), with `fd` attached to its first byte when
/// given.
pub(crate) async fn send<T: serde::Serialize>(
    stream: &UnixStream,
    msg: &T,
    fd: Option<RawFd>,
) -> io::Result<()> {
    let line = proto::encode(msg);
    let mut sent = 0;
    while sent < line.len() {
        stream.writable().await?;
        let attach = if sent == 0 { fd } else { None };
        match stream.try_io(Interest::WRITABLE, || {
            send_some(stream.as_raw_fd(), &line[sent..], attach)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `sendmsg`, with an SCM_RIGHTS message carrying `fd` when given.
pub(crate) fn send_some(sock: RawFd, bytes: &[u8], fd: Option<RawFd>) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [io::IoSlice::new(bytes)];
    let fds = fd.map(|f| [f]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(io::Error::from)
}

/// Binds the helper's socket at `path` (0660, group `gid`, in a 0755 root-owned directory),
/// replacing a stale socket file (never one a helper still serves on).
pub fn listener(path: &Path, gid: Option<u32>) -> io::Result<UnixListener> {
    activated_or_bound(path, gid, Activation::default())
}

/// [`listener`], or the listener systemd passed when `activation` says so (socket activation).
pub fn activated_or_bound(
    path: &Path,
    gid: Option<u32>,
    activation: Activation,
) -> io::Result<UnixListener> {
    if let Some(l) = activated(activation)? {
        return Ok(l);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        check_socket_dir(dir, nix::unistd::geteuid().as_raw())?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::other(format!(
                    "a kwg-helper is already serving on {}: stop it first, or pass another --socket",
                    path.display()
                )));
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket: remove it or pass another --socket",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    restrict_socket(path, gid)?;
    Ok(l)
}

/// Gives the socket just bound at `path` mode 0660 (and group `gid`) without following a
/// symlink: the path is opened `O_PATH|O_NOFOLLOW`, checked to be a socket, and changed through
/// that descriptor, so a path swapped since the bind is refused rather than followed.
fn restrict_socket(path: &Path, gid: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.file_type().is_socket() {
        return Err(io::Error::other(format!(
            "{} is no longer the socket kwg-helper bound (replaced since the bind?): pass a --socket in a directory only root may write",
            path.display()
        )));
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let by_fd = PathBuf::from(format!("/proc/self/fd/{fd}"));
    std::fs::set_permissions(&by_fd, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(&by_fd, None, Some(g))?;
    }
    Ok(())
}

/// Refuses a socket directory another user could change: root (or whoever runs the helper)
/// must own it and every directory above it, none writable by group or others (above it a
/// sticky one such as `/tmp` is fine). Otherwise a user could swap the new socket for a
/// symlink before the helper sets its mode and owner.
pub fn check_socket_dir(dir: &Path, euid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // The path as given (a symlink on it is replaceable by whoever may write where it is) and
    // where it leads.
    let given = std::path::absolute(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let walk = given
        .ancestors()
        .enumerate()
        .chain(dir.ancestors().enumerate());
    for (i, d) in walk {
        // Never followed: a symlink is checked as itself (its owner may repoint it; its mode
        // is always 777 and means nothing), and what it leads to is on the canonical walk.
        let m = std::fs::symlink_metadata(d)?;
        let link = m.file_type().is_symlink();
        let sticky = i > 0 && m.mode() & 0o1000 != 0;
        let why = if link && m.uid() != 0 && m.uid() != euid {
            format!(
                "it is a symlink owned by uid {}, who may repoint it",
                m.uid()
            )
        } else if link {
            continue;
        } else if m.uid() != 0 && m.uid() != euid {
            format!("it is owned by uid {}", m.uid())
        } else if m.mode() & 0o022 != 0 && !sticky {
            format!(
                "group or others may write it (mode {:o})",
                m.mode() & 0o7777
            )
        } else {
            continue;
        };
        return Err(io::Error::other(format!(
            "refused socket directory {}: {} ({why}); another user could replace the socket: pass a --socket in a directory only root may write, e.g. {}",
            given.display(),
            match i {
                0 => "the directory".to_string(),
                _ => format!("{} above it", d.display()),
            },
            default_socket().display()
        )));
    }
    Ok(())
}

/// Whether an `accept` error passes (out of descriptors, buffers or memory, a connection
/// aborted before it was taken): retried. Others (EBADF, EINVAL, ENOTSOCK) are permanent.
pub fn accept_retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}

/// Socket activation: whether systemd passed this process a listening socket as fd 3
/// (`LISTEN_PID` is this process and `LISTEN_FDS` at least 1). Read by `main` before any thread
/// or child, and before it clears the environment ([`kept_environment`] drops `LISTEN_*`, so
/// no child inherits them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activation {
    pub fd3: bool,
}

impl Activation {
    /// From the values of `LISTEN_PID` and `LISTEN_FDS` and this process's id.
    pub fn from_vars(listen_pid: Option<&str>, listen_fds: Option<&str>, me: u32) -> Self {
        let ours = listen_pid.and_then(|p| p.parse::<u32>().ok()) == Some(me);
        let n: u32 = listen_fds.and_then(|n| n.parse().ok()).unwrap_or(0);
        Activation {
            fd3: ours && n >= 1,
        }
    }

    /// From this process's environment.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok();
        Self::from_vars(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            std::process::id(),
        )
    }
}

/// The only `PATH` root's helper (and root's kwg starting it) uses: never the user's, which
/// sudo keeps where sudoers has no `secure_path` (then `nft` could be `$HOME/x/nft`).
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment the helper runs with (and root's kwg starts it with), out of `vars`: the
/// locale (`LANG`, `LC_*`), `TERM`, `NO_COLOR`, the log settings (`KWG_LOG`,
/// `KWG_LOG_FORMAT`, `RUST_LOG`) and `SUDO_UID` (who ran sudo), plus `PATH` = [`SAFE_PATH`].
/// Everything else (`LD_*`, `PATH`, `LISTEN_*`, ...) is dropped.
pub fn kept_environment(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    const KEPT: [&str; 7] = [
        "LANG",
        "TERM",
        "NO_COLOR",
        "KWG_LOG",
        "KWG_LOG_FORMAT",
        "RUST_LOG",
        "SUDO_UID",
    ];
    let mut kept: Vec<_> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| KEPT.contains(&k) || k.starts_with("LC_"))
        })
        .collect();
    kept.push(("PATH".into(), SAFE_PATH.into()));
    kept
}

/// Replaces this process's environment with [`kept_environment`] of it.
///
/// # Safety
/// Call before any other thread exists (at the very start of `main`): the environment is not
/// safe to change while another thread may read it.
pub unsafe fn clear_environment() {
    let kept = kept_environment(std::env::vars_os());
    for (k, _) in std::env::vars_os() {
        // SAFETY: single-threaded, as the caller promised.
        unsafe { std::env::remove_var(k) };
    }
    for (k, v) in kept {
        // SAFETY: as above.
        unsafe { std::env::set_var(k, v) };
    }
}

/// The listening socket systemd passed as fd 3, if `activation` says so. Taken out of what a
/// child inherits: close-on-exec (the `LISTEN_*` variables are gone: [`clear_environment`]).
fn activated(activation: Activation) -> io::Result<Option<UnixListener>> {
    if !activation.fd3 {
        return Ok(None);
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID is ours) and nothing else owns
    // it: it is owned here from now on (closed if refused).
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    take_listener(fd).map(Some)
}

/// `fd` as the helper's listener, if it is a listening Unix stream socket (refused otherwise),
/// set close-on-exec so that no child (`nft`) inherits it.
fn take_listener(fd: OwnedFd) -> io::Result<UnixListener> {
    let opt = |o| kwg_host::sockbuf::get_int(fd.as_fd(), libc::SOL_SOCKET, o).unwrap_or(-1);
    let (domain, kind, listening) = (
        opt(libc::SO_DOMAIN),
        opt(libc::SO_TYPE),
        opt(libc::SO_ACCEPTCONN),
    );
    if (domain, kind, listening) != (libc::AF_UNIX, libc::SOCK_STREAM, 1) {
        return Err(io::Error::other(format!(
            "the descriptor systemd passed (fd {}) is not a listening Unix stream socket (domain {domain}, type {kind}, listening {listening}): kwg-helper.socket needs ListenStream=/run/kwg-helper/helper.sock (kwg-helper install writes it)",
            fd.as_raw_fd()
        )));
    }
    nix::fcntl::fcntl(
        fd.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    let std = std::os::unix::net::UnixListener::from(fd);
    std.set_nonblocking(true)?;
    UnixListener::from_std(std)
}

/// The default socket path.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/kwg-helper/helper.sock")
}

#[cfg(test)]
mod tests;
