//! WireGuard over TCP: the gateway accepts TCP on the same port number as its UDP socket and
//! hands every connection to the device as a stream peer. WireGuard stays end to end: a
//! connection carries only framed, encrypted datagrams; a peer moves onto it (and back to UDP)
//! by authenticated packets, as it roams between UDP addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kwg_wg::device::DeviceHandle;
use kwg_wg::io::stream::set_stream_options;
use tokio_util::sync::CancellationToken;

use crate::GatewayError;

/// Open streams at most: each costs a task and a few hundred KiB of buffers at most; a
/// connection beyond it is closed at once. A connection the device has not answered (no
/// handshake of a known peer) within `kwg_wg::device::UNANSWERED` (10 s) is closed, so holding
/// every slot takes a steady ~400 new connections a second, not 4096 idle ones. The device
/// also closes an accepted stream no peer's endpoint has pointed at for
/// `kwg_wg::device::ORPHANED` (a peer that moved to a newer connection), and streams that
/// carried no datagram for longer than a session lives. No cap per source address: the
/// connections of the API-server path all come from 127.0.0.1 (the kubelet's port-forward).
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

/// Accepts connections until `token` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    device: DeviceHandle,
    token: CancellationToken,
) {
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
        if device.streams() >= MAX_STREAMS {
            tracing::warn!(%from, max = MAX_STREAMS, "too many WireGuard TCP connections: refused");
            continue;
        }
        if let Err(e) = set_stream_options(&stream) {
            tracing::debug!(%from, error = %e, "cannot set TCP options");
        }
        if let Err(e) = device.accept_stream(stream, format!("tcp {from}")) {
            tracing::debug!(%from, error = %e, "device stopped: TCP connection dropped");
            return;
        }
    }
}
