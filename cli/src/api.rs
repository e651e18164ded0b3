//! The typed local API between `kwg` and its daemon: one JSON request and one JSON reply per
//! connection, each a line on the daemon's Unix socket (0600 in the root-only state
//! directory). Every message carries [`API_VERSION`]; a daemon from an older kwg that outlives
//! an upgrade is told apart and named, with the fix.

use std::path::Path;
use std::time::Duration;

use kwg_contract::Status;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// Bumped whenever a request or reply changes incompatibly.
pub const API_VERSION: u32 = 2;
/// The largest request line the daemon reads.
const MAX_REQUEST: u64 = 4096;
/// How long the daemon waits for a client to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "request", rename_all = "camelCase")]
pub enum Request {
    Status,
    Leave,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reply", rename_all = "camelCase")]
pub enum Reply {
    Status(Box<Status>),
    /// Everything is undone; what was removed.
    Left {
        removed: Vec<String>,
        /// The peer Secret it could not delete (the gateway collects it at its lease's end).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left_behind: Option<crate::state::LeftBehind>,
    },
    /// One sentence for the user.
    Error {
        message: String,
    },
}

/// A message with its API version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Envelope<T> {
    pub version: u32,
    #[serde(flatten)]
    pub body: T,
}

/// A request as the daemon's loop receives it, with where to send the reply.
pub type Incoming = (Request, oneshot::Sender<Reply>);

/// Binds the control socket, readable and writable by its owner (root) only.
pub fn listen(path: &Path) -> Result<UnixListener, Error> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("restrict {}", path.display()), e))?;
    Ok(listener)
}

/// Accepts clients until the receiver is gone: each is served on its own task (a client that
/// sends nothing stalls only itself), its request bounded in size and time, only from the
/// daemon's own user (root, or the user of a userspace-mode daemon).
pub async fn serve(listener: UnixListener, to_loop: mpsc::Sender<Incoming>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let to_loop = to_loop.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(conn, to_loop).await {
                tracing::debug!(error = %e, "control client");
            }
        });
    }
}

async fn serve_one(conn: UnixStream, to_loop: mpsc::Sender<Incoming>) -> std::io::Result<()> {
    let uid = conn.peer_cred()?.uid();
    let owner = nix::unistd::geteuid().as_raw();
    let mut reader = BufReader::new(conn).take(MAX_REQUEST);
    let mut line = String::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let mut conn = reader.into_inner().into_inner();
    let reply = match (read, serde_json::from_str::<Envelope<Request>>(line.trim())) {
        (Err(_), _) | (Ok(Err(_)), _) => return Ok(()),
        (_, Err(e)) => Reply::Error {
            message: format!(
                "the kwg daemon cannot read this request ({e}): use the kwg command of the same version"
            ),
        },
        (_, Ok(env)) if env.version != API_VERSION => Reply::Error {
            message: format!(
                "this kwg daemon speaks API version {API_VERSION}, the kwg command {}: run kwg leave, then kwg join again with the same kwg",
                env.version
            ),
        },
        (_, Ok(_)) if uid != owner => Reply::Error {
            message: match owner {
                0 => "only root may talk to the kwg daemon: run it with sudo".into(),
                // Userspace mode: the daemon runs as the user who joined.
                _ => format!("only uid {owner}, who started this kwg daemon, may talk to it"),
            },
        },
        (_, Ok(env)) => {
            let (tx, rx) = oneshot::channel();
            if to_loop.send((env.body, tx)).await.is_err() {
                return Ok(());
            }
            match rx.await {
                Ok(r) => r,
                Err(_) => return Ok(()),
            }
        }
    };
    let mut out = serde_json::to_vec(&Envelope {
        version: API_VERSION,
        body: reply,
    })?;
    out.push(b'\n');
    conn.write_all(&out).await
}

/// Why a request to the daemon got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the kwg daemon does not answer on {socket}: {source}")]
    Unreachable {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the running kwg daemon is from an older kwg (it does not speak API version {API_VERSION}): run kwg leave, then kwg join again"
    )]
    OlderDaemon,
    #[error(
        "the running kwg daemon is from another kwg version (API {theirs}, this kwg {API_VERSION}): run kwg leave, then kwg join again with the same kwg"
    )]
    OtherVersion { theirs: u32 },
    #[error("{0}")]
    Daemon(String),
}

/// Sends `req` and reads the reply within `timeout`.
pub async fn call(socket: &Path, req: Request, timeout: Duration) -> Result<Reply, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        socket: socket.display().to_string(),
        source,
    };
    let exchange = async {
        let mut conn = UnixStream::connect(socket).await?;
        let mut line = serde_json::to_vec(&Envelope {
            version: API_VERSION,
            body: req,
        })?;
        line.push(b'\n');
        conn.write_all(&line).await?;
        let mut reader = BufReader::new(conn);
        let mut reply = String::new();
        reader.read_line(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let line = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    parse_reply(&line)
}

fn parse_reply(line: &str) -> Result<Reply, ClientError> {
    #[derive(serde::Deserialize)]
    struct Version {
        version: u32,
    }
    match serde_json::from_str::<Envelope<Reply>>(line.trim()) {
        Ok(env) if env.version == API_VERSION => match env.body {
            Reply::Error { message } => Err(ClientError::Daemon(message)),
            r => Ok(r),
        },
        Ok(env) => Err(ClientError::OtherVersion {
            theirs: env.version,
        }),
        Err(_) => match serde_json::from_str::<Version>(line.trim()) {
            Ok(v) if v.version != API_VERSION => {
                Err(ClientError::OtherVersion { theirs: v.version })
            }
            // No version at all: the line protocol of kwg before the typed API.
            _ => Err(ClientError::OlderDaemon),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon of the previous build: text requests, a bare Status or `{"error":…}` back.
    async fn old_daemon(path: &Path) {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let mut conn = reader.into_inner();
                let reply = format!("{{\"error\":\"unknown request {:?}\"}}\n", line.trim());
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
        });
    }

    #[tokio::test]
    async fn an_older_daemon_gets_the_version_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kwg.sock");
        old_daemon(&path).await;
        let err = call(&path, Request::Status, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::OlderDaemon), "{err}");
        assert!(
            err.to_string()
                .contains("run kwg leave, then kwg join again")
        );
    }

    #[tokio::test]
    async fn status_and_versions_round_trip_and_a_silent_client_stalls_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kwg.sock");
        let (tx, mut rx) = mpsc::channel::<Incoming>(4);
        tokio::spawn(serve(listen(&path).unwrap(), tx));
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let _ = reply.send(match req {
                    Request::Status => Reply::Status(Box::new(Status::example())),
                    Request::Leave => Reply::Left {
                        removed: vec!["x".into()],
                        left_behind: None,
                    },
                });
            }
        });
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A client that connects and sends nothing.
        let _silent = UnixStream::connect(&path).await.unwrap();
        let r = call(&path, Request::Status, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r, Reply::Status(Box::new(Status::example())));
        // A newer client (another API version) is told so.
        let mut conn = UnixStream::connect(&path).await.unwrap();
        conn.write_all(b"{\"version\":99,\"request\":\"status\"}\n")
            .await
            .unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).await.unwrap();
        let err = parse_reply(&line).unwrap_err();
        assert!(
            err.to_string()
                .contains("API version 2, the kwg command 99"),
            "{err}"
        );
    }
}
