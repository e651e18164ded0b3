//! WireGuard over TCP: the gateway accepts TCP on the same port number as its UDP socket and
//! hands every connection to the device as a stream peer. WireGuard stays end to end: a
//! connection carries only framed, encrypted datagrams; a peer moves onto it (and back to UDP)
//! by authenticated packets, as it roams between UDP addresses.

pub mod limit;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use kwg_wg::device::DeviceHandle;
use kwg_wg::io::stream::set_stream_options;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::GatewayError;
use crate::metrics::Metrics;
use limit::{FrameWatch, Pending, Refusal, Source};

/// Open streams at most: each costs a task and a few hundred KiB of buffers at most; a
/// connection beyond it is closed at once. A connection the device has not answered (no
/// handshake of a known peer) within `kwg_wg::device::UNANSWERED` (10 s) is closed, and one
/// source address holds at most [`limit::PER_SOURCE`] connections that have not
/// authenticated yet ([`limit`]), so holding every slot takes 64 addresses each opening ~6
/// connections a second, not one client. The device also closes an accepted stream no
/// peer's endpoint has pointed at for `kwg_wg::device::ORPHANED` (a peer that moved to a
/// newer connection), and streams that carried no datagram for longer than a session lives.
pub const MAX_STREAMS: usize = 4096;

/// Binds TCP `[::]:port` (dual-stack where `net.ipv6.bindv6only` is 0, as by default; IPv4
/// only if IPv6 is disabled).
pub fn bind(port: u16) -> Result<tokio::net::TcpListener, GatewayError> {
    let listen = |addr: SocketAddr| -> std::io::Result<tokio::net::TcpListener> {
        let s = match addr {
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        };
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        s.listen(1024)
    };
    match listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        }
        r => r,
    }
    .map_err(|source| GatewayError::TcpBind { port, source })
}

/// Accepts connections until `token` is cancelled, at most `per_source` unauthenticated ones
/// per source ([`limit`]); refusals are counted in `metrics` and logged at most once per
/// [`limit::LOG_EVERY`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    device: DeviceHandle,
    per_source: usize,
    metrics: Metrics,
    token: CancellationToken,
) {
    let pending = Arc::new(Mutex::new(Pending::new(per_source)));
    loop {
        let (stream, from) = tokio::select! {
            _ = token.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let source = Source::of(from.ip());
        let admitted = lock(&pending).admit(source, device.streams());
        if let Err(why) = admitted {
            refused(&pending, why, &metrics);
            continue;
        }
        let slot = Slot {
            pending: pending.clone(),
            source,
        };
        if let Err(e) = set_stream_options(&stream) {
            tracing::debug!(%from, error = %e, "cannot set TCP options");
        }
        let counted = Counted {
            inner: stream,
            watch: FrameWatch::default(),
            slot: Some(slot),
        };
        if let Err(e) = device.accept_stream(counted, format!("tcp {from}")) {
            tracing::debug!(%from, error = %e, "device stopped: TCP connection dropped");
            return;
        }
    }
}

fn lock(p: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a refused connection (already closed) and logs the refusals when due.
fn refused(pending: &Mutex<Pending>, why: Refusal, metrics: &Metrics) {
    match why {
        Refusal::Source => metrics.tcp_refused_source.inc(),
        Refusal::Full => metrics.tcp_refused_full.inc(),
    };
    let mut p = lock(pending);
    let Some(log) = p.log_due(Instant::now()) else {
        return;
    };
    let last_source = log.last_source.map(|s| s.to_string());
    tracing::warn!(
        too_many_from_one_source = log.source,
        all_slots_taken = log.full,
        last_source,
        per_source = p.per_source(),
        max = MAX_STREAMS,
        "WireGuard TCP connections refused since the last such line (raise --tcp-pending-per-source if many peers share one address)"
    );
}

/// A connection's place in [`Pending`], given back when dropped.
struct Slot {
    pending: Arc<Mutex<Pending>>,
    source: Source,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.pending).release(self.source);
    }
}

/// An accepted connection as the device gets it: it gives its [`Slot`] back once the device
/// wrote an authenticated message on it ([`FrameWatch`]), or when the device closes it.
struct Counted {
    inner: TcpStream,
    watch: FrameWatch,
    slot: Option<Slot>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && this.slot.is_some()
            && this.watch.push(&buf[..n])
        {
            this.slot = None;
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
