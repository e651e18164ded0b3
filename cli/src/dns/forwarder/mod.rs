//! The split-DNS forwarder: a UDP and TCP DNS server on a loopback address that answers
//! cluster names from the cluster DNS (through the tunnel) and relays everything else to the
//! machine's original resolvers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::error::Error;
use kwg_session::dns::split::{Decision, Source, SplitDns};

/// Where kwg's forwarder listens by default: loopback, away from systemd-resolved's
/// 127.0.0.53 and dnsmasq's 127.0.0.1.
pub const DEFAULT_LISTEN: &str = "127.77.0.53:53";

/// The largest DNS message over UDP without EDNS (RFC 1035 section 4.2.1) is 512 bytes; with
/// EDNS it can reach 65535, so receive buffers are that large.
const MAX_MESSAGE: usize = 65535;

/// Lookups over UDP in flight at once (each holds a task and a socket).
pub const MAX_IN_FLIGHT: usize = 256;
/// TCP clients served at once.
pub const MAX_TCP_CONNECTIONS: usize = 64;

/// How long to wait for a UDP answer before sending the query again (glibc's resolver waits
/// 5 s by default; a forwarder on the same machine can be quicker).
const RETRANSMIT: Duration = Duration::from_millis(700);

pub use kwg_session::dns::ForwarderConfig;

/// The configuration a running forwarder answers with; each query takes the current one.
type Shared = Arc<std::sync::RwLock<Arc<ForwarderConfig>>>;

/// A running forwarder; dropping it stops serving.
pub struct Forwarder {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
    shared: Shared,
}

/// Changes the split decision of a running forwarder (namespaces created or deleted while
/// joined, the reach the gateway grants).
#[derive(Clone)]
pub struct SplitHandle(Shared);

impl SplitHandle {
    pub fn split(&self) -> SplitDns {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .split
            .clone()
    }

    /// Applies `change`; whether anything changed.
    pub fn update(&self, change: impl FnOnce(&mut SplitDns)) -> bool {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut cfg = ForwarderConfig::clone(&guard);
        change(&mut cfg.split);
        let changed = cfg.split.cluster_namespaces != guard.split.cluster_namespaces
            || cfg.split.reachable != guard.split.reachable
            || cfg.split.naming != guard.split.naming;
        if changed {
            *guard = Arc::new(cfg);
        }
        changed
    }
}

fn current(shared: &Shared) -> Arc<ForwarderConfig> {
    shared.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Forwarder {
    /// Binds UDP and TCP on `listen` and serves until dropped.
    pub async fn start(listen: SocketAddr, cfg: ForwarderConfig) -> Result<Forwarder, Error> {
        let bind_err = |e| Error::DnsListen {
            addr: listen.to_string(),
            source: e,
        };
        let udp = UdpSocket::bind(listen).await.map_err(bind_err)?;
        let addr = udp.local_addr().map_err(bind_err)?;
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        Ok(Self::serve(udp, tcp, addr, cfg))
    }

    /// Serves on sockets bound elsewhere (a normal user's join: kwg-helper binds port 53).
    pub fn start_on(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        cfg: ForwarderConfig,
    ) -> Result<Forwarder, Error> {
        let bind_err = |source| Error::DnsListen {
            addr: "the socket kwg-helper bound".into(),
            source,
        };
        let tokio_sockets = udp
            .set_nonblocking(true)
            .and_then(|()| tcp.set_nonblocking(true))
            .and_then(|()| Ok((UdpSocket::from_std(udp)?, TcpListener::from_std(tcp)?)));
        let (udp, tcp) = tokio_sockets.map_err(bind_err)?;
        let addr = udp.local_addr().map_err(bind_err)?;
        Ok(Self::serve(udp, tcp, addr, cfg))
    }

    fn serve(
        udp: UdpSocket,
        tcp: TcpListener,
        addr: SocketAddr,
        cfg: ForwarderConfig,
    ) -> Forwarder {
        let udp = Arc::new(udp);
        let shared: Shared = Arc::new(std::sync::RwLock::new(Arc::new(cfg)));
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(udp, shared.clone()));
        tasks.spawn(serve_tcp(tcp, shared.clone()));
        tracing::info!(%addr, "DNS forwarder listening");
        Forwarder {
            addr,
            tasks,
            shared,
        }
    }

    pub fn split_handle(&self) -> SplitHandle {
        SplitHandle(self.shared.clone())
    }

    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Shared) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut dropped: u64 = 0;
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "DNS forwarder receive failed");
                continue;
            }
        };
        // A flood must not exhaust tasks and sockets (each lookup opens one): past the bound a
        // query is dropped, and the client retries as after any loss.
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "DNS forwarder busy: dropping queries");
            }
            continue;
        };
        let query = buf[..n].to_vec();
        let (sock, cfg) = (sock.clone(), current(&shared));
        tokio::spawn(async move {
            if let Some(mut reply) = answer(&query, &cfg).await {
                truncate_for_udp(&query, &mut reply);
                let _ = sock.send_to(&reply, from).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Shared) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Past the bound a new connection is closed at once.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_conn(stream, &shared).await;
            drop(permit);
        });
    }
}

async fn serve_tcp_conn(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let query =
            match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream)).await {
                Ok(Ok(q)) => q,
                _ => return Ok(()),
            };
        if let Some(reply) = answer(&query, &current(shared)).await {
            write_frame(&mut stream, &reply).await?;
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

/// Answers one query (raw bytes in, raw bytes out); `None` for garbage that deserves no reply.
pub async fn answer(query: &[u8], cfg: &ForwarderConfig) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let Some(q) = msg.queries.first() else {
        return error_reply(&msg, ResponseCode::FormErr);
    };
    let qname = q.name.to_ascii();
    let decision = cfg.split.decide(&qname);
    tracing::debug!(name = %qname, qtype = %q.query_type, ?decision, "DNS query");
    if decision == Decision::Hidden {
        return error_reply(&msg, ResponseCode::NXDomain);
    }
    // The first answer without an error is final; an NXDOMAIN (or no answer) moves on to
    // the next source, and the last reply received is the answer when none is final.
    let mut last = None;
    for source in decision.sources() {
        let reply = match source {
            Source::Upstream => relay_any(query, &cfg.upstreams, cfg.timeout).await,
            Source::Cluster(fqdn) => ask_cluster(&msg, query, fqdn, cfg)
                .await
                .map(|r| super::mapped::rewrite(r, &cfg.mappings)),
        };
        match reply {
            Some(r) if no_error(&r) => return Some(r),
            Some(r) => last = Some(r),
            None => tracing::debug!(name = %qname, ?source, "no answer"),
        }
    }
    // Here no source answered without an error.
    if decision == Decision::UpstreamElseHidden {
        return error_reply(&msg, ResponseCode::NXDomain);
    }
    last.or_else(|| {
        tracing::warn!(name = %qname, ?decision, "DNS lookup timed out");
        error_reply(&msg, ResponseCode::ServFail)
    })
}

/// Whether a reply's code is NOERROR (also without records: the name exists there).
fn no_error(reply: &[u8]) -> bool {
    reply.len() >= 4 && reply[3] & 0x0f == 0
}

/// Asks the cluster DNS for `fqdn` and answers under the original name.
async fn ask_cluster(
    msg: &Message,
    raw: &[u8],
    fqdn: &str,
    cfg: &ForwarderConfig,
) -> Option<Vec<u8>> {
    let original = msg.queries[0].name.clone();
    if original
        .to_ascii()
        .trim_end_matches('.')
        .eq_ignore_ascii_case(fqdn)
    {
        return relay(raw, cfg.cluster, cfg.timeout).await;
    }
    let target = Name::from_ascii(format!("{fqdn}.")).ok()?;
    let mut rewritten = msg.clone();
    rewritten.queries[0].name = target.clone();
    let reply = relay(&rewritten.to_vec().ok()?, cfg.cluster, cfg.timeout).await?;
    let mut reply = Message::from_vec(&reply).ok()?;
    if let Some(q) = reply.queries.first_mut() {
        q.name = original.clone();
    }
    for r in reply.answers.iter_mut() {
        if r.name == target {
            r.name = original.clone();
        }
    }
    reply.to_vec().ok()
}

/// Relays to each server in turn until one answers within the timeout (shared by all).
async fn relay_any(raw: &[u8], servers: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + timeout;
    for (i, server) in servers.iter().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // Give each remaining server a fair share of what is left.
        let share = left / (servers.len() - i) as u32;
        if let Some(reply) = relay(raw, *server, share).await {
            return Some(reply);
        }
    }
    None
}

/// Sends `raw` to `server` over UDP (TCP when the reply is truncated) and returns the reply.
pub(crate) async fn relay(raw: &[u8], server: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(timeout, async {
        let reply = relay_udp(raw, server).await.ok()?;
        let truncated = reply.len() >= 3 && reply[2] & 0x02 != 0;
        if truncated {
            relay_tcp(raw, server).await.ok()
        } else {
            Some(reply)
        }
    })
    .await
    .ok()
    .flatten()
}

/// One UDP exchange; the query is sent again every [`RETRANSMIT`] until the caller's timeout,
/// like a stub resolver does, so one lost datagram costs a second, not the whole lookup.
async fn relay_udp(raw: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        sock.send(raw).await?;
        let wait = tokio::time::timeout(RETRANSMIT, async {
            loop {
                let n = sock.recv(&mut buf).await?;
                // Only the reply to this query (same id) counts.
                if n >= 2 && raw.len() >= 2 && buf[..2] == raw[..2] {
                    return Ok::<usize, std::io::Error>(n);
                }
            }
        });
        if let Ok(n) = wait.await {
            return Ok(buf[..n?].to_vec());
        }
    }
}

async fn relay_tcp(raw: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    write_frame(&mut stream, raw).await?;
    read_frame(&mut stream).await
}

fn error_reply(query: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.queries = query.queries.clone();
    reply.to_vec().ok()
}

/// A UDP reply larger than the client accepts (512 without EDNS, RFC 1035 4.2.1) becomes an
/// empty truncated reply, so the client retries over TCP.
fn truncate_for_udp(query: &[u8], reply: &mut Vec<u8>) {
    let max = Message::from_vec(query)
        .ok()
        .map(|m| m.max_payload().max(512) as usize)
        .unwrap_or(512);
    if reply.len() > max
        && let Ok(m) = Message::from_vec(reply)
    {
        let mut t = m.truncate();
        t.metadata.truncation = true;
        if let Ok(bytes) = t.to_vec() {
            *reply = bytes;
        }
    }
}

#[cfg(test)]
mod tests;
