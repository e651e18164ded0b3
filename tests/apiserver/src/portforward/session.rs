//! One port-forward connection as the kubelet serves it (client-go `tools/portforward`,
//! kubelet `cri/streaming/portforward/httpstream.go`): the client opens two SPDY streams per
//! forwarded connection, `streamtype: error` and `streamtype: data`, both with `port` and the
//! same `requestid`; each gets a SYN_REPLY at once. When both are there the pod port is dialled
//! (containerd: `localhost:PORT` inside the pod's network namespace); bytes flow until either
//! direction ends; a failure is written on the error stream, which kubectl prints as
//! "an error occurred forwarding L -> R: <text>". PINGs are echoed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spdy::{Decoder, Encoder, Frame};

/// RST_STREAM status PROTOCOL_ERROR.
const PROTOCOL_ERROR: u32 = 1;
/// Read size from the pod, as io.Copy's buffer in the kubelet.
const READ_CHUNK: usize = 32 * 1024;
/// Frames are written in batches of at most this many bytes.
const WRITE_BATCH: usize = 256 * 1024;

/// The pod a connection forwards into.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's IP, dialled when no network namespace is known.
    pub pod_ip: Option<IpAddr>,
    /// `/run/netns/...` of the pod: `localhost:PORT` is dialled inside it, as containerd does.
    pub netns: Option<PathBuf>,
    /// The sandbox id the runtime names in its errors.
    pub sandbox: String,
}

#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
    port: String,
}

/// Serve one SPDY connection read from `input` (byte chunks) and written to `output`.
pub async fn serve<R, W>(mut input: R, output: W, target: Arc<Target>, stop: CancellationToken)
where
    R: Stream<Item = io::Result<Bytes>> + Unpin,
    W: Sink<Bytes, Error = io::Error> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(write_frames(rx, output));
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inbound: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    'conn: loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => break,
            c = input.next() => c,
        };
        match chunk {
            Some(Ok(b)) => buf.extend_from_slice(&b),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "port-forward connection read failed");
                break;
            }
            None => break,
        }
        loop {
            let frame = match dec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward: bad SPDY frame");
                    break 'conn;
                }
            };
            match frame {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    let _ = tx.send(Frame::SynReply { stream, fin: false }).await;
                    let h = |n| Frame::header(&headers, n).unwrap_or("").to_string();
                    let (kind, port, id) = (h("streamtype"), h("port"), h("requestid"));
                    let pair = pairs.entry(id.clone()).or_default();
                    pair.port = port;
                    match kind.as_str() {
                        "error" => pair.error = Some(stream),
                        "data" => {
                            let (dtx, drx) = mpsc::channel(16);
                            inbound.insert(stream, dtx);
                            pair.data = Some((stream, drx));
                        }
                        _ => {
                            let _ = tx
                                .send(Frame::RstStream {
                                    stream,
                                    status: PROTOCOL_ERROR,
                                })
                                .await;
                            continue;
                        }
                    }
                    if pair.error.is_some() && pair.data.is_some() {
                        let Some(Pair {
                            error: Some(error),
                            data: Some((data, from_client)),
                            port,
                        }) = pairs.remove(&id)
                        else {
                            continue;
                        };
                        let ids = Ids { error, data };
                        tokio::spawn(forward(target.clone(), port, ids, from_client, tx.clone()));
                    }
                }
                Frame::Data { stream, fin, data } => {
                    if let Some(s) = inbound.get(&stream)
                        && !data.is_empty()
                        && s.send(data).await.is_err()
                    {
                        inbound.remove(&stream);
                    }
                    if fin {
                        inbound.remove(&stream);
                    }
                }
                Frame::RstStream { stream, .. } => {
                    inbound.remove(&stream);
                }
                Frame::Ping(id) => {
                    let _ = tx.send(Frame::Ping(id)).await;
                }
                Frame::GoAway { .. } => break 'conn,
                Frame::SynReply { .. } | Frame::Ignored => {}
            }
        }
    }
    drop(inbound);
    drop(tx);
    let _ = writer.await;
}

async fn write_frames<W>(mut rx: mpsc::Receiver<Frame>, mut out: W) -> io::Result<()>
where
    W: Sink<Bytes, Error = io::Error> + Unpin,
{
    let mut enc = Encoder::default();
    while let Some(f) = rx.recv().await {
        let mut buf = BytesMut::new();
        enc.encode(&f, &mut buf).map_err(io::Error::other)?;
        while buf.len() < WRITE_BATCH {
            let Ok(f) = rx.try_recv() else { break };
            enc.encode(&f, &mut buf).map_err(io::Error::other)?;
        }
        out.send(buf.freeze()).await?;
    }
    out.close().await
}

#[derive(Clone, Copy)]
struct Ids {
    error: u32,
    data: u32,
}

async fn forward(
    target: Arc<Target>,
    port: String,
    ids: Ids,
    from_client: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Frame>,
) {
    let fin = |stream| Frame::Data {
        stream,
        fin: true,
        data: Bytes::new(),
    };
    let result = match port.parse::<u16>() {
        Ok(p) if p > 0 => dial(&target, p).await,
        // The kubelet's message for a bad port header.
        _ => Err(format!("invalid port {port:?}")),
    };
    match result {
        Err(why) => {
            let text = forward_error(&port, &target, &why);
            tracing::debug!(%text, "port-forward failed");
            let _ = tx
                .send(Frame::Data {
                    stream: ids.error,
                    fin: false,
                    data: Bytes::from(text),
                })
                .await;
        }
        Ok(tcp) => {
            let data = |data| Frame::Data {
                stream: ids.data,
                fin: false,
                data,
            };
            pump(tcp, from_client, &tx, data).await;
        }
    }
    let _ = tx.send(fin(ids.data)).await;
    let _ = tx.send(fin(ids.error)).await;
}

/// The kubelet's text on a port's error stream (`portForward` in its streaming server: the
/// runtime calls the sandbox id the pod and passes no uid).
pub(super) fn forward_error(port: &str, target: &Target, why: &str) -> String {
    format!(
        "error forwarding port {port} to pod {}, uid : {why}",
        target.sandbox
    )
}

/// Carry bytes between the pod's connection and the client until the first direction ends
/// (as containerd does): the client's chunks come from `from_client`, the pod's go to `tx`
/// wrapped by `wrap`.
pub(super) async fn pump<T>(
    tcp: TcpStream,
    mut from_client: mpsc::Receiver<Bytes>,
    tx: &mpsc::Sender<T>,
    wrap: impl Fn(Bytes) -> T,
) {
    let _ = tcp.set_nodelay(true);
    let (mut r, mut w) = tcp.into_split();
    let up = async {
        while let Some(b) = from_client.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send(wrap(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Connect to the pod's port: `localhost` inside its network namespace (IPv4, then IPv6, as
/// containerd), or its IP when the namespace is not known. Errors read like containerd's.
pub(super) async fn dial(target: &Target, port: u16) -> Result<TcpStream, String> {
    let Some(netns) = target.netns.clone() else {
        let ip = target
            .pod_ip
            .ok_or_else(|| "pod has no IP address yet".to_string())?;
        let addr = SocketAddr::new(ip, port);
        return TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", go_errno(&e)));
    };
    let (otx, orx) = tokio::sync::oneshot::channel();
    let path = netns.clone();
    // setns changes only the calling thread: a thread of its own, never a runtime worker.
    std::thread::spawn(move || {
        let _ = otx.send(connect_in_netns(&path, port));
    });
    let sandbox = &target.sandbox;
    let inside = orx
        .await
        .map_err(|_| "the dialling thread died".to_string())?;
    match inside {
        Ok(std) => TcpStream::from_std(std).map_err(|e| e.to_string()),
        Err(DialError::Netns(e)) => Err(format!(
            "failed to execute portforward in network namespace {:?}: {e}",
            netns.display().to_string()
        )),
        Err(DialError::Connect(e4, e6)) => Err(format!(
            "failed to execute portforward in network namespace {:?}: failed to connect to \
             localhost:{port} inside namespace {sandbox:?}, IPv4: dial tcp4 127.0.0.1:{port}: \
             connect: {} IPv6 dial tcp6 [::1]:{port}: connect: {} ",
            netns.display().to_string(),
            go_errno(&e4),
            go_errno(&e6)
        )),
    }
}

enum DialError {
    Netns(String),
    Connect(io::Error, io::Error),
}

fn connect_in_netns(path: &std::path::Path, port: u16) -> Result<std::net::TcpStream, DialError> {
    let file = std::fs::File::open(path).map_err(|e| DialError::Netns(e.to_string()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| DialError::Netns(e.desc().to_string()))?;
    let v4 = std::net::TcpStream::connect(("127.0.0.1", port));
    let stream = match v4 {
        Ok(s) => s,
        Err(e4) => {
            std::net::TcpStream::connect(("::1", port)).map_err(|e6| DialError::Connect(e4, e6))?
        }
    };
    stream
        .set_nonblocking(true)
        .map_err(|e| DialError::Netns(e.to_string()))?;
    Ok(stream)
}

/// An OS error as Go prints it ("connection refused", not "Connection refused (os error 111)").
fn go_errno(e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    };
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_go() {
        let e = io::Error::from_raw_os_error(libc_econnrefused());
        assert_eq!(go_errno(&e), "connection refused");
    }

    fn libc_econnrefused() -> i32 {
        nix::errno::Errno::ECONNREFUSED as i32
    }
}
