//! Entering network namespaces from threads of this process.
//!
//! A socket stays in the namespace it was created in, so the daemon binds sockets for other
//! namespaces from a short-lived thread that has entered them.

use crate::{Error, Result};
use nix::sched::{CloneFlags, setns};
use std::os::fd::AsFd;

/// Moves the calling thread into the network namespace `ns` (from `ip netns add`).
pub fn enter(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(Error::io(format!("opening {path}")))?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| Error::Netns {
        ns: ns.to_string(),
        source,
    })
}

/// Runs `f` on a fresh thread inside `ns` and returns its result.
pub fn run_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| Error::Invalid("a thread binding sockets panicked".into()))?
}

/// A TCP listener bound in `ns`, ready for tokio.
pub fn tcp_listener(ns: &str, addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    let std = run_in(ns, move || {
        let l =
            std::net::TcpListener::bind(addr).map_err(Error::io(format!("binding TCP {addr}")))?;
        l.set_nonblocking(true)
            .map_err(Error::io("set_nonblocking"))?;
        Ok(l)
    })?;
    tokio::net::TcpListener::from_std(std).map_err(Error::io("registering a TCP listener"))
}

/// A UDP socket bound in `ns`, ready for tokio.
pub fn udp_socket(ns: &str, addr: std::net::SocketAddr) -> Result<tokio::net::UdpSocket> {
    let std = run_in(ns, move || {
        let s =
            std::net::UdpSocket::bind(addr).map_err(Error::io(format!("binding UDP {addr}")))?;
        s.set_nonblocking(true)
            .map_err(Error::io("set_nonblocking"))?;
        Ok(s)
    })?;
    tokio::net::UdpSocket::from_std(std).map_err(Error::io("registering a UDP socket"))
}
