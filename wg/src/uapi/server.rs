//! The UAPI Unix socket `<dir>/<ifname>.sock`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{Request, format_errno, parse_request};
use crate::Error;
use crate::device::DeviceHandle;

/// Longest request accepted (a `set` for thousands of peers fits).
const MAX_REQUEST: usize = 16 << 20;

/// Binds the socket, replacing a stale one; refuses when another process answers on it.
pub(crate) fn bind(dir: &Path, ifname: &str) -> Result<(UnixListener, PathBuf), Error> {
    let path = dir.join(format!("{ifname}.sock"));
    let err = |source| Error::Uapi {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process serves this socket",
        )));
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok((listener, path))
}

/// Serves UAPI requests until the task is aborted.
pub async fn serve(listener: UnixListener, device: DeviceHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, device.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "UAPI accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, device: DeviceHandle) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    loop {
        let mut request = String::new();
        loop {
            let mut line = String::new();
            match lines.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\n" {
                break;
            }
            request.push_str(&line);
            if request.len() > MAX_REQUEST {
                let _ = write.write_all(format_errno(libc::ENOMEM).as_bytes()).await;
                return;
            }
        }
        let reply = match parse_request(&request) {
            Ok(Request::Get) => device
                .uapi_get()
                .unwrap_or_else(|_| format_errno(libc::ENODEV)),
            Ok(Request::Set(req)) => format_errno(device.uapi_set(&req)),
            Err(e) => {
                tracing::debug!(error = %e.message, "invalid UAPI request");
                format_errno(e.errno)
            }
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
