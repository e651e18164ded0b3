//! `udpBuffers`: the buffers of a normal user's WireGuard UDP socket, forced to the size a root
//! join gives its own ([`kwg_host::sockbuf::UDP_SOCKET_BUFFER`]); without it the user's daemon
//! gets at most `net.core.rmem_max`/`wmem_max` (208 KiB on a stock laptop). Nothing to journal:
//! the socket dies with the daemon.
//!
//! Only a UDP socket of the session's own uid is forced, and only one per session at a time:
//! the helper keeps a descriptor of the socket it forced last, by session, and gives it the
//! default size back when a new one comes (after a rebind) and when the session ends, so a
//! user cannot collect forced buffers on many sockets.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use kwg_host::sockbuf;

/// Why `fd` is not a UDP socket of `uid`, if it is not.
pub fn check_udp_socket(fd: BorrowedFd<'_>, uid: u32) -> Result<(), String> {
    let st = nix::sys::stat::fstat(fd)
        .map_err(|e| format!("refused udpBuffers: cannot inspect the descriptor passed ({e})"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(
            "refused udpBuffers: the descriptor passed is not a socket (pass the WireGuard UDP socket)"
                .into(),
        );
    }
    if st.st_uid != uid {
        return Err(format!(
            "refused udpBuffers: the socket passed was made by uid {}, not by this session's uid {uid} (pass your own WireGuard UDP socket)",
            st.st_uid
        ));
    }
    let opt = |o| sockbuf::get_int(fd, libc::SOL_SOCKET, o).unwrap_or(-1);
    let (domain, kind, protocol) = (
        opt(libc::SO_DOMAIN),
        opt(libc::SO_TYPE),
        opt(libc::SO_PROTOCOL),
    );
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    if !(inet && kind == libc::SOCK_DGRAM && protocol == libc::IPPROTO_UDP) {
        let what = match (inet, kind) {
            (true, libc::SOCK_STREAM) => "a TCP socket",
            (true, _) => "an IP socket of another kind",
            (false, _) if domain == libc::AF_UNIX => "a Unix socket",
            (false, _) if domain == libc::AF_NETLINK => "a netlink socket",
            _ => "a socket of another family",
        };
        return Err(format!(
            "refused udpBuffers: the socket passed is {what}, not a UDP socket (pass the WireGuard UDP socket)"
        ));
    }
    Ok(())
}

/// The socket this session's buffers were forced on last; it gets the default size back
/// when this is dropped (the session ended).
#[derive(Default)]
pub struct Forced(Option<OwnedFd>);

impl Drop for Forced {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            // Within the sysctl's limit, as any process may set it.
            let _ = sockbuf::set(fd.as_fd(), default_size());
        }
    }
}

impl Forced {
    /// Checks `fd` (a UDP socket of `uid`), forces its buffers and keeps it; the one forced
    /// before (another socket) gets the default size back. The sizes the kernel reports.
    pub fn force(&mut self, fd: OwnedFd, uid: u32) -> Result<(usize, usize), ForceError> {
        check_udp_socket(fd.as_fd(), uid).map_err(ForceError::Refused)?;
        sockbuf::force(fd.as_fd(), sockbuf::UDP_SOCKET_BUFFER).map_err(ForceError::System)?;
        let sizes = sockbuf::sizes(fd.as_fd()).map_err(ForceError::System)?;
        if let Some(old) = self.0.replace(fd)
            && !same_socket(old.as_fd(), self.0.as_ref().expect("kept").as_fd())
        {
            // Within the sysctl's limit, as any process may set it.
            let _ = sockbuf::set(old.as_fd(), default_size());
        }
        Ok(sizes)
    }
}

/// Why `udpBuffers` failed.
#[derive(Debug)]
pub enum ForceError {
    Refused(String),
    System(io::Error),
}

fn same_socket(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let id = |fd: BorrowedFd<'_>| nix::sys::stat::fstat(fd).ok().map(|s| (s.st_dev, s.st_ino));
    id(a).is_some() && id(a) == id(b)
}

/// `net.core.rmem_default` (a stock kernel's 208 KiB when unreadable).
fn default_size() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<(usize, usize), ForceError>) -> String {
        match r {
            Err(ForceError::Refused(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn only_a_udp_socket_of_the_sessions_uid_is_forced() {
        let me = nix::unistd::geteuid().as_raw();
        let mut forced = Forced::default();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let m = refused(forced.force(tcp.into(), me));
        assert!(m.contains("is a TCP socket, not a UDP socket"), "{m}");
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let m = refused(forced.force(file.into(), me));
        assert!(m.contains("is not a socket"), "{m}");
        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let m = refused(forced.force(unix.into(), me));
        assert!(m.contains("a Unix socket"), "{m}");
        // Another uid's UDP socket (a user passing on one it got from someone else).
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let m = refused(forced.force(udp.try_clone().unwrap().into(), me + 1));
        assert!(
            m.contains(&format!(
                "made by uid {me}, not by this session's uid {}",
                me + 1
            )),
            "{m}"
        );
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // Root forces past the sysctl: the size a root join's socket has.
        let want = 2 * sockbuf::UDP_SOCKET_BUFFER;
        let got = forced.force(udp.try_clone().unwrap().into(), me).unwrap();
        assert_eq!(got, (want, want));
        // The same socket again stays forced; a new one (a rebind) takes the force from it.
        forced.force(udp.try_clone().unwrap().into(), me).unwrap();
        assert_eq!(sockbuf::sizes(udp.as_fd()).unwrap(), (want, want));
        let next = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        forced.force(next.try_clone().unwrap().into(), me).unwrap();
        assert_eq!(sockbuf::sizes(next.as_fd()).unwrap(), (want, want));
        let (rb, _) = sockbuf::sizes(udp.as_fd()).unwrap();
        assert!(rb < want, "the previous socket keeps {rb}");
    }
}
