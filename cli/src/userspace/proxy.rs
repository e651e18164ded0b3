//! The local proxy: one loopback port speaking SOCKS5 and HTTP (told apart by the first byte:
//! 5 is SOCKS5's version, no HTTP method starts with it), for the joined user's own processes
//! only (`owner.rs`). Each client is served on its own task, its handshake bounded in size and
//! time, at most [`MAX_CLIENTS`] at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http::{self, ProxyRequest};
use super::owner::{self, Gate};
use super::route::{Router, Stream};
use super::socks;
use super::target::Target;

/// Clients served at once; past it new ones are closed at once.
pub const MAX_CLIENTS: usize = 512;
/// How long a client may take to say where it wants to go.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves clients on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, router: Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let gate = Arc::new(Gate::new("proxy"));
    loop {
        let (client, from) = owner::accept(&listener).await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%from, "proxy busy: {MAX_CLIENTS} clients, closing a new one");
            continue;
        };
        let (router, gate) = (router.clone(), gate.clone());
        tokio::spawn(async move {
            // Only the user who joined: another local user would reach the cluster as them.
            if !gate.admits(&client, from).await {
                return;
            }
            let _ = client.set_nodelay(true);
            if let Err(e) = serve_one(client, &router).await {
                tracing::debug!(%from, error = %e, "proxy client");
            }
            drop(permit);
        });
    }
}

/// What a client asked for, once its handshake is read.
enum Ask {
    Socks(Target),
    Http(ProxyRequest, Vec<u8>),
}

async fn serve_one(mut client: TcpStream, router: &Router) -> Result<(), ProxyError> {
    let ask = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut client))
        .await
        .map_err(|_| ProxyError::Slow)??;
    let (target, early) = match &ask {
        Ask::Socks(t) => (t.clone(), Vec::new()),
        Ask::Http(ProxyRequest::Connect(t), rest) => (t.clone(), rest.clone()),
        Ask::Http(ProxyRequest::Forward { target, head }, rest) => {
            let mut early = head.clone();
            early.extend_from_slice(rest);
            (target.clone(), early)
        }
    };
    let dialed = router.dial(&target).await;
    let stream = match (dialed, &ask) {
        (Ok((s, _)), Ask::Socks(_)) => {
            socks::reply(&mut client, socks::Reply::Succeeded).await?;
            s
        }
        (Ok((s, _)), Ask::Http(ProxyRequest::Connect(_), _)) => {
            client.write_all(http::ESTABLISHED).await?;
            s
        }
        (Ok((s, _)), Ask::Http(..)) => s,
        (Err(e), Ask::Socks(_)) => {
            socks::reply(&mut client, socks_code(&e)).await?;
            return Err(ProxyError::Dial(target, e));
        }
        (Err(e), Ask::Http(..)) => {
            let sentence = format!("kwg cannot reach {target}: {e}");
            let (code, reason) = match e.kind() {
                std::io::ErrorKind::TimedOut => (504, "Gateway Timeout"),
                _ => (502, "Bad Gateway"),
            };
            client
                .write_all(&http::error_response(code, reason, &sentence))
                .await?;
            return Err(ProxyError::Dial(target, e));
        }
    };
    relay(client, stream, early).await;
    Ok(())
}

async fn handshake(client: &mut TcpStream) -> Result<Ask, ProxyError> {
    let first = client.read_u8().await?;
    if first == socks::VERSION {
        return Ok(Ask::Socks(socks::accept(client).await?));
    }
    let mut buf = vec![first];
    let parsed = match http::read_head(client, &mut buf).await {
        Ok(n) => http::parse(&buf[..n]).map(|r| (r, buf[n..].to_vec())),
        Err(e) => Err(e),
    };
    match parsed {
        Ok((req, rest)) => Ok(Ask::Http(req, rest)),
        Err(e) => {
            let (code, reason) = e.status();
            let _ = client
                .write_all(&http::error_response(code, reason, &e.to_string()))
                .await;
            Err(e.into())
        }
    }
}

/// Copies both ways until both ends are done; `early` goes to the server first.
async fn relay(mut client: TcpStream, stream: Stream, early: Vec<u8>) {
    match stream {
        Stream::Tunnel(v) => {
            if !early.is_empty() && v.send(Bytes::from(early)).await.is_err() {
                return;
            }
            v.splice(client).await;
        }
        Stream::Direct(mut server) => {
            let _ = server.set_nodelay(true);
            if server.write_all(&early).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        }
    }
}

fn socks_code(e: &std::io::Error) -> socks::Reply {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => socks::Reply::ConnectionRefused,
        K::TimedOut => socks::Reply::TtlExpired,
        K::NotFound => socks::Reply::HostUnreachable,
        K::NetworkUnreachable => socks::Reply::NetworkUnreachable,
        K::HostUnreachable => socks::Reply::HostUnreachable,
        _ => socks::Reply::GeneralFailure,
    }
}

#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("the client sent no complete request within {HANDSHAKE_TIMEOUT:?}")]
    Slow,
    #[error("socks: {0}")]
    Socks(#[from] socks::SocksError),
    #[error("http: {0}")]
    Http(#[from] http::HttpError),
    #[error("{0}: {1}")]
    Dial(Target, std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Binds the proxy's port.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(listen).await.map_err(|e| {
        crate::Error::io(
            format!(
                "listen on {listen} for the userspace proxy (pick another with --proxy-listen)"
            ),
            e,
        )
    })
}
