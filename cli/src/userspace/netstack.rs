//! A userspace TCP/IP stack (smoltcp) on the WireGuard device's packet channel: outgoing TCP
//! connections from the tunnel IP, without a TUN. One task owns the interface and every
//! socket; a connection's user holds a [`VirtualStream`] (bounded channels of byte chunks),
//! so a slow reader closes the TCP window instead of growing a buffer.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kwg_wg::device::PacketChannel;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use super::queues::Queues;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Each direction's buffer of one connection: with window scaling (RFC 7323) a window this
/// large keeps a LAN-speed path full.
pub const SOCKET_BUFFER: usize = 512 * 1024;
/// Connections open at once (each holds two [`SOCKET_BUFFER`]s).
pub const MAX_CONNECTIONS: usize = 256;
/// Chunks queued between a connection and its user, each way.
const CHUNKS: usize = 16;
/// The largest chunk handed to a connection's user.
const CHUNK: usize = 64 * 1024;
/// Packets sent per wake-up before the loop looks at new input again.
const EGRESS_BURST: usize = 256;
/// Ephemeral ports of the stack's connections (RFC 6335's dynamic range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;
/// A connection without any acknowledgement for this long is dropped.
const TCP_TIMEOUT: Duration = Duration::from_secs(60);

/// The stack: ask it for connections; dropping it stops it.
pub struct Netstack {
    cmds: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

enum Command {
    Connect(Connect),
    /// The gateway assigned another tunnel address.
    Readdress(Ipv4Addr),
}

struct Connect {
    to: SocketAddrV4,
    reply: oneshot::Sender<io::Result<VirtualStream>>,
}

/// One TCP connection through the tunnel, from its user's side.
pub struct VirtualStream {
    tx: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    wake: Arc<Notify>,
}

impl Netstack {
    /// Starts the stack as `address` on `channel` (`gateway`: where packets to other
    /// addresses go, the device picks the peer).
    pub fn start(channel: PacketChannel, address: Ipv4Addr, gateway: Ipv4Addr, mtu: u16) -> Self {
        let (cmds, rx) = mpsc::channel(64);
        let task = tokio::spawn(run(channel, rx, address, gateway, usize::from(mtu)));
        Netstack { cmds, task }
    }

    /// Moves the stack to a new tunnel address (open connections from the old one end).
    pub fn readdress(&self, address: Ipv4Addr) -> io::Result<()> {
        self.cmds
            .try_send(Command::Readdress(address))
            .map_err(|_| io::Error::other("the userspace stack is busy or stopped"))
    }

    /// A handle for other tasks (the stack lives while the [`Netstack`] does).
    pub fn connector(&self) -> Connector {
        Connector(self.cmds.clone())
    }
}

impl Drop for Netstack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A cloneable way to open connections through a running [`Netstack`].
#[derive(Clone)]
pub struct Connector(mpsc::Sender<Command>);

impl Connector {
    pub async fn connect(&self, to: SocketAddrV4, timeout: Duration) -> io::Result<VirtualStream> {
        let (reply, answer) = oneshot::channel();
        let stopped = || io::Error::other("the userspace stack stopped");
        self.0
            .send(Command::Connect(Connect { to, reply }))
            .await
            .map_err(|_| stopped())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

impl VirtualStream {
    /// Sends bytes to the remote end (waits while the connection's buffers are full).
    pub async fn send(&self, data: Bytes) -> io::Result<()> {
        let r = self.tx.send(data).await;
        self.wake.notify_one();
        r.map_err(|_| io::ErrorKind::BrokenPipe.into())
    }

    /// The next bytes from the remote end; `None` at its end of stream.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let r = self.rx.recv().await;
        self.wake.notify_one();
        r
    }

    /// Copies both ways between `local` and this connection until both ends finished.
    pub async fn splice(self, local: TcpStream) {
        let VirtualStream { tx, mut rx, wake } = self;
        let (mut lr, mut lw) = local.into_split();
        let up = async {
            loop {
                let mut buf = bytes::BytesMut::with_capacity(CHUNK);
                match lr.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let sent = tx.send(buf.freeze()).await;
                        wake.notify_one();
                        if sent.is_err() {
                            break;
                        }
                    }
                }
            }
            drop(tx);
            wake.notify_one();
        };
        let down = async {
            while let Some(b) = rx.recv().await {
                wake.notify_one();
                if lw.write_all(&b).await.is_err() {
                    break;
                }
            }
            drop(rx);
            wake.notify_one();
            let _ = lw.shutdown().await;
        };
        tokio::join!(up, down);
    }
}

/// One connection, from the stack's side.
struct Conn {
    port: u16,
    /// Until established: where the user waits, and the user's ends.
    reply: Option<(oneshot::Sender<io::Result<VirtualStream>>, VirtualStream)>,
    to_user: Option<mpsc::Sender<Bytes>>,
    from_user: mpsc::Receiver<Bytes>,
    /// Part of a chunk the socket had no room for yet.
    pending: Option<Bytes>,
    user_done: bool,
}

/// The stack's state: the interface, its sockets, the connections.
struct Stack {
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    conns: HashMap<SocketHandle, Conn>,
    next_port: u16,
    wake: Arc<Notify>,
}

async fn run(
    channel: PacketChannel,
    mut cmds: mpsc::Receiver<Command>,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    mtu: usize,
) {
    let PacketChannel {
        tx: to_wg,
        rx: mut from_wg,
    } = channel;
    let started = tokio::time::Instant::now();
    let now = || smoltcp::time::Instant::from_micros(started.elapsed().as_micros() as i64);
    let mut s = Stack::new(address, gateway, mtu, now());
    loop {
        s.poll(now());
        while let Some(p) = s.dev.tx.pop_front() {
            if to_wg.send(p).await.is_err() {
                return;
            }
        }
        let delay = s
            .iface
            .poll_delay(now(), &s.sockets)
            .map_or(Duration::from_secs(1), Duration::from);
        tokio::select! {
            p = from_wg.recv() => match p {
                Some(p) => {
                    s.dev.rx.push_back(p);
                    while s.dev.rx.len() < EGRESS_BURST && let Ok(p) = from_wg.try_recv() {
                        s.dev.rx.push_back(p);
                    }
                }
                None => return,
            },
            c = cmds.recv() => match c {
                Some(Command::Connect(c)) => s.open(c),
                Some(Command::Readdress(a)) => s.readdress(a),
                None => return,
            },
            _ = s.wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

impl Stack {
    fn new(address: Ipv4Addr, gateway: Ipv4Addr, mtu: usize, now: smoltcp::time::Instant) -> Self {
        let mut dev = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
        };
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(address), 32));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(gateway);
        Stack {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            conns: HashMap::new(),
            next_port: *EPHEMERAL.start(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Processes input, moves bytes between sockets and users, and sends what is ready (a
    /// burst: smoltcp sends one segment per socket per pass).
    fn poll(&mut self, now: smoltcp::time::Instant) {
        for _ in 0..EGRESS_BURST {
            let before = self.dev.tx.len();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            let moved = self.pump();
            if (self.dev.tx.len() == before && !moved) || self.dev.tx.len() >= EGRESS_BURST {
                break;
            }
        }
    }

    fn open(&mut self, c: Connect) {
        if self.conns.len() >= MAX_CONNECTIONS {
            let _ = c.reply.send(Err(io::Error::other(format!(
                "{MAX_CONNECTIONS} connections through the tunnel are open already"
            ))));
            return;
        }
        let Some(port) = self.free_port() else {
            let _ = c.reply.send(Err(io::ErrorKind::AddrInUse.into()));
            return;
        };
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        sock.set_nagle_enabled(false);
        sock.set_timeout(Some(TCP_TIMEOUT.into()));
        let remote = (IpAddress::Ipv4(*c.to.ip()), c.to.port());
        if let Err(e) = sock.connect(self.iface.context(), remote, port) {
            let _ = c.reply.send(Err(io::Error::other(format!("connect: {e}"))));
            return;
        }
        let handle = self.sockets.add(sock);
        let (user_tx, from_user) = mpsc::channel(CHUNKS);
        let (to_user, user_rx) = mpsc::channel(CHUNKS);
        let user = VirtualStream {
            tx: user_tx,
            rx: user_rx,
            wake: self.wake.clone(),
        };
        self.conns.insert(
            handle,
            Conn {
                port,
                reply: Some((c.reply, user)),
                to_user: Some(to_user),
                from_user,
                pending: None,
                user_done: false,
            },
        );
    }

    fn readdress(&mut self, address: Ipv4Addr) {
        self.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(address), 32));
        });
        tracing::info!(%address, "userspace stack readdressed");
    }

    fn free_port(&mut self) -> Option<u16> {
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if !self.conns.values().any(|c| c.port == p) {
                return Some(p);
            }
        }
        None
    }

    /// Moves bytes between every socket and its user; true when any moved. Finished
    /// connections are removed.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut done = Vec::new();
        for (handle, conn) in self.conns.iter_mut() {
            let sock = self.sockets.get_mut::<tcp::Socket>(*handle);
            if !conn.pump(sock, &mut moved) {
                done.push(*handle);
            }
        }
        for h in done {
            self.conns.remove(&h);
            self.sockets.remove(h);
        }
        moved
    }
}

impl Conn {
    /// False once the connection is over.
    fn pump(&mut self, sock: &mut tcp::Socket, moved: &mut bool) -> bool {
        if let Some((reply, _)) = &self.reply {
            if reply.is_closed() {
                // The user gave up waiting.
                sock.abort();
                self.reply = None;
                return false;
            }
            match sock.state() {
                tcp::State::Established => {
                    let (reply, user) = self.reply.take().expect("waiting");
                    if reply.send(Ok(user)).is_err() {
                        sock.abort();
                        return false;
                    }
                }
                tcp::State::Closed => {
                    let (reply, _) = self.reply.take().expect("waiting");
                    let _ = reply.send(Err(io::ErrorKind::ConnectionRefused.into()));
                    return false;
                }
                _ => return true,
            }
        }
        // User → socket.
        while sock.can_send() {
            let data = match self.pending.take() {
                Some(d) => d,
                None => match self.from_user.try_recv() {
                    Ok(d) => d,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        if !self.user_done {
                            self.user_done = true;
                            sock.close();
                        }
                        break;
                    }
                },
            };
            let n = sock.send_slice(&data).unwrap_or(0);
            *moved |= n > 0;
            if n < data.len() {
                self.pending = Some(data.slice(n..));
                break;
            }
        }
        // Socket → user.
        if let Some(tx) = &self.to_user {
            while sock.can_recv() {
                let Ok(permit) = tx.try_reserve() else {
                    if tx.is_closed() {
                        // The user stopped reading: nothing more will be delivered.
                        self.to_user = None;
                    }
                    break;
                };
                let chunk = sock
                    .recv(|b| {
                        let n = b.len().min(CHUNK);
                        (n, Bytes::copy_from_slice(&b[..n]))
                    })
                    .unwrap_or_default();
                *moved |= !chunk.is_empty();
                permit.send(chunk);
            }
            if !sock.may_recv() && !sock.can_recv() {
                // The remote end finished (FIN or reset): end of stream for the user.
                self.to_user = None;
            }
        }
        if self.to_user.is_none() && self.user_done {
            sock.close();
        }
        !matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait)
    }
}

/// Whether `addr` is an IPv4 socket address (the stack speaks IPv4 only).
pub fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests;
