//! [`PodStream`]: the forwarded port as one byte stream, read and written straight on the
//! upgraded WebSocket (no task, no channel hop per chunk, messages up to [`MAX_MESSAGE`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self as ws, Message};

use super::demux::{Demux, Incoming, data_message};

/// The largest write carried in one WebSocket message (bigger writes are split). The
/// kubelet's reader takes messages up to 32 MiB (x/net/websocket `DefaultMaxPayloadBytes`).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The kubelet's sentence from the error channel, as the `io::Error` a read returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PodPortError(pub String);

/// A port of a pod, forwarded through the API server.
pub struct PodStream<S> {
    ws: WebSocketStream<S>,
    demux: Demux,
    /// Received from the pod and not read yet.
    pending: Bytes,
    /// The kubelet's error, returned by every read once the data is drained.
    error: Option<String>,
    eof: bool,
}

impl<S> PodStream<S> {
    pub fn new(ws: WebSocketStream<S>, port: u16) -> Self {
        PodStream {
            ws,
            demux: Demux::new(port),
            pending: Bytes::new(),
            error: None,
            eof: false,
        }
    }
}

fn ws_error(e: ws::Error) -> io::Error {
    match e {
        ws::Error::Io(e) => e,
        ws::Error::ConnectionClosed | ws::Error::AlreadyClosed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the port-forward WebSocket is closed",
        ),
        other => io::Error::other(other),
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncRead for PodStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = buf.remaining().min(this.pending.len());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.error {
                let kind = io::ErrorKind::ConnectionRefused;
                return Poll::Ready(Err(io::Error::new(kind, PodPortError(e.clone()))));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => this.eof = true,
                Some(Err(ws::Error::ConnectionClosed)) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                Some(Ok(Message::Binary(b))) => match this.demux.on_message(b) {
                    Ok(Incoming::Data(d)) => this.pending = d,
                    Ok(Incoming::Error(e)) => this.error = Some(e),
                    Ok(Incoming::Nothing) => {}
                    Err(e) => {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                },
                // Pings are answered by tungstenite; v4 sends no text.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncWrite for PodStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_error)?;
        let n = buf.len().min(MAX_MESSAGE);
        let msg = Message::Binary(data_message(&buf[..n]));
        Pin::new(&mut this.ws).start_send(msg).map_err(ws_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    /// The channel protocol has no half-close: shutting down closes the WebSocket, which ends
    /// the pod's connection.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(ws_error)
    }
}
