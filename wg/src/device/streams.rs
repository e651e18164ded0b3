//! Stream peers: WireGuard datagrams over byte streams (TCP, or a port-forward through the
//! API server), framed by [`crate::io::stream`]. Each attached stream gets an endpoint in
//! `100::/64`; the core sees it like a UDP address, so cryptokey routing and roaming work the
//! same. One task per stream reads frames into the core and writes batches of frames (many
//! datagrams per write syscall).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Shared;
use crate::core::{NetBatch, TunBatch};
use crate::io::stream::{self, Decoder};

/// Any byte stream that can carry WireGuard datagrams.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// Framed batches queued per stream; when full, datagrams are dropped as UDP would drop them.
const QUEUE: usize = 256;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 256 * 1024;
/// A stream that carried no datagram this long is closed: no WireGuard session outlives it without traffic
/// (Reject-After-Time, 180 s, WireGuard paper §6.1), and it bounds what a connection that
/// never authenticates can hold.
const IDLE: std::time::Duration = std::time::Duration::from_secs(180);
/// A stream a listener accepted is closed when the device has sent nothing over it this long
/// after attaching (see [`super::DeviceHandle::accept_stream`]).
pub const UNANSWERED: std::time::Duration = std::time::Duration::from_secs(10);
/// An accepted stream that no peer's endpoint points at (the peer moved to a newer stream or
/// to UDP) is closed after this long: a peer opening connection after connection holds one
/// slot, plus those of the last few seconds, instead of every slot.
pub const ORPHANED: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes asked of one read.
const READ_BUF: usize = 64 * 1024;

struct Entry {
    tx: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
    label: String,
    /// Opened by a listener (closed once orphaned, see [`ORPHANED`]).
    accepted: bool,
    /// Since when no peer's endpoint was this stream, as last seen by [`Streams::sweep`].
    orphaned_since: Option<Instant>,
}

/// The attached streams, by endpoint.
#[derive(Default)]
pub(crate) struct Streams {
    next: AtomicU64,
    open: std::sync::Mutex<HashMap<SocketAddr, Entry>>,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_open(&self, ep: &SocketAddr) -> bool {
        self.lock().get(ep).is_some_and(|e| !e.task.is_finished())
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn close(&self, ep: &SocketAddr) {
        if let Some(e) = self.lock().remove(ep) {
            tracing::info!(endpoint = %ep, stream = %e.label, "stream closed");
            e.task.abort();
        }
    }

    pub(crate) fn close_all(&self) {
        for (_, e) in self.lock().drain() {
            e.task.abort();
        }
    }

    /// Closes the accepted streams that no endpoint in `in_use` has pointed at for
    /// [`ORPHANED`] (by the sweeps' clock); returns how many.
    pub(crate) fn sweep(&self, in_use: &HashSet<SocketAddr>, now: Instant) -> usize {
        let mut open = self.lock();
        let mut closed = 0;
        open.retain(|ep, e| {
            if !e.accepted || in_use.contains(ep) {
                e.orphaned_since = None;
                return true;
            }
            let since = *e.orphaned_since.get_or_insert(now);
            if now.saturating_duration_since(since) < ORPHANED {
                return true;
            }
            tracing::info!(endpoint = %ep, stream = %e.label, "stream closed: no peer uses it anymore");
            e.task.abort();
            closed += 1;
            false
        });
        closed
    }

    /// Queues framed datagrams for `ep`; false when the stream is gone or its queue is full.
    fn queue(&self, ep: &SocketAddr, framed: Vec<u8>) -> bool {
        match self.lock().get(ep) {
            Some(e) => e.tx.try_send(framed).is_ok(),
            None => false,
        }
    }
}

impl Shared {
    /// Sends a batch: stream endpoints through their stream, the rest over UDP.
    pub(crate) async fn send_net(&self, net: &NetBatch) {
        let mut udp_only = true;
        for (dst, contents, seg) in net.sends() {
            if !stream::is_stream_endpoint(&dst) {
                continue;
            }
            udp_only = false;
            let mut framed =
                Vec::with_capacity(contents.len() + contents.len() / seg.max(1) * 2 + 2);
            if let Err(e) =
                stream::encode_batch(contents.chunks(seg.max(1)), usize::MAX, &mut framed)
            {
                tracing::debug!(%dst, error = %e, "datagram not sent on the stream");
                continue;
            }
            if !self.streams.queue(&dst, framed) {
                tracing::trace!(%dst, "stream gone or full: datagrams dropped");
            }
        }
        let sends = net.sends();
        if udp_only {
            self.udp().send_batch(sends).await;
        } else {
            let udp = sends.filter(|(dst, _, _)| !stream::is_stream_endpoint(dst));
            self.udp().send_batch(udp).await;
        }
    }

    /// Starts carrying datagrams over `stream`; returns its endpoint.
    pub(crate) fn attach_stream(
        self: &Arc<Self>,
        stream: Box<dyn ByteStream>,
        label: String,
        answer_within: Option<std::time::Duration>,
    ) -> SocketAddr {
        let ep = stream::stream_endpoint(self.streams.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = mpsc::channel(QUEUE);
        // Registered before the task runs, so the task's own removal always finds it.
        let mut open = self.streams.lock();
        let task = tokio::spawn(run(
            self.clone(),
            ep,
            (stream, answer_within),
            rx,
            label.clone(),
        ));
        tracing::info!(endpoint = %ep, stream = %label, "stream attached");
        open.insert(
            ep,
            Entry {
                tx,
                task,
                label,
                accepted: answer_within.is_some(),
                orphaned_since: None,
            },
        );
        ep
    }
}

async fn run(
    shared: Arc<Shared>,
    ep: SocketAddr,
    (stream, answer_within): (Box<dyn ByteStream>, Option<std::time::Duration>),
    rx: mpsc::Receiver<Vec<u8>>,
    label: String,
) {
    let (reader, writer) = tokio::io::split(stream);
    let sent = std::sync::atomic::AtomicBool::new(false);
    let why = tokio::select! {
        r = read_loop(&shared, ep, reader) => r,
        r = write_loop(writer, rx, &sent) => r,
        r = unanswered(answer_within, &sent) => r,
    };
    tracing::info!(endpoint = %ep, stream = %label, reason = %why, "stream ended");
    shared.streams.lock().remove(&ep);
}

async fn read_loop(shared: &Shared, ep: SocketAddr, mut reader: impl AsyncRead + Unpin) -> String {
    let mut decoder = Decoder::new(stream::MAX_FRAME);
    let mut buf = vec![0u8; READ_BUF];
    let mut net = NetBatch::new(1);
    let mut tun = TunBatch::new(shared.tun.offset());
    // The datagrams of one read, copied out of the decoder into one buffer.
    let mut flat: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    // Only datagrams count as activity: empty frames cost the sender nothing.
    let mut deadline = tokio::time::Instant::now() + IDLE;
    loop {
        let n = match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => return format!("nothing received for {} s", IDLE.as_secs()),
            Ok(Ok(0)) => return "closed by the other side".into(),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return format!("read failed: {e}"),
        };
        decoder.push(&buf[..n]);
        flat.clear();
        spans.clear();
        loop {
            match decoder.next_datagram() {
                Ok(Some([])) => {}
                Ok(Some(d)) => {
                    spans.push((flat.len(), d.len()));
                    flat.extend_from_slice(d);
                }
                Ok(None) => break,
                Err(e) => return e.to_string(),
            }
        }
        if spans.is_empty() {
            continue;
        }
        deadline = tokio::time::Instant::now() + IDLE;
        net.clear();
        net.set_max_segments(shared.udp().max_gso_segments());
        let it = Spans {
            ep,
            flat: &flat,
            spans: spans.iter(),
        };
        if !super::tasks::decrypt_to_tun(shared, it, &mut net, &mut tun).await {
            return "the interface is gone".into();
        }
    }
}

/// The datagrams of one read (a named type: a closure here trips the `Send` check of the
/// spawned future).
struct Spans<'a> {
    ep: SocketAddr,
    flat: &'a [u8],
    spans: std::slice::Iter<'a, (usize, usize)>,
}

impl<'a> Iterator for Spans<'a> {
    type Item = (SocketAddr, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let &(at, len) = self.spans.next()?;
        Some((self.ep, &self.flat[at..at + len]))
    }
}

/// Resolves when `within` passed without anything sent (never when `within` is None).
async fn unanswered(
    within: Option<std::time::Duration>,
    sent: &std::sync::atomic::AtomicBool,
) -> String {
    match within {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
    if sent.load(Ordering::Relaxed) {
        std::future::pending().await
    }
    format!(
        "nothing to answer within {} s of connecting (no handshake of a known peer)",
        within.unwrap_or_default().as_secs()
    )
}

async fn write_loop(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Vec<u8>>,
    sent: &std::sync::atomic::AtomicBool,
) -> String {
    let mut out = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = rx.recv().await {
        out.clear();
        out.extend_from_slice(&first);
        while out.len() < WRITE_BATCH
            && let Ok(more) = rx.try_recv()
        {
            out.extend_from_slice(&more);
        }
        if let Err(e) = writer.write_all(&out).await {
            return format!("write failed: {e}");
        }
        if let Err(e) = writer.flush().await {
            return format!("flush failed: {e}");
        }
        sent.store(true, Ordering::Relaxed);
    }
    "detached".into()
}
