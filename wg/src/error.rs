//! The one error type of `kwg-wg`.

use std::path::PathBuf;

/// Everything that can go wrong in keys, the device and its configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Key(#[from] kwg_contract::keys::KeyError),
    #[error(
        "cannot create TUN device {name}: {source} (run as root or grant CAP_NET_ADMIN, and check that /dev/net/tun exists)"
    )]
    Tun {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind UDP port {port}: {source} (choose another listen port, or 0 for any)")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("UAPI socket {path}: {source} (is another WireGuard process using this interface name?)", path = .path.display())]
    Uapi {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot start the data-plane thread: {0} (the process is out of threads or memory: check `ulimit -u` and free memory)"
    )]
    Thread(#[source] std::io::Error),
    #[error("invalid interface name {0:?}: use 1 to 15 characters of [A-Za-z0-9_.-]")]
    InvalidIfname(String),
    #[error("the device is stopped")]
    Stopped,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
